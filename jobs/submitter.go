package jobs

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/store"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Request is one job to run on the grid.
type Request struct {
	Binary []byte // the job's ELF file; the submitter stores and serves it
	Input  []byte // the job's stdin
	// Limits bound each run; unset fields take each worker's defaults (a worker fills
	// them, the one layer that does).
	Limits sandbox.Limits
	// Replicas is how many workers run the job at first (R); 0 means 2.
	Replicas int
	// Quorum is how many replicas must agree on a Verdict (Q), at most Replicas; 0 means
	// Replicas.
	Quorum int
	// MaxReplicas bounds the workers that run the job, retries included, at least
	// Replicas; 0 means 2*Replicas+1. Refusals do not count.
	MaxReplicas int
}

// Settle gives r's unset counts their defaults and reports counts that contradict each
// other; it never adjusts a count that was given.
func (r *Request) Settle() error {
	switch {
	case r.Replicas < 0 || r.Quorum < 0 || r.MaxReplicas < 0:
		return fmt.Errorf("replicas %d, quorum %d, max replicas %d: counts cannot be negative", r.Replicas, r.Quorum, r.MaxReplicas)
	case r.Replicas == 0:
		r.Replicas = 2
	}
	if r.Quorum == 0 {
		r.Quorum = r.Replicas
	}
	if r.MaxReplicas == 0 {
		r.MaxReplicas = 2*r.Replicas + 1
	}
	switch {
	case r.Quorum > r.Replicas:
		return fmt.Errorf("a quorum of %d needs at least %d replicas, not %d: raise the replicas or lower the quorum", r.Quorum, r.Quorum, r.Replicas)
	case r.MaxReplicas < r.Replicas:
		return fmt.Errorf("max replicas %d is below the %d replicas started at first", r.MaxReplicas, r.Replicas)
	}
	return nil
}

// Verdict is what replicas must agree on: the outcome their signed receipts state.
type Verdict struct {
	OutputCID cid.Cid
	StderrCID cid.Cid
	Status    string
	ExitCode  int    // when Status is "exited"
	Signal    string // the fatal signal, when the job was killed
}

func verdictOf(r *protocol.Receipt) Verdict {
	return Verdict{OutputCID: r.OutputCID, StderrCID: r.StderrCID, Status: r.Status, ExitCode: r.ExitCode, Signal: r.Signal}
}

// Outcome says how the job ended in words: "exited 3", "crashed SIGSEGV", "wall_timeout".
func (v Verdict) Outcome() string {
	switch {
	case v.Status == string(sandbox.StatusExited):
		return fmt.Sprintf("%s %d", v.Status, v.ExitCode)
	case v.Signal != "":
		return v.Status + " " + v.Signal
	}
	return v.Status
}

// Replica is what one worker answered.
type Replica struct {
	Worker peer.ID
	// Verdict is what the worker's receipt states (zero without a valid receipt).
	Verdict
	ReceiptValid bool   // the receipt is signed by Worker and matches this job, nonce, output and stderr
	Receipt      []byte // the sealed receipt as received
	CPU, Wall    time.Duration
	Reason       string // the worker's words for how the job ended (not signed)
	// Err is why the replica does not count, nil when it does: a refusal (ErrRefused and
	// the worker's coded error: protocol.ErrBusy, ErrRejected, ...), a failure, a bad
	// receipt (ErrBadReceipt), ErrDisagrees, or ErrNotNeeded.
	Err error
}

// Report is the outcome of a job: the verdict a quorum agreed on, and every replica.
type Report struct {
	JobCID, InputCID cid.Cid
	Verdict                    // accepted; zero without a quorum
	Reason           string    // an agreeing replica's words for how the job ended
	Output, Stderr   []byte    // of an agreeing replica (they agree on both CIDs)
	Replicas         []Replica // every worker asked, in the order they answered
}

