package jobs

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// Batches: one binary, many small inputs, each input its own verified job. A batch goes to R
// workers on one stream each (protocol.BatchID), and each worker runs the inputs one after
// another in one slot, returning each job's output with its own signed receipt, so that
// every job is judged exactly as if it had been sent alone: the replicas a batch brings are
// the first votes of each job's usual dispatch, which sends more replicas, one job at a
// time, to the jobs they did not settle. What a batch saves is everything but the runs and
// the receipts: streams, admissions, offers, the binary's checks and image.

// Batch sizes. A chunk is what one batch stream carries; at most batchParallel chunks of
// one SubmitBatch are out at once (each on R workers; fewer when the workers' offers show
// fewer free slots), and batchSettle jobs of it are being settled at once (most take no
// time: their batch replicas agree).
const (
	batchChunk    = 64
	batchParallel = 16
	batchSettle   = 32
	// batchMaxInput is the largest input sent in a batch; a larger one is a job of its own.
	batchMaxInput = 64 << 10
	// batchPending is how many batch requests, over all peers, a worker reads at once: each
	// may be MaxBatchRequest bytes, against a job header's 4 KiB.
	batchPending = 8
)

// BatchDone hears of each job of a batch as it is decided: the index of its input, its
// report and its error, as Submit returns them. It is called from several goroutines.
type BatchDone func(i int, rep *Report, err error)

// SubmitBatch runs req's binary on every one of inputs (req.Input is ignored), each a job
// with R replicas and its own quorum, and calls done for each. An unset output limit is
// protocol.MaxBatchOutput; with a larger one, or for an input above batchMaxInput, jobs are
// submitted one by one as by Submit. The error is for what stops the whole batch before any
// job is sent (a binary the sandbox refuses, no workers, no anchor); done is then not
// called.
func (s *Submitter) SubmitBatch(ctx context.Context, req Request, inputs [][]byte, done BatchDone) error {
	req.Input = nil
	req.Adaptive = false // a batch is replicated: its point is many jobs, not fewer replicas
	if req.Limits.MaxOutput == 0 {
		req.Limits.MaxOutput = protocol.MaxBatchOutput
	}
	j, err := s.prepare(ctx, req)
	if err != nil {
		return err
	}
	cands, err := s.workers(ctx, j, nil)
	if err != nil {
		return err
	}
	if !j.VerifyLocal && !slices.ContainsFunc(cands, func(c *candidate) bool { return c.anchor != "" }) {
		return noTrust(len(cands))
	}
	defer func() {
		if err := s.records.Save(); err != nil {
			s.log.Warn("worker records not saved", "err", err)
		}
	}()
	var held atomic.Int64 // the inputs and the outputs received, for the node's memory policy
	held.Store(int64(len(req.Binary)))
	for _, in := range inputs {
		held.Add(int64(len(in)))
	}
	if s.cfg.Events.Released != nil {
		defer func() { s.cfg.Events.Released(held.Load()) }()
	}
	var batched, single []int
	for i, in := range inputs {
		if len(in) <= batchMaxInput && j.Limits.MaxOutput <= protocol.MaxBatchOutput {
			batched = append(batched, i)
		} else {
			single = append(single, i)
		}
	}
	finish := func(i int, rep *Report, err error) {
		if rep != nil {
			held.Add(int64(len(rep.Output) * len(rep.Replicas)))
		}
		if s.cfg.Events.Submitted != nil {
			s.cfg.Events.Submitted(rep, err)
		}
		done(i, rep, err)
	}
	settle := make(chan struct{}, batchSettle)
	var wg sync.WaitGroup
	for _, i := range single {
		settle <- struct{}{}
		wg.Go(func() {
			defer func() { <-settle }()
			r := req
			r.Input = inputs[i]
			rep, err := s.Submit(ctx, r)
			done(i, rep, err) // Submit told the events
		})
	}
	// Twice as many chunks at once as the workers' offers have slots for this submitter, R
	// each: a worker queues one chunk per slot behind the running one (take), which starts
	// the moment the first ends instead of a round trip later; more would be refused.
	free := 0
	for _, c := range cands {
		free += c.offer.SlotsFree
	}
	chunks := make(chan struct{}, min(batchParallel, max(1, 2*free/j.Replicas)))
	var sizer chunkSizer
	var load batchLoad
	for len(batched) > 0 && ctx.Err() == nil {
		n, bytes, max := 0, 0, sizer.size()
		for n < len(batched) && n < max && bytes+len(inputs[batched[n]])+128 <= protocol.MaxBatchRequest-4<<10 {
			bytes += len(inputs[batched[n]]) + 128
			n++
		}
		idx := batched[:n]
		batched = batched[n:]
		chunks <- struct{}{}
		wg.Go(func() {
			defer func() { <-chunks }()
			start := time.Now()
			s.runChunk(ctx, j, cands, inputs, idx, &load, settle, finish)
			sizer.ran(len(idx), time.Since(start))
		})
	}
	wg.Wait()
	for _, i := range batched { // not sent: ctx ended
		finish(i, &Report{JobCID: j.jobCID, InputCID: cids.Sum(inputs[i])}, fmt.Errorf("submit: %w", ctx.Err()))
	}
	return nil
}

