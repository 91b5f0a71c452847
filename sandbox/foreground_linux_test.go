//go:build linux && amd64

package sandbox

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// foregroundEnv makes the test binary run foregroundLoop and print its duration: the
// donor's own program, in a process of its own as it would be.
const foregroundEnv = "GRIDNODE_FOREGROUND_ROUNDS"

// foregroundLoop hashes a 4 KiB block rounds times: fixed CPU-bound work.
func foregroundLoop(rounds int) [32]byte {
	var buf [4096]byte
	sum := sha256.Sum256(buf[:])
	for range rounds {
		copy(buf[:], sum[:])
		sum = sha256.Sum256(buf[:])
	}
	return sum
}

// TestForegroundHelper is the foreground program of BenchmarkForeground; it does nothing
// unless run by it.
func TestForegroundHelper(t *testing.T) {
	rounds, err := strconv.Atoi(os.Getenv(foregroundEnv))
	if err != nil {
		t.Skip("only run by BenchmarkForeground")
	}
	t0 := time.Now()
	foregroundLoop(rounds)
	fmt.Printf("foreground-ns %d\n", time.Since(t0).Nanoseconds())
}

// foreground runs the foreground program (single-threaded) and returns how long its loop
// took.
func foreground(b *testing.B, rounds int) time.Duration {
	cmd := exec.Command(os.Args[0], "-test.run=^TestForegroundHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), foregroundEnv+"="+strconv.Itoa(rounds), "GOMAXPROCS=1")
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("foreground: %v: %s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(line, "foreground-ns "); ok {
			ns, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return time.Duration(ns)
		}
	}
	b.Fatalf("foreground printed no time: %s", out)
	return 0
}

// BenchmarkForeground times a CPU-bound foreground program (about 0.3 s of hashing) on an
// idle machine and while every core runs a CPU-bound sandboxed job (as many as a worker
// with one slot per core runs; they start under SCHED_IDLE), alternating the two in one
// run. ratio is the median idle time over the median loaded time: the foreground speed
// kept (target >= 0.95).
func BenchmarkForeground(b *testing.B) {
	const rounds = 100_000
	bin := genLoopWrite(3_000_000_000) // about 0.8 s of CPU per job
	r := &Runner{}
	var idle, loaded []time.Duration
	for b.Loop() {
		idle = append(idle, foreground(b, rounds))

		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		started := make(chan struct{}, runtime.NumCPU())
		for range runtime.NumCPU() {
			wg.Go(func() {
				started <- struct{}{}
				for ctx.Err() == nil {
					res, err := r.Run(ctx, Job{Binary: bin}, Limits{})
					if ctx.Err() != nil {
						return
					}
					if err != nil || res.Status != StatusExited {
						b.Errorf("job: %v %s %s", err, res.Status, res.Reason)
						return
					}
				}
			})
		}
		for range runtime.NumCPU() {
			<-started
		}
		waitJobsRunning(b, runtime.NumCPU())
		loaded = append(loaded, foreground(b, rounds))
		cancel()
		wg.Wait()
	}
	mi, ml := median(idle), median(loaded)
	b.ReportMetric(float64(mi.Milliseconds()), "idle-ms")
	b.ReportMetric(float64(ml.Milliseconds()), "loaded-ms")
	b.ReportMetric(float64(mi)/float64(ml), "ratio")
}

// waitJobsRunning polls until n of this process's children are runnable under
// SCHED_IDLE, or fails. (A job is SCHED_OTHER for the few microseconds between its fork
// and its stub's sched_setscheduler.)
func waitJobsRunning(b *testing.B, n int) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		idle, other := childPolicies(b)
		if idle >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d jobs runnable under SCHED_IDLE (%d other children runnable)", idle, n, other)
		}
		time.Sleep(time.Millisecond) // polling interval
	}
}

// childPolicies counts this process's running children by scheduling policy: SCHED_IDLE
// (5) or any other. The kernel's view, /proc/PID/stat field 41.
func childPolicies(b *testing.B) (idle, other int) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	self := strconv.Itoa(os.Getpid())
	for _, e := range ents {
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(st)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
		if len(f) < 39 || f[1] != self || f[0] != "R" {
			continue
		}
		if f[38] == "5" {
			idle++
		} else {
			other++
		}
	}
	return idle, other
}