// SubmitterConfig configures a Submitter.
type SubmitterConfig struct {
	Host  host.Host
	Store *store.Store // holds the binaries and inputs sent; the node serves it to workers
	// FindWorkers returns candidate workers for jobs of an architecture ("linux/amd64");
	// the submitter skips itself.
	FindWorkers func(ctx context.Context, arch string) ([]peer.AddrInfo, error)
	Logger      *slog.Logger
	// Progress, if set, receives human progress lines.
	Progress func(msg string)
}

// Submitter runs jobs on the grid with replicas and a quorum.
type Submitter struct {
	cfg SubmitterConfig
	log *slog.Logger

	mu        sync.Mutex
	disagreed map[peer.ID]int // local reputation: how often a worker lost a vote

	progressMu sync.Mutex // Progress is called from several goroutines

	ignoreSlots bool // tests: ask workers whose offer shows no free slot, in reputation order
}

// NewSubmitter returns a Submitter. Workers pull the binaries (and inputs too large to go
// inline) from cfg.Store over the blob protocol: the caller serves it on cfg.Host.
func NewSubmitter(cfg SubmitterConfig) (*Submitter, error) {
	if cfg.Host == nil || cfg.Store == nil || cfg.FindWorkers == nil {
		return nil, errors.New("new submitter: Host, Store and FindWorkers are required")
	}
	return &Submitter{cfg: cfg, log: orDiscard(cfg.Logger), disagreed: make(map[peer.ID]int)}, nil
}

func (s *Submitter) progress(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.log.Debug(msg)
	if s.cfg.Progress != nil {
		s.progressMu.Lock()
		defer s.progressMu.Unlock()
		s.cfg.Progress(msg)
	}
}

// job is a prepared request.
type job struct {
	Request
	jobCID, inputCID cid.Cid
	inline           bool
	arch             string
}

// Submit runs req on R workers, more on failure or disagreement up to MaxReplicas, and
// returns the output once Quorum replicas agree. A binary the sandbox would refuse is
// refused here, before anything is sent (ErrRejected, with the sandbox's reason). Without
// a quorum the error wraps ErrNoQuorum (or ErrNoWorkers) and the report still lists every
// replica.
func (s *Submitter) Submit(ctx context.Context, req Request) (*Report, error) {
	j, err := s.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	rep := &Report{JobCID: j.jobCID, InputCID: j.inputCID}
	offers, err := s.workers(ctx, j)
	if err != nil {
		return rep, err
	}
	return s.dispatch(ctx, j, offers, rep)
}

func (s *Submitter) prepare(ctx context.Context, req Request) (*job, error) {
	if err := req.Settle(); err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	if err := req.Limits.Check(); err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	switch {
	case len(req.Binary) == 0:
		return nil, errors.New("submit: empty binary")
	case req.Limits.MaxOutput > protocol.MaxOutput:
		return nil, fmt.Errorf("submit: %w: output limit %d above the protocol's %d", protocol.ErrTooLarge, req.Limits.MaxOutput, protocol.MaxOutput)
	}
	// The same checks a worker makes, so that a file that is not a job never leaves.
	arch, err := sandbox.ArchOf(req.Binary)
	if err == nil {
		err = sandbox.Validate(req.Binary, req.Limits)
	}
	if err != nil {
		return nil, fmt.Errorf("submit: %w: %s", ErrRejected, strings.TrimPrefix(err.Error(), "rejected: "))
	}
	j := &job{Request: req, inline: len(req.Input) <= protocol.MaxInline, arch: arch}
	if j.jobCID, err = s.cfg.Store.Put(ctx, req.Binary); err != nil {
		return nil, fmt.Errorf("submit: store binary: %w", err)
	}
	if j.inline {
		j.inputCID = cids.Sum(req.Input)
	} else if j.inputCID, err = s.cfg.Store.Put(ctx, req.Input); err != nil {
		return nil, fmt.Errorf("submit: store input: %w", err)
	}
	return j, nil
}

