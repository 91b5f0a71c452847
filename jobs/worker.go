package jobs

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/internal/budget"
	"github.com/gridnode/gridnode/internal/platform"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/store"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
)

// Runner runs one job in a sandbox; *sandbox.Runner implements it.
type Runner interface {
	Run(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error)
}

// RunnerFunc adapts a function to a Runner, for tests and for wrapping another Runner.
type RunnerFunc func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error)

// Run calls f.
func (f RunnerFunc) Run(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
	return f(ctx, job, lim)
}

var _ Runner = (*sandbox.Runner)(nil)

// DefaultMaxInput is the largest input a worker accepts unless configured otherwise.
const DefaultMaxInput = 16 << 20

// protectTag marks connections of peers with jobs in flight in the connection manager.
const protectTag = "gridnode-job"

// Limits on what a peer can make a worker hold or do before (and besides) its jobs' own
// limits. Memory: before a job is admitted the worker holds at most its header, so what
// unadmitted job streams can pin is
//
//	maxPending x protocol.MaxJobRequest = 128 x 4 KiB = 512 KiB
//
// (plus a handler goroutine each), however many identities send them; at most
// maxPendingPerPeer of them per peer, each for at most protocol.HeaderTimeout. An admitted
// job holds its binary, its input and its output, one buffer each (the output is written
// after its header as it lies), so the whole bound is
//
//	512 KiB + Slots x (MaxBinary + MaxInput + MaxOutput) = 512 KiB + Slots x 96 MiB
//
// by default. The binary's and the input's buffers are made at the sizes the request (or
// a provider, up to the request's) states, once the job is admitted: a peer that states
// the most and sends nothing holds a slot's share of this bound until its deadline, and no
// more. The node returns the memory when the job ends (node/memory.go).
//
// maxPending is half the 256 job streams the node's resource manager allows in all: when it
// is reached the oldest unjudged stream is reset to make room, so idle streams of many
// identities never fill the resource manager's total and lock out a submitter whose header
// comes at once.
const (
	maxPending        = 128 // job streams whose header is not yet judged, over all peers
	maxPendingPerPeer = 4   // of those, per peer

	// Provider lookups (when the submitter does not serve the binary): at most one lookup
	// and maxProvidersTried providers per request; per requesting peer lookupBurst lookups
	// at once, then one per lookupPeriod; and, since peer IDs are free, over all peers
	// allLookupBurst at once, then one per allLookupPeriod.
	maxProvidersTried = 3
	lookupBurst       = 4
	lookupPeriod      = 15 * time.Second
	lookupPeers       = 1024 // requesting peers whose lookup budget is tracked
	allLookupBurst    = 16
	allLookupPeriod   = 2 * time.Second
	lookupTimeout     = 20 * time.Second

	// Admitted jobs a peer abandons (goes away, breaks the protocol or lets the input
	// deadline pass) before the job runs: each costs the worker its binary read and
	// validated for nothing, so per peer abandonBurst, then one per abandonPeriod; a peer
	// with none left is refused BUSY. (Two identities made the worker read, hash and
	// validate 1.2-1.8 GB/s of a stored 64 MiB binary for 99-byte requests.)
	abandonBurst  = 4
	abandonPeriod = 15 * time.Second

	// inputBase plus the input at 1 MiB/s is how long a submitter has to send an inline
	// input once the worker asks for it; its slot is taken back after that. (The deadline
	// set at admission once covered fetch, wall and reply: 36.5 min of a slot held for a
	// 1-byte input never sent.)
	inputBase = 5 * time.Second
)

// inputTimeout is how long a submitter has to send an inline input of size bytes.
func inputTimeout(size int64) time.Duration {
	return inputBase + time.Duration(max(size, 0)>>20)*time.Second
}

