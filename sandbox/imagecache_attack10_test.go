//go:build linux && amd64

package sandbox

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAttack10ImageCacheUseAfterClose: get looks an image up under the lock, lets go of it
// and only then takes its hold (use). In between, another run's use evicts the image (no
// run holds it yet) and closes its memfd, so get hands back a closed file: a run that
// starts it execs /proc/self/fd/<-1> (or, if Fd was read while close(2) ran, whatever file
// now has that number). Every file get returns must be open while it is held.
func TestAttack10ImageCacheUseAfterClose(t *testing.T) {
	var c imageCache
	const keys = imageCacheMax + 4 // more images than the cache keeps: evictions all the time
	bins := make([][]byte, keys)
	for i := range bins {
		bins[i] = fmt.Appendf(nil, "binary %d", i)
	}
	prepare := func(i int) func() (*os.File, error) {
		return func() (*os.File, error) { return sealedMemfd(bins[i], nil) }
	}
	var closed, runs atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for n := range 4000 {
				i := (g*7 + n) % keys
				f, release, err := c.get(Job{Binary: bins[i]}, DefaultLimits(), prepare(i))
				if err != nil {
					t.Error(err)
					return
				}
				runs.Add(1)
				fd := f.Fd()
				if fd == ^uintptr(0) {
					closed.Add(1)
				} else if _, err := unix.FcntlInt(fd, unix.F_GETFD, 0); err != nil {
					closed.Add(1)
				}
				release()
			}
		})
	}
	wg.Wait()
	if n := closed.Load(); n > 0 {
		t.Errorf("%d of %d runs were handed an image the cache had already closed", n, runs.Load())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) > imageCacheMax {
		t.Errorf("%d images kept with no run holding any, at most %d", len(c.m), imageCacheMax)
	}
}

// TestAttack10ImageCacheLimitsKey: an image checked under one memory limit is never run
// under a smaller one: the same binary, run first where it fits, then where it does not,
// then where it fits again, is refused in the middle (the key holds the limits the
// validator and the stub use).
func TestAttack10ImageCacheLimitsKey(t *testing.T) {
	var r Runner
	bin := genELF(asmExit(0), 100<<20) // 100 MiB of bss
	for _, tc := range []struct {
		lim  Limits
		want Status
	}{
		{Limits{Memory: 256 << 20}, StatusExited},
		{Limits{Memory: 64 << 20}, StatusRejected},
		{Limits{Memory: 256 << 20, Stack: 200 << 20}, StatusRejected},
		{Limits{Memory: 256 << 20}, StatusExited},
	} {
		res, err := r.Run(context.Background(), Job{Binary: bin}, tc.lim)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != tc.want {
			t.Fatalf("limits %+v: %s (%s), want %s", tc.lim, res.Status, res.Reason, tc.want)
		}
	}
}

// TestAttack10ImageCacheChurn: a stranger makes the cache evict without end for the price
// of jobs whose CPU limits differ by a millisecond (each its own key); honest runs of the
// same Runner meanwhile must not fail. They do, 1-6 in 1,600 here: "fork/exec
// /proc/self/fd/N: permission denied". strace shows why: Go's child moves its exec-status
// pipe to max(stdin, stdout, stderr)+1 (forkAndExecInChild, pass 1) before execve, and
// when the image's descriptor has that number the child execs the pipe. A fresh image is
// made just before its pipes, so it rarely has that number; a cached one sits at any
// number. It fails closed (EACCES), but the worker answers INTERNAL, against its record.
func TestAttack10ImageCacheChurn(t *testing.T) {
	var r Runner
	bin := genWriteExit("hello\n", 0)
	var failed, runs atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for n := range 100 {
				lim := Limits{CPU: time.Duration(1+(g*5+n)%(imageCacheMax+4)) * time.Second} // whole seconds: one key each
				res, err := r.Run(context.Background(), Job{Binary: bin}, lim)
				runs.Add(1)
				if err != nil || res.Status != StatusExited {
					failed.Add(1)
					first.CompareAndSwap(nil, fmt.Sprint(res.Status, " ", err))
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d runs failed under eviction churn; first: %v", n, runs.Load(), first.Load())
	}
}