// chunkSizer says how many jobs the next chunk carries. Jobs of a chunk run one after
// another in one slot, so a chunk of long jobs would run them one at a time where single
// submits run as many at once as there are slots: a batch starts with chunks of
// chunkFirst and doubles them, up to batchChunk, while its chunks' jobs take less than
// chunkQuick each, and halves them, down to 1, while they take more than chunkSlow.
type chunkSizer struct {
	mu sync.Mutex
	n  int
}

const (
	chunkFirst = 4
	chunkQuick = 20 * time.Millisecond
	chunkSlow  = 200 * time.Millisecond
)

func (c *chunkSizer) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		c.n = chunkFirst
	}
	return c.n
}

// ran notes that a chunk of n jobs took d.
func (c *chunkSizer) ran(n int, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch each := d / time.Duration(max(n, 1)); {
	case each < chunkQuick:
		c.n = min(2*c.n, batchChunk)
	case each > chunkSlow:
		c.n = max(c.n/2, 1)
	}
}

// runChunk sends the jobs of inputs at idx as one batch to R workers drawn from cands, and
// settles each job (dispatch, seeded with the votes they brought) as soon as every one of
// them has answered for it.
func (s *Submitter) runChunk(ctx context.Context, j *job, cands []*candidate, inputs [][]byte, idx []int, load *batchLoad, settle chan struct{}, finish BatchDone) {
	// Each chunk draws its own workers, so that the chunks of a batch spread over the grid.
	cs := slices.Clone(cands)
	s.weigh(cs, j)
	distinct := !j.SamePrefix
	sent, prefixes := map[peer.ID]bool{}, map[string]bool{}
	var picked []*candidate
	for range j.Replicas {
		c := load.pick(cs, sent, prefixes, true, distinct)
		if c == nil {
			break
		}
		sent[c.offer.Peer], prefixes[c.prefix] = true, true
		picked = append(picked, c)
	}
	ins := make([][]byte, len(idx))
	for k, i := range idx {
		ins[k] = inputs[i]
	}
	var (
		mu      sync.Mutex // sent, prefixes, votes, heard, settled, spares
		votes   = make([][]attempt, len(ins))
		heard   = make([]int, len(ins))  // workers that answered for the job
		settled = make([]bool, len(ins)) // its dispatch started: later answers are not waited for
		spares  []*time.Timer
		wg      sync.WaitGroup
		start   = time.Now()
		left    = len(ins) // jobs not settled
	)
	// Once every job is settled, answers still out are not waited for: a worker sitting on
	// its batch would hold the chunk (and the batch) for its deadlines.
	bctx, stopBatches := context.WithCancel(ctx)
	defer stopBatches()
	defer func() {
		mu.Lock()
		for _, t := range spares {
			t.Stop()
		}
		mu.Unlock()
	}()
	// settleJob starts job k's dispatch with the votes in. Preconditions: mu is held and k
	// is not settled.
	settleJob := func(k int) {
		settled[k] = true
		if left--; left == 0 {
			stopBatches()
		}
		i, ji := idx[k], j.with(ins[k])
		// A worker still sitting on its batch (settled by the spare timer) is not asked
		// for the job again, alone: it counts as a failure here.
		for _, c := range picked {
			if !slices.ContainsFunc(votes[k], func(a attempt) bool { return a.Worker == c.offer.Peer }) {
				late := attempt{Replica: Replica{Worker: c.offer.Peer, Anchor: c.anchor, Prefix: c.prefix}}
				late.Err = fmt.Errorf("failed: its batch gave no answer for the job in %v", time.Since(start).Round(time.Millisecond))
				votes[k] = append(votes[k], late)
			}
		}
		var seeds []attempt
		for _, a := range votes[k] {
			// A refused batch ran nothing there (busy, no batch protocol, a refused
			// binary): the job's dispatch may send it to that worker alone.
			if !a.refused {
				seeds = append(seeds, a)
			}
		}
		votes[k] = nil // the outputs go with the seeds, not held for the rest of the chunk
		wg.Go(func() {
			settle <- struct{}{}
			defer func() { <-settle }()
			rep := &Report{JobCID: ji.jobCID, InputCID: ji.inputCID}
			rep, err := s.dispatch(ctx, ji, cs, rep, seeds...)
			finish(i, rep, err)
		})
	}
	got := func(k int, a attempt) {
		mu.Lock()
		defer mu.Unlock()
		if settled[k] {
			return // settled without it (a spare): its dispatch does not wait for it
		}
		votes[k] = append(votes[k], a)
		heard[k]++
		switch {
		case heard[k] == len(picked):
			settleJob(k)
		case heard[k] == 1:
			// As dispatch's spare replica: a worker that sits on its batch must not hold
			// the job for its deadlines. Once the first answer is in, the others get twice
			// as long again and the slack; then the job is settled with what is in, and its
			// dispatch sends more replicas alone.
			spares = append(spares, time.AfterFunc(2*time.Since(start)+spareSlack, func() {
				mu.Lock()
				defer mu.Unlock()
				if !settled[k] {
					settleJob(k)
				}
			}))
		}
	}
	if len(picked) == 0 {
		mu.Lock()
		for k := range ins {
			settleJob(k)
		}
		mu.Unlock()
	}
	var runs sync.WaitGroup
	for w, c := range picked {
		runs.Go(func() {
			// A worker that refuses the whole batch (busy) is replaced by another, so that
			// the batch is not split into single jobs for want of one slot.
			defer func() { load.done(c) }()
			for tries := 0; ; tries++ {
				var held []attempt // a busy refusal of the whole batch, kept back
				s.runBatch(bctx, c, j, ins, func(k int, a attempt) {
					if k == 0 && a.refused && errors.Is(a.Err, protocol.ErrBusy) && tries < batchRetries && bctx.Err() == nil {
						held = append(held, a)
						return
					}
					if held != nil {
						held = append(held, a)
						return
					}
					got(k, a)
				})
				if held == nil {
					return
				}
				s.dropOffer(c.offer.Peer)
				mu.Lock()
				next := load.pick(cs, sent, prefixes, c.anchor != "", distinct)
				if next != nil {
					sent[next.offer.Peer], prefixes[next.prefix] = true, true
					load.done(c)
					c, picked[w] = next, next
				}
				mu.Unlock()
				if next == nil {
					for k, a := range held {
						got(k, a)
					}
					return
				}
			}
		})
	}
	runs.Wait()
	wg.Wait()
}