// WorkerConfig configures a Worker. Zero fields take defaults.
type WorkerConfig struct {
	Host   host.Host
	Store  *store.Store // binaries are kept here; the node serves it on the blob protocol
	Runner Runner
	// Slots is how many jobs run at once; 0 means DefaultSlots() (half the cores, at
	// least 1). A job that finds no free slot is refused with BUSY.
	Slots int
	// MaxLoad, if above 0, refuses every job with BUSY while the machine's non-grid load
	// is above it: its runnable tasks (/proc/stat's procs_running) less the grid jobs
	// running, averaged over about 10 s and sampled once a second (loadGate, policy.go).
	MaxLoad float64
	// runnable replaces procsRunning as the MaxLoad gate's source; for tests.
	runnable func() (int, error)
	// Hours, if not nil, are the donor's windows: outside them every job is refused BUSY
	// and running ones finish (hours.go). now replaces time.Now for them; for tests.
	Hours *Hours
	now   func() time.Time
	// CPUShare is the donor's --cpu-share (percent of the machine, 0: none), enforced by the
	// Runner; the worker reports it and gives jobs' wall limits room for it (cpushare.go).
	CPUShare int
	// SlotsPerPeer is how many slots one peer may hold; 0 means half the slots, rounded
	// up, so that one peer never holds every slot of a worker with two or more.
	SlotsPerPeer int
	// Limits is the most a job may ask for; zero fields take sandbox.DefaultLimits.
	Limits sandbox.Limits
	// MaxInput is the largest input accepted, inline or by CID; 0 means DefaultMaxInput.
	MaxInput int64
	// Validate checks a job binary before it is stored and before its input is fetched;
	// nil means sandbox.Validate. A binary it rejects under the worker's policy is not
	// kept; one it rejects under the job's limits is refused with REJECTED and the reason.
	Validate func(bin []byte, lim sandbox.Limits) error
	// Arch is the architecture the worker runs jobs for; "" means the sandbox's
	// (sandbox.Arches), and NewWorker fails on a machine whose sandbox runs none.
	Arch string
	// Providers optionally lists other peers that may hold a blob (from the DHT).
	Providers func(ctx context.Context, c cid.Cid) []peer.AddrInfo
	// Isolation describes the sandbox's isolation layers, for the offer; may be empty.
	Isolation string
	// Events, if set, hears of every job admitted and every request refused.
	Events Events
	Logger *slog.Logger
}

// Worker serves /gridnode/info and /gridnode/job on a host: it admits or refuses job
// requests, fetches binaries, runs jobs through a Runner and returns results with signed
// receipts.
type Worker struct {
	cfg      WorkerConfig
	log      *slog.Logger
	key      crypto.PrivKey
	policy   sandbox.Limits // the most a job may ask for
	deflt    sandbox.Limits // what a job that names no limit gets: the defaults, capped by policy
	load     *loadGate      // the donor's MaxLoad
	lookups  *budget.Budget // provider lookups per requesting peer
	all      *budget.Budget // provider lookups of all peers, under ""
	abandons *budget.Budget // admitted jobs abandoned before they ran, per peer

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu           sync.Mutex
	closed       bool
	protected    map[peer.ID]int
	pending      map[*pendingStream]struct{} // job streams whose header is not yet judged
	byPeer       map[peer.ID]int             // of those, per peer
	running      map[peer.ID]int             // slots held
	nrunning     int
	queued       map[peer.ID]int // jobs waiting for a slot (take), per peer
	nqueued      int
	freed        chan struct{} // closed when a slot is given back, if anyone waits
	batchHeaders headerGate    // the batch requests being read (batch.go)
	live         liveness      // pings the peers with jobs running (liveness.go)
	pause        pauseGate     // the donor's pause (pause.go)
}

// NewWorker checks cfg and returns a Worker; Start makes it serve.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if cfg.Host == nil || cfg.Store == nil || cfg.Runner == nil {
		return nil, errors.New("new worker: Host, Store and Runner are required")
	}
	key := cfg.Host.Peerstore().PrivKey(cfg.Host.ID())
	if key == nil {
		return nil, errors.New("new worker: host has no private key")
	}
	if cfg.Slots <= 0 {
		cfg.Slots = DefaultSlots()
	}
	if err := checkCPUShare(cfg.CPUShare, cfg.Slots); err != nil {
		return nil, fmt.Errorf("new worker: %w", err)
	}
	load, err := newLoadGate(cfg.MaxLoad, cfg.runnable)
	if err != nil {
		return nil, fmt.Errorf("new worker: %w", err)
	}
	cfg.Runner = load.count(cfg.Runner)
	if cfg.SlotsPerPeer <= 0 {
		cfg.SlotsPerPeer = (cfg.Slots + 1) / 2
	}
	cfg.SlotsPerPeer = min(cfg.SlotsPerPeer, cfg.Slots)
	if cfg.MaxInput <= 0 {
		cfg.MaxInput = DefaultMaxInput
	}
	if cfg.Validate == nil {
		cfg.Validate = sandbox.Validate
	}
	if cfg.Arch == "" {
		arches := sandbox.Arches()
		if len(arches) == 0 {
			return nil, fmt.Errorf("new worker: %w: this machine (%s) cannot run jobs", sandbox.ErrUnsupported, platform.Current)
		}
		cfg.Arch = arches[0]
	}
	if err := cfg.Limits.Check(); err != nil {
		return nil, fmt.Errorf("new worker: %w", err)
	}
	policy := cfg.Limits.Or(sandbox.DefaultLimits())
	policy.MaxOutput = min(policy.MaxOutput, protocol.MaxOutput)
	policy.MaxBinary = min(policy.MaxBinary, store.MaxBlobSize)
	ctx, cancel := context.WithCancel(context.Background())
	return &Worker{
		cfg:       cfg,
		log:       orDiscard(cfg.Logger),
		key:       key,
		policy:    policy,
		deflt:     sandbox.DefaultLimits().Min(policy),
		load:      load,
		lookups:   budget.New(lookupBurst, lookupPeriod, lookupPeers),
		all:       budget.New(allLookupBurst, allLookupPeriod, 1),
		abandons:  budget.New(abandonBurst, abandonPeriod, lookupPeers),
		ctx:       ctx,
		cancel:    cancel,
		protected: make(map[peer.ID]int),
		pending:   make(map[*pendingStream]struct{}),
		byPeer:    make(map[peer.ID]int),
		running:   make(map[peer.ID]int),
		queued:    make(map[peer.ID]int),
	}, nil
}

