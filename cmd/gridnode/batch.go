package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/internal/atomicfile"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
)

// A batch: one binary, one verified job per file of a directory, run concurrently, each
// result written beside the others as soon as it is accepted, so that an interrupted
// batch loses nothing and a re-run does only what is left.

// Jobs in flight at once: the default keeps a small grid's slots busy (a 5-node testnet
// has 10, and R=2 takes two a job) without queueing much at its workers; the bound keeps
// one batch from taking every connection of the daemon's API (apiMaxConns is 64).
const (
	defaultParallel = 8
	maxParallel     = 32
)

// outcomeSuffix names a job's outcome file beside its output: NAME.outcome.json.
const outcomeSuffix = ".outcome.json"

// maxOutcomeFile bounds the outcome file a re-run reads: a report without its output
// (stderr is at most 64 KiB, the replicas a few KiB each).
const maxOutcomeFile = 4 << 20

// batchHelp is the batch paragraph of submit --help.
const batchHelp = `Batch (--inputs DIR --outputs DIR): one job for each regular file in the inputs
directory (not its subdirectories, not hidden .files), that file's bytes as its stdin,
the same binary for all (checked here once, and sent to the daemon once). Inputs of
at most 64 KiB go to the grid in batches of up to 512 (one stream per worker for
many jobs, each job still verified on its own), paced by the workers' free slots;
larger inputs go one by one, --parallel at a time. For input NAME, an accepted result writes the output to
OUTPUTS/NAME and then its outcome to OUTPUTS/NAME.outcome.json: the --json report of
the job without the output (job_cid, input_cid, output_cid, status, exit_code,
replicas and their receipts, ...), plus "input": NAME; a job that failed (no quorum,
no workers, ...) writes only its outcome, with error and error_kind. Both files are
written whole (a temporary file renamed into place): an interrupted batch (Ctrl-C, a
crash) leaves no partial file. A re-run skips an input whose outcome has no error, the
job_cid of this JOB, the input_cid of the input's bytes now, and an output file whose
CID is its output_cid; everything else runs again. Refused before anything is sent:
a missing directory, the outputs directory being the inputs directory, an input
over the 16 MiB input limit or named *.outcome.json, a JOB that is not a valid job.
Progress on stderr is a bar on a terminal, else a line per job; with --json, stdout
gets a JSON line per job (the outcome, "skipped": true for one done before) and at the
end one with "summary" (with error and error_kind for a batch refused or that could not
reach the grid). The summary counts accepted jobs (by outcome), failed ones (by
error_kind), those done before, the time and jobs/s. --timeout bounds the whole batch.
The exit status is 0 when every input has an accepted result that exited 0; else that
of the first input by name that has not, as for one submit (3 for a job that exited 3,
125 for no quorum, ...); 130 for Ctrl-C and 124 for --timeout when jobs were cut off.
Run one batch at a time into an outputs directory.
`

type batchConfig struct {
	opts            submitOpts
	req             jobs.Request
	job             string
	inputs, outputs string
	parallel        int
	asJSON          bool
}

// batchOutcome is an outcome file and a --json line: the report without its output.
type batchOutcome struct {
	Input   string `json:"input"`
	Skipped bool   `json:"skipped,omitempty"` // --json only: an earlier run's result
	*jobs.ReportJSON
}

// batchSummary is the last --json line.
type batchSummary struct {
	Summary struct {
		Inputs    int            `json:"inputs"`
		Accepted  map[string]int `json:"accepted"` // by outcome: "exited 0", "crashed SIGSEGV", ...
		Failed    map[string]int `json:"failed"`   // by error_kind
		Skipped   int            `json:"skipped"`  // done by an earlier run
		NotRun    int            `json:"not_run"`  // interrupted before they ended
		Seconds   float64        `json:"seconds"`
		JobsPerS  float64        `json:"jobs_per_second"` // jobs run (skipped ones not) per second
		ExitCode  int            `json:"exit_code"`
		FirstFail string         `json:"first_failed,omitempty"` // the input the exit code is of
		Error     string         `json:"error,omitempty"`        // why the batch did not start
		ErrorKind string         `json:"error_kind,omitempty"`   // as a submit's
	} `json:"summary"`
}

