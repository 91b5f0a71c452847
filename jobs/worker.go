package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
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

// WorkerConfig configures a Worker. Zero fields take defaults.
type WorkerConfig struct {
	Host   host.Host
	Store  *Store
	Runner Runner
	// Slots is how many jobs run at once; 0 means runtime.NumCPU(). A job that finds no
	// free slot is refused with BUSY.
	Slots int
	// Limits is the most a job may ask for; zero fields take sandbox.DefaultLimits.
	Limits sandbox.Limits
	// MaxInput is the largest input accepted, inline or by CID; 0 means DefaultMaxInput.
	MaxInput int64
	// Providers optionally lists other peers that may hold a blob (from the DHT).
	Providers func(ctx context.Context, c cid.Cid) []peer.AddrInfo
	Logger    *slog.Logger
}

// Worker serves /gridnode/info, /gridnode/blob and /gridnode/job on a host: it admits or
// refuses job requests, fetches binaries, runs jobs through a Runner and returns results
// with signed receipts.
type Worker struct {
	cfg    WorkerConfig
	log    *slog.Logger
	key    crypto.PrivKey
	policy sandbox.Limits // the most a job may ask for
	deflt  sandbox.Limits // what a job that names no limit gets: the defaults, capped by policy
	slots  chan struct{}

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	protected map[peer.ID]int
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
		cfg.Slots = runtime.NumCPU()
	}
	if cfg.MaxInput <= 0 {
		cfg.MaxInput = DefaultMaxInput
	}
	policy := cfg.Limits.Or(sandbox.DefaultLimits())
	policy.MaxOutput = min(policy.MaxOutput, protocol.MaxOutput)
	policy.MaxBinary = min(policy.MaxBinary, MaxBlobSize)
	ctx, cancel := context.WithCancel(context.Background())
	return &Worker{
		cfg:       cfg,
		log:       orDiscard(cfg.Logger),
		key:       key,
		policy:    policy,
		deflt:     minLimits(sandbox.DefaultLimits(), policy),
		slots:     make(chan struct{}, cfg.Slots),
		ctx:       ctx,
		cancel:    cancel,
		protected: make(map[peer.ID]int),
	}, nil
}

// Start registers the stream handlers.
func (w *Worker) Start() {
	h := w.cfg.Host
	h.SetStreamHandler(protocol.InfoID, w.handler(w.handleInfo))
	h.SetStreamHandler(protocol.BlobID, w.handler(func(s network.Stream) {
		stop := context.AfterFunc(w.ctx, func() { s.Reset() })
		defer stop()
		serveBlob(w.ctx, s, w.cfg.Store, w.log)
	}))
	h.SetStreamHandler(protocol.JobID, w.handler(w.handleJob))
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
	for _, id := range []p2pproto.ID{protocol.InfoID, protocol.BlobID, protocol.JobID} {
		w.cfg.Host.RemoveStreamHandler(id)
	}
	w.cancel()
	w.wg.Wait()
	return nil
}

// Running returns how many jobs are admitted and not yet answered.
func (w *Worker) Running() int { return len(w.slots) }

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
		sealed, err := protocol.SealOffer(w.offer(req.Nonce), w.key)
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

func (w *Worker) offer(nonce []byte) *protocol.Offer {
	p := w.policy
	return &protocol.Offer{
		Peer:       w.cfg.Host.ID(),
		Arch:       protocol.LocalArch(),
		SlotsFree:  cap(w.slots) - len(w.slots),
		SlotsTotal: cap(w.slots),
		MaxCPU:     p.CPU,
		MaxWall:    p.Wall,
		MaxMemory:  p.Memory,
		MaxStack:   p.Stack,
		MaxOutput:  p.MaxOutput,
		MaxBinary:  p.MaxBinary,
		MaxInput:   w.cfg.MaxInput,
		Time:       time.Now(),
		Nonce:      nonce,
	}
}

// spec is an admitted request.
type spec struct {
	from     peer.ID
	jobCID   cid.Cid
	input    []byte  // inline input
	inputCID cid.Cid // always set
	inline   bool
	lim      sandbox.Limits
	nonce    []byte
}

