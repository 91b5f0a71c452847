package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/internal/proctest"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
)

// batchLines parses a batch's --json stdout: a line per job, then the summary.
func batchLines(t *testing.T, out string) (map[string]batchOutcome, batchSummary) {
	t.Helper()
	byName := map[string]batchOutcome{}
	var sum batchSummary
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), `{"summary"`) {
			if err := json.Unmarshal(sc.Bytes(), &sum); err != nil {
				t.Fatalf("summary %q: %v", sc.Text(), err)
			}
			continue
		}
		var o batchOutcome
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil || o.ReportJSON == nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		byName[o.Input] = o
	}
	return byName, sum
}

// writeInputs makes a directory with a file per entry of files.
func writeInputs(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// listDir is the names in dir, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestSubmitBatch runs batches through a process testnet's daemon and by joining the grid:
// every output is the job's right answer with its outcome beside it, a re-run does only
// what is not verified (a damaged output, a changed input), the exit status is the first
// failed input's, and what cannot work is refused before anything is sent.
func TestSubmitBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a testnet")
	}
	bin := gridnodeBinary(t)
	hash := buildJob(t, bin, "sha256", "--example", "sha256")
	behave := buildBehave(t, bin)
	tn := startNet(t, bin, 5)
	daemon := []string{"--data", filepath.Join(tn.dir, "node-0")}
	batch := func(via []string, args ...string) (string, string, int) {
		t.Helper()
		return runBin(t, bin, "", slices.Concat([]string{"submit", "--timeout", "120s", "--json"}, via, args)...)
	}
	files := map[string]string{"empty": ""}
	for i := range 20 {
		files[fmt.Sprintf("in-%02d", i)] = strings.Repeat(fmt.Sprintf("input %d\n", i), i*100)
	}
	inputs := writeInputs(t, files)
	// checkOutputs checks every output and outcome file in outputs.
	checkOutputs := func(t *testing.T, outputs string) {
		t.Helper()
		for name, content := range files {
			sum := sha256.Sum256([]byte(content))
			if got, err := os.ReadFile(filepath.Join(outputs, name)); err != nil || string(got) != hex.EncodeToString(sum[:])+"\n" {
				t.Errorf("%s: output %q (%v), want its SHA-256", name, got, err)
			}
			raw, err := os.ReadFile(filepath.Join(outputs, name+outcomeSuffix))
			var o batchOutcome
			if err == nil {
				err = json.Unmarshal(raw, &o)
			}
			if err != nil || o.ReportJSON == nil || o.Input != name || o.Err() != nil || o.Status != "exited" ||
				o.InputCID != cids.Sum([]byte(content)).String() || len(o.Replicas) < 2 || o.Output != nil {
				t.Errorf("%s: outcome file (%v):\n%s", name, err, raw)
			}
		}
		if got, want := len(listDir(t, outputs)), 2*len(files); got != want {
			t.Errorf("outputs holds %d files, want %d: %q", got, want, listDir(t, outputs))
		}
	}

	outputs := t.TempDir()
	t.Run("through the daemon", func(t *testing.T) {
		out, errOut, code := batch(daemon, "--inputs", inputs, "--outputs", outputs, hash)
		lines, sum := batchLines(t, out)
		if code != 0 || len(lines) != len(files) || sum.Summary.Accepted["exited 0"] != len(files) || sum.Summary.ExitCode != 0 {
			t.Fatalf("got exit %d, %d lines, summary %+v; want 0 and %d accepted\nstderr:\n%s", code, len(lines), sum.Summary, len(files), errOut)
		}
		if !strings.Contains(errOut, "submitting through "+filepath.Join(tn.dir, "node-0")) {
			t.Errorf("not through the daemon:\n%s", errOut)
		}
		checkOutputs(t, outputs)
	})
	t.Run("re-run skips done work", func(t *testing.T) {
		os.WriteFile(filepath.Join(outputs, "in-03"), []byte("damaged\n"), 0o644)
		files["in-07"] = "changed since\n"
		os.WriteFile(filepath.Join(inputs, "in-07"), []byte(files["in-07"]), 0o644)
		defer os.Remove(filepath.Join(inputs, "in-07")) // the later runs' inputs are the first run's
		out, errOut, code := batch(daemon, "--inputs", inputs, "--outputs", outputs, hash)
		lines, sum := batchLines(t, out)
		if code != 0 || sum.Summary.Skipped != len(files)-2 || sumCounts(sum.Summary.Accepted) != 2 {
			t.Fatalf("got exit %d, summary %+v; want 0, %d skipped, 2 run\nstderr:\n%s", code, sum.Summary, len(files)-2, errOut)
		}
		for name, o := range lines {
			if redo := name == "in-03" || name == "in-07"; o.Skipped == redo {
				t.Errorf("%s: skipped %v", name, o.Skipped)
			}
		}
		checkOutputs(t, outputs)
	})
	os.WriteFile(filepath.Join(inputs, "in-07"), []byte(strings.Repeat("input 7\n", 700)), 0o644)
	files["in-07"] = strings.Repeat("input 7\n", 700)
	t.Run("joining the grid", func(t *testing.T) {
		outputs := t.TempDir()
		via := []string{"--data", t.TempDir(), "--bootstrap", tn.boot, "--trust-file", filepath.Join(tn.dir, "trusted-peers")}
		out, errOut, code := batch(via, "--inputs", inputs, "--outputs", outputs, "--parallel", "3", hash)
		if _, sum := batchLines(t, out); code != 0 || sum.Summary.Accepted["exited 0"] != len(files) {
			t.Fatalf("got exit %d, summary %+v\nstderr:\n%s", code, sum.Summary, errOut)
		}
		if strings.Contains(errOut, "submitting through") {
			t.Errorf("went through a daemon:\n%s", errOut)
		}
		checkOutputs(t, outputs)
	})
	t.Run("exit status of the first failure", func(t *testing.T) {
		in := writeInputs(t, map[string]string{"a": "exit 0", "b": "exit 3", "c": "exit 5", "d": "segv"})
		out, errOut, code := batch(daemon, "--inputs", in, "--outputs", t.TempDir(), behave)
		_, sum := batchLines(t, out)
		if code != 3 || sum.Summary.FirstFail != "b" || sum.Summary.ExitCode != 3 || sumCounts(sum.Summary.Accepted) != 4 {
			t.Errorf("got exit %d, summary %+v; want 3, first failed b, 4 accepted\nstderr:\n%s", code, sum.Summary, errOut)
		}
	})
	t.Run("refused", func(t *testing.T) {
		readme := filepath.Join(t.TempDir(), "README")
		os.WriteFile(readme, []byte("not a job\n"), 0o644)
		big := writeInputs(t, map[string]string{"small": "x"})
		f, _ := os.Create(filepath.Join(big, "huge"))
		f.Truncate(jobs.DefaultMaxInput + 1)
		f.Close()
		named := writeInputs(t, map[string]string{"x.outcome.json": "{}"})
		out := t.TempDir()
		for _, tt := range []struct {
			name string
			args []string
			code int
			msg  string
		}{
			{"outputs are the inputs", []string{"--inputs", inputs, "--outputs", inputs + "/.", hash}, 125, "is the inputs directory"},
			{"no outputs dir", []string{"--inputs", inputs, "--outputs", filepath.Join(out, "missing"), hash}, 125, "no such directory: create it first"},
			{"no inputs dir", []string{"--inputs", filepath.Join(out, "missing"), "--outputs", out, hash}, 125, "no such file or directory"},
			{"input over the limit", []string{"--inputs", big, "--outputs", out, hash}, 125, "huge: "},
			{"input named like an outcome", []string{"--inputs", named, "--outputs", out, hash}, 125, "x.outcome.json: named like an outcome file"},
			{"not a job", []string{"--inputs", inputs, "--outputs", out, readme}, 126, "not an ELF file"},
			{"only --inputs", []string{"--inputs", inputs, hash}, 125, "--inputs and --outputs go together"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				stdout, errOut, code := batch(daemon, tt.args...)
				if code != tt.code || !strings.Contains(errOut, tt.msg) {
					t.Errorf("got exit %d, stderr %q; want %d and %q", code, errOut, tt.code, tt.msg)
				}
				if code == 125 && strings.Contains(errOut, "Usage:") {
					return // a usage error: no summary
				}
				if lines, sum := batchLines(t, stdout); len(lines) != 0 || !strings.Contains(sum.Summary.Error, tt.msg) || sum.Summary.ExitCode != tt.code {
					t.Errorf("--json: %d job lines, summary %+v; want none and the error", len(lines), sum.Summary)
				}
				if got := listDir(t, out); len(got) != 0 {
					t.Errorf("outputs written: %q", got)
				}
				if got := listDir(t, inputs); len(got) != len(files) {
					t.Errorf("inputs dir changed: %q", got)
				}
			})
		}
	})
}