// Start registers the stream handlers.
func (w *Worker) Start() {
	h := w.cfg.Host
	h.SetStreamHandler(protocol.InfoID, w.handler(w.handleInfo))
	h.SetStreamHandler(protocol.JobID, w.handler(w.handleJob))
	h.SetStreamHandler(protocol.BatchID, w.handler(w.handleBatch))
	w.load.run(w.ctx, &w.wg, w.log.Warn)
}

// Close removes the handlers, cancels running jobs (their submitters get CANCELLED) and
// waits for every handler to return.
func (w *Worker) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	for _, id := range []p2pproto.ID{protocol.InfoID, protocol.JobID, protocol.BatchID} {
		w.cfg.Host.RemoveStreamHandler(id)
	}
	w.cancel()
	w.wg.Wait()
	return nil
}

// Arch returns the architecture the worker runs jobs for.
func (w *Worker) Arch() string { return w.cfg.Arch }

// Running returns how many jobs are admitted and not yet answered.
func (w *Worker) Running() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nrunning
}

// pendingStream is a job stream whose header is not yet judged.
type pendingStream struct {
	s     network.Stream
	p     peer.ID
	since time.Time
}

// enter counts a new job stream s of p whose header is not yet read. It refuses (counting
// nothing) a stream of a peer that has maxPendingPerPeer already; when all peers together
// have maxPending, it resets the oldest to make room.
func (w *Worker) enter(p peer.ID, s network.Stream) (*pendingStream, bool) {
	w.mu.Lock()
	if w.byPeer[p] >= maxPendingPerPeer {
		w.mu.Unlock()
		return nil, false
	}
	var oldest *pendingStream
	if len(w.pending) >= maxPending {
		for ps := range w.pending {
			if oldest == nil || ps.since.Before(oldest.since) {
				oldest = ps
			}
		}
		w.forgetPending(oldest)
	}
	ps := &pendingStream{s: s, p: p, since: time.Now()}
	w.pending[ps] = struct{}{}
	w.byPeer[p]++
	w.mu.Unlock()
	if oldest != nil {
		oldest.s.Reset() // its handler then fails to read the header and returns
	}
	return ps, true
}

// leave undoes enter once the header is judged.
func (w *Worker) leave(ps *pendingStream) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.forgetPending(ps)
}

// forgetPending drops ps from the count, once. Preconditions: w.mu is held.
func (w *Worker) forgetPending(ps *pendingStream) {
	if _, ok := w.pending[ps]; !ok {
		return
	}
	delete(w.pending, ps)
	if w.byPeer[ps.p]--; w.byPeer[ps.p] <= 0 {
		delete(w.byPeer, ps.p)
	}
}

// A job that finds no slot it may take (every slot busy, or its peer holding its share)
// waits up to slotQueueWait for one to free, in a queue of at most Slots jobs, of which a
// peer may have as many as it may hold slots: a slot freed by a short job is taken at once
// instead of the submitter learning BUSY, asking again and being refused by the next full
// worker (on a full 5-node testnet most of a tiny job's cost). Past the wait the job is
// refused BUSY as before. A peer thus holds at most its share of slots and waits for at
// most as many more.
const slotQueueWait = 500 * time.Millisecond

