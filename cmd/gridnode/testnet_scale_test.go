package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	examplejobs "github.com/gridnode/gridnode/examples/jobs"
	"github.com/gridnode/gridnode/internal/proctest"
	"github.com/gridnode/gridnode/node"
)

// The scale harness starts process testnets (`gridnode testnet -n N`) and measures what a
// grid of N processes on one machine costs: the time until every worker is findable, the
// CPU the nodes burn while nothing happens, their descriptors, memory and connections, and
// the wall time and node CPU of trivial submits. GRIDNODE_SCALE_N sets N (default 20),
// GRIDNODE_SCALE_BASE the baseline grid measured in the same run (default 10), so that the
// per-node idle CPU is a ratio that noise on a shared machine mostly cancels out of.
//
//	GRIDNODE_SCALE_N=50 go test -count=1 -run '^$' -bench TestnetScale -benchtime=1x ./cmd/gridnode/

// scaleIdle is how long the nodes are watched for idle CPU, after scaleSettle: the
// announce loops' growth-driven announcements and the first routing-table refreshes end
// within seconds of ready, and a testnet node's connection manager trims connections
// older than 10s every 10s (oneMachine).
const (
	scaleSettle = 30 * time.Second
	scaleIdle   = 20 * time.Second
	scaleSubmit = 8 // submits of each kind
)

// scaleFigures is what measureScale measured on one testnet.
type scaleFigures struct {
	n               int
	ready           time.Duration // testnet start to its banner (every worker findable)
	startCPU        time.Duration // node CPU until then, all nodes: ready time on a quiet machine is about this / cores
	idleCPU         float64       // cores, all nodes together
	fds, rss, conns []float64     // per node: open fds, RSS in MiB, connected peers
	routing         []float64     // per node: DHT routing table size
	submitWall      time.Duration // median of submit --bootstrap (a fresh peer each time)
	submitCPU       time.Duration // node CPU per such submit, above idle
	clientCPU       time.Duration // the submit process's own CPU, median
	apiWall         time.Duration // median of submit --api through node 0
	apiCPU          time.Duration // node CPU per API submit, above idle
}

