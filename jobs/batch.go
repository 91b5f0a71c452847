package jobs

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// BatchMaxInput is the largest input sent in a batch; a larger one is a job of its own.
	BatchMaxInput = 64 << 10
	// batchPending is how many batch requests, over all peers, a worker reads at once: each
	// may be MaxBatchRequest bytes, against a job header's 4 KiB.
	batchPending = 8
)

// BatchDone hears of each job of a batch as it is decided: the index of its input, its
// report and its error, as Submit returns them. It is called from several goroutines.
type BatchDone func(i int, rep *Report, err error)

// SubmitBatch runs req's binary on every one of inputs (req.Input is ignored), each a job
// with R replicas and its own quorum, and calls done for each. An unset output limit is
// protocol.MaxBatchOutput; with a larger one, or for an input above BatchMaxInput, jobs are
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
	defer j.release()
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
		if len(in) <= BatchMaxInput && j.Limits.MaxOutput <= protocol.MaxBatchOutput {
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
	// Each chunk draws its own workers, so that the chunks of a batch spread over the grid,
	// from its own copies of the candidates: weigh writes them while other chunks pick.
	cs := make([]*candidate, len(cands))
	for k, c := range cands {
		cc := *c
		cs[k] = &cc
	}
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
	// The chunk's jobs, each input hashed once for every replica's check and its dispatch.
	ins := make([]*job, len(idx))
	for k, i := range idx {
		ins[k] = j.with(inputs[i])
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
		i, ji := idx[k], ins[k]
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
				s.runBatch(bctx, c, ins, func(k int, a attempt) {
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

// runBatch sends jobs (one binary's, j.with each input) to c as one batch and tells got of each job's attempt,
// in order, as it comes, once each. A refused or failed batch is that refusal or failure
// for each of the jobs it did not answer for.
func (s *Submitter) runBatch(ctx context.Context, c *candidate, jobs []*job, got func(k int, a attempt)) {
	j := jobs[0] // the binary and limits all share
	p := c.offer.Peer
	base := attempt{Replica: Replica{Worker: p, Anchor: c.anchor, Prefix: c.prefix}}
	failed := func(k int, refused bool, err error) {
		a := base
		a.refused, a.Err = refused, err
		got(k, a)
	}
	fail := func(from int, refused bool, err error) {
		for k := from; k < len(jobs); k++ {
			failed(k, refused, err)
		}
	}
	req := &protocol.BatchRequest{
		JobCid:     j.jobCID.Bytes(),
		BinarySize: uint64(len(j.Binary)),
		Arch:       j.arch,
		Limits:     protocol.WireLimits(j.Limits),
		Items:      make([]*protocol.BatchItem, len(jobs)),
	}
	for k, jk := range jobs {
		req.Items[k] = &protocol.BatchItem{Input: jk.Input, Nonce: newNonce()}
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
	// Results with a receipt wait here for their seal, which comes on a later result (a
	// failure's too), or alone in a frame before the next result.
	type unsealed struct {
		k   int
		res *protocol.BatchResult
	}
	var pending []unsealed
	pendingOut := 0
	failPending := func(err error) {
		for _, u := range pending {
			failed(u.k, false, err)
		}
		pending, pendingOut = nil, 0
	}
	// unseal judges the results pending under the seal env, which must be p's and name
	// exactly their receipts, in order.
	unseal := func(env []byte) {
		seal, err := protocol.OpenSeal(env)
		switch {
		case err != nil:
		case seal.Worker != p:
			err = fmt.Errorf("sealed by %s", seal.Worker)
		case len(seal.Leaves) != len(pending):
			err = fmt.Errorf("a seal of %d receipts for %d results", len(seal.Leaves), len(pending))
		}
		for i, u := range pending {
			a := base
			a.Receipt, a.Reason = protocol.BatchReceipt(env, u.res.Receipt), protocol.Clean(u.res.Reason, protocol.MaxReason)
			ierr := err
			var r *protocol.Receipt
			if ierr == nil && len(a.Receipt) > protocol.MaxEnvelope { // one OpenReceipt would refuse
				ierr = fmt.Errorf("%w: batch receipt of %d bytes", protocol.ErrTooLarge, len(a.Receipt))
			}
			if ierr == nil {
				r, ierr = seal.Open(i, u.res.Receipt)
			}
			if ierr == nil {
				ierr = checkReceipted(r, req.Items[u.k].Nonce, jobs[u.k], cids.Sum(u.res.Output), u.res.Stderr)
			}
			if ierr != nil {
				a.Err = fmt.Errorf("%w: %w", ErrBadReceipt, ierr)
			} else {
				a.Verdict, a.CPU, a.Wall, a.ReceiptValid = verdictOf(r), r.CPU, r.Wall, true
				a.output, a.stderr = u.res.Output, u.res.Stderr
			}
			got(u.k, a)
		}
		pending, pendingOut = nil, 0
	}
	for k := range jobs {
		// The first result waits for the binary too.
		d := wall + protocol.ReplyTimeout
		if k == 0 {
			d += protocol.FetchTimeout
		}
		protocol.SetDeadline(st, d)
		var res protocol.BatchResult
		read := func() error {
			res.Reset()
			err := protocol.ReadMsg(st, &res, protocol.MaxBatchResult)
			if err == nil {
				err = res.Check(k)
			}
			return err
		}
		err := read()
		// A seal alone, sent while job k runs, for the results held: once, then job k's
		// result, within the one deadline.
		if err == nil && res.SealOnly() {
			if len(pending) == 0 {
				err = fmt.Errorf("%w: a seal frame with no result awaiting a seal", protocol.ErrBadRequest)
			} else {
				unseal(res.Seal)
				if err = read(); err == nil && res.SealOnly() {
					err = fmt.Errorf("%w: two seal frames in a row", protocol.ErrBadRequest)
				}
			}
		}
		if err == nil && res.Code == protocol.Code_OK && (len(pending) == protocol.MaxUnsealed || pendingOut+len(res.Output) > protocol.MaxUnsealedOutput) {
			err = fmt.Errorf("%w: more results awaiting a seal than the protocol allows", protocol.ErrBadRequest)
		}
		if err != nil {
			st.Reset()
			if ctx.Err() != nil {
				err = fmt.Errorf("cancelled: %w", ctx.Err())
			} else {
				err = fmt.Errorf("failed: %w", err)
			}
			failPending(err)
			fail(k, false, err)
			return
		}
		if err := res.Err(); err != nil {
			a := base
			if errors.Is(err, ErrRejected) {
				a.Err = fmt.Errorf("%w: %w", ErrRefused, err)
			} else {
				a.Err = fmt.Errorf("failed: %w", err)
			}
			got(k, a)
		} else {
			pending = append(pending, unsealed{k, &res})
			pendingOut += len(res.Output)
		}
		if len(res.Seal) > 0 && len(pending) > 0 {
			unseal(res.Seal)
		}
	}
	failPending(fmt.Errorf("%w: the batch ended without sealing its receipt", ErrBadReceipt))
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
		w.unreadable(s, err, stop, log)
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
	out := &batchOut{w: w, s: s, log: log}
	// Results not sealed when the batch ends (the submitter gone, the stream lost) reached
	// the submitter without a signature: their job events say so.
	defer func() { out.close(cmp.Or(w.ctx.Err(), ctx.Err(), errUnsealed)) }()
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
		var item *sealItem // a job that ran: its event waits for its receipt's seal
		if ierr = cmp.Or(w.ctx.Err(), ctx.Err(), ierr); ierr != nil {
			if ctx.Err() == nil || isp.ran {
				w.jobEvent(&isp, started, nil, ierr)
			}
		} else {
			item = &sealItem{isp, started}
		}
		if ctx.Err() != nil {
			break
		}
		if ierr != nil {
			code, msg := protocol.Refusal(ierr)
			res = &protocol.BatchResult{Code: code, Message: msg}
		}
		held += int64(len(res.Output))
		last := i == len(req.Items)-1
		if last {
			release() // before the last result, as for a job
		}
		if !out.send(res, item, last, time.Since(started)) {
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
			w.abandons.Take(from, time.Now())
		}
		s.Reset()
		return
	}
	s.Close()
}

// batchOut writes a batch's results, in order, and seals the receipts of those written:
// with the result that makes a seal due (send), or, once the first result written without
// one has waited sealWait, from a timer, in a frame of the seal alone sent while the next
// job runs, so that quick results are not held behind a slow job. A seal covers only
// results already written, each job's result and its place among them being decided under
// the lock that writes. A job's event is told once its seal is written: with its receipt,
// or with an error if the seal never went out.
type batchOut struct {
	w   *Worker
	s   network.Stream
	log *slog.Logger

	mu       sync.Mutex // all below, and writes to s
	sent     int        // results written: the next one's index
	closed   bool
	timer    *time.Timer
	held     []sealItem // jobs whose results were written without a seal
	payloads [][]byte   // their receipts' payloads
	output   int        // bytes of their outputs
	first    time.Time  // when the first of them was written
}

type sealItem struct {
	sp      spec
	started time.Time
}

// sealWait is how long a written result waits for its seal at most: what a batch's quick
// results lose against being signed one by one. A variable for tests.
var sealWait = 20 * time.Millisecond

var errUnsealed = errors.New("the batch ended before the result was sealed")

// send writes res, the next result; item is its job if it ran (res carries its receipt's
// payload). The results held and res are sealed with it when that is due: after the
// batch's last job, every MaxUnsealed results, once their outputs reach MaxBatchOutput,
// and once the first has waited sealWait or the job took that long. False means the
// stream is gone (reset).
func (o *batchOut) send(res *protocol.BatchResult, item *sealItem, last bool, took time.Duration) bool {
	o.mu.Lock()
	if item != nil {
		o.held, o.payloads = append(o.held, *item), append(o.payloads, res.Receipt)
		o.output += len(res.Output)
		if len(o.held) == 1 {
			o.first = time.Now()
		}
	}
	var sealed sealed
	if len(o.held) > 0 && (last || len(o.held) >= protocol.MaxUnsealed || o.output >= protocol.MaxBatchOutput ||
		took >= sealWait || time.Since(o.first) >= sealWait) {
		sealed = o.seal()
		res.Seal = sealed.env
	}
	res.Index = uint32(o.sent)
	err := sealed.err
	if err == nil {
		protocol.SetDeadline(o.s, protocol.ReplyTimeout)
		err = o.write(res)
	}
	if err == nil && len(o.held) > 0 && o.timer == nil {
		o.timer = time.AfterFunc(sealWait, o.flush)
	}
	o.mu.Unlock()
	o.told(sealed, unsealedBy(err))
	return err == nil
}

// flush seals the results held, if any, in a frame of the seal alone (its index the next
// result's), while a job runs. It sets the write deadline only: the read side, watched for
// the submitter leaving, keeps the run's.
func (o *batchOut) flush() {
	o.mu.Lock()
	if o.closed || len(o.held) == 0 {
		o.mu.Unlock()
		return
	}
	sealed := o.seal()
	err := sealed.err
	if err == nil {
		o.s.SetWriteDeadline(time.Now().Add(protocol.ReplyTimeout))
		err = o.write(&protocol.BatchResult{Index: uint32(o.sent), Seal: sealed.env})
	}
	o.mu.Unlock()
	o.told(sealed, unsealedBy(err))
}

// write writes m, or resets the stream. Preconditions: mu is held.
func (o *batchOut) write(m *protocol.BatchResult) error {
	err := protocol.WriteMsg(o.s, m)
	if err != nil {
		o.s.Reset()
	} else if !m.SealOnly() {
		o.sent++
	}
	return err
}

// sealed is a seal made of the results held, and the jobs it covers.
type sealed struct {
	items    []sealItem
	env      []byte   // the seal
	receipts [][]byte // each job's batch receipt
	err      error
}

// seal seals the results held and hands them over: they are no longer held. Preconditions:
// mu is held.
func (o *batchOut) seal() sealed {
	s := sealed{items: o.held}
	s.env, s.receipts, s.err = protocol.SealReceipts(o.payloads, o.w.key)
	if s.err != nil {
		o.log.Warn("batch receipts not sealed", "err", s.err)
		o.s.Reset()
	}
	o.forget()
	return s
}

// told tells the job events of s: each with its receipt, or err if it was not sealed.
func (o *batchOut) told(s sealed, err error) {
	for k := range s.items {
		if err != nil {
			o.w.jobEvent(&s.items[k].sp, s.items[k].started, nil, err)
		} else {
			o.w.jobEvent(&s.items[k].sp, s.items[k].started, &protocol.JobResult{Receipt: s.receipts[k]}, nil)
		}
	}
}

// unsealedBy is the job events' error for results whose seal failed with err (nil: none).
func unsealedBy(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %v", errUnsealed, err)
}

func (o *batchOut) forget() {
	if o.timer != nil {
		o.timer.Stop()
	}
	o.timer, o.held, o.payloads, o.output = nil, nil, nil, 0
}

// close ends the batch's writes: the results still held will not be sealed, and their job
// events tell err.
func (o *batchOut) close(err error) {
	o.mu.Lock()
	o.closed = true
	s := sealed{items: o.held}
	o.forget()
	o.mu.Unlock()
	o.told(s, err)
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

// runItem runs one job of a batch with the batch's binary; the result's receipt is the
// receipt's payload, to be sealed with others (handleBatch).
func (w *Worker) runItem(ctx context.Context, sp *spec, bin, input []byte) (*protocol.BatchResult, error) {
	sp.ran = true
	r, err := w.cfg.Runner.Run(ctx, sandbox.Job{Binary: bin, Stdin: bytes.NewReader(input), CID: sp.jobCID}, sp.lim)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, protocol.Errorf(protocol.Code_INTERNAL, "run: %v", err)
	}
	stderr, rc, err := w.conclude(sp, r)
	if err != nil {
		return nil, err
	}
	receipt, err := rc.MarshalRecord()
	if err != nil {
		return nil, protocol.Errorf(protocol.Code_INTERNAL, "receipt: %v", err)
	}
	return &protocol.BatchResult{
		Reason:  protocol.Clean(r.Reason, protocol.MaxReason),
		Output:  r.Output,
		Stderr:  stderr,
		Receipt: receipt,
	}, nil
}

// conclude checks what the runner returned for sp; it returns the stderr to send (at most
// MaxStderr) and the receipt to sign, and records the verdict in sp.
func (w *Worker) conclude(sp *spec, r sandbox.Result) (stderr []byte, receipt *protocol.Receipt, err error) {
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
	receipt = &protocol.Receipt{
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
	}
	sp.verdict, sp.cpu, sp.wall = v, r.CPUTime, r.WallTime
	return stderr, receipt, nil
}