// batchLoad counts one SubmitBatch's batch streams per worker, so that its chunks go where
// the worker takes them: at most twice the slots its offer showed this submitter, one
// running and one queued behind it each.
type batchLoad struct {
	mu sync.Mutex
	n  map[peer.ID]int
}

// pick is pick among the candidates with room for one more batch stream, else among all,
// and counts the stream.
func (l *batchLoad) pick(cs []*candidate, sent map[peer.ID]bool, prefixes map[string]bool, wantAnchor, distinct bool) *candidate {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil {
		l.n = make(map[peer.ID]int)
	}
	full := maps.Clone(sent)
	for _, c := range cs {
		if l.n[c.offer.Peer] >= 2*max(1, c.offer.SlotsFree) {
			full[c.offer.Peer] = true
		}
	}
	c := pick(cs, full, prefixes, wantAnchor, distinct)
	if c == nil {
		c = pick(cs, sent, prefixes, wantAnchor, distinct)
	}
	if c != nil {
		l.n[c.offer.Peer]++
	}
	return c
}

// done ends a batch stream counted by pick.
func (l *batchLoad) done(c *candidate) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[c.offer.Peer]--; l.n[c.offer.Peer] <= 0 {
		delete(l.n, c.offer.Peer)
	}
}

// batchRetries is how many other workers a batch refused as busy is offered to.
const batchRetries = 4

