package testnet

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/internal/proctest"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
)

// concurrency counts the jobs a runner runs at once and the most it ever ran.
type concurrency struct {
	now, most atomic.Int32
}

func (c *concurrency) wrap(r jobs.Runner) jobs.Runner {
	return jobs.RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		n := c.now.Add(1)
		defer c.now.Add(-1)
		for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
		}
		return r.Run(ctx, job, lim)
	})
}

// TestManyJobs submits 200 jobs at once from 10 clients to 5 workers of 2 slots: every job
// is accepted with the right output and valid receipts, no worker ever runs more jobs at
// once than its slots (counted in its runner), and once the clients are gone the process
// has no more goroutines than before.
func TestManyJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 400 jobs")
	}
	const nodes, slots, clients, total = 5, 2, 10, 200
	bin := buildJob(t, "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	counts := make([]concurrency, nodes)
	sr := &sandbox.Runner{}
	n, err := Start(ctx, Setup{Nodes: nodes, Slots: slots, NodeRunner: func(i int) node.Runner { return counts[i].wrap(sr) }})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	submit := func(c *node.Node, i int) error {
		in := fmt.Appendf(nil, "job %d\n", i)
		rep, err := c.Submit(ctx, jobs.Request{Binary: bin, Input: in, Replicas: 2, Quorum: 2, Trust: n.Honest()})
		switch {
		case err != nil:
			return err
		case string(rep.Output) != string(in):
			return fmt.Errorf("job %d: output %q, want %q", i, rep.Output, in)
		}
		agree := 0
		for _, r := range rep.Replicas {
			if r.ReceiptValid && r.OutputCID.Equals(cids.Sum(in)) {
				agree++
			}
		}
		if agree < 2 {
			return fmt.Errorf("job %d: %d valid agreeing receipts, want 2", i, agree)
		}
		return nil
	}
	// Warm up (first connections, the binary fetched and stored), then count.
	warm, err := n.NewClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := submit(warm, -1); err != nil {
		t.Fatal(err)
	}
	warm.Close()
	before := runtime.NumGoroutine()

	cs := make([]*node.Node, clients)
	for k := range cs {
		if cs[k], err = n.NewClient(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	errs := make([]error, total)
	var wg sync.WaitGroup
	for i := range total {
		wg.Go(func() { errs[i] = submit(cs[i%clients], i) })
	}
	wg.Wait()
	took := time.Since(t0)
	failed, busy := 0, 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		if errors.Is(err, jobs.ErrNoWorkers) {
			busy++
		}
		if failed++; failed <= 5 {
			t.Errorf("job %d: %v", i, err)
		}
	}
	t.Logf("%d jobs (R=2) on %d workers of %d slots from %d clients: %v, %d failed (%d for want of a free worker)", total, nodes, slots, clients, took.Round(time.Millisecond), failed, busy)
	for i := range counts {
		if most := counts[i].most.Load(); most > slots {
			t.Errorf("node %d ran %d jobs at once, more than its %d slots", i, most, slots)
		}
	}

	for _, c := range cs {
		c.Close()
	}
	var after int
	proctest.Poll(t, 20*time.Second, "the goroutines to come back to the baseline", func() bool {
		after = runtime.NumGoroutine()
		return after <= before+5
	})
	t.Logf("goroutines: %d before, %d after", before, after)
}