func scaleEnv(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

func BenchmarkTestnetScale(b *testing.B) {
	bin := gridnodeBinary(b)
	job, err := examplejobs.Build(context.Background(), "echo", b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	n, baseN := scaleEnv("GRIDNODE_SCALE_N", 20), scaleEnv("GRIDNODE_SCALE_BASE", 10)
	base := measureScale(b, bin, job, baseN)
	big := measureScale(b, bin, job, n)
	b.Logf("\n%s\n%s", base, big)
	b.ReportMetric(big.ready.Seconds(), "ready-s")
	b.ReportMetric(base.ready.Seconds(), "base-ready-s")
	b.ReportMetric(float64(big.startCPU.Milliseconds())/float64(n), "start-cpu-ms/node")
	b.ReportMetric(100*big.idleCPU/float64(n), "idle-%core/node")
	b.ReportMetric(100*base.idleCPU/float64(baseN), "base-idle-%core/node")
	b.ReportMetric((big.idleCPU/float64(n))/(base.idleCPU/float64(baseN)), "idle/node-vs-base")
	b.ReportMetric(median(big.conns), "conns/node")
	b.ReportMetric(slices.Max(big.conns), "max-conns")
	b.ReportMetric(median(big.fds), "fds/node")
	b.ReportMetric(median(big.rss), "rss-MiB/node")
	b.ReportMetric(float64(big.submitWall.Milliseconds()), "submit-ms")
	b.ReportMetric(float64(big.submitCPU.Milliseconds()), "submit-node-cpu-ms")
	b.ReportMetric(float64(big.apiWall.Milliseconds()), "api-submit-ms")
	b.ReportMetric(float64(big.apiCPU.Milliseconds()), "api-node-cpu-ms")
}

// Per-node resource targets of a process testnet at any size (docs/SCALE.md): a node's
// connections are bounded by its connection manager (trimmed past 24), so its fds and
// memory must not grow with N. Measured at 20-50 nodes: 36-42 fds and 32-36 MiB.
const (
	maxFDsPerNode    = 64
	maxRSSMiBPerNode = 64
)

// TestTestnetScale starts a 30-node process testnet (GRIDNODE_SCALE_N) and holds it to the
// scale targets that do not depend on the machine's speed: no full mesh once idle (past
// oneMachine's 24 connections a node trims), fds and RSS per node within their bounds, and
// a ready time far from the 60s the testnet allows. The ratios and timings are
// BenchmarkTestnetScale's.
func TestTestnetScale(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 30-node process testnet")
	}
	bin := gridnodeBinary(t)
	job, err := examplejobs.Build(context.Background(), "echo", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	n := scaleEnv("GRIDNODE_SCALE_N", 30)
	f := measureScale(t, bin, job, n)
	t.Logf("\n%s", f)
	if m := median(f.conns); m >= float64(n-1) {
		t.Errorf("median node connected to %v of %d peers once idle: a full mesh", m, n-1)
	}
	if f.ready > 30*time.Second {
		t.Errorf("ready after %v, want well under 30s", f.ready)
	}
	if m := median(f.fds); m > maxFDsPerNode {
		t.Errorf("median node has %v open fds, want at most %d", m, maxFDsPerNode)
	}
	if m := median(f.rss); m > maxRSSMiBPerNode {
		t.Errorf("median node's RSS is %.0f MiB, want at most %d", m, maxRSSMiBPerNode)
	}
}

// measureScale starts an n-node process testnet, measures it and stops it.
func measureScale(t testing.TB, bin, job string, n int) scaleFigures {
	t.Helper()
	f := scaleFigures{n: n}
	start := time.Now()
	tn := startNet(t, bin, n)
	f.ready = time.Since(start)
	defer tn.stop()
	pids := make([]int, n)
	for i := range n {
		if pids[i] = tn.pid(i); pids[i] == 0 {
			t.Fatalf("node %d has no process", i)
		}
	}
	f.startCPU = cpuOf(pids)

	time.Sleep(scaleSettle) // a quiet interval to measure, not a wait for an event
	c0, t0 := cpuOf(pids), time.Now()
	time.Sleep(scaleIdle)
	c1, t1 := cpuOf(pids), time.Now()
	f.idleCPU = (c1 - c0).Seconds() / t1.Sub(t0).Seconds()
	ctx := context.Background()
	for i, pid := range pids {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		f.fds = append(f.fds, float64(len(ents)))
		kb, _ := strconv.Atoi(strings.Fields(proctest.StatusField(pid, "VmRSS") + " 0")[0])
		f.rss = append(f.rss, float64(kb)/1024)
		var ps node.Peers
		api := node.APIClient{Addr: filepath.Join(tn.dir, fmt.Sprintf("node-%d", i), "api.sock")}
		if err := api.Get(ctx, "/v1/peers", &ps); err != nil {
			t.Fatalf("node %d: peers: %v", i, err)
		}
		f.conns = append(f.conns, float64(len(ps.Peers)))
		routing := 0
		for _, p := range ps.Peers {
			if p.Routing {
				routing++
			}
		}
		f.routing = append(f.routing, float64(routing))
	}

	idle := func(d time.Duration) time.Duration { return time.Duration(f.idleCPU * float64(d)) }
	data := t.TempDir()
	submits := func(args ...string) (wall, nodeCPU, own time.Duration) {
		var walls, owns []float64
		c0, t0 := cpuOf(pids), time.Now()
		for range scaleSubmit {
			cmd := exec.Command(bin, append([]string{"submit", "--timeout", "60s", "--replicas", "2"}, append(args, job)...)...)
			cmd.Stdin = strings.NewReader("hello\n")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			s := time.Now()
			out, err := cmd.Output()
			if err != nil || string(out) != "hello\n" {
				t.Fatalf("submit %v: got %q, %v\n%s", args, out, err, stderr.String())
			}
			walls = append(walls, float64(time.Since(s)))
			owns = append(owns, float64(cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()))
		}
		el := time.Since(t0)
		total := cpuOf(pids) - c0 - idle(el)
		return time.Duration(median(walls)), total / scaleSubmit, time.Duration(median(owns))
	}
	f.submitWall, f.submitCPU, f.clientCPU = submits(append(tn.gridFlags(), "--data", data, "--no-daemon")...)
	f.apiWall, f.apiCPU, _ = submits("--api", "--data", filepath.Join(tn.dir, "node-0"))
	return f
}

// stop ends the testnet and waits for it to exit (its cleanup then has nothing to do).
func (tn *netProcess) stop() {
	tn.cmd.Process.Signal(os.Interrupt)
	select {
	case <-tn.done:
	case <-time.After(30 * time.Second):
		tn.cmd.Process.Kill()
		<-tn.done
	}
}

func (f scaleFigures) String() string {
	return fmt.Sprintf("n=%d ready %.2fs (start-up CPU %v/node), idle %.2f%% of a core (%.3f%%/node), per node median/max: fds %v/%v, RSS %.0f/%.0f MiB, conns %v/%v, routing %v/%v; "+
		"submit --bootstrap %v wall, %v node CPU, %v own CPU; submit --api %v wall, %v node CPU",
		f.n, f.ready.Seconds(), (f.startCPU / time.Duration(f.n)).Round(time.Millisecond), 100*f.idleCPU, 100*f.idleCPU/float64(f.n), median(f.fds), slices.Max(f.fds), median(f.rss), slices.Max(f.rss),
		median(f.conns), slices.Max(f.conns), median(f.routing), slices.Max(f.routing),
		f.submitWall.Round(time.Millisecond), f.submitCPU.Round(time.Millisecond), f.clientCPU.Round(time.Millisecond),
		f.apiWall.Round(time.Millisecond), f.apiCPU.Round(time.Millisecond))
}

// cpuOf is the user and system CPU time the processes have used, from /proc/PID/stat.
func cpuOf(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after "(comm)": state is 3, utime 14, stime 15 (1-based, man proc_pid_stat).
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every Linux
// architecture gridnode runs on.
const clockTicks = 100

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}