// with returns a copy of j for the input in: a job of a batch.
func (j *job) with(in []byte) *job {
	ji := *j
	ji.Input, ji.inputCID, ji.inline = in, cids.Sum(in), true
	return &ji
}

// runBatch sends the jobs of inputs to c as one batch and tells got of each job's attempt,
// in order, as it comes, once each. A refused or failed batch is that refusal or failure
// for each of the jobs it did not answer for.
func (s *Submitter) runBatch(ctx context.Context, c *candidate, j *job, inputs [][]byte, got func(k int, a attempt)) {
	p := c.offer.Peer
	base := attempt{Replica: Replica{Worker: p, Anchor: c.anchor, Prefix: c.prefix}}
	fail := func(from int, refused bool, err error) {
		for k := from; k < len(inputs); k++ {
			a := base
			a.refused, a.Err = refused, err
			got(k, a)
		}
	}
	req := &protocol.BatchRequest{
		JobCid:     j.jobCID.Bytes(),
		BinarySize: uint64(len(j.Binary)),
		Arch:       j.arch,
		Limits:     protocol.WireLimits(j.Limits),
		Items:      make([]*protocol.BatchItem, len(inputs)),
	}
	for k, in := range inputs {
		req.Items[k] = &protocol.BatchItem{Input: in, Nonce: newNonce()}
	}
	// A worker that does not speak the batch protocol, or refuses the batch, gets the jobs
	// one by one (or later, if busy).
	st, err := s.request(ctx, p, protocol.BatchID, req)
	if err != nil {
		fail(0, true, err)
		return
	}
	defer context.AfterFunc(ctx, func() { st.Reset() })()
	defer s.live.watch(context.WithoutCancel(ctx), nil, s.cfg.Host, s.log, p, func() { st.Reset() })()
	wall := stretched(cmp.Or(j.Limits.Wall, sandbox.DefaultLimits().Wall), c.offer.WallStretch)
	base.Prefix = netPrefix(st.Conn().RemoteMultiaddr(), p)
	for k := range inputs {
		// The first result waits for the binary too.
		d := wall + protocol.ReplyTimeout
		if k == 0 {
			d += protocol.FetchTimeout
		}
		protocol.SetDeadline(st, d)
		var res protocol.BatchResult
		err := protocol.ReadMsg(st, &res, protocol.MaxBatchResult)
		if err == nil {
			err = res.Check(k)
		}
		if err != nil {
			st.Reset()
			if ctx.Err() != nil {
				err = fmt.Errorf("cancelled: %w", ctx.Err())
			} else {
				err = fmt.Errorf("failed: %w", err)
			}
			fail(k, false, err)
			return
		}
		a := base
		if err := res.Err(); err != nil {
			if errors.Is(err, ErrRejected) {
				a.Err = fmt.Errorf("%w: %w", ErrRefused, err)
			} else {
				a.Err = fmt.Errorf("failed: %w", err)
			}
			got(k, a)
			continue
		}
		a.Receipt, a.Reason = res.Receipt, protocol.Clean(res.Reason, protocol.MaxReason)
		r, err := checkReceipt(res.Receipt, p, req.Items[k].Nonce, j.with(inputs[k]), cids.Sum(res.Output), res.Stderr)
		if err != nil {
			a.Err = fmt.Errorf("%w: %w", ErrBadReceipt, err)
		} else {
			a.Verdict, a.CPU, a.Wall, a.ReceiptValid = verdictOf(r), r.CPU, r.Wall, true
			a.output, a.stderr = res.Output, res.Stderr
		}
		got(k, a)
	}
	st.Close()
}

