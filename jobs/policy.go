package jobs

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// The donor's policy: how many jobs run at once (Slots) and when none is admitted
// (MaxLoad). Jobs already run under SCHED_IDLE, so they take only CPU time nothing else
// wants; the policy keeps them off the machine altogether while its owner uses it.

// DefaultSlots is the slots a worker donates unless told: half the cores, at least one,
// so that a donor who never set --slots still has cores no job's cache, memory traffic
// or heat touches.
func DefaultSlots() int { return max(1, runtime.NumCPU()/2) }

// Load sampling: the machine's runnable tasks are read every loadEvery (never per
// request), and the non-grid load is their exponentially weighted moving average with
// time constant loadTau: about the last 10 seconds, so that a compiler run pauses the
// worker within seconds while a single busy sample does not.
const (
	loadEvery = time.Second
	loadTau   = 10 * time.Second
)

// loadGate decides whether a worker admits jobs under the donor's MaxLoad. The non-grid
// load is the number of runnable tasks on the machine (procs_running in /proc/stat,
// the sampling thread itself not counted) minus the grid jobs running now, at least 0,
// smoothed over loadTau. Each running grid job counts as one runnable task: jobs are
// CPU-bound, so one blocked in a read or write makes the estimate low by one for that
// moment. A zero max turns the gate off: nothing is sampled.
type loadGate struct {
	max      float64
	runnable func() (int, error) // runnable tasks now, the caller excluded
	grid     atomic.Int32        // grid jobs inside the runner now

	mu   sync.Mutex
	avg  float64
	at   time.Time // of the last sample; zero before the first
	errs int       // samples that failed in a row
}

// newLoadGate returns the gate for max (0: none) reading runnable, or procsRunning when
// it is nil; with a max, it takes its first sample now and fails if it cannot.
func newLoadGate(max float64, runnable func() (int, error)) (*loadGate, error) {
	if math.IsNaN(max) || max < 0 {
		return nil, fmt.Errorf("max load %v: want 0 (none) or more", max)
	}
	if runnable == nil {
		runnable = procsRunning
	}
	g := &loadGate{max: max, runnable: runnable}
	if max > 0 {
		n, err := runnable()
		if err != nil {
			return nil, fmt.Errorf("max load: %w", err)
		}
		g.observe(time.Now(), n, 0)
	}
	return g, nil
}

// observe adds a sample of runnable tasks at now, grid of them the worker's jobs.
func (g *loadGate) observe(now time.Time, runnable, grid int) {
	x := float64(max(runnable-grid, 0))
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.at.IsZero() {
		g.avg = x
	} else if dt := now.Sub(g.at); dt > 0 {
		g.avg += (1 - math.Exp(-float64(dt)/float64(loadTau))) * (x - g.avg)
	}
	g.at = now
}

// state returns the non-grid load and whether jobs are refused because of it.
func (g *loadGate) state() (load float64, paused bool) {
	if g.max == 0 {
		return 0, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.avg, g.avg > g.max
}

// check is nil, or the BUSY refusal of a job while the load is above the max.
func (g *loadGate) check() error {
	if load, paused := g.state(); paused {
		return protocol.Errorf(protocol.Code_BUSY, "the donor's machine is busy: load %.2f above %.2f", load, g.max)
	}
	return nil
}

// count wraps r so that the gate knows how many grid jobs are running.
func (g *loadGate) count(r Runner) Runner {
	if g.max == 0 {
		return r
	}
	return RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		g.grid.Add(1)
		defer g.grid.Add(-1)
		return r.Run(ctx, job, lim)
	})
}

// run samples every loadEvery until ctx ends. A failed sample keeps the last average.
func (g *loadGate) run(ctx context.Context, wg *sync.WaitGroup, warn func(msg string, args ...any)) {
	if g.max == 0 {
		return
	}
	wg.Go(func() {
		tick := time.NewTicker(loadEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				grid := int(g.grid.Load())
				n, err := g.runnable()
				if err != nil {
					if g.errs++; g.errs == 1 {
						warn("load not sampled; the last load stands", "err", err)
					}
					continue
				}
				g.errs = 0
				g.observe(now, n, grid)
			}
		}
	})
}