// Offer queries. Peer IDs are free and a candidate may accept the stream and never answer,
// so the submitter asks a few candidates at a time, in random order, gives each little
// time, and goes ahead once enough offers fit: 48 silent fakes once held a submit for 30 s
// (16 at a time, 10 s each, waiting for every answer).
const (
	offerQueries      = 8               // candidates asked at once
	offerTimeout      = 2 * time.Second // a whole query, connecting included
	offerReplyTimeout = time.Second     // from opening the stream: a worker answers at once
	// offerGrace is how long the submitter still collects offers once it has enough to
	// start (max(R, Q)) but fewer than it wants (MaxReplicas + R, a margin for refusals).
	offerGrace = time.Second
)

// workers returns the live offers that fit j, best first.
func (s *Submitter) workers(ctx context.Context, j *job) ([]*protocol.Offer, error) {
	found, err := s.cfg.FindWorkers(ctx, j.arch)
	if err != nil {
		return nil, fmt.Errorf("submit: find %s workers: %w", j.arch, err)
	}
	self := s.cfg.Host.ID()
	seen := map[peer.ID]bool{self: true}
	var cands []peer.AddrInfo
	for _, ai := range found {
		if !seen[ai.ID] && ai.ID != "" {
			seen[ai.ID] = true
			cands = append(cands, ai)
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("submit: %w: no %s workers found", ErrNoWorkers, j.arch)
	}
	// A random order, so that where a candidate sits in the DHT's answer buys it nothing.
	mrand.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	s.progress("asking %s for offers", plural(len(cands), "candidate"))
	fit, asked := s.offers(ctx, j, cands)
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("submit: %w", ctx.Err())
	case len(fit) < j.Quorum:
		return nil, fmt.Errorf("submit: %w: a quorum of %d needs %d workers, and %d of %s can take the job", ErrNoWorkers, j.Quorum, j.Quorum, len(fit), plural(asked, "candidate"))
	case len(fit) < j.Replicas:
		s.progress("only %s can take the job, fewer than the %d replicas asked for", plural(len(fit), "worker"), j.Replicas)
	}
	mrand.Shuffle(len(fit), func(a, b int) { fit[a], fit[b] = fit[b], fit[a] })
	s.mu.Lock()
	slices.SortStableFunc(fit, func(a, b *protocol.Offer) int {
		c := cmp.Compare(s.disagreed[a.Peer], s.disagreed[b.Peer])
		if s.ignoreSlots {
			return c
		}
		return cmp.Or(c, cmp.Compare(b.SlotsFree, a.SlotsFree))
	})
	s.mu.Unlock()
	s.progress("%s can take the job", plural(len(fit), "worker"))
	return fit, nil
}

// offers asks cands, in order and offerQueries at a time, for offers that fit j. It returns
// them once it has MaxReplicas + Replicas, once it has max(Replicas, Quorum) and offerGrace
// has passed since, or once every candidate was asked; asked is how many were.
func (s *Submitter) offers(ctx context.Context, j *job, cands []peer.AddrInfo) (fit []*protocol.Offer, asked int) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // queries still in flight are not needed
	need, want := max(j.Replicas, j.Quorum), j.MaxReplicas+j.Replicas
	type answer struct {
		ai  peer.AddrInfo
		o   *protocol.Offer
		err error
	}
	answers := make(chan answer, len(cands)) // late answers after a return do not block
	var grace <-chan time.Time
	inflight, silent := 0, 0
collect:
	for {
		for inflight < offerQueries && asked < len(cands) && len(fit) < want {
			ai := cands[asked]
			asked, inflight = asked+1, inflight+1
			go func() {
				o, err := s.queryOffer(ctx, ai)
				answers <- answer{ai, o, err}
			}()
		}
		if inflight == 0 || len(fit) >= want {
			break
		}
		select {
		case <-grace:
			break collect
		case <-ctx.Done():
			break collect
		case a := <-answers:
			inflight--
			switch {
			case errors.Is(a.err, context.DeadlineExceeded):
				silent++
				s.log.Debug("no offer in time", "peer", a.ai.ID, "err", a.err)
			case a.err != nil:
				s.progress("%s: no offer: %v", short(a.ai.ID), a.err)
			default:
				if why := s.unfit(a.o, j); why != "" {
					s.progress("%s: skipped: %s", short(a.ai.ID), why)
				} else if fit = append(fit, a.o); len(fit) == need {
					grace = time.After(offerGrace)
				}
			}
		}
	}
	if silent > 0 {
		s.progress("%s gave no offer within %v", plural(silent, "candidate"), offerTimeout)
	}
	return fit, asked
}

