//go:build linux && amd64

package sandbox

import (
	"bytes"
	"context"
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
	res, err := benchRunner.Run(context.Background(), Job{Binary: bin}, Limits{})
	total = time.Since(start)
	if err != nil || res.Status != StatusExited {
		b.Fatalf("run: %v %s %s", err, res.Status, res.Reason)
	}
	return res.FirstOutput, res.CPUTime, total
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

// BenchmarkCPUOverhead compares the CPU time of a compute-bound job (about 0.4 s), sandboxed
// vs. plain. ratio is the target (<= 1.01).
func BenchmarkCPUOverhead(b *testing.B) {
	bin := genLoopWrite(1_500_000_000)
	path := writeJob(b, bin)
	var plain, boxed []time.Duration
	for b.Loop() {
		_, p, _ := plainRun(b, path)
		_, s, _ := sandboxRun(b, bin)
		plain, boxed = append(plain, p), append(boxed, s)
	}
	mp, ms := median(plain), median(boxed)
	b.ReportMetric(float64(mp.Milliseconds()), "plain-cpu-ms")
	b.ReportMetric(float64(ms.Milliseconds()), "sandbox-cpu-ms")
	b.ReportMetric(float64(ms)/float64(mp), "ratio")
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