// take gives p a slot, waiting for one up to slotQueueWait (or until ctx ends) when all
// are busy; it refuses BUSY when p holds its share, or when the queue is full too.
func (w *Worker) take(ctx context.Context, p peer.ID) error {
	if err := w.pause.check(); err != nil {
		return err
	}
	if err := w.load.check(); err != nil {
		return err
	}
	if err := w.checkHours(); err != nil {
		return err
	}
	var timeout <-chan time.Time
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		switch {
		case w.running[p] < w.cfg.SlotsPerPeer && w.nrunning < w.cfg.Slots:
			w.nrunning++
			w.running[p]++
			return nil
		case w.queued[p] >= w.cfg.SlotsPerPeer:
			return protocol.Errorf(protocol.Code_BUSY, "you hold %s and wait for as many, the most one peer may", plural(w.running[p], "slot"))
		case w.nqueued >= w.cfg.Slots:
			return protocol.Errorf(protocol.Code_BUSY, "all %s busy", plural(w.cfg.Slots, "slot"))
		}
		if timeout == nil {
			t := time.NewTimer(slotQueueWait)
			defer t.Stop()
			timeout = t.C
		}
		if w.freed == nil {
			w.freed = make(chan struct{})
		}
		freed := w.freed
		w.nqueued++
		w.queued[p]++
		w.mu.Unlock()
		var err error
		select {
		case <-freed:
		case <-timeout:
			err = protocol.Errorf(protocol.Code_BUSY, "all %s busy", plural(w.cfg.Slots, "slot"))
		case <-ctx.Done():
			err = ctx.Err()
		}
		w.mu.Lock()
		w.nqueued--
		if w.queued[p]--; w.queued[p] <= 0 {
			delete(w.queued, p)
		}
		if err != nil {
			return err
		}
	}
}

// give returns a slot taken by p, and wakes the jobs waiting for one.
func (w *Worker) give(p peer.ID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.nrunning--
	if w.running[p]--; w.running[p] <= 0 {
		delete(w.running, p)
	}
	if w.freed != nil {
		close(w.freed)
		w.freed = nil
	}
}

// free returns how many slots p could take now.
func (w *Worker) free(p peer.ID) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(0, min(w.cfg.Slots-w.nrunning, w.cfg.SlotsPerPeer-w.running[p]))
}

// handler wraps f so that Close waits for it and no handler starts after Close.
func (w *Worker) handler(f func(network.Stream)) network.StreamHandler {
	return func(s network.Stream) {
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			s.Reset()
			return
		}
		w.wg.Add(1)
		w.mu.Unlock()
		defer w.wg.Done()
		f(s)
	}
}

func (w *Worker) handleInfo(s network.Stream) {
	stop := context.AfterFunc(w.ctx, func() { s.Reset() })
	defer stop()
	protocol.SetDeadline(s, protocol.InfoTimeout)
	var req protocol.InfoRequest
	if err := protocol.ReadMsg(s, &req, protocol.MaxControlMsg); err != nil {
		s.Reset()
		return
	}
	resp := &protocol.InfoResponse{}
	if len(req.Nonce) > protocol.MaxNonce {
		resp.Code, resp.Message = protocol.Code_BAD_REQUEST, "nonce too long"
	} else {
		sealed, err := protocol.SealOffer(w.offer(s.Conn().RemotePeer(), req.Nonce), w.key)
		if err != nil {
			resp.Code, resp.Message = protocol.Code_INTERNAL, err.Error()
		}
		resp.Offer = sealed
	}
	if err := protocol.WriteMsg(s, resp); err != nil {
		s.Reset()
		return
	}
	s.Close()
}

// offer is the worker's offer to peer asker: the slots free are those it could take.
func (w *Worker) offer(asker peer.ID, nonce []byte) *protocol.Offer {
	load, paused := w.load.state()
	free := w.free(asker)
	donorPaused := w.pause.paused()
	offHours, next := w.offHours()
	if paused || donorPaused || offHours {
		free = 0 // it would refuse
	}
	return &protocol.Offer{
		MaxLoad:    w.cfg.MaxLoad,
		Load:       load,
		Paused:     paused,
		Peer:       w.cfg.Host.ID(),
		Arch:       w.cfg.Arch,
		SlotsFree:  free,
		SlotsTotal: w.cfg.Slots,
		Max:        w.policy,
		MaxInput:   w.cfg.MaxInput,
		Time:       time.Now(),
		Nonce:      nonce,
		Isolation:  protocol.Clean(w.cfg.Isolation, protocol.MaxIsolation),

		DonorPaused: donorPaused,
		OffHours:    offHours, NextWindow: next,
		CPUShare: w.cfg.CPUShare, WallStretch: w.wallStretch(),
	}
}

