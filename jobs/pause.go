package jobs

import (
	"context"
	"sync"

	"github.com/gridnode/gridnode/protocol"
)

// pauseGate is the donor's pause (`gridnode pause`): while paused, a worker refuses every
// job BUSY and offers no free slot; a pause that cancels also ends the jobs running. The
// zero value is not paused.
type pauseGate struct {
	mu     sync.Mutex
	on     bool
	ctx    context.Context // ends when a cancelling pause begins; nil until first asked
	cancel context.CancelFunc
}

// set pauses (on) or resumes; a pause with cancelRunning ends the context jobs() gave
// the jobs running now.
func (g *pauseGate) set(on, cancelRunning bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.on = on
	if on && cancelRunning && g.cancel != nil {
		g.cancel()
		g.ctx, g.cancel = nil, nil
	}
}

func (g *pauseGate) paused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.on
}

// check refuses a job while paused.
func (g *pauseGate) check() error {
	if g.paused() {
		return protocol.Errorf(protocol.Code_BUSY, "paused by the donor")
	}
	return nil
}

// jobs is the context of the jobs admitted now: a cancelling pause ends it.
func (g *pauseGate) jobs() context.Context {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctx == nil {
		g.ctx, g.cancel = context.WithCancel(context.Background())
	}
	return g.ctx
}

// Pause makes the worker refuse new jobs (BUSY, "paused by the donor") and offer no free
// slot until Resume. Running jobs finish, unless cancelRunning: then they end now and
// their submitters get CANCELLED.
func (w *Worker) Pause(cancelRunning bool) { w.pause.set(true, cancelRunning) }

// Resume undoes Pause.
func (w *Worker) Resume() { w.pause.set(false, false) }

// Paused reports whether the donor paused the worker.
func (w *Worker) Paused() bool { return w.pause.paused() }
