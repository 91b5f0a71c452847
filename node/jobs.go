package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/internal/platform"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/store"
)

// Runner runs one job in a sandbox; *sandbox.Runner implements it.
type Runner = jobs.Runner

// jobsPart is the node's store, the blob handler that serves it, the worker (nil on a
// client) and the submitter.
type jobsPart struct {
	h      host.Host
	store  *store.Store
	blobs  *store.Server
	worker *jobs.Worker
	sub    *jobs.Submitter
	// workers caches the DHT's answers for the submitter (workercache.go).
	workers workerCache
	locator locator     // the submitter's anchors (discovery.go)
	credit  *creditPart // credit.go
}

// openJobs opens the store, serves it on the blob protocol, and makes the submitter and,
// on a worker, the worker; on an error it closes what it opened.
func openJobs(n *Node) (_ *jobsPart, err error) {
	cfg := n.cfg
	st, err := store.Open(n.dir) // the store keeps its blobs in n.dir/blobs
	if err != nil {
		return nil, err
	}
	// Job binaries this node's worker fetched and validated are provided under their CIDs,
	// so a worker that cannot reach the submitter finds another source. Other blobs (what
	// this node submits, inputs) are not: a provider record should point at a real job.
	st.Provide = n.d.ProvideLater
	st.Quota = cfg.StoreQuota
	j := &jobsPart{h: n.h, store: st, workers: workerCache{ttl: workersTTL, now: time.Now}}
	defer func() {
		if err != nil {
			j.close()
		}
	}()
	if j.credit, err = openCredit(n); err != nil {
		return nil, err
	}
	log := n.log.With("component", "jobs")
	// The one blob handler: workers pull the binaries and inputs this node submits, and
	// other workers the binaries this node's worker kept.
	j.blobs = store.NewServer(st, log)
	n.h.SetStreamHandler(protocol.BlobID, j.blobs.Handle)

	runner := cfg.Runner
	if runner == nil && len(sandbox.Arches()) > 0 {
		// JobsMemory: what the slots' jobs may use together, plus room for the kernel's own
		// per-process memory, so a job that got past the stub's RLIMIT_AS is still held.
		slots := cfg.Slots
		if slots <= 0 {
			slots = jobs.DefaultSlots()
		}
		mem := cfg.Limits.Or(sandbox.DefaultLimits()).Memory
		runner = &sandbox.Runner{Logger: n.log.With("component", "sandbox"), JobUIDs: cfg.JobUIDs,
			JobsMemory: int64(slots) * (mem + 16<<20), CPUQuota: jobs.CPUQuota(cfg.CPUShare)}
	}
	recordsPath := cfg.Records
	if recordsPath == "" && !cfg.Ephemeral {
		recordsPath = filepath.Join(n.dir, RecordsFile)
	}
	records, err := jobs.OpenRecords(recordsPath)
	if err != nil {
		return nil, err
	}
	trust := cfg.Trust
	if !cfg.Ephemeral {
		ps, err := ReadTrustFile(filepath.Join(n.dir, TrustFile))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		trust = append(slices.Clone(trust), ps...)
	}
	// Jobs reach peers behind NAT through relays when hole punching fails (see jobHost).
	h := jobHost{Host: n.h, log: n.log.With("component", "net")}
	j.sub, err = jobs.NewSubmitter(jobs.SubmitterConfig{
		Host:        h,
		Store:       st,
		Records:     records,
		Trusted:     trust,
		SamePrefix:  cfg.SamePrefix,
		Local:       runner, // for --verify-local; nil where this machine cannot run jobs
		Events:      jobs.JoinEvents(n.events...),
		FindWorkers: n.findWorkers,
		Locate:      n.locate,
		Logger:      log,
		Progress:    cfg.Progress,
	})
	if err != nil {
		return nil, err
	}
	if cfg.Worker {
		if runner == nil {
			return nil, fmt.Errorf("%w: this machine (%s) cannot run jobs; run without --worker to submit only", sandbox.ErrUnsupported, platform.Current)
		}
		var validate func([]byte, sandbox.Limits) error // nil: sandbox.Validate
		var isolation string
		if sr, ok := runner.(*sandbox.Runner); !ok {
			validate = acceptAny // a runner of the caller's (tests) judges binaries itself
		} else {
			// Said in the log (by the sandbox, once) and in every signed offer.
			isolation = sr.Isolation().String()
			for _, check := range []func() error{sandbox.CheckBinfmt, sandbox.CheckSeccomp} {
				if err := check(); err != nil {
					// The node still serves the grid; every job is refused until this is fixed.
					log.Error("jobs will be refused", "err", err)
				}
			}
		}
		j.worker, err = jobs.NewWorker(jobs.WorkerConfig{
			Host:         h,
			Store:        st,
			Runner:       runner,
			Slots:        cfg.Slots,
			MaxLoad:      cfg.MaxLoad,
			Hours:        cfg.Hours,
			CPUShare:     cfg.CPUShare,
			SlotsPerPeer: cfg.SlotsPerPeer,
			Isolation:    isolation,
			Events:       jobs.JoinEvents(n.events...),
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

// Files of the submitter's trust in the data dir.
const (
	RecordsFile = "workers.json"  // the record of workers (jobs.Records)
	TrustFile   = "trusted-peers" // workers the owner trusts, one peer ID per line
)

// maxTrustFile bounds a trust file: a peer ID line is about 53 bytes.
const maxTrustFile = 1 << 20

// ReadTrustFile reads peer IDs, one per line; blank lines and text after '#' are ignored.
// A line that is not a peer ID is an error naming it.
func ReadTrustFile(path string) ([]peer.ID, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTrustFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxTrustFile {
		return nil, fmt.Errorf("trust file %s: over %d bytes", path, maxTrustFile)
	}
	var ps []peer.ID
	for i, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		p, err := peer.Decode(line)
		if err != nil {
			return nil, fmt.Errorf("trust file %s, line %d: %q is not a peer ID: %v", path, i+1, line, err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// findWorkers asks the DHT for workers, waiting a few seconds when it knows none yet: a
// grid that just started may still be announcing.
func (n *Node) findWorkers(ctx context.Context, arch string) ([]peer.AddrInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return n.jobs.workers.get(ctx, arch, func(ctx context.Context) ([]peer.AddrInfo, error) {
		return n.discover(ctx, arch)
	})
}

// close stops the worker (cancelling its jobs: it waits until their submitters have read
// the "cancelled" replies), then the blob handler, then the store.
func (j *jobsPart) close() error {
	var errs []error
	j.locator.close()
	if j.credit != nil {
		j.credit.close()
	}
	if j.worker != nil {
		errs = append(errs, j.worker.Close())
	}
	if j.blobs != nil {
		j.h.RemoveStreamHandler(protocol.BlobID)
		errs = append(errs, j.blobs.Close())
	}
	errs = append(errs, j.store.Close())
	return errors.Join(errs...)
}

// Trust adds workers whose replicas anchor the quorums of this node's submits.
func (n *Node) Trust(ps ...peer.ID) { n.jobs.sub.Trust(ps...) }

// Submit runs a job on the grid and returns the verified report.
func (n *Node) Submit(ctx context.Context, req jobs.Request) (*jobs.Report, error) {
	return n.jobs.sub.Submit(ctx, req)
}

// SubmitBatch runs req's binary on each of inputs, each a verified job, and tells done of
// each (jobs.Submitter.SubmitBatch).
func (n *Node) SubmitBatch(ctx context.Context, req jobs.Request, inputs [][]byte, done jobs.BatchDone) error {
	return n.jobs.sub.SubmitBatch(ctx, req, inputs, done)
}

// Running is the number of jobs this worker has admitted and not yet answered.
func (n *Node) Running() int {
	if n.jobs.worker == nil {
		return 0
	}
	return n.jobs.worker.Running()
}