// spec is an admitted request.
type spec struct {
	from      peer.ID
	jobCID    cid.Cid
	inputCID  cid.Cid // always set
	inputSize int64
	inline    bool // the input comes on the job stream, when asked for
	binSize   int64
	lim       sandbox.Limits
	nonce     []byte
	ran       bool            // the runner was called (set by execute)
	output    int64           // bytes of output (set by execute)
	stored    <-chan struct{} // closed once a fetched binary is stored, if it is (set by binary)
	verdict   Verdict         // what the receipt says (set by execute)
	cpu, wall time.Duration   // from the receipt (set by execute)
}

// admit checks a request against the protocol and the worker's policy.
func (w *Worker) admit(req *protocol.JobRequest, from peer.ID) (*spec, error) {
	if err := req.Check(); err != nil {
		return nil, err
	}
	if req.Arch != w.cfg.Arch {
		return nil, protocol.Errorf(protocol.Code_ARCH, "job for %q, worker runs %s", req.Arch, w.cfg.Arch)
	}
	// The one place a grid job's unset limits get their defaults.
	lim := req.Limits.Sandbox().Or(w.deflt)
	if err := lim.Exceeds(w.policy); err != nil {
		return nil, protocol.Errorf(protocol.Code_LIMITS, "%v", err)
	}
	if req.BinarySize > uint64(lim.MaxBinary) {
		return nil, protocol.Errorf(protocol.Code_TOO_LARGE, "binary of %d bytes, limit %d", req.BinarySize, lim.MaxBinary)
	}
	if req.InputSize > uint64(w.cfg.MaxInput) {
		return nil, protocol.Errorf(protocol.Code_TOO_LARGE, "input of %d bytes, limit %d", req.InputSize, w.cfg.MaxInput)
	}
	// The binary is fetched up to its stated size, or up to the limit if it states none.
	binSize := lim.MaxBinary
	if req.BinarySize > 0 {
		binSize = int64(req.BinarySize)
	}
	sp := &spec{from: from, lim: lim, nonce: req.Nonce, inputSize: int64(req.InputSize), inline: req.InputInline, binSize: binSize}
	sp.jobCID, _ = cids.Cast(req.JobCid) // checked by req.Check
	empty := cids.Sum(nil)
	sp.inputCID = empty
	if len(req.InputCid) > 0 {
		sp.inputCID, _ = cids.Cast(req.InputCid)
	}
	if sp.inputSize == 0 && !sp.inputCID.Equals(empty) {
		return nil, protocol.Errorf(protocol.Code_BAD_REQUEST, "input %s of 0 bytes", sp.inputCID)
	}
	return sp, nil
}

// handleJob runs the job protocol: request header, admission, binary, input, run, result.
// The submitter keeps its write side open while it waits; the read side ending in any way
// before the result is sent (EOF, reset, lost connection), or bytes the worker did not ask
// for, mean the submitter is gone and cancel the job.
func (w *Worker) handleJob(s network.Stream) {
	from := s.Conn().RemotePeer()
	log := w.log.With("peer", from)
	ps, ok := w.enter(from, s)
	if !ok {
		log.Debug("job stream refused: too many unjudged requests from the peer")
		s.Reset()
		return
	}
	// Until the job is admitted, closing the worker just resets the stream.
	stop := context.AfterFunc(w.ctx, func() { s.Reset() })
	protocol.SetDeadline(s, protocol.HeaderTimeout)
	var req protocol.JobRequest
	err := protocol.ReadMsg(s, &req, protocol.MaxJobRequest)
	w.leave(ps)
	if err != nil {
		w.unreadable(s, err, stop, log)
		return
	}
	sp, err := w.admit(&req, from)
	// The slot is given back before the result is written, so that a submitter that sends
	// its next job as soon as it reads this one's result finds the slot free.
	release, unprotect, ok := w.seat(s, from, err, stop, log)
	if !ok {
		return
	}
	defer release()
	defer unprotect()
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	paused := w.pause.jobs() // ends when the donor pauses with --cancel
	defer context.AfterFunc(paused, cancel)()
	defer w.live.watch(w.ctx, &w.wg, w.cfg.Host, w.log, from, cancel)()
	in := &streamInput{s: s, sp: sp, asked: make(chan struct{}), got: make(chan []byte, 1)}
	defer w.released(sp)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		defer cancel()
		if err := in.watch(); err != nil {
			log.Debug("job stream", "err", err)
		}
	}()
	defer func() { <-watched }() // runs after the stream is closed or reset below

	log.Debug("job admitted", "job", sp.jobCID, "input", sp.inputCID)
	started := time.Now()
	res, output, err := w.execute(ctx, sp, in)
	w.jobEvent(sp, started, res, cmp.Or(w.ctx.Err(), ctx.Err(), err))
	switch {
	case w.ctx.Err() != nil:
		release()
		protocol.SetDeadline(s, 5*time.Second)
		if protocol.WriteMsg(s, &protocol.JobResult{Code: protocol.Code_CANCELLED, Message: "worker shutting down"}) != nil {
			s.Reset()
			return
		}
		// The host is about to close and would drop a reply still in flight: wait (up to
		// the deadline) until the submitter has read it and closed its side.
		s.CloseWrite()
		<-watched
	case ctx.Err() != nil && paused.Err() != nil:
		log.Info("job cancelled: paused by the donor", "job", sp.jobCID)
		release()
		protocol.SetDeadline(s, 5*time.Second)
		if protocol.WriteMsg(s, &protocol.JobResult{Code: protocol.Code_CANCELLED, Message: "paused by the donor"}) != nil {
			s.Reset()
			return
		}
	case ctx.Err() != nil:
		log.Info("job cancelled: submitter gone", "job", sp.jobCID, "ran", sp.ran)
		if !sp.ran {
			w.abandons.Take(from, time.Now())
		}
		s.Reset()
		return
	default:
		if err != nil {
			log.Info("job failed", "job", sp.jobCID, "err", err)
			code, msg := protocol.Refusal(err)
			res, output = &protocol.JobResult{Code: code, Message: msg}, nil
		}
		release()
		protocol.SetDeadline(s, protocol.ReplyTimeout)
		stop := context.AfterFunc(w.ctx, func() { s.Reset() })
		err = protocol.WriteMsgPayload(s, res, output)
		if !stop() || err != nil {
			s.Reset()
			return
		}
	}
	s.Close()
}