// TestSubmitBatchInterrupted sends SIGINT to a batch through a daemon while jobs that never
// end run and others are done: it exits 130 at once, and the outputs directory holds the
// finished jobs' outputs and outcomes, whole, and nothing of the others (no temporary file).
func TestSubmitBatchInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a testnet")
	}
	bin := gridnodeBinary(t)
	behave := buildBehave(t, bin)
	// Node 0 submits; the two others give one submitter 4 slots each (half their slots),
	// so the jobs that never end leave slots for the others.
	tn := startNet(t, bin, 3, "--slots", "8")
	files := map[string]string{}
	for i := range 3 {
		files[fmt.Sprintf("done-%d", i)] = "exit 0"
	}
	for i := range 2 {
		files[fmt.Sprintf("spin-%d", i)] = "spin"
	}
	inputs, outputs := writeInputs(t, files), t.TempDir()
	cmd := exec.Command(bin, "submit", "--data", filepath.Join(tn.dir, "node-0"), "--wall", "5m",
		"--inputs", inputs, "--outputs", outputs, "--parallel", "5", behave)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	proctest.Poll(t, 60*time.Second, "the jobs that end to be written and the others to run", func() bool {
		n := 0
		for i := range 3 {
			if _, err := os.Stat(filepath.Join(outputs, fmt.Sprintf("done-%d", i)+outcomeSuffix)); err == nil {
				n++
			}
		}
		return n == 3 && sum(tn.nodeJobs(3)) > 0
	})
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("the batch did not stop within 20s of SIGINT\n%s", stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("got exit %d, want 130\n%s", code, stderr.String())
	}
	t.Logf("stopped %v after SIGINT", time.Since(sent).Round(time.Millisecond))
	var want []string
	for i := range 3 {
		want = append(want, fmt.Sprintf("done-%d", i), fmt.Sprintf("done-%d", i)+outcomeSuffix)
	}
	if got := listDir(t, outputs); !slices.Equal(got, want) {
		t.Errorf("outputs holds %q, want %q", got, want)
	}
	for i := range 3 {
		name := fmt.Sprintf("done-%d", i)
		raw, _ := os.ReadFile(filepath.Join(outputs, name+outcomeSuffix))
		var o batchOutcome
		if err := json.Unmarshal(raw, &o); err != nil || o.ReportJSON == nil || o.Err() != nil {
			t.Errorf("%s: outcome %q (%v)", name, raw, err)
			continue
		}
		if out, _ := os.ReadFile(filepath.Join(outputs, name)); cids.Sum(out).String() != o.OutputCID {
			t.Errorf("%s: output %q is not the outcome's %s", name, out, o.OutputCID)
		}
	}
	if !strings.Contains(stderr.String(), "2 not run (interrupted)") {
		t.Errorf("the summary does not count the interrupted jobs:\n%s", stderr.String())
	}
}

