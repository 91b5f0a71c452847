package testnet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
)

// throughputJobs verified jobs per measurement, each with R=Q=throughputR.
const (
	throughputJobs = 400
	throughputR    = 2
)

// Loads of the throughput benchmark: clients, each with one submit in flight at a time. A
// client may hold one of each worker's 2 slots (the per-peer share), so 5 clients with a
// job of 2 replicas each ask for all 10 slots of the net: "at capacity"; 3 ask for 6.
var throughputLoads = []struct {
	name    string
	clients int
}{
	{"below-capacity", 3},
	{"at-capacity", 5},
}

// BenchmarkThroughput measures verified tiny jobs per second on a 5-node loopback testnet
// (real sandbox, 2 slots each, R=Q=2, clients trusting the honest nodes) against the rate
// at which this machine fork/execs the same static binary directly, as many at once as it
// has cores, in the same run. ratio is grid-jobs/s / (plain-jobs/s / R): the share of the
// machine's raw exec rate the grid delivers once each job is run R times (target >= 0.5).
// At capacity, submits that find a worker busy wait for a slot (250 ms, doubling), which
// costs far more than the jobs.
func BenchmarkThroughput(b *testing.B) {
	bin := buildJob(b, "echo")
	path := filepath.Join(b.TempDir(), "echo")
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n, err := Start(ctx, Setup{Nodes: 5, Slots: 2, Runner: &sandbox.Runner{}})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	clients := make([]*node.Node, 5)
	for i := range clients {
		if clients[i], err = n.NewClient(ctx); err != nil {
			b.Fatal(err)
		}
	}
	input := []byte("x\n")
	submit := func(c *node.Node) error {
		rep, err := c.Submit(ctx, jobs.Request{Binary: bin, Input: input, Replicas: throughputR, Quorum: throughputR})
		if err != nil {
			return err
		}
		if !bytes.Equal(rep.Output, input) {
			return fmt.Errorf("got output %q, want %q", rep.Output, input)
		}
		return nil
	}
	// Warm up: every client's first submit connects and the workers fetch the binary.
	for _, c := range clients {
		for range 4 {
			if err := submit(c); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, load := range throughputLoads {
		b.Run(load.name, func(b *testing.B) {
			var grid, plain []float64
			for b.Loop() {
				plain = append(plain, plainRate(b, path, input, throughputJobs*throughputR))
				grid = append(grid, gridRate(b, clients[:load.clients], submit, throughputJobs))
			}
			g, p := medianOf(grid), medianOf(plain)
			b.ReportMetric(g, "grid-jobs/s")
			b.ReportMetric(p, "plain-jobs/s")
			b.ReportMetric(g/(p/throughputR), "ratio")
		})
	}
}

// gridRate submits total jobs through the clients, one at a time per client, and
// returns verified jobs per second.
func gridRate(b *testing.B, clients []*node.Node, submit func(*node.Node) error, total int) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	t0 := time.Now()
	for _, c := range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(total) {
				if err := submit(c); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(t0)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return float64(total) / d.Seconds()
}

// plainRate runs the binary at path total times with os/exec, input on stdin, as many at
// once as the machine has cores, and returns runs per second.
func plainRate(b *testing.B, path string, input []byte, total int) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	t0 := time.Now()
	for range runtime.NumCPU() {
		wg.Go(func() {
			for next.Add(1) <= int64(total) {
				cmd := exec.Command(path)
				cmd.Env = []string{}
				cmd.Stdin = bytes.NewReader(input)
				out, err := cmd.Output()
				if err != nil || !bytes.Equal(out, input) {
					failed.Store(fmt.Errorf("plain run: %q, %v", out, err))
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(t0)
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	return float64(total) / d.Seconds()
}

func medianOf(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	for i := range s { // insertion sort: a handful of values
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}
