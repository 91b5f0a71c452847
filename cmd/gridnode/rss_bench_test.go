package main

import (
	"bufio"
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

// rssMB returns pid's resident memory in MB.
func rssMB(b *testing.B, pid int) float64 {
	v := proctest.StatusField(pid, "VmRSS")
	kb, err := strconv.Atoi(strings.TrimSuffix(v, " kB"))
	if err != nil {
		b.Fatalf("VmRSS of pid %d: %q", pid, v)
	}
	return float64(kb) / 1024
}