// handleBatch runs the batch protocol: request, admission (once, for every job of the batch,
// into one slot), the binary (once), then each job's run and result in turn. As on a job
// stream, the submitter's side ending before the last result cancels what is left.
func (w *Worker) handleBatch(s network.Stream) {
	from := s.Conn().RemotePeer()
	log := w.log.With("peer", from)
	ps, ok := w.enter(from, s)
	if !ok {
		log.Debug("batch stream refused: too many unjudged requests from the peer")
		s.Reset()
		return
	}
	w.batchHeaders.enter(s)
	stop := context.AfterFunc(w.ctx, func() { s.Reset() })
	protocol.SetDeadline(s, protocol.HeaderTimeout)
	var req protocol.BatchRequest
	err := protocol.ReadMsg(s, &req, protocol.MaxBatchRequest)
	w.leave(ps)
	w.batchHeaders.leave(s)
	if err == nil {
		err = req.Check()
	}
	if err != nil {
		log.Debug("batch request", "err", err)
		if errors.Is(err, protocol.ErrTooLarge) || errors.Is(err, protocol.ErrBadRequest) {
			w.refuse(s, err)
		} else {
			s.Reset()
		}
		stop()
		return
	}
	lim := req.Limits
	if lim.GetOutput() == 0 { // unset: a batch's most, not a job's default (16 MiB)
		lim = proto.CloneOf(lim)
		if lim == nil {
			lim = &protocol.Limits{}
		}
		lim.Output = protocol.MaxBatchOutput
	}
	sp, err := w.admit(&protocol.JobRequest{JobCid: req.JobCid, Limits: lim, BinarySize: req.BinarySize, Arch: req.Arch, Nonce: req.Items[0].Nonce}, from)
	if err == nil && sp.lim.MaxOutput > protocol.MaxBatchOutput {
		err = protocol.Errorf(protocol.Code_LIMITS, "output limit %d above a batch's %d", sp.lim.MaxOutput, protocol.MaxBatchOutput)
	}
	for i, it := range req.Items {
		if err == nil && int64(len(it.Input)) > w.cfg.MaxInput {
			err = protocol.Errorf(protocol.Code_TOO_LARGE, "input %d of %d bytes, limit %d", i, len(it.Input), w.cfg.MaxInput)
		}
	}
	release, unprotect, ok := w.seat(s, from, err, stop, log)
	if !ok {
		return
	}
	defer release()
	defer unprotect()
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	paused := w.pause.jobs()
	defer context.AfterFunc(paused, cancel)()
	defer w.live.watch(w.ctx, &w.wg, w.cfg.Host, w.log, from, cancel)()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		defer cancel()
		var b [1]byte
		if err := readByte(s, b[:]); err == nil {
			log.Debug("batch stream", "err", fmt.Errorf("%w: bytes after the request", protocol.ErrBadRequest))
		}
	}()
	defer func() { <-watched }()
	defer context.AfterFunc(w.ctx, func() { s.Reset() })()

	log.Debug("batch admitted", "job", sp.jobCID, "jobs", len(req.Items))
	held := sp.binSize // the binary, the request's inputs and the outputs made: the node's memory policy
	for _, it := range req.Items {
		held += int64(len(it.Input))
	}
	defer func() {
		if w.cfg.Events.Released != nil {
			w.cfg.Events.Released(held)
		}
	}()
	defer w.cfg.Store.Pin(sp.jobCID)()
	bin, err := w.binary(ctx, sp)
	if err != nil {
		err = fmt.Errorf("binary: %w", err)
	} else if verr := w.cfg.Validate(bin, sp.lim); verr != nil {
		err = rejected(verr.Error())
	}
	ran := false
	for i, it := range req.Items {
		isp := *sp
		isp.nonce, isp.inputCID, isp.inputSize = it.Nonce, cids.Sum(it.Input), int64(len(it.Input))
		started := time.Now()
		var res *protocol.BatchResult
		ierr := cmp.Or(ctx.Err(), err)
		if ierr == nil {
			protocol.SetDeadline(s, w.stretchWall(sp.lim.Wall)+protocol.ReplyTimeout)
			ran = true
			res, ierr = w.runItem(ctx, &isp, bin, it.Input)
		}
		var ev *protocol.JobResult
		if res != nil {
			ev = &protocol.JobResult{Receipt: res.Receipt}
		}
		if ctx.Err() == nil || isp.ran {
			w.jobEvent(&isp, started, ev, cmp.Or(w.ctx.Err(), ctx.Err(), ierr))
		}
		if ctx.Err() != nil {
			break
		}
		if ierr != nil {
			code, msg := protocol.Refusal(ierr)
			res = &protocol.BatchResult{Code: code, Message: msg}
		}
		res.Index = uint32(i)
		held += int64(len(res.Output))
		if i == len(req.Items)-1 {
			release() // before the last result, as for a job
		}
		protocol.SetDeadline(s, protocol.ReplyTimeout)
		if err := protocol.WriteMsg(s, res); err != nil {
			s.Reset()
			return
		}
	}
	switch {
	case w.ctx.Err() != nil || paused.Err() != nil:
		s.Reset() // the submitter reads a failure for each job left and sends them elsewhere
		return
	case ctx.Err() != nil:
		log.Info("batch cancelled: submitter gone", "job", sp.jobCID)
		if !ran {
			w.abandons.take(from, time.Now())
		}
		s.Reset()
		return
	}
	s.Close()
}

