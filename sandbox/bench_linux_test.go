//go:build linux && amd64

package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// plainRun execs the unpatched job from a file with os/exec and returns the time from
// process start to its first stdout byte, its CPU time and the whole run's duration: the
// baseline the sandbox is measured against.
func plainRun(b *testing.B, path string) (firstByte, cpu, total time.Duration) {
	begin := time.Now()
	cmd := exec.Command(path)
	cmd.Env = []string{}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var one [1]byte
	if _, err := io.ReadFull(out, one[:]); err != nil {
		b.Fatal(err)
	}
	firstByte = time.Since(start)
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return firstByte, time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), time.Since(begin)
}

// sandboxRun runs the job through Runner.Run and returns the time from process start to
// the first stdout byte, its CPU time and the whole call's duration (validation, patch,
// memfd, run and wait).
func sandboxRun(b *testing.B, bin []byte) (firstByte, cpu, total time.Duration) {
	start := time.Now()
	res := sandboxRunResult(b, bin)
	total = time.Since(start)
	return res.FirstOutput, res.CPUTime, total
}

func sandboxRunResult(b *testing.B, bin []byte) Result {
	res, err := benchRunner.Run(context.Background(), Job{Binary: bin}, Limits{})
	if err != nil || res.Status != StatusExited {
		b.Fatalf("run: %v %s %s", err, res.Status, res.Reason)
	}
	return res
}