// runBatch runs the batch of c; see batchHelp.
func runBatch(ctx context.Context, c batchConfig) error {
	names, err := batchInputs(c.inputs, c.outputs)
	if err != nil {
		return batchRefused(ctx, err, c.asJSON)
	}
	bin, err := os.ReadFile(c.job)
	if err != nil {
		return batchRefused(ctx, err, c.asJSON)
	}
	if _, err := jobs.CheckBinary(bin, c.req.Limits); err != nil {
		return batchRefused(ctx, fmt.Errorf("submit: %w", err), c.asJSON)
	}
	b := &batch{batchConfig: c, bin: bin, jobCID: cids.Sum(bin).String(), names: names,
		results: make([]*batchOutcome, len(names))}
	b.phase = &batchPhase{total: len(names)}
	b.p = newProgress(os.Stderr, b.phase)
	defer b.p.Close()
	start := time.Now()
	err = b.run(ctx)
	b.p.Close()
	return b.finish(ctx, err, time.Since(start))
}

// batchRefused returns err, a batch that did not start; with --json the summary line
// says why (error, error_kind), as one submit's report would.
func batchRefused(ctx context.Context, err error, asJSON bool) error {
	if asJSON {
		var s batchSummary
		rep := jobs.JSON(nil, err)
		s.Summary.Error, s.Summary.ErrorKind, s.Summary.ExitCode = rep.Error, rep.ErrorKind, exitCode(ctx, err)
		json.NewEncoder(os.Stdout).Encode(s)
	}
	return err
}

// batchInputs checks the batch's directories and lists its inputs, sorted; it refuses the
// batch (every reason at once) rather than send part of it.
func batchInputs(inputs, outputs string) ([]string, error) {
	ifi, err := os.Stat(inputs)
	if err == nil && !ifi.IsDir() {
		err = errors.New("not a directory")
	}
	if err != nil {
		return nil, fmt.Errorf("--inputs %s: %w", inputs, err)
	}
	ofi, err := os.Stat(outputs)
	if err == nil && !ofi.IsDir() {
		err = errors.New("not a directory")
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("--outputs %s: no such directory: create it first (mkdir %s)", outputs, outputs)
	}
	if err != nil {
		return nil, fmt.Errorf("--outputs %s: %w", outputs, err)
	}
	if os.SameFile(ifi, ofi) {
		return nil, fmt.Errorf("--outputs %s is the inputs directory: outputs would be taken for inputs; give another directory", outputs)
	}
	ents, err := os.ReadDir(inputs)
	if err != nil {
		return nil, fmt.Errorf("--inputs: %w", err)
	}
	var names, bad []string
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		fi, err := os.Stat(filepath.Join(inputs, name)) // a symlink to a file is that file
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s: %v", shown(name), err))
			continue
		case !fi.Mode().IsRegular():
			continue
		case strings.HasSuffix(name, outcomeSuffix):
			bad = append(bad, fmt.Sprintf("%s: named like an outcome file (*%s): rename it", shown(name), outcomeSuffix))
		case len(name)+len(outcomeSuffix) > maxNameLen:
			bad = append(bad, fmt.Sprintf("%s: a name of %d bytes leaves no room for its outcome file's %q (at most %d): rename it", shown(name), len(name), outcomeSuffix, maxNameLen))
		case fi.Size() > jobs.DefaultMaxInput:
			bad = append(bad, fmt.Sprintf("%s: %s, over the grid's %s input limit: workers refuse it", shown(name), formatSize(fi.Size()), formatSize(jobs.DefaultMaxInput)))
		}
		names = append(names, name)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("--inputs %s: nothing sent:\n  %s", inputs, strings.Join(bad, "\n  "))
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("--inputs %s: no input files (regular files, not hidden)", inputs)
	}
	sort.Strings(names)
	return names, nil
}

