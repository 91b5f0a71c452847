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
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Request is one job to run on the grid.
type Request struct {
	Binary []byte         // the job's ELF file; the submitter stores and serves it
	Input  []byte         // the job's stdin
	Limits sandbox.Limits // zero fields take sandbox.DefaultLimits; MaxBinary the binary's size
	// Replicas is how many workers run the job at first (R); 0 means 2.
	Replicas int
	// Quorum is how many replicas must agree on (output CID, status, exit code, signal)
	// (Q); 0 means Replicas.
	Quorum int
	// MaxReplicas bounds the workers that run the job, retries included; 0 means
	// 2*Replicas+1. Refusals do not count.
	MaxReplicas int
}

// Replica is what one worker answered.
type Replica struct {
	Worker       peer.ID
	Status       string
	ExitCode     int
	Signal       string
	OutputCID    cid.Cid // of the output bytes received
	ReceiptValid bool    // the receipt is signed by Worker and matches this job, nonce and output
	Err          string  // why the replica does not count: refusal, failure, bad receipt
	CPU, Wall    time.Duration
	Receipt      []byte // the sealed receipt as received
}

// Report is the outcome of a job.
type Report struct {
	JobCID, InputCID, OutputCID cid.Cid
	Status                      string
	ExitCode                    int
	Signal                      string
	Output                      []byte
	Replicas                    []Replica // every worker asked, in the order they answered
}