// streamInput is the read side of an admitted job's stream: it carries the inline input
// once the worker asks for it, and then nothing until the submitter leaves.
type streamInput struct {
	s     network.Stream
	sp    *spec
	asked chan struct{} // closed just before the worker asks for the input
	got   chan []byte   // the input, once read; nil if it does not hash to its CID
}

// watch reads the stream until it ends, delivering the inline input on in.got if it comes
// after in.asked. It returns when the submitter is gone or broke the protocol.
func (in *streamInput) watch() error {
	var b [1]byte
	if err := readByte(in.s, b[:]); err != nil {
		return err
	}
	select {
	case <-in.asked:
	default:
		return fmt.Errorf("%w: bytes before the worker asked for any", protocol.ErrBadRequest)
	}
	// The input is inputSize raw bytes (at most MaxInput, checked at admission), into one
	// buffer, hashed as they arrive.
	v := cids.NewVerifier(in.sp.inputCID)
	data, err := protocol.ReadPayload(io.MultiReader(bytes.NewReader(b[:]), in.s), in.sp.inputSize, v)
	if err != nil {
		return fmt.Errorf("read input: %w", err)
	}
	if v.Verify() != nil {
		data = nil
	}
	in.got <- data
	if err := readByte(in.s, b[:]); err != nil {
		return err
	}
	return fmt.Errorf("%w: bytes after the input", protocol.ErrBadRequest)
}

// readByte reads one byte into b, or fails.
func readByte(r io.Reader, b []byte) error {
	for {
		n, err := r.Read(b[:1])
		if n == 1 || err != nil {
			return err
		}
	}
}

