package jobs

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
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
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"
)

// Request is one job to run on the grid.
type Request struct {
	// Binary is the job's ELF file and Input its stdin. The submitter serves both from
	// these very bytes while the submit lasts (they are not copied or stored): do not
	// change them until Submit returns. Once it has returned, nothing reads them: a worker
	// still fetching then gets NOT_FOUND (Store.Hold).
	Binary []byte
	Input  []byte
	// Limits bound each run; unset fields take each worker's defaults (a worker fills
	// them, the one layer that does).
	Limits sandbox.Limits
	// Replicas is how many workers run the job at first (R); 0 means 2.
	Replicas int
	// Quorum is how many replicas must agree on a Verdict (Q), at most Replicas (plus one,
	// the local run, with VerifyLocal); 0 means Replicas.
	Quorum int
	// MaxReplicas bounds the workers that run the job, retries included, at least
	// Replicas; 0 means 2*Replicas+1. Refusals do not count.
	MaxReplicas int
	// Trust lists workers whose replicas anchor a quorum, besides the submitter's own
	// trusted list and the workers with an established record (docs/TRUST.md).
	Trust []peer.ID
	// VerifyLocal also runs the job in this machine's sandbox; that run anchors the
	// quorum and counts as one of its votes.
	VerifyLocal bool
	// SamePrefix counts replicas from one network prefix (/24, /48) as many votes, not
	// one: for a testnet on one machine or a grid on one LAN.
	SamePrefix bool
	// Adaptive runs the job on one established worker alone (with at least
	// adaptiveAgreed agreements), except with probability adaptiveCheck, as BOINC's
	// adaptive replication does.
	Adaptive bool
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
	case r.Quorum > r.Replicas+b2i(r.VerifyLocal):
		return fmt.Errorf("a quorum of %d needs at least %d replicas, not %d: raise the replicas or lower the quorum", r.Quorum, r.Quorum-b2i(r.VerifyLocal), r.Replicas)
	case r.MaxReplicas < r.Replicas:
		return fmt.Errorf("max replicas %d is below the %d replicas started at first", r.MaxReplicas, r.Replicas)
	}
	return nil
}

// b2i is 1 for true: the local run is one more replica.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
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
	Prefix       string // the network prefix of the connection that carried the job
	Local        bool   // this machine's own run (Request.VerifyLocal), not a worker's
	// Anchor says why this replica may anchor a quorum: "trusted", "established" (its
	// record), "local" (this machine's run), or "" for a stranger.
	Anchor string
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
	// Records is the submitter's record of workers; nil keeps one in memory.
	Records *Records
	// Trusted lists workers whose replicas anchor every quorum (the owner's own machines).
	Trusted []peer.ID
	// SamePrefix sets Request.SamePrefix for every job (a testnet on one machine).
	SamePrefix bool
	// Local runs jobs for Request.VerifyLocal; nil means this machine cannot.
	Local Runner
	// Events, if set, hears of every submit's end (Events.Submitted).
	Events Events
	// FindWorkers returns candidate workers for jobs of an architecture ("linux/amd64");
	// the submitter skips itself.
	FindWorkers func(ctx context.Context, arch string) ([]peer.AddrInfo, error)
	// Locate returns up to n of ps that it reached (connected), in ps's order (a DHT
	// lookup for a peer whose addresses the node does not know or that do not reach it),
	// leaving out the rest: the submitter asks its anchors whether FindWorkers found them
	// or not (anchors.go). Nil: the anchors FindWorkers found and those connected or with
	// addresses in the peerstore.
	Locate func(ctx context.Context, ps []peer.ID, n int) []peer.AddrInfo
	Logger *slog.Logger
	// Progress, if set, receives human progress lines.
	Progress func(msg string)
}

// Submitter runs jobs on the grid with replicas and a quorum.
type Submitter struct {
	cfg SubmitterConfig
	log *slog.Logger

	records *Records

	mu      sync.Mutex
	trusted map[peer.ID]bool // cfg.Trusted and what Trust added

	progressMu sync.Mutex // Progress is called from several goroutines
	live       liveness   // pings the workers running this submitter's replicas

	offerMu    sync.Mutex
	offerCache map[peer.ID]*offerEntry // offers.go

	ignoreSlots bool                  // tests: ask workers whose offer shows no free slot
	order       func(cs []*candidate) // tests: reorder the candidates after the weighted draw
}

// NewSubmitter returns a Submitter. Workers pull the binaries (and inputs too large to go
// inline) from cfg.Store over the blob protocol: the caller serves it on cfg.Host.
func NewSubmitter(cfg SubmitterConfig) (*Submitter, error) {
	if cfg.Host == nil || cfg.Store == nil || cfg.FindWorkers == nil {
		return nil, errors.New("new submitter: Host, Store and FindWorkers are required")
	}
	s := &Submitter{cfg: cfg, log: orDiscard(cfg.Logger), records: cfg.Records, trusted: make(map[peer.ID]bool)}
	s.live.timeout = submitterLivenessTimeout
	if s.records == nil {
		s.records, _ = OpenRecords("") // in memory: cannot fail
	}
	s.Trust(cfg.Trusted...)
	return s, nil
}