type batch struct {
	batchConfig
	bin    []byte
	jobCID string
	names  []string
	phase  *batchPhase
	p      *submitProgress

	g         *grid
	upload    sync.Mutex // held while the binary is (re)sent to the daemon
	storedCID string     // the daemon's CID of it; "" before the upload

	mem     inputBudget     // input bytes in memory
	out     sync.Mutex      // --json lines on stdout
	results []*batchOutcome // by input; nil: not run (interrupted)
}

// run opens the grid and runs every input.
func (b *batch) run(ctx context.Context) error {
	g, err := b.opts.open(ctx, b.p.Line, nil)
	if err != nil {
		return err
	}
	defer g.Close()
	b.g = g
	if g.api != nil {
		if err := b.uploadBinary(ctx, ""); err != nil {
			return err
		}
	}
	// Inputs a batch can carry go to the grid in groups (jobs.Submitter.SubmitBatch: one
	// stream per worker for many jobs, each still verified on its own); larger ones one
	// by one, --parallel at once.
	var small, large []int
	for i, name := range b.names {
		if fi, err := os.Stat(filepath.Join(b.inputs, name)); err == nil && fi.Size() <= batchGroupInput {
			small = append(small, i)
		} else {
			large = append(large, i)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		groups := make(chan struct{}, 2) // one sent while the next is read
		for len(small) > 0 && ctx.Err() == nil {
			n := min(len(small), batchGroup)
			idx := small[:n]
			small = small[n:]
			groups <- struct{}{}
			wg.Go(func() {
				defer func() { <-groups }()
				b.group(ctx, idx)
			})
		}
	})
	var next atomic.Int64
	for range min(b.parallel, len(large)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				k := int(next.Add(1)) - 1
				if k >= len(large) {
					return
				}
				b.one(ctx, large[k])
			}
		})
	}
	wg.Wait()
	return nil
}

// Groups: at most batchGroup inputs of at most batchGroupInput bytes each (what a batch
// carries; a larger input is a job of its own) go to the grid as one batch.
const (
	batchGroup      = 512
	batchGroupInput = jobs.BatchMaxInput
)

// group runs the inputs idx, unless an earlier run did, as one batch, and records each
// result as it comes.
func (b *batch) group(ctx context.Context, idx []int) {
	release := b.mem.take(int64(len(idx)) * batchGroupInput)
	defer release()
	var todo []int
	var inputs [][]byte
	for _, i := range idx {
		b.phase.started()
		if in, ok := b.read(i, batchGroupInput); ok {
			todo, inputs = append(todo, i), append(inputs, in)
		}
	}
	if len(todo) == 0 {
		return
	}
	var mu sync.Mutex
	told := make([]bool, len(todo))
	tell := func(k int, rep *jobs.ReportJSON) {
		mu.Lock()
		if told[k] {
			mu.Unlock()
			return
		}
		told[k] = true
		mu.Unlock()
		b.result(ctx, todo[k], rep)
	}
	var err error
	if b.g.api == nil {
		req := b.req
		req.Binary = b.bin
		err = b.g.n.SubmitBatch(ctx, req, inputs, func(k int, rep *jobs.Report, err error) { tell(k, jobs.JSON(rep, err)) })
	} else {
		err = b.stored(ctx, func(c string) error {
			return b.g.api.SubmitBatch(ctx, node.APIBatch{APISubmit: node.APISubmit{Request: b.req, JobCID: c}, Inputs: inputs}, tell)
		})
	}
	if err != nil {
		var be *node.BatchError
		rep := jobs.JSON(nil, err)
		if errors.As(err, &be) {
			rep = be.Report
		}
		for k := range todo {
			tell(k, rep) // the jobs not told of: the batch did not start, or the daemon went away
		}
	}
}