// input asks the submitter for the inline input and waits for it, until the input
// deadline: past it, the watcher's read fails and ctx ends.
func (in *streamInput) input(ctx context.Context) ([]byte, error) {
	protocol.SetDeadline(in.s, inputTimeout(in.sp.inputSize))
	close(in.asked)
	if err := protocol.WriteMsg(in.s, &protocol.JobResult{SendInput: true}); err != nil {
		return nil, err
	}
	select {
	case b := <-in.got:
		if b == nil {
			return nil, protocol.Errorf(protocol.Code_BAD_REQUEST, "inline input of %d bytes is not %s", in.sp.inputSize, in.sp.inputCID)
		}
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// seat gives p's request, admitted (err nil) or not, a slot and answers it on s: a coded
// refusal, or a JobAdmit with a deadline long enough to fetch the binary (the input and the
// run set their own). It returns the slot's release (idempotent) and the connection's
// unprotect, or ok false when s is done with. stop is the stream's reset on Close, which
// seat ends.
func (w *Worker) seat(s network.Stream, p peer.ID, err error, stop func() bool, log *slog.Logger) (release, unprotect func(), ok bool) {
	if err == nil && w.abandons.Spent(p, time.Now()) {
		err = protocol.Errorf(protocol.Code_BUSY, "you abandoned %d admitted jobs before they ran; try again in %v", abandonBurst, abandonPeriod)
	}
	if err == nil {
		err = w.take(w.ctx, p)
	}
	if err != nil {
		log.Debug("refused", "err", err)
		if w.cfg.Events.Refused != nil {
			w.cfg.Events.Refused(p, protocol.CodeOf(err))
		}
		w.refuse(s, err)
		stop()
		return nil, nil, false
	}
	release = sync.OnceFunc(func() { w.give(p) })
	if !stop() {
		release()
		return nil, nil, false // Close already reset the stream
	}
	unprotect = w.protect(p)
	protocol.SetDeadline(s, protocol.FetchTimeout+protocol.ReplyTimeout)
	if err := protocol.WriteMsg(s, &protocol.JobAdmit{}); err != nil {
		s.Reset()
		unprotect()
		release()
		return nil, nil, false
	}
	return release, unprotect, true
}

// unreadable answers a request header that failed to read or check: a refusal if it was
// too large or malformed, a reset if the stream failed. stop is the stream's reset on
// Close, which it ends.
func (w *Worker) unreadable(s network.Stream, err error, stop func() bool, log *slog.Logger) {
	log.Debug("request", "err", err)
	if errors.Is(err, protocol.ErrTooLarge) || errors.Is(err, protocol.ErrBadRequest) {
		w.refuse(s, err)
	} else {
		s.Reset()
	}
	stop()
}

// refuse answers a request with a coded refusal.
func (w *Worker) refuse(s network.Stream, err error) {
	protocol.SetDeadline(s, 5*time.Second)
	code, msg := protocol.Refusal(err)
	if protocol.WriteMsg(s, &protocol.JobAdmit{Code: code, Message: msg}) != nil {
		s.Reset()
		return
	}
	s.Close()
}

// outputCID is the CID of the output bytes sent. The sandbox computes it already; a Runner
// that leaves it unset gets it computed here. (A wrong one fails the submitter's check.)
func outputCID(r sandbox.Result) cid.Cid {
	if r.OutputCID.Defined() {
		return r.OutputCID
	}
	return cids.Sum(r.Output)
}

// execute gets and validates the binary, then gets the input, runs the job and seals the
// receipt. It returns the result and the output that follows it on the stream.
func (w *Worker) execute(ctx context.Context, sp *spec, in *streamInput) (*protocol.JobResult, []byte, error) {
	defer w.cfg.Store.Pin(sp.jobCID)()
	bin, err := w.binary(ctx, sp)
	if err != nil {
		return nil, nil, fmt.Errorf("binary: %w", err)
	}
	if sp.stored != nil {
		defer func() { <-sp.stored }()
	}
	if err := w.cfg.Validate(bin, sp.lim); err != nil {
		return nil, nil, rejected(err.Error())
	}
	var input []byte
	switch {
	case sp.inline && sp.inputSize > 0:
		input, err = in.input(ctx)
	case sp.inputSize > 0:
		protocol.SetDeadline(in.s, protocol.FetchTimeout+protocol.ReplyTimeout)
		input, err = w.fetchInput(ctx, sp)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("input: %w", err)
	}
	// The wall budget starts with the run.
	protocol.SetDeadline(in.s, w.stretchWall(sp.lim.Wall)+protocol.ReplyTimeout)
	sp.ran = true
	r, err := w.cfg.Runner.Run(ctx, sandbox.Job{Binary: bin, Stdin: bytes.NewReader(input), CID: sp.jobCID}, sp.lim)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, protocol.Errorf(protocol.Code_INTERNAL, "run: %v", err)
	}
	stderr, rc, err := w.conclude(sp, r)
	if err != nil {
		return nil, nil, err
	}
	receipt, err := protocol.SealReceipt(rc, w.key)
	if err != nil {
		return nil, nil, protocol.Errorf(protocol.Code_INTERNAL, "%v", err)
	}
	sp.output = int64(len(r.Output))
	return &protocol.JobResult{
		Reason:     protocol.Clean(r.Reason, protocol.MaxReason),
		OutputSize: uint64(len(r.Output)),
		Stderr:     stderr,
		Receipt:    receipt,
	}, r.Output, nil
}

// rejected is the coded refusal of a binary the sandbox does not accept, with its reason.
func rejected(reason string) error {
	return protocol.Errorf(protocol.Code_REJECTED, "%s", strings.TrimPrefix(protocol.Clean(reason, protocol.MaxReason), "rejected: "))
}

// binary returns the job's binary from the store or, when the store does not hold it (or
// holds a corrupted copy), fetched into memory from the submitter, then from a few
// providers. A fetched binary is stored (and provided) only if it is valid under the
// worker's policy.
func (w *Worker) binary(ctx context.Context, sp *spec) ([]byte, error) {
	c, maxSize := sp.jobCID, sp.binSize
	b, err := w.cfg.Store.Get(ctx, c, maxSize)
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, store.ErrTooLarge):
		return nil, protocol.Errorf(protocol.Code_TOO_LARGE, "%v", err)
	case !errors.Is(err, store.ErrNotFound) && !errors.Is(err, cids.ErrMismatch):
		return nil, protocol.Errorf(protocol.Code_INTERNAL, "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, protocol.FetchTimeout)
	defer cancel()
	b, err = store.FetchBytes(ctx, w.cfg.Host, sp.from, c, maxSize)
	if err != nil && !errors.Is(err, protocol.ErrTooLarge) && ctx.Err() == nil {
		if pb, perr := w.fromProviders(ctx, sp.from, c, maxSize); perr == nil {
			b, err = pb, nil
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		if errors.Is(err, protocol.ErrTooLarge) {
			return nil, protocol.Errorf(protocol.Code_TOO_LARGE, "%v", err)
		}
		return nil, protocol.Errorf(protocol.Code_FETCH_FAILED, "%v", err)
	}
	if verr := w.cfg.Validate(b, w.policy); verr != nil {
		w.log.Debug("binary not kept", "job", c, "peer", sp.from, "err", verr)
		return b, nil
	}
	// Stored while the input comes and the job runs (writing 32 MiB first held the job
	// back ~15 ms), and by the time the result is sent; b is never written to. The handler
	// is counted in w.wg, so Close waits for this too.
	stored := make(chan struct{})
	sp.stored = stored
	w.wg.Go(func() {
		defer close(stored)
		if err := w.cfg.Store.PutBinary(w.ctx, c, b); err != nil {
			w.log.Warn("binary not kept", "job", c, "err", err) // the job still runs
		}
	})
	return b, nil
}

// fromProviders fetches blob c from the DHT's providers of it, within the requesting peer's
// lookup budget and trying at most maxProvidersTried of them.
func (w *Worker) fromProviders(ctx context.Context, from peer.ID, c cid.Cid, maxSize int64) ([]byte, error) {
	if w.cfg.Providers == nil {
		return nil, store.ErrNotFound
	}
	if now := time.Now(); !w.lookups.Take(from, now) || !w.all.Take("", now) {
		return nil, fmt.Errorf("%w: provider lookups: budget spent", store.ErrNotFound)
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	provs := w.cfg.Providers(lctx, c)
	cancel()
	tried := 0
	for _, ai := range provs {
		if tried >= maxProvidersTried || ctx.Err() != nil {
			break
		}
		if ai.ID == from || ai.ID == w.cfg.Host.ID() {
			continue
		}
		tried++
		if len(ai.Addrs) > 0 {
			if err := w.cfg.Host.Connect(ctx, ai); err != nil {
				continue
			}
		}
		if b, err := store.FetchBytes(ctx, w.cfg.Host, ai.ID, c, maxSize); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w: none of %s tried", store.ErrNotFound, plural(tried, "provider"))
}

// fetchInput fetches an input by CID from the submitter into memory; inputs are not stored.
func (w *Worker) fetchInput(ctx context.Context, sp *spec) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, protocol.FetchTimeout)
	defer cancel()
	b, err := store.FetchBytes(ctx, w.cfg.Host, sp.from, sp.inputCID, sp.inputSize)
	switch {
	case err == nil && int64(len(b)) != sp.inputSize:
		return nil, protocol.Errorf(protocol.Code_BAD_REQUEST, "input of %d bytes, request says %d", len(b), sp.inputSize)
	case err == nil:
		return b, nil
	case ctx.Err() != nil:
		return nil, err
	case errors.Is(err, protocol.ErrTooLarge):
		return nil, protocol.Errorf(protocol.Code_TOO_LARGE, "%v", err)
	}
	return nil, protocol.Errorf(protocol.Code_FETCH_FAILED, "%v", err)
}

// released tells Events.Released, once the job's handler is done with them, how many
// bytes of binary, input and output the job held.
func (w *Worker) released(sp *spec) {
	if w.cfg.Events.Released != nil {
		w.cfg.Events.Released(sp.binSize + sp.inputSize + sp.output)
	}
}

// protect keeps the connection manager from pruning p until the returned func is called;
// counted, since one peer may have several jobs in flight.
func (w *Worker) protect(p peer.ID) func() {
	w.mu.Lock()
	w.protected[p]++
	if w.protected[p] == 1 {
		w.cfg.Host.ConnManager().Protect(p, protectTag)
	}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.protected[p]--
		if w.protected[p] == 0 {
			delete(w.protected, p)
			w.cfg.Host.ConnManager().Unprotect(p, protectTag)
		}
	}
}