// TrustedCount is how many workers the submitter trusts.
func (s *Submitter) TrustedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.trusted)
}

// Trust adds workers whose replicas anchor every quorum from now on.
func (s *Submitter) Trust(ps ...peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ps {
		s.trusted[p] = true
	}
}

func (s *Submitter) progress(format string, args ...any) {
	if s.cfg.Progress == nil && !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return // a batch's thousands of jobs, or a daemon's, say nothing: no formatting
	}
	msg := fmt.Sprintf(format, args...)
	s.log.Debug(msg)
	if s.cfg.Progress != nil {
		s.progressMu.Lock()
		defer s.progressMu.Unlock()
		s.cfg.Progress(msg)
	}
}

// Records returns the submitter's record of workers.
func (s *Submitter) Records() *Records { return s.records }

// job is a prepared request.
type job struct {
	Request
	jobCID, inputCID cid.Cid
	inline           bool
	arch             string
	trusted          map[peer.ID]bool
	audited          peer.ID // adaptive: the veteran a checked job audits
	release          func()  // ends the store's hold of the binary and input (prepare)
}

// Submit runs req on R workers, more on failure or disagreement up to MaxReplicas, and
// returns the output once Quorum replicas agree. A binary the sandbox would refuse is
// refused here, before anything is sent (ErrRejected, with the sandbox's reason). Without
// a quorum the error wraps ErrNoQuorum (or ErrNoWorkers) and the report still lists every
// replica.
func (s *Submitter) Submit(ctx context.Context, req Request) (rep *Report, err error) {
	if s.cfg.Events.Submitted != nil {
		defer func() { s.cfg.Events.Submitted(rep, err) }()
	}
	if s.cfg.Events.Released != nil {
		defer func() {
			n := len(req.Binary) + len(req.Input)
			if rep != nil {
				n += len(rep.Output) * len(rep.Replicas) // their copies, now garbage but one
			}
			s.cfg.Events.Released(int64(n))
		}()
	}
	j, err := s.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	defer j.release() // workers still fetching after the submit get NOT_FOUND
	rep = &Report{JobCID: j.jobCID, InputCID: j.inputCID}
	cands, err := s.workers(ctx, j, nil)
	if err != nil {
		return rep, err
	}
	if !j.VerifyLocal && !slices.ContainsFunc(cands, func(c *candidate) bool { return c.anchor != "" }) {
		return rep, noTrust(len(cands))
	}
	defer func() {
		if err := s.records.Save(); err != nil {
			s.log.Warn("worker records not saved", "err", err)
		}
	}()
	return s.dispatch(ctx, j, cands, rep)
}

