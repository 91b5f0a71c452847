//go:build linux && amd64

package sandbox

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSupervisorQuiet runs a compute-bound job and checks what the supervising process (this
// one) does while it runs, with and without the CPU cap: its CPU and its wakeups (voluntary
// context switches), both from getrusage, per second of the job's wall time, beyond what a
// trivial job's run costs it (the launch and the reap, which every job pays once). CPU and
// wakeups, not wall time: a busy machine stretches the job (it runs at SCHED_IDLE) but adds
// neither to what this process does.
//
// Measured on a 2-core VM under other work's load: without the cap 0.2 to 0.5 ms of CPU and
// 0 to 16 wakeups per job-second (nothing polls, the wall limit is one timer, and the Go
// runtime's sysmon sleeps until it); with the cap's duty cycle 1.6 to 2.9 ms and 110 to 190
// wakeups: each of its 20 signals a second wakes the cycle's goroutine through a timer,
// sysmon at that timer, and a thread for the SIGCHLD the kernel sends when the job stops or
// goes on. A poller at 40 Hz would fail the first case's bound.
func TestSupervisorQuiet(t *testing.T) {
	const spin = 1_000_000_000 // about 0.3 s
	for _, tc := range []struct {
		name          string
		r             *Runner
		cpuPerSec     time.Duration
		wakeupsPerSec float64
	}{
		{"plain", &Runner{}, 5 * time.Millisecond, 40},
		{"cpu-cap", &Runner{CPUQuota: 0.5}, 10 * time.Millisecond, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.r.CPUQuota > 0 {
				t.Skip("the cycled job takes twice as long")
			}
			trivial := genLoopWrite(1)
			run := func(bin []byte) (cpu time.Duration, wakeups int, wall time.Duration) {
				c0, w0 := selfCPU(t), selfWakeups(t)
				res, err := tc.r.Run(context.Background(), Job{Binary: bin}, Limits{})
				c1, w1 := selfCPU(t), selfWakeups(t)
				if err != nil || res.Status != StatusExited {
					t.Fatalf("got %s (%s) %v, want exited", res.Status, res.Reason, err)
				}
				return c1 - c0, w1 - w0, res.WallTime
			}
			run(trivial) // the Runner's one-time set-up
			// The least of three of each: a wakeup or a page fault of the test runtime's
			// own can only add.
			var baseCPU, jobCPU time.Duration = time.Hour, time.Hour
			baseW, jobW := 1<<30, 1<<30
			var wall time.Duration
			for range 3 {
				c, w, _ := run(trivial)
				baseCPU, baseW = min(baseCPU, c), min(baseW, w)
				c, w, d := run(genLoopWrite(spin))
				if c < jobCPU {
					jobCPU, wall = c, d
				}
				jobW = min(jobW, w)
			}
			secs := wall.Seconds()
			cpuPerSec := time.Duration(float64(max(jobCPU-baseCPU, 0)) / secs)
			wPerSec := float64(max(jobW-baseW, 0)) / secs
			t.Logf("job wall %v: supervisor %v CPU (a trivial job's run: %v), %d wakeups (%d): %v and %.1f wakeups per job-second",
				wall.Round(time.Millisecond), jobCPU, baseCPU, jobW, baseW, cpuPerSec, wPerSec)
			if cpuPerSec > tc.cpuPerSec {
				t.Errorf("got %v of supervisor CPU per second of the job, want at most %v", cpuPerSec, tc.cpuPerSec)
			}
			if wPerSec > tc.wakeupsPerSec {
				t.Errorf("got %.1f supervisor wakeups per second of the job, want at most %.0f", wPerSec, tc.wakeupsPerSec)
			}
		})
	}
}

// selfWakeups is the number of times this process's threads, those that exited included,
// have blocked so far (getrusage's voluntary context switches): each is a sleep that
// something later woke.
func selfWakeups(t *testing.T) int {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return int(ru.Nvcsw)
}