// SubmitterConfig configures a Submitter.
type SubmitterConfig struct {
	Host  host.Host
	Store *Store
	// FindWorkers returns candidate workers; the submitter skips itself.
	FindWorkers func(ctx context.Context) ([]peer.AddrInfo, error)
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

// NewSubmitter returns a Submitter and serves cfg.Store's blobs on cfg.Host, so that
// workers can pull the binary.
func NewSubmitter(cfg SubmitterConfig) (*Submitter, error) {
	if cfg.Host == nil || cfg.Store == nil || cfg.FindWorkers == nil {
		return nil, errors.New("new submitter: Host, Store and FindWorkers are required")
	}
	s := &Submitter{cfg: cfg, log: orDiscard(cfg.Logger), disagreed: make(map[peer.ID]int)}
	ServeBlobs(cfg.Host, cfg.Store, s.log)
	return s, nil
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
// returns the output once Quorum replicas agree. Without a quorum the error wraps
// ErrNoQuorum (or ErrNoWorkers) and the report still lists every replica.
func (s *Submitter) Submit(ctx context.Context, req Request) (*Report, error) {
	j, err := s.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	rep := &Report{JobCID: j.jobCID, InputCID: j.inputCID}
	workers, err := s.workers(ctx, j)
	if err != nil {
		return rep, err
	}
	return s.dispatch(ctx, j, workers, rep)
}

func (s *Submitter) prepare(ctx context.Context, req Request) (*job, error) {
	if req.Replicas <= 0 {
		req.Replicas = 2
	}
	if req.Quorum <= 0 {
		req.Quorum = req.Replicas
	}
	if req.MaxReplicas <= 0 {
		req.MaxReplicas = 2*req.Replicas + 1
	}
	req.MaxReplicas = max(req.MaxReplicas, req.Replicas, req.Quorum)
	if req.Limits.MaxBinary <= 0 {
		req.Limits.MaxBinary = int64(len(req.Binary)) // asks no more of workers than needed
	}
	req.Limits = req.Limits.Or(sandbox.DefaultLimits())
	switch {
	case len(req.Binary) == 0:
		return nil, errors.New("submit: empty binary")
	case int64(len(req.Binary)) > req.Limits.MaxBinary:
		return nil, fmt.Errorf("submit: %w: binary of %d bytes, limit %d", ErrTooLarge, len(req.Binary), req.Limits.MaxBinary)
	case req.Limits.MaxOutput > protocol.MaxOutput:
		return nil, fmt.Errorf("submit: %w: output limit %d above the protocol's %d", ErrTooLarge, req.Limits.MaxOutput, protocol.MaxOutput)
	}
	j := &job{Request: req, inline: len(req.Input) <= protocol.MaxInline, arch: archOf(req.Binary)}
	var err error
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

// workers returns the candidates whose live offers fit j, best first.
func (s *Submitter) workers(ctx context.Context, j *job) ([]peer.ID, error) {
	found, err := s.cfg.FindWorkers(ctx)
	if err != nil {
		return nil, fmt.Errorf("submit: find workers: %w", err)
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
		return nil, fmt.Errorf("submit: %w: no candidates found", ErrNoWorkers)
	}
	// A random order, so that where a candidate sits in the DHT's answer buys it nothing.
	mrand.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	s.progress("asking %s for offers", plural(len(cands), "candidate"))
	fit, asked := s.offers(ctx, j, cands)
	if len(fit) == 0 {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("submit: %w", ctx.Err())
		}
		return nil, fmt.Errorf("submit: %w: none of %s can take the job", ErrNoWorkers, plural(asked, "candidate"))
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
	ids := make([]peer.ID, len(fit))
	for i, o := range fit {
		ids[i] = o.Peer
	}
	s.progress("%s can take the job", plural(len(ids), "worker"))
	return ids, nil
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
	case int64(len(j.Binary)) > o.MaxBinary:
		return fmt.Sprintf("binary of %d bytes above its %d", len(j.Binary), o.MaxBinary)
	case int64(len(j.Input)) > o.MaxInput:
		return fmt.Sprintf("input of %d bytes above its %d", len(j.Input), o.MaxInput)
	}
	if err := exceeds(j.Limits, offerLimits(o)); err != nil {
		return err.Error()
	}
	return ""
}

// attempt is one replica's outcome.
type attempt struct {
	Replica
	refused bool   // not admitted: costs nothing, does not count toward MaxReplicas
	output  []byte // when ReceiptValid
}

// verdict is what replicas must agree on.
type verdict struct {
	out    cid.Cid
	status string
	exit   int
	signal string
}

// dispatch sends j to workers, in order, until Quorum replicas agree or no budget or
// workers remain.
func (s *Submitter) dispatch(parent context.Context, j *job, workers []peer.ID, rep *Report) (*Report, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	results := make(chan attempt)
	next, used, inflight := 0, 0, 0
	launch := func() bool {
		if next >= len(workers) || used >= j.MaxReplicas {
			return false
		}
		p := workers[next]
		next, used, inflight = next+1, used+1, inflight+1
		s.progress("%s: sending job %s", short(p), j.jobCID)
		go func() { results <- s.runOne(ctx, p, j) }()
		return true
	}
	for range max(j.Replicas, j.Quorum) {
		launch()
	}
	votes := map[verdict]int{}
	outputs := map[verdict][]byte{}
	var accepted *verdict
	for inflight > 0 {
		a := <-results
		inflight--
		if a.refused {
			used--
		}
		rep.Replicas = append(rep.Replicas, a.Replica)
		if accepted != nil {
			continue
		}
		if a.Err != "" {
			s.progress("%s: %s", short(a.Worker), a.Err)
		} else {
			v := verdict{a.OutputCID, a.Status, a.ExitCode, a.Signal}
			votes[v]++
			if _, ok := outputs[v]; !ok {
				outputs[v] = a.output
			}
			s.progress("%s: %s %d, output %s (%d of %d needed)", short(a.Worker), a.Status, a.ExitCode, a.OutputCID, votes[v], j.Quorum)
			if votes[v] >= j.Quorum {
				accepted = &v
				cancel() // the replicas still running are not needed
				continue
			}
		}
		for inflight < j.Quorum-maxVotes(votes) && launch() {
		}
	}
	if accepted == nil && parent.Err() != nil {
		return rep, fmt.Errorf("submit: %w", parent.Err())
	}
	if accepted == nil {
		var errs []string
		for _, r := range rep.Replicas {
			if r.Err != "" {
				errs = append(errs, short(r.Worker)+": "+r.Err)
			}
		}
		msg := fmt.Sprintf("%s answered, the most that agreed was %d of %d needed", plural(len(rep.Replicas), "worker"), maxVotes(votes), j.Quorum)
		if len(errs) > 0 {
			msg += "; " + strings.Join(errs, "; ")
		}
		return rep, fmt.Errorf("submit: %w: %s", ErrNoQuorum, msg)
	}
	rep.OutputCID, rep.Status, rep.ExitCode, rep.Signal = accepted.out, accepted.status, accepted.exit, accepted.signal
	rep.Output = outputs[*accepted]
	s.mu.Lock()
	for i, r := range rep.Replicas {
		if r.Err == "" && (verdict{r.OutputCID, r.Status, r.ExitCode, r.Signal}) != *accepted {
			rep.Replicas[i].Err = "disagrees with the quorum"
			s.disagreed[r.Worker]++
		}
	}
	s.mu.Unlock()
	s.progress("quorum: %d workers agree on output %s", j.Quorum, rep.OutputCID)
	return rep, nil
}

func maxVotes(votes map[verdict]int) int {
	best := 0
	for _, n := range votes {
		best = max(best, n)
	}
	return best
}

// runOne sends j to worker p and checks its answer. Preconditions: p is not the host.
func (s *Submitter) runOne(ctx context.Context, p peer.ID, j *job) (a attempt) {
	a.Worker = p
	nonce := newNonce()
	// The request is a header: the input follows on the stream once the worker asks for it,
	// or the worker fetches it by CID.
	req := &protocol.JobRequest{
		JobCid:      j.jobCID.Bytes(),
		InputCid:    j.inputCID.Bytes(),
		InputSize:   uint64(len(j.Input)),
		InputInline: j.inline,
		Limits:      limitsToProto(j.Limits),
		Nonce:       nonce,
		BinarySize:  uint64(len(j.Binary)),
		Arch:        j.arch,
	}
	st, err := s.cfg.Host.NewStream(ctx, p, protocol.JobID)
	if err != nil {
		a.refused, a.Err = true, fmt.Sprintf("open stream: %v", err)
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
		a.refused, a.Err = true, fmt.Sprintf("refused: %v", err)
		return a
	}
	protocol.SetDeadline(st, protocol.FetchTimeout+protocol.BlobTimeout(int64(len(j.Input)))+j.Limits.Wall+protocol.ReplyTimeout)
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
		if ctx.Err() != nil {
			a.Err = fmt.Sprintf("cancelled: %v", ctx.Err())
		} else {
			a.Err = fmt.Sprintf("failed: %v", err)
		}
		return a
	}
	st.Close()
	a.Status, a.ExitCode, a.Signal = res.Status, int(res.ExitCode), res.Signal
	a.CPU, a.Wall = protocol.FromMicros(res.CpuUs), protocol.FromMicros(res.WallUs)
	a.OutputCID, a.Receipt = cids.Sum(res.Output), res.Receipt
	if err := checkReceipt(res.Receipt, p, nonce, j, &a.Replica); err != nil {
		a.Err = fmt.Sprintf("bad receipt: %v", err)
		return a
	}
	a.ReceiptValid, a.output = true, res.Output
	return a
}

// checkReceipt checks that sealed is p's receipt for this job, nonce and answer.
func checkReceipt(sealed []byte, p peer.ID, nonce []byte, j *job, got *Replica) error {
	r, signer, err := protocol.OpenReceipt(sealed)
	if err != nil {
		return err
	}
	switch {
	case signer != p:
		return fmt.Errorf("signed by %s", signer)
	case !bytes.Equal(r.Nonce, nonce):
		return errors.New("nonce of another request")
	case !r.JobCID.Equals(j.jobCID):
		return fmt.Errorf("job %s", r.JobCID)
	case !r.InputCID.Equals(j.inputCID):
		return fmt.Errorf("input %s", r.InputCID)
	case !r.OutputCID.Equals(got.OutputCID):
		return fmt.Errorf("output %s, received %s", r.OutputCID, got.OutputCID)
	case r.Status != got.Status || r.ExitCode != got.ExitCode || r.Signal != got.Signal:
		return fmt.Errorf("status %s %d %s, result says %s %d %s", r.Status, r.ExitCode, r.Signal, got.Status, got.ExitCode, got.Signal)
	}
	got.CPU, got.Wall = r.CPU, r.Wall
	return nil
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
