//go:build linux && amd64

package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/gridnode/gridnode/internal/testelf"
)

// BenchmarkSandboxProcess measures `gridnode sandbox JOB` as a whole process, against the
// same static job exec'd plainly and run by bubblewrap (if bwrap is installed), all
// interleaved in one run. Start is exec to exit of a job that exits at once; CPU is the
// process tree's (rusage from wait4: gridnode, or bwrap, and the job it reaped). Metrics,
// medians (ratios: of paired per-iteration values):
//
//	start-ms, bwrap-start-ms, plain-start-ms   wall time, exec to exit, of the trivial job
//	start-cpu-ms, bwrap-start-cpu-ms           the tree's CPU for it
//	start-ratio                                gridnode sandbox / bwrap, wall
//	cpu-ratio, bwrap-cpu-ratio                 the tree's CPU for a compute-bound job
//	                                           (about 0.45 s) / the plain job's
//	super-ms                                   gridnode's own CPU in that run: the tree's
//	                                           minus the job's (--json cpu_ms, whole ms)
//
// Re-run: go test ./cmd/gridnode/ -run '^$' -bench SandboxProcess -benchtime 20x -count 3
func BenchmarkSandboxProcess(b *testing.B) {
	bin := gridnodeBinary(b)
	dir := b.TempDir()
	trivial, spin := filepath.Join(dir, "exit0"), filepath.Join(dir, "spin")
	if err := os.WriteFile(trivial, testelf.Exit0(nil), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(spin, spinJob(1_500_000_000), 0o755); err != nil {
		b.Fatal(err)
	}
	bw, err := exec.LookPath("bwrap")
	if err == nil {
		if _, _, err = runTree(bwrapArgs(bw, trivial)); err != nil {
			b.Logf("bwrap does not run here (%v): no bwrap figures", err)
			bw = ""
		}
	} else {
		b.Log("no bwrap on PATH: no bwrap figures (apt-get install bubblewrap)")
	}
	var start, bwStart, plainStart, startCPU, bwStartCPU, startRatio, cpuRatio, bwCPURatio, super []float64
	for b.Loop() {
		pw, _ := mustTree(b, trivial)
		sw, sc := mustTree(b, bin, "sandbox", trivial)
		plainStart, start, startCPU = append(plainStart, ms(pw)), append(start, ms(sw)), append(startCPU, ms(sc))
		_, pc := mustTree(b, spin)
		var rep sandboxReport
		cmd := exec.Command(bin, "sandbox", "--json", spin)
		out, err := cmd.Output()
		if err != nil || json.Unmarshal(out, &rep) != nil || rep.Status != "exited" {
			b.Fatalf("gridnode sandbox --json: %v %s", err, out)
		}
		tree := treeCPU(cmd.ProcessState)
		cpuRatio = append(cpuRatio, float64(tree)/float64(pc))
		super = append(super, ms(tree)-float64(rep.CPUMs))
		if bw != "" {
			bwW, bwC := mustTree(b, bwrapArgs(bw, trivial)...)
			bwStart, bwStartCPU = append(bwStart, ms(bwW)), append(bwStartCPU, ms(bwC))
			startRatio = append(startRatio, float64(sw)/float64(bwW))
			_, bc := mustTree(b, bwrapArgs(bw, spin)...)
			bwCPURatio = append(bwCPURatio, float64(bc)/float64(pc))
		}
	}
	med := func(x []float64) float64 {
		s := slices.Clone(x)
		slices.Sort(s)
		return s[len(s)/2]
	}
	b.ReportMetric(med(start), "start-ms")
	b.ReportMetric(med(plainStart), "plain-start-ms")
	b.ReportMetric(med(startCPU), "start-cpu-ms")
	b.ReportMetric(med(cpuRatio), "cpu-ratio")
	b.ReportMetric(med(super), "super-ms")
	if bw != "" {
		b.ReportMetric(med(bwStart), "bwrap-start-ms")
		b.ReportMetric(med(bwStartCPU), "bwrap-start-cpu-ms")
		b.ReportMetric(med(startRatio), "start-ratio")
		b.ReportMetric(med(bwCPURatio), "bwrap-cpu-ratio")
	}
}

// bwrapArgs runs the job at path under bubblewrap in every namespace it has, as PID 1 (so
// that bwrap reaps it and its CPU is in bwrap's rusage), with nothing mounted but the job.
func bwrapArgs(bw, path string) []string {
	return []string{bw, "--unshare-all", "--as-pid-1", "--die-with-parent", "--clearenv",
		"--ro-bind", path, "/job", "/job"}
}

// runTree runs args with no stdin, output or environment and returns the time from exec to
// exit and the CPU of the process and of the children it reaped.
func runTree(args []string) (wall, cpu time.Duration, err error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{}
	t := time.Now()
	err = cmd.Run()
	return time.Since(t), treeCPU(cmd.ProcessState), err
}

func mustTree(b *testing.B, args ...string) (wall, cpu time.Duration) {
	wall, cpu, err := runTree(args)
	if err != nil {
		b.Fatalf("%v: %v", args, err)
	}
	return wall, cpu
}

func treeCPU(ps *os.ProcessState) time.Duration {
	ru := ps.SysUsage().(*syscall.Rusage)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// spinJob is testelf's job with its code replaced by a loop of n iterations and an exit 0
// (its headers, which the validator checks, are unchanged).
func spinJob(n uint64) []byte {
	code := []byte{0x48, 0xb9, 0, 0, 0, 0, 0, 0, 0, 0, 0x48, 0xff, 0xc9, 0x75, 0xfb, // movabs $n,%rcx; 1: dec %rcx; jnz 1b
		0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05} // mov $60,%eax; xor %edi,%edi; syscall
	binary.LittleEndian.PutUint64(code[2:], n)
	b := testelf.Exit0(make([]byte, len(code)))
	copy(b[4096:], code)
	return b
}

// BenchmarkWorkerQuiet runs a compute-bound job (about 0.9 s) at R=2 on a 2-node testnet of
// `gridnode run` daemons with their default services (DHT, announcements, metrics, liveness
// pings) and reports each worker daemon's own CPU (its threads' schedstat run time) per
// second while the job's process is alive (job-ms/s), against the same daemon's per second
// while idle just before (idle-ms/s), and their difference (extra-ms/s): what a running job
// costs the daemon beyond its background.
//
// Re-run: go test ./cmd/gridnode/ -run '^$' -bench WorkerQuiet -benchtime 5x -count 3
func BenchmarkWorkerQuiet(b *testing.B) {
	bin := gridnodeBinary(b)
	job := filepath.Join(b.TempDir(), "spin")
	if err := os.WriteFile(job, spinJob(3_000_000_000), 0o755); err != nil {
		b.Fatal(err)
	}
	tn := startNet(b, bin, 2)
	pids := []int{tn.pid(0), tn.pid(1)}
	var during, idle, extra []float64
	for b.Loop() {
		var idleRate [2]float64
		c0 := []time.Duration{threadsCPU(pids[0]), threadsCPU(pids[1])}
		t0 := time.Now()
		time.Sleep(time.Second) // the background's rate, measured over a second
		for i, p := range pids {
			idleRate[i] = ms(threadsCPU(p)-c0[i]) / time.Since(t0).Seconds()
		}
		sub := exec.Command(bin, tn.submit("--replicas", "2", "--wall", "60s", job)...)
		var errOut bytes.Buffer
		sub.Stderr = &errOut
		if err := sub.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- sub.Wait() }()
		var began [2]time.Time
		var cpu0 [2]time.Duration
		done := 0
		for done < 2 {
			for i, p := range pids {
				running := len(jobProcs(p)) > 0
				switch {
				case running && began[i].IsZero():
					began[i], cpu0[i] = time.Now(), threadsCPU(p)
				case !running && !began[i].IsZero() && cpu0[i] >= 0:
					rate := ms(threadsCPU(p)-cpu0[i]) / time.Since(began[i]).Seconds()
					during, idle, extra = append(during, rate), append(idle, idleRate[i]), append(extra, rate-idleRate[i])
					cpu0[i] = -1
					done++
				}
			}
			select {
			case err := <-exited:
				if done < 2 {
					b.Fatalf("submit ended (%v) before both workers' jobs were seen to end:\n%s", err, errOut.Bytes())
				}
			case <-time.After(time.Millisecond):
			}
		}
		if err := <-exited; err != nil {
			b.Fatalf("submit: %v\n%s", err, errOut.Bytes())
		}
	}
	med := func(x []float64) float64 {
		s := slices.Clone(x)
		slices.Sort(s)
		return s[len(s)/2]
	}
	b.ReportMetric(med(during), "job-ms/s")
	b.ReportMetric(med(idle), "idle-ms/s")
	b.ReportMetric(med(extra), "extra-ms/s")
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// threadsCPU is the time pid's threads have run so far (their schedstat), 0 if it is gone.
func threadsCPU(pid int) time.Duration {
	fs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var t time.Duration
	for _, f := range fs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var ns int64
		fmt.Sscan(string(b), &ns)
		t += time.Duration(ns)
	}
	return t
}
