package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gridnode/gridnode/internal/proctest"
)

// BenchmarkIdleRSS starts `gridnode testnet -n 3` (three `gridnode run` daemons meshed on
// loopback, DHT and announcements included), lets them idle and reports the median resident
// memory of a daemon (target: at most 40 MB), against the RSS of `gridnode sandbox` waiting
// on stdin: the same binary doing nothing networked, measured in the same run.
func BenchmarkIdleRSS(b *testing.B) {
	bin := gridnodeBinary(b)
	job := filepath.Join(b.TempDir(), "echo")
	if out, err := exec.Command(bin, "build", "--example", "echo", "-o", job).CombinedOutput(); err != nil {
		b.Fatalf("%v\n%s", err, out)
	}
	var nodeRSS, baseRSS []float64
	for b.Loop() {
		nodeRSS = append(nodeRSS, idleTestnetRSS(b, bin)...)
		baseRSS = append(baseRSS, idleSandboxRSS(b, bin, job))
	}
	slices.Sort(nodeRSS)
	slices.Sort(baseRSS)
	n, base := nodeRSS[len(nodeRSS)/2], baseRSS[len(baseRSS)/2]
	b.ReportMetric(n, "node-MB")
	b.ReportMetric(base, "baseline-MB")
	b.ReportMetric(n/base, "ratio")
}

// idleTestnetRSS returns each daemon's RSS in MB two seconds after the testnet is up.
func idleTestnetRSS(b *testing.B, bin string) []float64 {
	tn := exec.Command(bin, "testnet", "-n", "3", "--dir", b.TempDir())
	out, err := tn.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := tn.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		tn.Process.Signal(os.Interrupt)
		tn.Wait()
	}()
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "bootstrap: ") {
	}
	go func() {
		for sc.Scan() {
		}
	}()
	time.Sleep(2 * time.Second) // idle is what is measured: nothing to poll for
	var mb []float64
	for _, pid := range proctest.ChildrenOf(tn.Process.Pid) {
		mb = append(mb, rssMB(b, pid))
	}
	if len(mb) != 3 {
		b.Fatalf("found %d daemons, want 3", len(mb))
	}
	return mb
}

// idleSandboxRSS returns the RSS in MB of `gridnode sandbox` running job, an echo job
// blocked on its stdin.
func idleSandboxRSS(b *testing.B, bin, job string) float64 {
	cmd := exec.Command(bin, "sandbox", job)
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		in.Close()
		cmd.Wait()
	}()
	// The job (a child of gridnode) exists once gridnode has started it.
	proctest.Poll(b, 10*time.Second, "gridnode sandbox to start its job", func() bool {
		return len(proctest.ChildrenOf(cmd.Process.Pid)) > 0
	})
	return rssMB(b, cmd.Process.Pid)
}

// peakMB runs cmd and returns its peak resident memory in MB: its VmHWM, read every
// millisecond until it exits. (wait4's ru_maxrss cannot serve: a child started by vfork
// inherits the parent's peak, the test's own.)
func peakMB(cmd *exec.Cmd) (float64, error) {
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var peak float64
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return peak, err
		case <-tick.C: // a sampling interval: the peak is held while the job's output comes in
			kb, err := strconv.Atoi(strings.TrimSuffix(proctest.StatusField(cmd.Process.Pid, "VmHWM"), " kB"))
			if err == nil {
				peak = max(peak, float64(kb)/1024)
			}
		}
	}
}

// rssMB returns pid's resident memory in MB.
func rssMB(b testing.TB, pid int) float64 {
	v := proctest.StatusField(pid, "VmRSS")
	kb, err := strconv.Atoi(strings.TrimSuffix(v, " kB"))
	if err != nil {
		b.Fatalf("VmRSS of pid %d: %q", pid, v)
	}
	return float64(kb) / 1024
}

// Memory bounded by the job (issue 10). Sizes of the large jobs: a 16 MiB input echoed back
// as 16 MiB of output, and for the workers binaries padded to 32 MiB, each new.
const (
	memInput  = 16 << 20
	memBinary = 32 << 20
	memJobs   = 3
	// A worker's RSS after the large jobs is at most its idle RSS (after a few tiny jobs)
	// plus workerSlackMB; a submitter's peak for 16 MiB in and out is at most its peak for a
	// tiny job plus submitterPayloads x (input + output).
	workerSlackMB     = 24
	submitterPayloads = 2
)

// memFigures are one run of jobMemory, in MB (2^20 bytes).
type memFigures struct {
	workerIdle, workerAfter []float64 // each daemon's RSS, before and after the large jobs
	subTiny, subLarge       float64   // a submit's peak RSS for a tiny job and a large one
}