// admit checks a request against the protocol and the worker's policy.
func (w *Worker) admit(req *protocol.JobRequest, from peer.ID) (*spec, error) {
	if err := req.Check(); err != nil {
		return nil, err
	}
	if req.Arch != "" && req.Arch != protocol.LocalArch() {
		return nil, protocol.Errorf(protocol.Code_ARCH, "job for %s, worker runs %s", req.Arch, protocol.LocalArch())
	}
	lim := limitsFromProto(req.Limits).Or(w.deflt)
	if err := exceeds(lim, w.policy); err != nil {
		return nil, err
	}
	if req.BinarySize > uint64(lim.MaxBinary) {
		return nil, protocol.Errorf(protocol.Code_TOO_LARGE, "binary of %d bytes, limit %d", req.BinarySize, lim.MaxBinary)
	}
	sp := &spec{from: from, lim: lim, nonce: req.Nonce}
	sp.jobCID, _ = cids.Cast(req.JobCid) // checked by req.Check
	if len(req.InputCid) > 0 {
		if req.InputSize > uint64(w.cfg.MaxInput) {
			return nil, protocol.Errorf(protocol.Code_TOO_LARGE, "input of %d bytes, limit %d", req.InputSize, w.cfg.MaxInput)
		}
		sp.inputCID, _ = cids.Cast(req.InputCid)
	} else {
		if int64(len(req.Input)) > w.cfg.MaxInput {
			return nil, protocol.Errorf(protocol.Code_TOO_LARGE, "input of %d bytes, limit %d", len(req.Input), w.cfg.MaxInput)
		}
		sp.input, sp.inline, sp.inputCID = req.Input, true, cids.Sum(req.Input)
	}
	return sp, nil
}

// handleJob runs the job protocol: request, admission, run, result. The submitter keeps its
// write side open while it waits; the read side ending in any way before the result is
// sent (EOF, reset, lost connection) means the submitter is gone and cancels the job.
func (w *Worker) handleJob(s network.Stream) {
	from := s.Conn().RemotePeer()
	log := w.log.With("peer", from)
	// Until the job is admitted, closing the worker just resets the stream.
	stop := context.AfterFunc(w.ctx, func() { s.Reset() })
	protocol.SetDeadline(s, protocol.RequestTimeout)
	var req protocol.JobRequest
	if err := protocol.ReadMsg(s, &req, protocol.MaxJobRequest); err != nil {
		log.Debug("job request", "err", err)
		if errors.Is(err, protocol.ErrTooLarge) || errors.Is(err, protocol.ErrBadRequest) {
			w.refuse(s, err)
		} else {
			s.Reset()
		}
		stop()
		return
	}
	sp, err := w.admit(&req, from)
	if err == nil {
		select {
		case w.slots <- struct{}{}:
			defer func() { <-w.slots }()
		default:
			err = protocol.Errorf(protocol.Code_BUSY, "all %s busy", plural(cap(w.slots), "slot"))
		}
	}
	if err != nil {
		log.Debug("job refused", "err", err)
		w.refuse(s, err)
		stop()
		return
	}
	if !stop() {
		return // Close already reset the stream
	}
	defer w.protect(from)()

	protocol.SetDeadline(s, protocol.FetchTimeout+sp.lim.Wall+protocol.ReplyTimeout)
	if err := protocol.WriteMsg(s, &protocol.JobAdmit{}); err != nil {
		s.Reset()
		return
	}
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var b [1]byte
		s.Read(b[:])
		cancel()
	}()
	defer func() { <-watched }() // runs after the stream is closed or reset below

	log.Debug("job admitted", "job", sp.jobCID, "input", sp.inputCID)
	res, err := w.execute(ctx, sp)
	switch {
	case w.ctx.Err() != nil:
		protocol.SetDeadline(s, 5*time.Second)
		if protocol.WriteMsg(s, &protocol.JobResult{Code: protocol.Code_CANCELLED, Message: "worker shutting down"}) != nil {
			s.Reset()
			return
		}
		// The host is about to close and would drop a reply still in flight: wait (up to
		// the deadline) until the submitter has read it and closed its side.
		s.CloseWrite()
		<-watched
	case ctx.Err() != nil:
		log.Info("job cancelled: submitter gone", "job", sp.jobCID)
		s.Reset()
		return
	default:
		if err != nil {
			log.Info("job failed", "job", sp.jobCID, "err", err)
			code, msg := protocol.Refusal(err)
			res = &protocol.JobResult{Code: code, Message: msg}
		} else {
			log.Info("job done", "job", sp.jobCID, "status", res.Status, "exit", res.ExitCode)
		}
		protocol.SetDeadline(s, protocol.ReplyTimeout)
		stop := context.AfterFunc(w.ctx, func() { s.Reset() })
		err = protocol.WriteMsg(s, res)
		if !stop() || err != nil {
			s.Reset()
			return
		}
	}
	s.Close()
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