// stored calls send with the daemon's CID of the binary, and again once with a new one
// when the daemon lost it (its store evicted it: 404).
func (b *batch) stored(ctx context.Context, send func(jobCID string) error) error {
	for try := 0; ; try++ {
		b.upload.Lock()
		c := b.storedCID
		b.upload.Unlock()
		err := send(c)
		var ae *node.APIError
		if errors.As(err, &ae) && ae.Status == 404 && try == 0 {
			if err = b.uploadBinary(ctx, c); err == nil {
				continue
			}
		}
		return err
	}
}

// uploadBinary sends the binary to the daemon, unless another goroutine sent it again
// since stale (the CID a failed submit named) was the current one.
func (b *batch) uploadBinary(ctx context.Context, stale string) error {
	b.upload.Lock()
	defer b.upload.Unlock()
	if b.storedCID != stale {
		return nil
	}
	c, err := b.g.api.Upload(ctx, b.bin)
	if err != nil {
		return fmt.Errorf("send the binary to the daemon: %w", err)
	}
	b.storedCID = c
	return nil
}

// read returns input i's bytes (at most max) when it is to run; else it records why not
// (unreadable, or done by an earlier run) and returns false.
func (b *batch) read(i int, max int64) ([]byte, bool) {
	in, err := readBounded(filepath.Join(b.inputs, b.names[i]), max)
	if err != nil {
		b.record(i, jobs.JSON(nil, err), false)
		return nil, false
	}
	if rep := b.done(b.names[i], in); rep != nil {
		b.record(i, rep, true)
		return nil, false
	}
	return in, true
}

// one runs input i, unless an earlier run did, and records its result.
func (b *batch) one(ctx context.Context, i int) {
	b.phase.started()
	path := filepath.Join(b.inputs, b.names[i])
	size := int64(jobs.DefaultMaxInput) // a file that cannot be read is charged in full, briefly
	if fi, err := os.Stat(path); err == nil {
		size = min(fi.Size(), size)
	}
	release := b.mem.take(size)
	defer release()
	in, ok := b.read(i, jobs.DefaultMaxInput)
	if !ok {
		return
	}
	req := b.req
	req.Input = in
	var rep *jobs.ReportJSON
	if b.g.api == nil {
		req.Binary = b.bin
		rep = b.g.submit(ctx, req)
	} else if err := b.stored(ctx, func(c string) (err error) {
		rep, err = b.g.api.SubmitStored(ctx, node.APISubmit{Request: req, JobCID: c})
		return err
	}); err != nil {
		rep = jobs.JSON(nil, err)
	}
	b.result(ctx, i, rep)
}

// result writes input i's output, if rep has one, then records its outcome; a job cut off
// by the batch's end (Ctrl-C, --timeout) is not recorded, so a re-run does it.
func (b *batch) result(ctx context.Context, i int, rep *jobs.ReportJSON) {
	if rep.Err() != nil && ctx.Err() != nil {
		b.phase.ended(nil)
		return
	}
	if rep.Err() == nil {
		if err := writeOutput(b.outputs, b.names[i], rep.Output); err != nil {
			rep = jobs.JSON(nil, fmt.Errorf("write output: %w", err))
		}
	}
	b.record(i, rep, false)
}

// done returns the outcome an earlier run recorded for input name, whose bytes are now in,
// if it is a verified result of this job for them whose output file is intact; else nil.
func (b *batch) done(name string, in []byte) *jobs.ReportJSON {
	raw, err := readBounded(filepath.Join(b.outputs, name+outcomeSuffix), maxOutcomeFile)
	if err != nil {
		return nil
	}
	var o batchOutcome
	if json.Unmarshal(raw, &o) != nil || o.ReportJSON == nil || o.Err() != nil || o.OutputCID == "" ||
		o.JobCID != b.jobCID || o.InputCID != cids.Sum(in).String() {
		return nil
	}
	out, err := readBounded(filepath.Join(b.outputs, name), jobs.DefaultMaxInput)
	if err != nil || cids.Sum(out).String() != o.OutputCID {
		return nil
	}
	return o.ReportJSON
}