// queryOffer asks ai for its signed offer, bound to a fresh nonce, within offerTimeout.
func (s *Submitter) queryOffer(ctx context.Context, ai peer.AddrInfo) (*protocol.Offer, error) {
	ctx, cancel := context.WithTimeout(ctx, offerTimeout)
	defer cancel()
	h := s.cfg.Host
	if len(ai.Addrs) > 0 {
		if err := h.Connect(ctx, ai); err != nil {
			return nil, err
		}
	}
	st, err := h.NewStream(ctx, ai.ID, protocol.InfoID)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	protocol.SetDeadline(st, offerReplyTimeout)
	nonce := newNonce()
	var resp protocol.InfoResponse
	err = protocol.WriteMsg(st, &protocol.InfoRequest{Nonce: nonce})
	if err == nil {
		st.CloseWrite()
		err = protocol.ReadMsg(st, &resp, protocol.MaxControlMsg)
	}
	if err == nil {
		err = resp.Err()
	}
	if err != nil {
		st.Reset()
		if os.IsTimeout(err) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %v", context.DeadlineExceeded, err)
		}
		return nil, err
	}
	st.Close()
	o, signer, err := protocol.OpenOffer(resp.Offer)
	if err != nil {
		return nil, err
	}
	if signer != ai.ID || !bytes.Equal(o.Nonce, nonce) {
		return nil, fmt.Errorf("%w: offer signed by %s for another nonce or peer", protocol.ErrBadEnvelope, signer)
	}
	return o, nil
}

// unfit says why offer o cannot take j, or "".
func (s *Submitter) unfit(o *protocol.Offer, j *job) string {
	switch {
	case o.Arch != j.arch:
		return fmt.Sprintf("runs %s, job is for %s", o.Arch, j.arch)
	case o.SlotsFree == 0 && !s.ignoreSlots:
		return "no free slot"
	case int64(len(j.Binary)) > o.Max.MaxBinary:
		return fmt.Sprintf("binary of %d bytes above its %d", len(j.Binary), o.Max.MaxBinary)
	case int64(len(j.Input)) > o.MaxInput:
		return fmt.Sprintf("input of %d bytes above its %d", len(j.Input), o.MaxInput)
	}
	if err := j.Limits.Exceeds(o.Max); err != nil {
		return err.Error()
	}
	return ""
}

// attempt is one replica's outcome.
type attempt struct {
	Replica
	refused bool   // not admitted: costs nothing, does not count toward MaxReplicas
	output  []byte // when the replica counts
	stderr  []byte
}

// tally counts the verdicts of replicas until one has a quorum. It is pure, for testing.
type tally struct {
	quorum   int
	votes    map[Verdict]int
	accepted *Verdict
}

func newTally(quorum int) *tally { return &tally{quorum: quorum, votes: make(map[Verdict]int)} }

// add counts a replica's verdict and reports whether v has just reached the quorum. Votes
// after a verdict was accepted do not count.
func (t *tally) add(v Verdict) bool {
	if t.accepted != nil {
		return false
	}
	if t.votes[v]++; t.votes[v] >= t.quorum {
		t.accepted = &v
		return true
	}
	return false
}

// best is the most votes any verdict has.
func (t *tally) best() int {
	n := 0
	for _, k := range t.votes {
		n = max(n, k)
	}
	return n
}

// short is how many more agreeing replicas the quorum needs at least: 0 once accepted.
func (t *tally) short() int {
	if t.accepted != nil {
		return 0
	}
	return t.quorum - t.best()
}

