//go:build linux && amd64

package main

import (
	"encoding/binary"
	"encoding/json"
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
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
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
