package node

import (
	"context"
	"runtime"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/sandbox"
)

// Runner runs one job in a sandbox; *sandbox.Runner implements it.
type Runner = jobs.Runner

// jobsPart is the node's worker (nil on a client) and its submitter.
type jobsPart struct {
	worker *jobs.Worker
	sub    *jobs.Submitter
}

func openJobs(n *Node) (*jobsPart, error) {
	cfg := n.cfg
	st, err := jobs.OpenStore(n.dir) // the store keeps its blobs in n.dir/blobs
	if err != nil {
		return nil, err
	}
	// Job binaries this node's worker fetched and validated are provided under their CIDs,
	// so a worker that cannot reach the submitter finds another source. Other blobs (what
	// this node submits, inputs) are not: a provider record should point at a real job.
	st.Provide = n.d.ProvideLater
	st.Quota = cfg.StoreQuota
	j := &jobsPart{}
	log := n.log.With("component", "jobs")
	// Jobs reach peers behind NAT through relays when hole punching fails (see jobHost).
	h := jobHost{Host: n.h, log: n.log.With("component", "net")}
	// The submitter serves the store's blobs (binaries it submits); a worker then replaces
	// that handler with one that stops with the worker.
	j.sub, err = jobs.NewSubmitter(jobs.SubmitterConfig{
		Host:        h,
		Store:       st,
		FindWorkers: n.findWorkers,
		Logger:      log,
		Progress:    cfg.Progress,
	})
	if err != nil {
		return nil, err
	}
	if cfg.Worker {
		runner := cfg.Runner
		if runner == nil {
			// JobsMemory: what the slots' jobs may use together, plus room for the kernel's own
			// per-process memory, so a job that got past the stub's RLIMIT_AS is still held.
			slots := cfg.Slots
			if slots <= 0 {
				slots = runtime.NumCPU()
			}
			mem := cfg.Limits.Or(sandbox.DefaultLimits()).Memory
			runner = &sandbox.Runner{Logger: n.log.With("component", "sandbox"), JobUIDs: cfg.JobUIDs,
				JobsMemory: int64(slots) * (mem + 16<<20)}
		}
		var validate func([]byte, sandbox.Limits) error // nil: sandbox.Validate
		var isolation string
		if sr, ok := runner.(*sandbox.Runner); !ok {
			validate = acceptAny // a runner of the caller's (tests) judges binaries itself
		} else {
			// Said in the log (by the sandbox, once) and in every signed offer.
			isolation = sr.Isolation().String()
			if err := sandbox.CheckBinfmt(); err != nil {
				// The node still serves the grid; every job is refused until this is fixed.
				log.Error("jobs will be refused", "err", err)
			}
		}
		j.worker, err = jobs.NewWorker(jobs.WorkerConfig{
			Host:         h,
			Store:        st,
			Runner:       runner,
			Slots:        cfg.Slots,
			SlotsPerPeer: cfg.SlotsPerPeer,
			Isolation:    isolation,
			Limits:       cfg.Limits,
			Validate:     validate,
			Providers: func(ctx context.Context, c cid.Cid) []peer.AddrInfo {
				return n.d.FindProviders(ctx, c)
			},
			Logger: log,
		})
		if err != nil {
			return nil, err
		}
		j.worker.Start()
	}
	return j, nil
}

func acceptAny([]byte, sandbox.Limits) error { return nil }

// findWorkers asks the DHT for workers, waiting a few seconds when it knows none yet: a
// grid that just started may still be announcing.
func (n *Node) findWorkers(ctx context.Context) ([]peer.AddrInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return n.WaitWorkers(ctx, 1)
}

func (j *jobsPart) close() error {
	if j.worker != nil {
		return j.worker.Close()
	}
	return nil
}

// Submit runs a job on the grid and returns the verified report.
func (n *Node) Submit(ctx context.Context, req jobs.Request) (*jobs.Report, error) {
	return n.jobs.sub.Submit(ctx, req)
}

// Running is the number of jobs this worker has admitted and not yet answered.
func (n *Node) Running() int {
	if n.jobs.worker == nil {
		return 0
	}
	return n.jobs.worker.Running()
}