// dispatch sends j to the workers of offers, in order, until Quorum replicas agree or no
// budget or workers remain. Once parent ends (a timeout, Ctrl-C) no replica more is sent.
func (s *Submitter) dispatch(parent context.Context, j *job, offers []*protocol.Offer, rep *Report) (*Report, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	results := make(chan attempt)
	next, used, inflight := 0, 0, 0
	launch := func() bool {
		if next >= len(offers) || used >= j.MaxReplicas || parent.Err() != nil {
			return false
		}
		o := offers[next]
		next, used, inflight = next+1, used+1, inflight+1
		s.progress("%s: sending job %s", short(o.Peer), j.jobCID)
		go func() { results <- s.runOne(ctx, o, j) }()
		return true
	}
	for range j.Replicas {
		launch()
	}
	t := newTally(j.Quorum)
	var agreed *attempt
	for inflight > 0 {
		a := <-results
		inflight--
		if a.refused {
			used--
		}
		if t.accepted != nil && errors.Is(a.Err, context.Canceled) {
			a.Err = ErrNotNeeded // cancelled once the quorum was reached
		}
		switch {
		case t.accepted != nil: // a late result still counts against a worker that disagrees
		case a.Err != nil:
			s.progress("%s: %v", short(a.Worker), a.Err)
		case t.add(a.Verdict):
			agreed = &a
			cancel() // the replicas still running are not needed
		default:
			s.progress("%s: %s, output %s (%d of %d needed)", short(a.Worker), a.Outcome(), a.OutputCID, t.votes[a.Verdict], j.Quorum)
		}
		rep.Replicas = append(rep.Replicas, a.Replica)
		for inflight < t.short() && launch() {
		}
	}
	if agreed == nil && parent.Err() != nil {
		return rep, fmt.Errorf("submit: %w", parent.Err())
	}
	if agreed == nil {
		var errs []string
		for _, r := range rep.Replicas {
			if r.Err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", short(r.Worker), r.Err))
			} else {
				errs = append(errs, fmt.Sprintf("%s: %s", short(r.Worker), r.Outcome()))
			}
		}
		msg := fmt.Sprintf("%s answered, the most that agreed was %d of %d needed", plural(len(rep.Replicas), "worker"), t.best(), j.Quorum)
		if len(errs) > 0 {
			msg += "; " + strings.Join(errs, "; ")
		}
		err := fmt.Errorf("submit: %w: %s", ErrNoQuorum, msg)
		if allRejected(rep.Replicas) {
			err = fmt.Errorf("submit: %w by every worker asked: %v", ErrRejected, rep.Replicas[0].Err)
		}
		return rep, err
	}
	rep.Verdict, rep.Reason, rep.Output, rep.Stderr = agreed.Verdict, agreed.Reason, agreed.output, agreed.stderr
	s.mu.Lock()
	for i, r := range rep.Replicas {
		if r.Err == nil && r.Verdict != rep.Verdict {
			rep.Replicas[i].Err = ErrDisagrees
			s.disagreed[r.Worker]++
		}
	}
	s.mu.Unlock()
	s.progress("quorum: %d workers agree: %s, output %s", j.Quorum, rep.Outcome(), rep.OutputCID)
	return rep, nil
}

// allRejected reports whether every replica was refused as not a job (ErrRejected).
func allRejected(rs []Replica) bool {
	for _, r := range rs {
		if !errors.Is(r.Err, ErrRejected) {
			return false
		}
	}
	return len(rs) > 0
}

