//go:build linux && amd64

package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestCPUQuota runs two CPU-bound jobs side by side until their wall limits, one held to
// half a core, and compares the CPU each used per second of wall time, so that both see
// the same load from the rest of the machine: the capped one gets about half. Its wall
// limit counts only the time it was let run: given half the uncapped one's, it ends at
// about the same time. Jobs run at SCHED_IDLE, so on a machine too busy to give the
// uncapped one half a core the comparison says nothing: it is made again, up to 5 times.
func TestCPUQuota(t *testing.T) {
	const wall = 1200 * time.Millisecond
	use := func(r Result) float64 { return r.CPUTime.Seconds() / r.WallTime.Seconds() }
	for try := 1; ; try++ {
		var free, capped Result
		idle := idleCores()
		var wg sync.WaitGroup
		run := func(r *Runner, wall time.Duration, res *Result) {
			wg.Go(func() {
				var err error
				*res, err = r.Run(context.Background(), Job{Binary: genLoop(1 << 62)}, Limits{CPU: time.Minute, Wall: wall})
				if err != nil {
					t.Error(err)
				} else if res.Status != StatusWallTimeout {
					t.Errorf("got %s (%s), want %s", res.Status, res.Reason, StatusWallTimeout)
				}
			})
		}
		run(&Runner{}, wall, &free)
		run(&Runner{CPUQuota: 0.5}, wall/2, &capped)
		wg.Wait()
		idled := idle()
		if t.Failed() {
			return
		}
		ratio := use(capped) / use(free)
		t.Logf("uncapped: cpu %v wall %v; capped at 0.5: cpu %v wall %v; use ratio %.2f",
			free.CPUTime, free.WallTime, capped.CPUTime, capped.WallTime, ratio)
		if use(free) < 0.5 {
			// SCHED_IDLE yields to any other load; with a core to spare it has no excuse.
			if idled >= 1 {
				t.Fatalf("the uncapped job used %.2f of a core while %.2f cores stood idle: something other than the machine's load held it", use(free), idled)
			}
			if try == 5 {
				t.Skipf("the machine never gave the uncapped job half a core in %d tries, and never had a core idle (%.2f on the last): too busy to measure", try, idled)
			}
			continue
		}
		if ratio < 0.3 || ratio > 0.7 {
			t.Errorf("the capped job used %.2f of the CPU the uncapped one did per wall second, want 0.3 to 0.7", ratio)
		}
		if capped.WallTime < wall*3/4 {
			t.Errorf("the capped job with a %v wall limit ended after %v, want at least %v: the limit should count only the time it ran", wall/2, capped.WallTime, wall*3/4)
		}
		return
	}
}

// TestDutyCycleKillStopped cancels a job while the cycle holds it stopped (the kernel's
// view, /proc/PID/stat, says so): it must die at once, and the cycle must end with it.
func TestDutyCycleKillStopped(t *testing.T) {
	r := &Runner{CPUQuota: 0.05} // stopped 95 ms of every 100
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type ran struct {
		res Result
		err error
	}
	done := make(chan ran, 1)
	go func() {
		res, err := r.Run(ctx, Job{Binary: genLoop(1 << 62)}, Limits{CPU: time.Minute, Wall: time.Minute})
		done <- ran{res, err}
	}()
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the job was never seen stopped by the cycle")
		}
		if d := r.cycle(); d != nil {
			d.mu.Lock()
			for c := range d.jobs {
				if !c.stoppedAt.IsZero() && procState(c.proc.Pid) == 'T' {
					pid = c.proc.Pid
				}
			}
			d.mu.Unlock()
		}
		if pid == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	cancel()
	select {
	case got := <-done:
		if got.err == nil {
			t.Errorf("got %s, want a cancellation error", got.res.Status)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a stopped job outlived its cancellation by 2 s")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil && procState(pid) != 0 {
		t.Errorf("job process %d still there (state %c)", pid, procState(pid))
	}
	for deadline := time.Now().Add(2 * time.Second); ; {
		r.dc.mu.Lock()
		active := r.dc.active
		r.dc.mu.Unlock()
		if !active {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the duty cycle still runs with no job")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// idleCores starts a measure of the machine's idle CPU (/proc/stat's idle and iowait); the
// function it returns says how many cores on average stood idle since. Without /proc/stat
// it says 0, so a caller that fails only on idle cores never fails for want of it.
func idleCores() func() float64 {
	idle0, total0 := cpuTimes()
	return func() float64 {
		idle1, total1 := cpuTimes()
		if total1 <= total0 {
			return 0
		}
		return float64(idle1-idle0) / float64(total1-total0) * float64(runtime.NumCPU())
	}
}

// cpuTimes returns the idle (idle + iowait) and total jiffies of /proc/stat's cpu line.
func cpuTimes() (idle, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := bytes.Fields(line)
	if len(fields) < 6 {
		return 0, 0
	}
	for i, f := range fields[1:min(len(fields), 9)] { // guest time (8, 9) is in user time already
		n, _ := strconv.ParseUint(string(f), 10, 64)
		total += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return idle, total
}

// procState is the state letter of /proc/PID/stat, 0 if there is none.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}