// TestJobMemory runs large jobs on a 3-node process testnet: a submit of 16 MiB in and out
// peaks at most submitterPayloads x 32 MiB above a tiny submit's peak, and after memJobs
// jobs of a new 32 MiB binary and a 16 MiB input each worker is back within workerSlackMB
// of its idle RSS.
func TestJobMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves ~400 MiB through a process testnet")
	}
	f := jobMemory(t)
	for i := range f.workerIdle {
		t.Logf("worker %d: idle %.1f MB, after %d large jobs %.1f MB", i, f.workerIdle[i], memJobs, f.workerAfter[i])
	}
	t.Logf("submitter peak: tiny job %.1f MB, 16 MiB in and out %.1f MB", f.subTiny, f.subLarge)
	if over, bound := f.subLarge-f.subTiny, float64(submitterPayloads*2*memInput>>20); over > bound {
		t.Errorf("a submit of 16 MiB in and out peaked %.1f MB above a tiny one's, want at most %.0f", over, bound)
	}
}

// BenchmarkJobMemory reports jobMemory's figures: medians over the daemons and iterations
// of a worker's RSS idle and after the large jobs, a submitter's peak for a tiny job and for
// 16 MiB in and out, and ratio, the submitter's peak above the tiny one over its payload.
//
//	go test -run '^$' -bench BenchmarkJobMemory -benchtime 3x ./cmd/gridnode/
func BenchmarkJobMemory(b *testing.B) {
	var idle, after, tiny, large []float64
	for b.Loop() {
		f := jobMemory(b)
		idle, after = append(idle, f.workerIdle...), append(after, f.workerAfter...)
		tiny, large = append(tiny, f.subTiny), append(large, f.subLarge)
	}
	med := func(xs []float64) float64 { slices.Sort(xs); return xs[len(xs)/2] }
	b.ReportMetric(med(idle), "worker-idle-MB")
	b.ReportMetric(med(after), "worker-after-MB")
	b.ReportMetric(med(tiny), "submit-tiny-MB")
	b.ReportMetric(med(large), "submit-16in16out-MB")
	b.ReportMetric((med(large)-med(tiny))/float64(2*memInput>>20), "ratio")
}

// jobMemory starts a 3-node testnet, warms each worker with tiny jobs and reads its RSS,
// measures the peak RSS of a tiny submit and of one with 16 MiB in and out, then runs
// memJobs jobs of new 32 MiB binaries with 16 MiB inputs and waits (up to 10 s) for every
// worker to come back within workerSlackMB of its idle RSS; it fails if one does not.
func jobMemory(t testing.TB) memFigures {
	bin := gridnodeBinary(t)
	dir := t.TempDir()
	echo := filepath.Join(dir, "echo")
	if out, err := exec.Command(bin, "build", "--example", "echo", "-o", echo).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tinyIn, largeIn := filepath.Join(dir, "tiny"), filepath.Join(dir, "large")
	in := make([]byte, memInput)
	rand.Read(in)
	os.WriteFile(tinyIn, []byte("x"), 0o600)
	os.WriteFile(largeIn, in, 0o600)
	tn := startNet(t, bin, 3)
	submit := func(job, input string) float64 {
		cmd := exec.Command(bin, tn.submit("--no-daemon", "--data", t.TempDir(), "--same-prefix", "--input", input, job)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		peak, err := peakMB(cmd)
		if err != nil {
			t.Fatalf("submit %s: %v\n%s", filepath.Base(job), err, errOut.Bytes())
		}
		want, _ := os.ReadFile(input)
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("submit %s: got %d bytes of output, want the %d of its input", filepath.Base(job), out.Len(), len(want))
		}
		return peak
	}
	var f memFigures
	for range 3 { // every worker has run a job: its lazy state is idle state
		f.subTiny = submit(echo, tinyIn)
	}
	pids := make([]int, 3)
	for i := range pids {
		pids[i] = tn.pid(i)
		f.workerIdle = append(f.workerIdle, rssMB(t, pids[i]))
	}
	f.subLarge = submit(echo, largeIn)
	pad := make([]byte, memBinary)
	for k := range memJobs {
		elf, err := os.ReadFile(echo)
		if err != nil {
			t.Fatal(err)
		}
		rand.Read(pad)
		job := filepath.Join(dir, fmt.Sprintf("large-%d", k))
		os.WriteFile(job, append(elf, pad[len(elf):]...), 0o700) // ELF, then padding no segment maps
		submit(job, largeIn)
	}
	f.workerAfter = make([]float64, 3)
	deadline := time.Now().Add(10 * time.Second)
	for {
		back := true
		for i, pid := range pids {
			f.workerAfter[i] = rssMB(t, pid)
			back = back && f.workerAfter[i] <= f.workerIdle[i]+workerSlackMB
		}
		if back {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d jobs of 32 MiB binaries and 16 MiB inputs, workers at %.1f MB against %.1f idle, want each within %d MB",
				memJobs, f.workerAfter, f.workerIdle, workerSlackMB)
		}
		time.Sleep(50 * time.Millisecond) // a polling interval
	}
}