// runOne sends j to the worker of offer o and checks its answer. Preconditions: o.Peer is
// not the host.
func (s *Submitter) runOne(ctx context.Context, o *protocol.Offer, j *job) (a attempt) {
	p := o.Peer
	a.Worker = p
	nonce := newNonce()
	// The request is a header: the input follows on the stream once the worker asks for it,
	// or the worker fetches it by CID.
	req := &protocol.JobRequest{
		JobCid:      j.jobCID.Bytes(),
		InputCid:    j.inputCID.Bytes(),
		InputSize:   uint64(len(j.Input)),
		InputInline: j.inline,
		Limits:      protocol.WireLimits(j.Limits),
		Nonce:       nonce,
		BinarySize:  uint64(len(j.Binary)),
		Arch:        j.arch,
	}
	st, err := s.cfg.Host.NewStream(ctx, p, protocol.JobID)
	if err != nil {
		a.refused, a.Err = true, fmt.Errorf("%w: open stream: %w", ErrRefused, err)
		return a
	}
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	// The write side stays open until the result is in: closing it cancels the job.
	protocol.SetDeadline(st, protocol.RequestTimeout)
	var admit protocol.JobAdmit
	err = protocol.WriteMsg(st, req)
	if err == nil {
		err = protocol.ReadMsg(st, &admit, protocol.MaxControlMsg)
	}
	if err == nil {
		err = admit.Err()
	}
	if err != nil {
		st.Reset()
		a.refused, a.Err = true, fmt.Errorf("%w: %w", ErrRefused, err)
		return a
	}
	// Unset, the wall limit is the worker's default, which its maximum bounds.
	wall := cmp.Or(j.Limits.Wall, o.Max.Wall)
	protocol.SetDeadline(st, protocol.FetchTimeout+protocol.BlobTimeout(int64(len(j.Input)))+wall+protocol.ReplyTimeout)
	var res protocol.JobResult
	sent := false
	for {
		err = protocol.ReadMsg(st, &res, protocol.MaxJobResult)
		if err == nil {
			err = res.Check()
		}
		if err != nil || !res.SendInput {
			break
		}
		if !j.inline || sent {
			err = fmt.Errorf("%w: asked for input it has or already got", protocol.ErrBadRequest)
			break
		}
		if err = protocol.WriteMsg(st, &protocol.JobInput{Data: j.Input}); err != nil {
			break
		}
		sent = true
	}
	if err == nil {
		err = res.Err()
	}
	if err != nil {
		st.Reset()
		switch {
		case ctx.Err() != nil:
			a.Err = fmt.Errorf("cancelled: %w", ctx.Err())
		case errors.Is(err, ErrRejected):
			// A refusal of the binary, sent once the worker has it; it still counts toward
			// MaxReplicas (the worker fetched and checked the binary).
			a.Err = fmt.Errorf("%w: %w", ErrRefused, err)
		default:
			a.Err = fmt.Errorf("failed: %w", err)
		}
		return a
	}
	st.Close()
	a.Receipt, a.Reason = res.Receipt, res.Reason
	r, err := checkReceipt(res.Receipt, p, nonce, j, res.Output, res.Stderr)
	if err != nil {
		a.Err = fmt.Errorf("%w: %w", ErrBadReceipt, err)
		return a
	}
	a.Verdict, a.CPU, a.Wall, a.ReceiptValid = verdictOf(r), r.CPU, r.Wall, true
	a.output, a.stderr = res.Output, res.Stderr
	return a
}

// checkReceipt checks that sealed is p's receipt for this job and nonce, and for the
// output and stderr received, and returns it.
func checkReceipt(sealed []byte, p peer.ID, nonce []byte, j *job, output, stderr []byte) (*protocol.Receipt, error) {
	r, signer, err := protocol.OpenReceipt(sealed)
	if err != nil {
		return nil, err
	}
	switch {
	case signer != p:
		return nil, fmt.Errorf("signed by %s", signer)
	case !bytes.Equal(r.Nonce, nonce):
		return nil, errors.New("nonce of another request")
	case !r.JobCID.Equals(j.jobCID):
		return nil, fmt.Errorf("job %s", r.JobCID)
	case !r.InputCID.Equals(j.inputCID):
		return nil, fmt.Errorf("input %s", r.InputCID)
	case !r.OutputCID.Equals(cids.Sum(output)):
		return nil, fmt.Errorf("output %s, received %s", r.OutputCID, cids.Sum(output))
	case !r.StderrCID.Equals(cids.Sum(stderr)):
		return nil, fmt.Errorf("stderr %s, received %s", r.StderrCID, cids.Sum(stderr))
	}
	return r, nil
}

func newNonce() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// short returns the end of a peer ID, enough to tell peers apart in progress lines.
func short(p peer.ID) string {
	s := p.String()
	if len(s) > 8 {
		return "…" + s[len(s)-8:]
	}
	return s
}