// record writes input i's outcome file (unless skipped, an earlier run's) and reports it.
func (b *batch) record(i int, rep *jobs.ReportJSON, skipped bool) {
	name := b.names[i]
	rep.Output = nil
	o := &batchOutcome{Input: name, ReportJSON: rep}
	if !skipped {
		raw, err := json.MarshalIndent(o, "", "  ")
		if err == nil {
			err = writeOutput(b.outputs, name+outcomeSuffix, append(raw, '\n'))
		}
		if err != nil {
			o = &batchOutcome{Input: name, ReportJSON: jobs.JSON(nil, fmt.Errorf("write outcome: %w", err))}
		}
	}
	o.Skipped = skipped
	b.results[i] = o
	line := shown(name) + ": " + outcomeText(o.ReportJSON)
	if skipped {
		line += " (done before)"
	}
	if !skipped {
		b.phase.ended(o.ReportJSON)
	} else {
		b.phase.skipped()
	}
	if !b.p.tty || batchFailed(o.ReportJSON) {
		b.p.Line(line) // on a terminal the bar counts successes; failures are printed above it
	}
	if b.asJSON {
		b.out.Lock()
		json.NewEncoder(os.Stdout).Encode(o)
		b.out.Unlock()
	}
}

// finish prints the summary and returns the batch's result (see batchHelp).
func (b *batch) finish(ctx context.Context, runErr error, took time.Duration) error {
	if runErr != nil {
		return batchRefused(ctx, runErr, b.asJSON)
	}
	var s batchSummary
	sm := &s.Summary
	sm.Inputs, sm.Accepted, sm.Failed = len(b.names), map[string]int{}, map[string]int{}
	var first *batchOutcome
	ran := 0
	for _, o := range b.results {
		switch {
		case o == nil:
			sm.NotRun++
			continue
		case o.Skipped:
			sm.Skipped++
		default:
			ran++
		}
		switch {
		case o.Skipped:
		case o.Err() != nil:
			sm.Failed[o.ErrorKind]++
		default:
			sm.Accepted[outcomeText(o.ReportJSON)]++
		}
		if first == nil && batchFailed(o.ReportJSON) {
			first = o
		}
	}
	sm.Seconds = took.Seconds()
	if took > 0 {
		sm.JobsPerS = float64(ran) / took.Seconds()
	}
	var err error
	switch {
	case ctx.Err() != nil && sm.NotRun > 0:
		err = reported{fmt.Errorf("batch: %w", ctx.Err())}
	case first != nil:
		sm.FirstFail = first.Input
		err = jobExit(first.Status, first.ExitCode, first.Signal, first.Reason, first.Err(), true)
	}
	sm.ExitCode = exitCode(ctx, err)
	line := fmt.Sprintf("%d inputs: %d accepted%s, %d failed%s, %d done before", sm.Inputs,
		sumCounts(sm.Accepted), countsText(sm.Accepted), sumCounts(sm.Failed), countsText(sm.Failed), sm.Skipped)
	if sm.NotRun > 0 {
		line += fmt.Sprintf(", %d not run (interrupted)", sm.NotRun)
	}
	line += fmt.Sprintf("; %d jobs in %v, %.1f jobs/s", ran, took.Round(time.Millisecond), sm.JobsPerS)
	fmt.Fprintln(os.Stderr, "gridnode:", line)
	if b.asJSON {
		json.NewEncoder(os.Stdout).Encode(s)
	}
	return err
}

// batchFailed reports whether a job has no accepted result that exited 0.
func batchFailed(rep *jobs.ReportJSON) bool {
	return rep.Err() != nil || rep.Status != "exited" || rep.ExitCode != 0
}