// benchRunner is shared, as a worker's is: its isolation is set up once.
var benchRunner Runner

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func writeJob(b *testing.B, bin []byte) string {
	p := filepath.Join(b.TempDir(), "job")
	if err := os.WriteFile(p, bin, 0o755); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkStartLatency compares start-to-first-output of a trivial job, sandboxed vs. the
// same binary exec'd plainly, alternating the two in one run: ratio (target <= 1.3) is of
// medians from process start to the first byte; total-ratio compares whole runs, the
// sandbox's validation, patch and memfd included.
func BenchmarkStartLatency(b *testing.B) {
	bin := genWriteExit("x", 0)
	path := writeJob(b, bin)
	var plain, boxed, plainTotal, boxedTotal []time.Duration
	for b.Loop() {
		p, _, pt := plainRun(b, path)
		s, _, st := sandboxRun(b, bin)
		plain, boxed = append(plain, p), append(boxed, s)
		plainTotal, boxedTotal = append(plainTotal, pt), append(boxedTotal, st)
	}
	mp, ms := median(plain), median(boxed)
	b.ReportMetric(float64(mp.Microseconds()), "plain-µs")
	b.ReportMetric(float64(ms.Microseconds()), "sandbox-µs")
	b.ReportMetric(float64(ms)/float64(mp), "ratio")
	b.ReportMetric(float64(median(boxedTotal))/float64(median(plainTotal)), "total-ratio")
}

// BenchmarkCPUOverhead compares the CPU a compute-bound job (about 0.45 s) costs sandboxed
// vs. plain, and, where bwrap(1) is installed, under bubblewrap, the three interleaved in one
// run. Each run's cost is the job's CPU plus what the supervising process (this one) spent
// meanwhile (getrusage(RUSAGE_SELF) around it: validation, patching, the memfd, the launch,
// every wakeup while the job runs, the wait), since a busy supervisor costs the donor CPU
// and slows the job (on a shared core or a hyperthread sibling) without showing in the job's
// own time. Metrics, each a median of per-iteration (paired) values:
//
//	ratio        sandboxed job's CPU / plain job's CPU (target <= 1.01)
//	total-ratio  (sandboxed job + supervisor) / (plain job + its os/exec parent) (<= 1.01)
//	bwrap-ratio  (bwrap and its job + parent) / the same plain baseline, where bwrap runs
//	super-ms/s   the supervisor's CPU during Run, in ms per second of the job's wall time
//
// Re-run: go test ./sandbox/ -run '^$' -bench CPUOverhead -benchtime 20x -count 5
func BenchmarkCPUOverhead(b *testing.B) {
	bin := genLoopWrite(1_500_000_000)
	path := writeJob(b, bin)
	bwrap := bwrapCommand(b, path)
	sandboxRun(b, bin) // the Runner's one-time set-up out of the way
	var ratio, total, bwrapRatio, super []float64
	var plainCPU, boxedCPU []time.Duration
	for b.Loop() {
		p0 := selfCPUB(b)
		_, p, _ := plainRun(b, path)
		p1 := selfCPUB(b)
		res := sandboxRunResult(b, bin)
		p2 := selfCPUB(b)
		plainTotal := float64(p + p1 - p0)
		plainCPU, boxedCPU = append(plainCPU, p), append(boxedCPU, res.CPUTime)
		ratio = append(ratio, float64(res.CPUTime)/float64(p))
		total = append(total, float64(res.CPUTime+p2-p1)/plainTotal)
		super = append(super, float64((p2-p1).Microseconds())/1e3/res.WallTime.Seconds())
		if bwrap != nil {
			q0 := selfCPUB(b)
			q := bwrap()
			bwrapRatio = append(bwrapRatio, float64(q+selfCPUB(b)-q0)/plainTotal)
		}
	}
	b.ReportMetric(float64(median(plainCPU).Milliseconds()), "plain-cpu-ms")
	b.ReportMetric(float64(median(boxedCPU).Milliseconds()), "sandbox-cpu-ms")
	b.ReportMetric(medianF(ratio), "ratio")
	b.ReportMetric(medianF(total), "total-ratio")
	b.ReportMetric(medianF(super), "super-ms/s")
	if bwrap != nil {
		b.ReportMetric(medianF(bwrapRatio), "bwrap-ratio")
	}
}

// bwrapCommand returns a func that runs the plain job at path under bubblewrap (every
// namespace, the job as PID 1 so that its CPU is in bwrap's rusage, nothing mounted but
// the job) and returns the CPU bwrap and the job used; nil if bwrap is not installed or
// cannot run here.
func bwrapCommand(b *testing.B, path string) func() time.Duration {
	bw, err := exec.LookPath("bwrap")
	if err != nil {
		b.Log("no bwrap on PATH: no bwrap-ratio (apt-get install bubblewrap)")
		return nil
	}
	run := func() (time.Duration, error) {
		cmd := exec.Command(bw, "--unshare-all", "--as-pid-1", "--die-with-parent", "--clearenv",
			"--ro-bind", path, "/job", "/job")
		cmd.Env = []string{}
		if out, err := cmd.Output(); err != nil || string(out) != "x" {
			return 0, fmt.Errorf("bwrap: %q %v", out, err)
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
	}
	if _, err := run(); err != nil {
		b.Logf("bwrap does not run here (%v): no bwrap-ratio", err)
		return nil
	}
	return func() time.Duration {
		d, err := run()
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
}

func medianF(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}

// selfCPUB is selfCPU for benchmarks.
func selfCPUB(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPrepare1MiB times validation, patching and the sealed memfd of a 1 MiB binary,
// against writing the same binary to a sealed memfd unpatched: ratio is what the sandbox's
// preparation adds.
func BenchmarkPrepare1MiB(b *testing.B) {
	code := append(bytes.Repeat([]byte{0x90}, 1<<20), asmExit(0)...) // nop sled
	bin := genELF(code, 0)
	lim := Limits{}.withDefaults()
	var plain, prepared []time.Duration
	for b.Loop() {
		t0 := time.Now()
		f, err := sealedMemfd(bin, nil)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
		t1 := time.Now()
		e, err := plan(bin, lim)
		if err != nil {
			b.Fatal(err)
		}
		if f, err = sealedMemfd(bin, e); err != nil {
			b.Fatal(err)
		}
		f.Close()
		plain, prepared = append(plain, t1.Sub(t0)), append(prepared, time.Since(t1))
	}
	mp, ms := median(plain), median(prepared)
	b.ReportMetric(float64(mp.Microseconds()), "memfd-µs")
	b.ReportMetric(float64(ms.Microseconds()), "prepare-µs")
	b.ReportMetric(float64(ms)/float64(mp), "ratio")
}