// execute fetches what the job needs, runs it and seals the receipt.
func (w *Worker) execute(ctx context.Context, sp *spec) (*protocol.JobResult, error) {
	bin, err := w.blob(ctx, sp.from, sp.jobCID, sp.lim.MaxBinary)
	if err != nil {
		return nil, fmt.Errorf("binary: %w", err)
	}
	input := sp.input
	if !sp.inline {
		if input, err = w.blob(ctx, sp.from, sp.inputCID, w.cfg.MaxInput); err != nil {
			return nil, fmt.Errorf("input: %w", err)
		}
	}
	r, err := w.cfg.Runner.Run(ctx, sandbox.Job{Binary: bin, Stdin: bytes.NewReader(input)}, sp.lim)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, protocol.Errorf(protocol.Code_INTERNAL, "run: %v", err)
	}
	if int64(len(r.Output)) > sp.lim.MaxOutput {
		return nil, protocol.Errorf(protocol.Code_INTERNAL, "runner returned %d bytes of output, limit %d", len(r.Output), sp.lim.MaxOutput)
	}
	status := protocol.Clean(string(r.Status), protocol.MaxText)
	if status == "" {
		return nil, protocol.Errorf(protocol.Code_INTERNAL, "runner returned no status")
	}
	signal := protocol.Clean(r.Signal, protocol.MaxText)
	reason := protocol.Clean(r.Reason, protocol.MaxReason)
	receipt, err := protocol.SealReceipt(&protocol.Receipt{
		JobCID:    sp.jobCID,
		InputCID:  sp.inputCID,
		OutputCID: outputCID(r),
		Status:    status,
		ExitCode:  r.ExitCode,
		Signal:    signal,
		CPU:       r.CPUTime,
		Wall:      r.WallTime,
		Worker:    w.cfg.Host.ID(),
		Nonce:     sp.nonce,
	}, w.key)
	if err != nil {
		return nil, protocol.Errorf(protocol.Code_INTERNAL, "%v", err)
	}
	return &protocol.JobResult{
		Status:   status,
		ExitCode: int32(r.ExitCode),
		Signal:   signal,
		Reason:   reason,
		Output:   r.Output,
		CpuUs:    protocol.ToMicros(r.CPUTime),
		WallUs:   protocol.ToMicros(r.WallTime),
		Receipt:  receipt,
	}, nil
}

// blob returns blob c from the store, fetching it first from the submitter, then from
// providers, when the store does not hold it (or holds a corrupted copy).
func (w *Worker) blob(ctx context.Context, from peer.ID, c cid.Cid, maxSize int64) ([]byte, error) {
	b, err := w.cfg.Store.get(ctx, c, maxSize)
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, ErrTooLarge):
		return nil, protocol.Errorf(protocol.Code_TOO_LARGE, "%v", err)
	case !errors.Is(err, ErrNotFound) && !errors.Is(err, cids.ErrMismatch):
		return nil, protocol.Errorf(protocol.Code_INTERNAL, "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, protocol.FetchTimeout)
	defer cancel()
	b, err = fetchBlob(ctx, w.cfg.Host, from, c, w.cfg.Store, maxSize, true)
	if err != nil && !errors.Is(err, protocol.ErrTooLarge) && w.cfg.Providers != nil {
		for _, ai := range w.cfg.Providers(ctx, c) {
			if ai.ID == from || ai.ID == w.cfg.Host.ID() || ctx.Err() != nil {
				continue
			}
			if len(ai.Addrs) > 0 {
				if cerr := w.cfg.Host.Connect(ctx, ai); cerr != nil {
					continue
				}
			}
			if pb, perr := fetchBlob(ctx, w.cfg.Host, ai.ID, c, w.cfg.Store, maxSize, true); perr == nil {
				b, err = pb, nil
				break
			}
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
	return b, nil
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