// outcomeText says how a job ended: its verdict's outcome, or the error's kind and text.
func outcomeText(rep *jobs.ReportJSON) string {
	if err := rep.Err(); err != nil {
		return rep.ErrorKind + ": " + err.Error()
	}
	return jobs.Verdict{Status: rep.Status, ExitCode: rep.ExitCode, Signal: rep.Signal}.Outcome()
}

func sumCounts(m map[string]int) (n int) {
	for _, v := range m {
		n += v
	}
	return n
}

// countsText is " (3 exited 0, 1 exited 2)", most first; "" for none.
func countsText(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", m[k], k)
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// readBounded reads the file at path, refusing one over max bytes.
func readBounded(path string, max int64) ([]byte, error) {
	// Non-blocking, so that a FIFO put where a file was listed (or named like an outcome)
	// is refused instead of waiting for a writer; a regular file reads as ever.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("%s: over %s", path, formatSize(max))
	}
	return b, err
}

// maxBatchInput bounds the bytes of input a batch holds at once (each job's until it
// ended): 8 jobs of the largest input, however large --parallel. The daemon, or this
// process's own peer, holds a copy or two of each while it runs.
const maxBatchInput = 8 * jobs.DefaultMaxInput

// inputBudget hands out maxBatchInput bytes; one job may always run.
type inputBudget struct {
	mu   sync.Mutex
	cond *sync.Cond
	used int64
}

// take waits until n bytes are free, or none are taken, and takes them.
func (m *inputBudget) take(n int64) (release func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cond == nil {
		m.cond = sync.NewCond(&m.mu)
	}
	for m.used > 0 && m.used+n > maxBatchInput {
		m.cond.Wait()
	}
	m.used += n
	return func() {
		m.mu.Lock()
		m.used -= n
		m.mu.Unlock()
		m.cond.Broadcast()
	}
}

// batchPhase is a batch's status line: a bar of the inputs ended and the counts.
type batchPhase struct {
	mu                               sync.Mutex
	total, ok, failed, skip, running int
}

func (s *batchPhase) started() { s.mu.Lock(); s.running++; s.mu.Unlock() }
func (s *batchPhase) skipped() { s.mu.Lock(); s.skip++; s.running--; s.mu.Unlock() }

// ended counts a job that ended with rep (nil: interrupted, not counted).
func (s *batchPhase) ended(rep *jobs.ReportJSON) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	switch {
	case rep == nil:
	case batchFailed(rep):
		s.failed++
	default:
		s.ok++
	}
}

func (s *batchPhase) update(string, time.Time) bool { return true }

func (s *batchPhase) status(_ time.Time, elapsed time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := s.ok + s.failed + s.skip
	const width = 20
	filled := width * done / max(s.total, 1)
	bar := strings.Repeat("#", filled) + strings.Repeat(".", width-filled)
	rate := ""
	if ran := s.ok + s.failed; ran > 0 && elapsed > 0 {
		rate = fmt.Sprintf(", %.1f jobs/s", float64(ran)/elapsed.Seconds())
	}
	return fmt.Sprintf("[%s] [%s] %d/%d: %d ok, %d failed, %d done before, %d running%s",
		elapsed.Truncate(time.Second), bar, done, s.total, s.ok, s.failed, s.skip, s.running, rate)
}

// maxNameLen is the longest file name Linux file systems take (NAME_MAX).
const maxNameLen = 255

// shown is a file name as printed: quoted, escapes and all, if it holds anything a terminal
// would not show as it is (a data set's names must not move the cursor or retitle it).
func shown(name string) string {
	for _, r := range name {
		if !strconv.IsPrint(r) {
			return strconv.Quote(name)
		}
	}
	return name
}

// writeOutput writes dir/name whole or not at all. It is not synced: a file a system crash
// tore fails the re-run's CID check and its job runs again.
func writeOutput(dir, name string, b []byte) error {
	return atomicfile.Write(filepath.Join(dir, name), b, 0o644, false)
}