// headerGate bounds the batch requests being read, at most batchPending: when it is full
// the one read longest is reset to make room, as for job headers (enter), so that peers
// that open batch streams and send nothing cannot keep an honest batch out.
type headerGate struct {
	mu      sync.Mutex
	pending map[network.Stream]time.Time
}

func (g *headerGate) enter(s network.Stream) {
	g.mu.Lock()
	if g.pending == nil {
		g.pending = make(map[network.Stream]time.Time)
	}
	var oldest network.Stream
	if len(g.pending) >= batchPending {
		var at time.Time
		for o, t := range g.pending {
			if oldest == nil || t.Before(at) {
				oldest, at = o, t
			}
		}
		delete(g.pending, oldest)
	}
	g.pending[s] = time.Now()
	g.mu.Unlock()
	if oldest != nil {
		oldest.Reset() // its handler fails to read the request and returns
	}
}

// size is how many batch requests are being read.
func (g *headerGate) size() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pending)
}

func (g *headerGate) leave(s network.Stream) {
	g.mu.Lock()
	delete(g.pending, s)
	g.mu.Unlock()
}

// runItem runs one job of a batch with the batch's binary and seals its receipt.
func (w *Worker) runItem(ctx context.Context, sp *spec, bin, input []byte) (*protocol.BatchResult, error) {
	sp.ran = true
	r, err := w.cfg.Runner.Run(ctx, sandbox.Job{Binary: bin, Stdin: bytes.NewReader(input)}, sp.lim)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, protocol.Errorf(protocol.Code_INTERNAL, "run: %v", err)
	}
	stderr, receipt, err := w.conclude(sp, r)
	if err != nil {
		return nil, err
	}
	return &protocol.BatchResult{
		Reason:  protocol.Clean(r.Reason, protocol.MaxReason),
		Output:  r.Output,
		Stderr:  stderr,
		Receipt: receipt,
	}, nil
}

// conclude checks what the runner returned for sp and seals its receipt; it returns the
// stderr to send (at most MaxStderr) and the receipt, and records the verdict in sp.
func (w *Worker) conclude(sp *spec, r sandbox.Result) (stderr, receipt []byte, err error) {
	if r.Status == sandbox.StatusRejected { // refused by a check past Validate (the patched image's)
		return nil, nil, rejected(r.Reason)
	}
	if int64(len(r.Output)) > sp.lim.MaxOutput {
		return nil, nil, protocol.Errorf(protocol.Code_INTERNAL, "runner returned %d bytes of output, limit %d", len(r.Output), sp.lim.MaxOutput)
	}
	status := protocol.Clean(string(r.Status), protocol.MaxText)
	if status == "" {
		return nil, nil, protocol.Errorf(protocol.Code_INTERNAL, "runner returned no status")
	}
	stderr = r.Stderr[:min(len(r.Stderr), protocol.MaxStderr)]
	w.log.Info("job done", "peer", sp.from, "job", sp.jobCID, "status", status, "exit_code", r.ExitCode, "signal", r.Signal)
	// Each of output and stderr is hashed once: the verdict is what the receipt states.
	v := Verdict{OutputCID: outputCID(r), StderrCID: cids.Sum(stderr), Status: status, ExitCode: r.ExitCode, Signal: protocol.Clean(r.Signal, protocol.MaxText)}
	receipt, err = protocol.SealReceipt(&protocol.Receipt{
		JobCID:    sp.jobCID,
		InputCID:  sp.inputCID,
		OutputCID: v.OutputCID,
		StderrCID: v.StderrCID,
		Status:    v.Status,
		ExitCode:  v.ExitCode,
		Signal:    v.Signal,
		CPU:       r.CPUTime,
		Wall:      r.WallTime,
		Worker:    w.cfg.Host.ID(),
		Nonce:     sp.nonce,
	}, w.key)
	if err != nil {
		return nil, nil, protocol.Errorf(protocol.Code_INTERNAL, "%v", err)
	}
	sp.verdict, sp.cpu, sp.wall = v, r.CPUTime, r.WallTime
	return stderr, receipt, nil
}
