//go:build linux && amd64

package sandbox

import (
	"os"
	"sync"
	"syscall"
	"time"
)

// dutyPeriod is the duty cycle's period: jobs run for the quota's share of it and are
// stopped for the rest. Short enough that the donor sees a steady load, long enough that
// two signals per job per period cost nothing measurable.
const dutyPeriod = 100 * time.Millisecond

// dutyCycle holds the running jobs of a Runner to quota cores together, without root:
// with n jobs running, each runs a share min(1, quota/n) of every period and is stopped
// (SIGSTOP) for the rest, then continued (SIGCONT). Signals go through the job's pidfd
// (os.Process), so they never hit a recycled PID, and a job reaped already is simply
// not signalled. No job can catch, block or ignore SIGSTOP, and the kernel delivers it
// to the PID 1 of a namespace from the namespace's parent; SIGKILL ends a stopped job
// like any other, so a kill (wall limit, output limit, cancellation) never waits for the
// cycle. Only the job's first process is cycled: strict seccomp lets it create no other,
// so a job that got past the stub and forked escapes the cap, not the sandbox.
type dutyCycle struct {
	quota  float64 // cores
	period time.Duration

	mu      sync.Mutex
	jobs    map[*cycled]struct{}
	active  bool          // the cycling goroutine runs
	changed chan struct{} // a job came or went; buffered 1
}

// cycled is one job under the cycle. Its fields are guarded by dutyCycle.mu.
type cycled struct {
	proc      *os.Process
	stoppedAt time.Time     // when the cycle stopped it; zero while it runs
	held      time.Duration // time it was held stopped, before stoppedAt
}

func newDutyCycle(quota float64, period time.Duration) *dutyCycle {
	return &dutyCycle{quota: quota, period: period, jobs: map[*cycled]struct{}{}, changed: make(chan struct{}, 1)}
}

// add puts p under the cycle; the caller removes it once p is reaped.
func (d *dutyCycle) add(p *os.Process) *cycled {
	c := &cycled{proc: p}
	d.mu.Lock()
	d.jobs[c] = struct{}{}
	if !d.active {
		d.active = true
		go d.run()
	}
	d.mu.Unlock()
	d.notify()
	return c
}

// remove takes c out of the cycle, continuing it if the cycle holds it stopped.
func (d *dutyCycle) remove(c *cycled) {
	d.mu.Lock()
	delete(d.jobs, c)
	if !c.stoppedAt.IsZero() {
		c.proc.Signal(syscall.SIGCONT)
		c.held += time.Since(c.stoppedAt)
		c.stoppedAt = time.Time{}
	}
	d.mu.Unlock()
	d.notify()
}

func (d *dutyCycle) notify() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// heldFor returns how long the cycle has held c stopped so far.
func (d *dutyCycle) heldFor(c *cycled) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := c.held
	if !c.stoppedAt.IsZero() {
		h += time.Since(c.stoppedAt)
	}
	return h
}

// share returns the share of a period each job runs now, and false when no job is left.
func (d *dutyCycle) share() (float64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.jobs)
	if n == 0 {
		d.active = false
		return 0, false
	}
	return min(1, d.quota/float64(n)), true
}

// run cycles the jobs until none is left.
func (d *dutyCycle) run() {
	for {
		f, ok := d.share()
		if !ok {
			return
		}
		if f >= 1 {
			<-d.changed // the quota covers every job: let them run until that changes
			continue
		}
		on := time.Duration(f * float64(d.period))
		time.Sleep(on)
		d.signal(syscall.SIGSTOP)
		time.Sleep(d.period - on)
		d.signal(syscall.SIGCONT)
	}
}

// signal stops (SIGSTOP) or continues (SIGCONT) every job under the cycle.
func (d *dutyCycle) signal(sig syscall.Signal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	for c := range d.jobs {
		switch {
		case sig == syscall.SIGSTOP && c.stoppedAt.IsZero():
			if c.proc.Signal(sig) == nil {
				c.stoppedAt = now
			}
		case sig == syscall.SIGCONT && !c.stoppedAt.IsZero():
			c.proc.Signal(sig)
			c.held += now.Sub(c.stoppedAt)
			c.stoppedAt = time.Time{}
		}
	}
}

// cycle returns r's duty cycle, nil without a CPUQuota.
func (r *Runner) cycle() *dutyCycle {
	r.cycleOnce.Do(func() {
		if r.CPUQuota > 0 {
			r.dc = newDutyCycle(r.CPUQuota, dutyPeriod)
		}
	})
	return r.dc
}

// wallTimer is a job's wall-clock limit under the cycle: it counts only the time the job
// was let run, so a job held to half a core reaches its limit after the same work as one
// that is not (and after about twice the wall time). Without a cycle it is a plain timer.
type wallTimer struct {
	t        *time.Timer
	d        *dutyCycle // nil: none
	mu       sync.Mutex
	c        *cycled // once the job runs
	credited time.Duration
}

// newWallTimer calls kill once the job has been let run for wall.
func newWallTimer(d *dutyCycle, wall time.Duration, kill func()) *wallTimer {
	w := &wallTimer{d: d}
	w.t = time.AfterFunc(wall, func() {
		w.mu.Lock()
		if w.c != nil {
			// Give back the time the cycle held the job since the last look.
			if h := d.heldFor(w.c); h > w.credited {
				extra := h - w.credited
				w.credited = h
				w.t.Reset(extra)
				w.mu.Unlock()
				return
			}
		}
		w.mu.Unlock()
		kill()
	})
	return w
}

// started puts the job's process under the cycle, if there is one, and returns what
// takes it out (after it is reaped).
func (w *wallTimer) started(p *os.Process) (done func()) {
	if w.d == nil {
		return func() {}
	}
	c := w.d.add(p)
	w.mu.Lock()
	w.c = c
	w.mu.Unlock()
	return func() { w.d.remove(c) }
}