// TestBatchStatusLine checks the batch's status line and the summary's counts.
func TestBatchStatusLine(t *testing.T) {
	s := &batchPhase{total: 10}
	for range 4 {
		s.started()
	}
	s.ended(&jobs.ReportJSON{Status: "exited"})
	s.ended(&jobs.ReportJSON{Status: "exited", ExitCode: 3})
	s.ended(nil) // interrupted: not counted
	s.skipped()
	if got, want := s.status(time.Time{}, 2*time.Second), "[2s] [######..............] 3/10: 1 ok, 1 failed, 1 done before, 0 running, 1.0 jobs/s"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := countsText(map[string]int{"exited 0": 1, "no_quorum": 3, "exited 3": 1}), " (3 no_quorum, 1 exited 0, 1 exited 3)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

var batchBench = flag.Bool("batch-bench", false, "TestBatchThroughput: measure batch jobs/s on a 5-node testnet")

// TestBatchThroughput measures verified tiny jobs per second on a 5-node process testnet
// at R=2, in one run: a batch through a daemon, a batch that joins the grid itself, one
// submit at a time through the daemon and with --bootstrap (a new peer each), and plain
// exec of the same binary. It fails unless the batch through the daemon is at least 2×
// one --bootstrap submit at a time (6-9× on a quiet machine). Run it with
//
//	go test -count=1 -run TestBatchThroughput -v ./cmd/gridnode -args -batch-bench
func TestBatchThroughput(t *testing.T) {
	if !*batchBench {
		t.Skip("a measurement: -batch-bench")
	}
	bin := gridnodeBinary(t)
	job := buildJob(t, bin, "sha256", "--example", "sha256")
	tn := startNet(t, bin, 5)
	data := filepath.Join(tn.dir, "node-0")
	const batchN, oneN = 300, 20
	files := map[string]string{}
	for i := range batchN {
		files[fmt.Sprintf("in-%03d", i)] = fmt.Sprintf("input %d\n", i)
	}
	inputs := writeInputs(t, files)
	rate := func(n int, took time.Duration) float64 { return float64(n) / took.Seconds() }
	batch := func(via ...string) float64 {
		start := time.Now()
		_, errOut, code := runBin(t, bin, "", slices.Concat([]string{"submit", "--replicas", "2"}, via,
			[]string{"--inputs", inputs, "--outputs", t.TempDir(), job})...)
		if code != 0 {
			t.Fatalf("batch %q: exit %d\n%s", via, code, errOut)
		}
		return rate(batchN, time.Since(start))
	}
	one := func(via ...string) float64 {
		start := time.Now()
		for i := range oneN {
			if _, errOut, code := runBin(t, bin, fmt.Sprintf("input %d\n", i), slices.Concat([]string{"submit", "--replicas", "2"}, via, []string{job})...); code != 0 {
				t.Fatalf("submit %q: exit %d\n%s", via, code, errOut)
			}
		}
		return rate(oneN, time.Since(start))
	}
	plain := func() float64 {
		start := time.Now()
		for i := range 200 {
			cmd := exec.Command(job)
			cmd.Stdin = strings.NewReader(fmt.Sprintf("input %d\n", i))
			if err := cmd.Run(); err != nil {
				t.Fatalf("plain exec: %v", err)
			}
		}
		return rate(200, time.Since(start))
	}
	joined := []string{"--no-daemon", "--data", t.TempDir(), "--bootstrap", tn.boot, "--trust-file", filepath.Join(tn.dir, "trusted-peers")}
	viaDaemon := batch("--data", data)
	viaJoin := batch(joined...)
	oneDaemon := one("--data", data)
	oneBoot := one(joined...)
	exec := plain()
	t.Logf("jobs/s, R=2, 5 nodes: batch through the daemon %.1f, batch joining %.1f, one at a time through the daemon %.1f, one at a time --bootstrap %.1f, plain exec %.0f",
		viaDaemon, viaJoin, oneDaemon, oneBoot, exec)
	t.Logf("batch through the daemon: %.1f× one --bootstrap at a time, %.3f× plain exec ÷ R", viaDaemon/oneBoot, viaDaemon/(exec/2))
	if viaDaemon < 2*oneBoot {
		t.Errorf("a batch through the daemon runs %.1f jobs/s, less than 2× one --bootstrap submit at a time (%.1f)", viaDaemon, oneBoot)
	}
}

// TestInputBudget checks that a batch holds at most maxBatchInput bytes of input, and that a
// job larger than that runs alone rather than never.
func TestInputBudget(t *testing.T) {
	var m inputBudget
	var releases []func()
	for range 8 {
		releases = append(releases, m.take(jobs.DefaultMaxInput))
	}
	took := make(chan func())
	go func() { took <- m.take(1) }()
	select {
	case <-took:
		t.Fatal("took a byte past the budget")
	case <-time.After(50 * time.Millisecond): // it waits; what ends the wait is checked below
	}
	releases[0]()
	(<-took)()
	for _, r := range releases[1:] {
		r()
	}
	m.take(2 * maxBatchInput)() // alone, over the budget
	if m.used != 0 {
		t.Errorf("got %d bytes taken after every release, want 0", m.used)
	}
}

// TestBatchInputNames: an input whose name holds terminal escapes is printed quoted, and
// one too long to have an outcome file beside its output is refused before anything runs.
func TestBatchInputNames(t *testing.T) {
	if got, want := shown("in\x1b]0;owned\a"), `"in\x1b]0;owned\a"`; got != want {
		t.Errorf("shown: got %s, want %s", got, want)
	}
	if got := shown("plain name-1.txt"); got != "plain name-1.txt" {
		t.Errorf("shown: got %s for a plain name", got)
	}
	long := strings.Repeat("x", maxNameLen-len(outcomeSuffix)+1)
	in, out := writeInputs(t, map[string]string{long: "a\n", "ok": "b\n"}), t.TempDir()
	_, err := batchInputs(in, out)
	if err == nil || !strings.Contains(err.Error(), "leaves no room for its outcome file") {
		t.Fatalf("got %v, want the long name refused", err)
	}
	fit := writeInputs(t, map[string]string{long[1:]: "a\n"})
	if names, err := batchInputs(fit, out); err != nil || len(names) != 1 {
		t.Fatalf("a name that leaves room: %v, %v", names, err)
	}
}

// TestReadBoundedFIFO: a FIFO where an input or an outcome file was listed is refused at
// once, not waited on for a writer that never comes.
func TestReadBoundedFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "in")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := readBounded(p, 1<<10); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("got %v, want a FIFO refused", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("readBounded waits on a FIFO")
	}
}