// CheckBinary makes the checks a worker makes of a job's binary under lim (unset limits:
// the stock ones), so that a file that is not a job never leaves: it returns the binary's
// architecture, or an error that wraps ErrRejected with the sandbox's reason.
func CheckBinary(bin []byte, lim sandbox.Limits) (arch string, err error) {
	arch, err = sandbox.ArchOf(bin)
	if err == nil {
		err = sandbox.Validate(bin, lim)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %s", ErrRejected, strings.TrimPrefix(err.Error(), "rejected: "))
	}
	return arch, nil
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
	arch, err := CheckBinary(req.Binary, req.Limits)
	if err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	if req.VerifyLocal && s.cfg.Local == nil {
		return nil, fmt.Errorf("submit: --verify-local: %w: this machine cannot run %s jobs", sandbox.ErrUnsupported, arch)
	}
	j := &job{Request: req, inline: len(req.Input) <= protocol.MaxInline, arch: arch}
	j.SamePrefix = j.SamePrefix || s.cfg.SamePrefix
	s.mu.Lock()
	j.trusted = maps.Clone(s.trusted)
	s.mu.Unlock()
	for _, p := range req.Trust {
		j.trusted[p] = true
	}
	// The binary and the input are hashed at once (two cores), and served from memory while
	// the submit lasts (Store.Hold): writing a 32 MiB binary to the store first took about a
	// third of a 48 MiB submit, for bytes the submitter holds anyway.
	inputCID := make(chan cid.Cid, 1)
	go func() { inputCID <- cids.Sum(req.Input) }()
	j.jobCID = cids.Sum(req.Binary)
	j.inputCID = <-inputCID
	releaseBin := s.cfg.Store.Hold(j.jobCID, req.Binary)
	j.release = releaseBin
	if !j.inline {
		releaseIn := s.cfg.Store.Hold(j.inputCID, req.Input)
		j.release = func() { releaseBin(); releaseIn() }
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
	// start (max(R, Q)) but fewer than it wants (MaxReplicas + R, a margin for refusals):
	// the queries still out were sent with the ones that answered, so live workers answer
	// within about a round trip more; a departed worker's (a dial to a dead address) is not
	// waited for.
	offerGrace = 300 * time.Millisecond
)

// candidate is a worker whose live offer fits the job.
type candidate struct {
	offer  *protocol.Offer
	prefix string // of the connection the offer came on
	record Record
	anchor string // "trusted", "established" or ""
	weight float64
}

// Waiting for a slot: when every worker that can take the job is busy, the submitter asks
// again after slotWaitMin, doubling up to slotWaitMax, until a slot is free or the
// submit's context ends (--timeout).
const (
	slotWaitMin = 250 * time.Millisecond
	slotWaitMax = 4 * time.Second
)

// workers returns the workers whose live offers fit j, other than exclude, in a random
// order weighted by the submitter's record of them. When all of them are busy it waits for
// a free slot.
func (s *Submitter) workers(ctx context.Context, j *job, exclude map[peer.ID]bool) ([]*candidate, error) {
	wait := slotWaitMin
	for said := false; ; said = true {
		cands, busy, err := s.findFit(ctx, j, exclude, !said)
		switch {
		case err != nil:
			return nil, err
		case len(cands) > 0:
			s.weigh(cands, j)
			return cands, nil
		case len(busy) == 0:
			return nil, fmt.Errorf("submit: %w: none of the %s workers found can take the job", ErrNoWorkers, j.arch)
		}
		if s.weigh(busy, j); !j.VerifyLocal && !slices.ContainsFunc(busy, func(c *candidate) bool { return c.anchor != "" }) {
			return nil, noTrust(len(busy)) // waiting for strangers' slots would never help
		}
		if !said {
			s.progress("all %s that can take the job are busy; waiting for a free slot", plural(len(busy), "worker"))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("submit: waiting for a free slot: %w", ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, slotWaitMax)
	}
}

// findFit finds candidates for j on the DHT and asks them for offers; busy is how many
// fit but had no free slot.
func (s *Submitter) findFit(ctx context.Context, j *job, exclude map[peer.ID]bool, talk bool) (fit, busy []*candidate, err error) {
	// The anchors are located while the DHT is asked (anchors.go); first are the ones to
	// ask first.
	found, first, err := s.locateAnchors(ctx, s.anchorsFor(j, exclude), func() ([]peer.AddrInfo, error) {
		return s.cfg.FindWorkers(ctx, j.arch)
	})
	if err != nil && len(first) == 0 {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("submit: %w", ctx.Err())
		}
		return nil, nil, fmt.Errorf("submit: %w: find %s workers: %v", ErrNoWorkers, j.arch, err)
	}
	seen := map[peer.ID]bool{s.cfg.Host.ID(): true}
	for _, ai := range first {
		seen[ai.ID] = true
	}
	var cands []peer.AddrInfo
	for _, ai := range found {
		if !seen[ai.ID] && !exclude[ai.ID] && ai.ID != "" {
			seen[ai.ID] = true
			cands = append(cands, ai)
		}
	}
	// A random order, so that where a candidate sits in the DHT's answer buys it nothing;
	// the anchors go first (they were drawn at random among themselves).
	mrand.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	cands = append(first, cands...)
	if len(cands) == 0 {
		if len(exclude) > 0 {
			return nil, nil, fmt.Errorf("submit: %w: no %s worker found that has not had the job", ErrNoWorkers, j.arch)
		}
		return nil, nil, fmt.Errorf("submit: %w: no %s workers found", ErrNoWorkers, j.arch)
	}
	if talk {
		s.progress("asking %s for offers", plural(len(cands), "candidate"))
	}
	fit, busy, asked := s.offers(ctx, j, cands, len(first), talk)
	switch {
	case ctx.Err() != nil:
		return nil, nil, fmt.Errorf("submit: %w", ctx.Err())
	case len(fit)+len(busy) < j.Quorum-b2i(j.VerifyLocal) && len(exclude) == 0:
		need := j.Quorum - b2i(j.VerifyLocal)
		return nil, nil, fmt.Errorf("submit: %w: a quorum of %d needs %d workers, and %d of %s can take the job", ErrNoWorkers, j.Quorum, need, len(fit)+len(busy), plural(asked, "candidate"))
	case len(fit) > 0 && len(fit) < j.Replicas && len(exclude) == 0 && talk:
		s.progress("only %s can take the job, fewer than the %d replicas asked for", plural(len(fit), "worker"), j.Replicas)
	case len(fit) > 0 && talk:
		s.progress("%s can take the job", plural(len(fit), "worker"))
	}
	return fit, busy, nil
}

// noTrust is the error of a submit no quorum of which could be anchored, among n workers.
func noTrust(n int) error {
	return fmt.Errorf("submit: %w: none of the %s that can take the job is trusted or has an established record with you (%d agreements with accepted results, none against), and a quorum of strangers proves nothing; trust workers you know (--trust PEERID, --trust-file) or run the job here too (--verify-local): see docs/TRUST.md",
		ErrNoTrust, plural(n, "worker"), Established)
}

// weigh gives each candidate its anchor and weight and puts them in a random order in
// which a worker comes early with a probability that grows with its weight (a draw without
// replacement: the key u^(1/w) of Efraimidis and Spirakis). A worker's claims decide only
// whether it can take the job, never its place.
func (s *Submitter) weigh(cs []*candidate, j *job) {
	keys := make(map[*candidate]float64, len(cs))
	for _, c := range cs {
		c.record = s.records.Get(c.offer.Peer)
		c.weight = c.record.weight()
		switch {
		case j.trusted[c.offer.Peer]:
			c.anchor = "trusted"
			if c.record.Disagreed == 0 {
				c.weight = max(c.weight, 6)
			}
		case c.record.established():
			c.anchor = "established"
		}
		keys[c] = math.Pow(mrand.Float64(), 1/c.weight)
	}
	slices.SortFunc(cs, func(a, b *candidate) int { return cmp.Compare(keys[b], keys[a]) })
	if s.order != nil {
		s.order(cs)
	}
}

// offers asks cands, in order and offerQueries at a time, for offers that fit j. It returns
// them once it has MaxReplicas + Replicas, once it has max(Replicas, Quorum) and offerGrace
// has passed since, or once every candidate was asked; busy is how many offers fit but had
// no free slot, asked how many candidates were asked. The first anchors of cands are
// anchors: until one of them fits or all have answered (within offerTimeout), it waits
// for them however many others fit. Asked first but not waited for, a trusted worker 50 ms
// farther than 11 strangers was heard in none of 8 submits, which failed with ErrNoTrust.
func (s *Submitter) offers(ctx context.Context, j *job, cands []peer.AddrInfo, anchors int, talk bool) (fit, busy []*candidate, asked int) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // queries still in flight are not needed
	need, want := max(j.Replicas, j.Quorum), j.MaxReplicas+j.Replicas
	type answer struct {
		ai     peer.AddrInfo
		o      *protocol.Offer
		prefix string
		err    error
		anchor bool
	}
	answers := make(chan answer, len(cands)) // late answers after a return do not block
	var grace <-chan time.Time
	inflight, silent := 0, 0
	anchorsOut, anchorFit, graceOver := 0, false, false
	settled := func() bool { return anchorFit || anchorsOut == 0 }
collect:
	for {
		for inflight < offerQueries && asked < len(cands) && len(fit) < want {
			ai, anchor := cands[asked], asked < anchors
			asked, inflight = asked+1, inflight+1
			if anchor {
				anchorsOut++
			}
			go func() {
				o, prefix, err := s.offer(ctx, ai)
				answers <- answer{ai, o, prefix, err, anchor}
			}()
		}
		if inflight == 0 || ((len(fit) >= want || graceOver) && settled()) {
			break
		}
		select {
		case <-grace:
			grace, graceOver = nil, true
		case <-ctx.Done():
			break collect
		case a := <-answers:
			inflight--
			if a.anchor {
				anchorsOut--
			}
			switch why := s.unfit(a.o, j); {
			case errors.Is(a.err, context.DeadlineExceeded):
				silent++
				s.log.Debug("no offer in time", "peer", a.ai.ID, "err", a.err)
			case a.err != nil:
				if talk {
					s.progress("%s: no offer: %v", short(a.ai.ID), a.err)
				}
			case why == "" && (a.o.SlotsFree == 0 || a.o.Paused || a.o.DonorPaused || a.o.OffHours) && !s.ignoreSlots:
				busy = append(busy, &candidate{offer: a.o, prefix: a.prefix})
			case why != "":
				if talk {
					s.progress("%s: skipped: %s", short(a.ai.ID), why)
				}
			default:
				anchorFit = anchorFit || a.anchor
				if fit = append(fit, &candidate{offer: a.o, prefix: a.prefix}); len(fit) == need {
					grace = time.After(offerGrace)
				}
			}
		}
	}
	if silent > 0 && talk {
		s.progress("%s gave no offer within %v", plural(silent, "candidate"), offerTimeout)
	}
	return fit, busy, asked
}