// TestBatchHelpSizes: submit --help names the group sizes the batch uses.
func TestBatchHelpSizes(t *testing.T) {
	for _, want := range []string{
		fmt.Sprintf("Inputs of\nat most %d KiB go to the grid in batches of up to %d", batchGroupInput>>10, batchGroup),
		"larger inputs go one by one, --parallel at a time",
	} {
		if !strings.Contains(batchHelp, want) {
			t.Errorf("submit --help's batch paragraph lacks %q", want)
		}
	}
}

// TestBatchStoredResend: a daemon that lost the batch's binary (404) gets it again once,
// however many submits heard the 404 at once, and the submits go on with the new CID; one
// that keeps answering 404 ends the submit with that error instead of a loop.
func TestBatchStoredResend(t *testing.T) {
	var uploads atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/v1/binaries" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		n := uploads.Add(1)
		fmt.Fprintf(w, `{"job_cid": "c%d", "size": 1}`, n+1)
	}))
	defer srv.Close()
	b := &batch{g: &grid{api: &node.APIClient{Addr: srv.Listener.Addr().String(), Token: "t"}}, bin: []byte{1}, storedCID: "c1"}
	lost := func(c string) error {
		if c == "c1" {
			return &node.APIError{Status: 404, Msg: "unknown job_cid"}
		}
		return nil
	}
	var wg sync.WaitGroup
	var sent sync.Map
	for k := range 8 {
		wg.Go(func() {
			if err := b.stored(t.Context(), func(c string) error { sent.Store(fmt.Sprint(k, c), true); return lost(c) }); err != nil {
				t.Errorf("submit %d: %v", k, err)
			}
		})
	}
	wg.Wait()
	if n := uploads.Load(); n != 1 || b.storedCID != "c2" {
		t.Fatalf("%d uploads, the daemon's CID now %q; want 1 and c2", n, b.storedCID)
	}
	for k := range 8 {
		if _, ok := sent.Load(fmt.Sprint(k, "c2")); !ok {
			if _, first := sent.Load(fmt.Sprint(k, "c1")); first {
				t.Errorf("submit %d heard the 404 and was not sent again with c2", k)
			}
		}
	}
	calls := 0
	err := b.stored(t.Context(), func(string) error { calls++; return &node.APIError{Status: 404, Msg: "unknown job_cid"} })
	var ae *node.APIError
	if !errors.As(err, &ae) || ae.Status != 404 || calls != 2 || uploads.Load() != 2 {
		t.Fatalf("a daemon that always answers 404: err %v after %d sends and %d uploads, want the 404 after 2 and 2", err, calls, uploads.Load())
	}
}