// queryOffer asks ai for its signed offer, bound to a fresh nonce, within offerTimeout,
// and returns it with the network prefix of the connection it came on.
func (s *Submitter) queryOffer(ctx context.Context, ai peer.AddrInfo) (*protocol.Offer, string, error) {
	ctx, cancel := context.WithTimeout(ctx, offerTimeout)
	defer cancel()
	h := s.cfg.Host
	if len(ai.Addrs) > 0 && h.Network().Connectedness(ai.ID) != network.Connected {
		if err := h.Connect(ctx, ai); err != nil {
			return nil, "", err
		}
	}
	st, err := h.NewStream(ctx, ai.ID, protocol.InfoID)
	if err != nil {
		return nil, "", err
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
		return nil, "", err
	}
	st.Close()
	o, signer, err := protocol.OpenOffer(resp.Offer)
	if err != nil {
		return nil, "", err
	}
	if signer != ai.ID || !bytes.Equal(o.Nonce, nonce) {
		return nil, "", fmt.Errorf("%w: offer signed by %s for another nonce or peer", protocol.ErrBadEnvelope, signer)
	}
	return o, netPrefix(st.Conn().RemoteMultiaddr(), ai.ID), nil
}

// unfit says why offer o cannot take j, or "".
func (s *Submitter) unfit(o *protocol.Offer, j *job) string {
	switch {
	case o == nil:
		return ""
	case o.Arch != j.arch:
		return fmt.Sprintf("runs %s, job is for %s", o.Arch, j.arch)
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

// Adaptive replication (Request.Adaptive): a worker with at least adaptiveAgreed
// agreements and no disagreement may run a job alone, except with probability
// adaptiveCheck, drawn for every job, when the job is replicated as usual.
const (
	adaptiveAgreed = 10
	adaptiveCheck  = 0.1
)

// dispatch sends j to candidates until a verdict is accepted or the budget (MaxReplicas)
// or the workers run out: at first Replicas of them, then, for every refusal, failure,
// disagreement or missing anchor, as many more as the tally says are short, to workers
// that have not had the job (an anchored one when only the anchor is missing, one in a
// new network prefix where there is one), asking the DHT again when the candidates run
// out. Once parent ends (a timeout, Ctrl-C) no replica more is sent. seeds are replicas
// already run (a batch's): they count as the first ones sent.
func (s *Submitter) dispatch(parent context.Context, j *job, cands []*candidate, rep *Report, seeds ...attempt) (*Report, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	distinct := !j.SamePrefix
	t := newTally(j.Quorum, distinct)
	first := j.Replicas
	var solo peer.ID // adaptive: the one worker trusted with the job alone
	if c := cands[0]; j.Adaptive && c.anchor != "" && c.record.Agreed >= adaptiveAgreed && c.record.Disagreed == 0 && c.record.Contradicted == 0 {
		if mrand.Float64() >= adaptiveCheck {
			t, first, solo = newTally(1, false), 1, c.offer.Peer
			s.progress("adaptive: %s has %d agreements and none against; it runs the job alone", short(c.offer.Peer), c.record.Agreed)
		} else {
			// A check: the veteran's own word does not anchor the quorum that audits it.
			c.anchor, j.audited = "", c.offer.Peer
			s.progress("adaptive: this job is one of the 1 in %d that are replicated as usual, %s audited", int(1/adaptiveCheck), short(c.offer.Peer))
		}
	}
	results := make(chan attempt, len(seeds))
	sent := map[peer.ID]bool{} // workers the job was sent to
	ran := map[peer.ID]bool{}  // of those, the ones not to ask again
	prefixes := map[string]bool{}
	spent, inflight := 0, 0
	for _, a := range seeds {
		sent[a.Worker], prefixes[a.Prefix] = true, true
		spent, inflight = spent+1, inflight+1
		results <- a
	}
	launch := func() bool {
		if spent >= j.MaxReplicas || parent.Err() != nil {
			return false
		}
		c := pick(cands, sent, prefixes, t.wantsAnchor(), distinct)
		if c == nil {
			return false
		}
		sent[c.offer.Peer], prefixes[c.prefix] = true, true
		spent, inflight = spent+1, inflight+1
		s.progress("%s: sending job %s", short(c.offer.Peer), j.jobCID)
		go func() { results <- s.runOne(ctx, c, j) }()
		return true
	}
	if j.VerifyLocal {
		inflight++
		s.progress("running the job here too (--verify-local)")
		go func() { results <- s.runLocal(ctx, j) }()
	}
	for range first - len(seeds) {
		launch()
	}
	var winner *attempt
	var lastErr error // why the candidates could not be renewed
	start, lastAnswer := time.Now(), time.Duration(0)
	spare := time.NewTimer(time.Hour)
	spare.Stop()
	defer spare.Stop()
	rediscoverWait := time.Duration(0)
	for inflight > 0 {
		var a attempt
		select {
		case a = <-results:
		case <-spare.C:
			// The answers in came long ago and the rest are late: a worker that admitted
			// the job and sits on it must not hold the submit for its own wall limit.
			if t.short() > 0 && launch() {
				s.progress("the other replicas are late: one more sent")
			}
			spare.Reset(2 * (time.Since(start) + spareSlack))
			continue
		}
		inflight--
		switch {
		case a.refused && errors.Is(a.Err, protocol.ErrBusy):
			// Busy after an offer with room: another submit took the slot, or the worker
			// lies. It may be asked again, after the backoff of asking the DHT again.
			spent--
			s.dropOffer(a.Worker)
		case a.refused:
			spent--
			ran[a.Worker] = true
		case !a.Local:
			ran[a.Worker] = true
		}
		if !a.refused && !a.Local && lastAnswer == 0 {
			lastAnswer = time.Since(start)
			spare.Reset(2*lastAnswer + spareSlack)
		}
		if t.accepted != nil && errors.Is(a.Err, context.Canceled) {
			a.Err = ErrNotNeeded // cancelled once the quorum was reached
		}
		switch {
		case t.accepted != nil: // a late result still counts against a worker that disagrees
		case a.Err != nil:
			s.progress("%s: %v", a.name(), a.Err)
		case t.add(vote{v: a.Verdict, prefix: a.Prefix, anchored: a.Anchor != ""}):
			winner = &a
			cancel() // the replicas still running are not needed
		default:
			s.progress("%s: %s, output %s (%d of %d needed%s)", a.name(), a.Outcome(), a.OutputCID, t.counted(t.votes[a.Verdict]), t.quorum, anchorNote(t, a))
		}
		rep.Replicas = append(rep.Replicas, a.Replica)
		if solo != "" && a.Worker == solo && t.accepted == nil {
			// The veteran's replica did not count: the job is replicated as usual after all,
			// and nobody else's word alone will do.
			solo, t = "", newTally(j.Quorum, distinct)
			s.progress("adaptive: its replica did not count; replicating the job as usual")
		}
		for inflight < t.short() && launch() {
		}
		if inflight == 0 && t.short() > 0 && spent < j.MaxReplicas && parent.Err() == nil && lastErr == nil {
			// The candidates ran out: ask the DHT again, for workers that have not had the job
			// (waiting for a free slot if they are all busy), a little later each time.
			if rediscoverWait > 0 {
				select {
				case <-ctx.Done():
					continue
				case <-time.After(rediscoverWait):
				}
			}
			rediscoverWait = min(max(2*rediscoverWait, slotWaitMin), slotWaitMax)
			exclude := maps.Clone(ran)
			exclude[s.cfg.Host.ID()] = true
			more, err := s.workers(ctx, j, exclude)
			if err != nil {
				lastErr = err
				continue
			}
			cands, sent = more, maps.Clone(ran)
			for inflight < t.short() && launch() {
			}
		}
	}
	if winner == nil {
		return rep, s.noQuorum(parent, j, t, rep, lastErr)
	}
	rep.Verdict, rep.Reason, rep.Output, rep.Stderr = winner.Verdict, winner.Reason, winner.output, winner.stderr
	s.noteOutcomes(rep)
	s.noteAudit(j, t, rep)
	s.progress("quorum: %d agree: %s, output %s", j.Quorum, rep.Outcome(), rep.OutputCID)
	return rep, nil
}

// spareSlack is added to the time a spare replica waits for (dispatch).
const spareSlack = 5 * time.Second

// noteOutcomes adds what an accepted verdict tells of each replica to its worker's record.
// Records change only through quorums something other than the worker itself anchored: an
// agreement counts when another replica of the verdict is trusted or the local run (a
// worker's own anchoring, or an established worker vouching for Sybils, would build
// records for free); a disagreement counts when the verdict has such a root anchor or two
// anchored votes. A resource-limit verdict (wall_timeout, cpu_limit) depends on the
// machine's speed: it is a timeout, never a disagreement.
func (s *Submitter) noteOutcomes(rep *Report) {
	roots, anchored := 0, 0
	for _, r := range rep.Replicas {
		if r.Err == nil && r.Verdict == rep.Verdict {
			if r.Anchor == "trusted" || r.Anchor == "local" {
				roots++
			}
			if r.Anchor != "" {
				anchored++
			}
		}
	}
	now := time.Now()
	for i, r := range rep.Replicas {
		own := 0
		if r.Anchor == "trusted" || r.Anchor == "local" {
			own = 1
		}
		switch {
		case r.Local:
		case r.Err == nil && r.Verdict == rep.Verdict:
			if roots-own > 0 {
				s.records.note(r.Worker, agreed, now)
			}
		case r.Err == nil && (limitStatus(r.Status) || limitStatus(rep.Status)):
			rep.Replicas[i].Err = ErrDisagrees
			if limitStatus(r.Status) {
				s.records.note(r.Worker, timedOut, now)
			}
		case r.Err == nil || errors.Is(r.Err, ErrBadReceipt):
			if r.Err == nil {
				rep.Replicas[i].Err = ErrDisagrees
			}
			if roots > 0 || anchored >= 2 {
				s.records.note(r.Worker, disagreed, now)
			}
		default:
			s.noteFailure(r)
		}
	}
}

// noteAudit records, after an adaptive check, that the audited veteran was contradicted:
// a quorum's worth of other replicas (counted as the tally counts) agreed on another
// verdict than its own.
func (s *Submitter) noteAudit(j *job, t *tally, rep *Report) {
	if j.audited == "" {
		return
	}
	var mine *Verdict
	for _, r := range rep.Replicas {
		if r.Worker == j.audited && (r.Err == nil || errors.Is(r.Err, ErrDisagrees)) {
			mine = &r.Verdict
		}
	}
	for v, c := range t.votes {
		if (mine == nil || v != *mine) && t.counted(c) >= t.quorum {
			s.records.note(j.audited, contradicted, time.Now())
			return
		}
	}
}

// limitStatus reports whether a status is a resource limit that a slower machine reaches
// first.
func limitStatus(st string) bool {
	return st == string(sandbox.StatusWallTimeout) || st == string(sandbox.StatusCPULimit)
}

// noQuorum records the failures of a submit that accepted nothing and returns its error.
func (s *Submitter) noQuorum(parent context.Context, j *job, t *tally, rep *Report, why error) error {
	for _, r := range rep.Replicas {
		if r.Err != nil && !r.Local {
			s.noteFailure(r)
		}
	}
	s.noteAudit(j, t, rep)
	if parent.Err() != nil {
		return fmt.Errorf("submit: %w", parent.Err())
	}
	if allRejected(rep.Replicas) {
		return fmt.Errorf("submit: %w by every worker asked: %v", ErrRejected, rep.Replicas[0].Err)
	}
	var lines []string
	for _, r := range rep.Replicas {
		switch {
		case r.Err != nil:
			lines = append(lines, fmt.Sprintf("%s: %v", r.name(), r.Err))
		case r.Anchor != "":
			lines = append(lines, fmt.Sprintf("%s: %s (%s)", r.name(), r.Outcome(), r.Anchor))
		default:
			lines = append(lines, fmt.Sprintf("%s: %s (a stranger)", r.name(), r.Outcome()))
		}
	}
	msg := fmt.Sprintf("%s answered, the most that agreed was %d of %d needed", plural(len(rep.Replicas), "replica"), t.best(), j.Quorum)
	if t.best() >= j.Quorum {
		msg = fmt.Sprintf("%s answered; %d agreed, but none of them was trusted, established or local", plural(len(rep.Replicas), "replica"), t.best())
	}
	if why != nil {
		msg += " (" + strings.TrimPrefix(why.Error(), "submit: ") + ")"
	}
	return fmt.Errorf("submit: %w: %s; %s", ErrNoQuorum, msg, strings.Join(lines, "; "))
}

// noteFailure records a replica that failed or timed out; refusals count nothing.
func (s *Submitter) noteFailure(r Replica) {
	switch {
	case errors.Is(r.Err, ErrRefused), errors.Is(r.Err, ErrNotNeeded), errors.Is(r.Err, context.Canceled):
	case errors.Is(r.Err, os.ErrDeadlineExceeded), errors.Is(r.Err, context.DeadlineExceeded):
		s.records.note(r.Worker, timedOut, time.Now())
	default:
		s.records.note(r.Worker, failed, time.Now())
	}
}

// anchorNote says, for a progress line, that a verdict has its votes but still lacks an
// anchor.
func anchorNote(t *tally, a attempt) string {
	if c := t.votes[a.Verdict]; c != nil && c.anchored == 0 && t.counted(c) >= t.quorum {
		return ", and one from a trusted or established worker"
	}
	return ""
}

// pick returns the first candidate in cs that has not had the job, preferring an anchored
// one when wantAnchor is set and, with distinct, one in a network prefix the job has not
// used; nil when none is left.
func pick(cs []*candidate, sent map[peer.ID]bool, prefixes map[string]bool, wantAnchor, distinct bool) *candidate {
	var best *candidate
	bestScore := -1
	for _, c := range cs {
		if sent[c.offer.Peer] {
			continue
		}
		score := 0
		if wantAnchor && c.anchor != "" {
			score += 2
		}
		if distinct && !prefixes[c.prefix] {
			score++
		}
		if score > bestScore {
			best, bestScore = c, score
		}
	}
	return best
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

// name names a replica's worker in progress lines.
func (r *Replica) name() string {
	if r.Local {
		return "local run"
	}
	return short(r.Worker)
}

// runLocal runs j in this machine's sandbox, for Request.VerifyLocal.
func (s *Submitter) runLocal(ctx context.Context, j *job) (a attempt) {
	a.Worker, a.Local, a.Anchor, a.Prefix = s.cfg.Host.ID(), true, "local", "local"
	r, err := s.cfg.Local.Run(ctx, sandbox.Job{Binary: j.Binary, Stdin: bytes.NewReader(j.Input)}, j.Limits)
	switch {
	case err != nil && ctx.Err() != nil:
		a.Err = fmt.Errorf("cancelled: %w", ctx.Err())
	case err != nil:
		a.Err = fmt.Errorf("failed: local run: %w", err)
	case r.Status == sandbox.StatusRejected:
		a.Err = fmt.Errorf("%w: %w: %s", ErrRefused, ErrRejected, r.Reason)
	default:
		stderr := r.Stderr[:min(len(r.Stderr), protocol.MaxStderr)]
		a.Verdict = Verdict{OutputCID: cids.Sum(r.Output), StderrCID: cids.Sum(stderr), Status: string(r.Status), ExitCode: r.ExitCode, Signal: r.Signal}
		a.CPU, a.Wall, a.Reason, a.output, a.stderr = r.CPUTime, r.WallTime, r.Reason, r.Output, stderr
	}
	return a
}

// runOne sends j to candidate c and checks its answer. Preconditions: c is not the host.
func (s *Submitter) runOne(ctx context.Context, c *candidate, j *job) (a attempt) {
	p := c.offer.Peer
	a.Worker, a.Anchor, a.Prefix = p, c.anchor, c.prefix
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
	st, err := s.request(ctx, p, protocol.JobID, req)
	if err != nil {
		a.refused, a.Err = true, err
		return a
	}
	defer context.AfterFunc(ctx, func() { st.Reset() })()
	// A worker killed mid-job leaves a silent QUIC connection (liveness.go).
	defer s.live.watch(context.WithoutCancel(ctx), nil, s.cfg.Host, s.log, p, func() { st.Reset() })()
	// Unset, the wall limit is the worker's default, at most the stock one; never what the
	// worker's own offer claims (a staller claiming a century would be waited on for one).
	wall := cmp.Or(j.Limits.Wall, sandbox.DefaultLimits().Wall)
	wall = stretched(wall, c.offer.WallStretch) // a CPU cap's, at most MaxWallStretch
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
		if _, err = st.Write(j.Input); err != nil { // raw: the worker knows its size
			break
		}
		sent = true
	}
	if err == nil {
		err = res.Err()
	}
	// The output follows the result raw, into one buffer and hashed as it arrives: never
	// more than the job's output limit, checked before the buffer is made.
	var output []byte
	outHash := sha256.New()
	if limit := cmp.Or(j.Limits.MaxOutput, sandbox.DefaultLimits().MaxOutput); err == nil && res.OutputSize > uint64(limit) {
		err = fmt.Errorf("%w: output of %d bytes, limit %d", protocol.ErrTooLarge, res.OutputSize, limit)
	}
	if err == nil {
		output, err = protocol.ReadPayload(st, int64(res.OutputSize), outHash)
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
	a.Prefix = netPrefix(st.Conn().RemoteMultiaddr(), p) // the connection that carried the job
	st.Close()
	a.Receipt, a.Reason = res.Receipt, protocol.Clean(res.Reason, protocol.MaxReason)
	r, err := checkReceipt(res.Receipt, p, nonce, j, cids.FromDigest(outHash.Sum(nil)), res.Stderr)
	if err != nil {
		a.Err = fmt.Errorf("%w: %w", ErrBadReceipt, err)
		return a
	}
	a.Verdict, a.CPU, a.Wall, a.ReceiptValid = verdictOf(r), r.CPU, r.Wall, true
	a.output, a.stderr = output, res.Stderr
	return a
}

// request opens a stream of protocol id to worker p, sends req and reads the worker's
// admission. Its error is a refusal (ErrRefused): this submitter's own stream limit counts
// as busy, as the worker's would; the stream is then reset. The write side stays open: on
// the job and batch protocols closing it cancels the work. The caller resets the stream
// when ctx ends.
func (s *Submitter) request(ctx context.Context, p peer.ID, id p2pproto.ID, req proto.Message) (network.Stream, error) {
	st, err := s.cfg.Host.NewStream(ctx, p, id)
	if err != nil {
		if errors.Is(err, network.ErrResourceLimitExceeded) {
			err = fmt.Errorf("%w: %w", protocol.ErrBusy, err)
		}
		return nil, fmt.Errorf("%w: open stream: %w", ErrRefused, err)
	}
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
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
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return st, nil
}

// checkReceipt checks that sealed is p's receipt for this job and nonce, and for the
// output (hashed as it arrived, to outCID) and stderr received, and returns it.
func checkReceipt(sealed []byte, p peer.ID, nonce []byte, j *job, outCID cid.Cid, stderr []byte) (*protocol.Receipt, error) {
	r, signer, err := protocol.OpenReceipt(sealed)
	if err != nil {
		return nil, err
	}
	if signer != p {
		return nil, fmt.Errorf("signed by %s", signer)
	}
	return r, checkReceipted(r, nonce, j, outCID, stderr)
}

// checkReceipted checks that r, a receipt whose signature checked out, is for this job and
// nonce, and for the output (hashed as it arrived, to outCID) and stderr received.
func checkReceipted(r *protocol.Receipt, nonce []byte, j *job, outCID cid.Cid, stderr []byte) error {
	errCID := cids.Sum(stderr)
	switch {
	case !bytes.Equal(r.Nonce, nonce):
		return errors.New("nonce of another request")
	case !r.JobCID.Equals(j.jobCID):
		return fmt.Errorf("job %s", r.JobCID)
	case !r.InputCID.Equals(j.inputCID):
		return fmt.Errorf("input %s", r.InputCID)
	case !r.OutputCID.Equals(outCID):
		return fmt.Errorf("output %s, received %s", r.OutputCID, outCID)
	case !r.StderrCID.Equals(errCID):
		return fmt.Errorf("stderr %s, received %s", r.StderrCID, errCID)
	}
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
