package testnet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	examplejobs "github.com/gridnode/gridnode/examples/jobs"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/sandbox"
)

func buildJob(t testing.TB, name string) []byte {
	t.Helper()
	path, err := examplejobs.Build(context.Background(), name, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestJobOnFiveNodes submits from a peer that is not a worker and checks that the job ran on
// other nodes, with the right output and verified receipts.
func TestJobOnFiveNodes(t *testing.T) {
	bin := buildJob(t, "sha256")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := Start(ctx, Setup{Nodes: 5, Runner: &sandbox.Runner{}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c, err := n.NewClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	input := []byte("the grid computes this\n")
	rep, err := c.Submit(ctx, jobs.Request{Binary: bin, Input: input, Replicas: 2, Quorum: 2})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(input)
	if got, want := string(rep.Output), hex.EncodeToString(sum[:])+"\n"; got != want {
		t.Errorf("got output %q, want %q", got, want)
	}
	if rep.Status != string(sandbox.StatusExited) || rep.ExitCode != 0 {
		t.Errorf("got status %s exit %d, want exited 0", rep.Status, rep.ExitCode)
	}
	var workerIDs []peer.ID
	for _, nd := range n.Nodes() {
		workerIDs = append(workerIDs, nd.ID())
	}
	agreeing := map[peer.ID]bool{}
	for _, r := range rep.Replicas {
		if r.Worker == c.ID() {
			t.Errorf("the client ran its own job")
		}
		if !slices.Contains(workerIDs, r.Worker) {
			t.Errorf("replica from unknown worker %s", r.Worker)
		}
		if r.ReceiptValid && r.OutputCID.Equals(rep.OutputCID) {
			agreeing[r.Worker] = true
		}
	}
	if len(agreeing) < 2 {
		t.Errorf("got %d distinct workers with valid receipts for the output, want 2: %+v", len(agreeing), rep.Replicas)
	}

	// The workers that fetched the binary now provide it on the DHT: every node finds them.
	for _, nd := range n.Nodes() {
		for {
			found := map[peer.ID]bool{}
			for _, p := range nd.DHT().FindProviders(ctx, rep.JobCID) {
				found[p.ID] = true
			}
			missing := 0
			for w := range agreeing {
				if w != nd.ID() && !found[w] {
					missing++
				}
			}
			if missing == 0 {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("node %s: %d of the workers that ran the job are not providers of %s", nd.ID(), missing, rep.JobCID)
			case <-time.After(20 * time.Millisecond): // a polling interval
			}
		}
	}
}

// BenchmarkSubmit measures a verified trivial job (R=2, binary cached after the first run) on
// a 5-node loopback grid against the same job in the local sandbox.
func BenchmarkSubmit(b *testing.B) {
	bin := buildJob(b, "echo")
	ctx := context.Background()
	n, err := Start(ctx, Setup{Nodes: 5, Runner: &sandbox.Runner{}})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	c, err := n.NewClient(ctx)
	if err != nil {
		b.Fatal(err)
	}
	req := jobs.Request{Binary: bin, Input: []byte("x"), Replicas: 2, Quorum: 2}
	if _, err := c.Submit(ctx, req); err != nil { // warm: workers fetch and cache the binary
		b.Fatal(err)
	}
	// The baseline: the same job and input in the local sandbox, median of 50 runs.
	r := &sandbox.Runner{}
	var locals []time.Duration
	for range 50 {
		t0 := time.Now()
		if _, err := r.Run(ctx, sandbox.Job{Binary: bin, Stdin: bytes.NewReader(req.Input)}, sandbox.DefaultLimits()); err != nil {
			b.Fatal(err)
		}
		locals = append(locals, time.Since(t0))
	}
	slices.Sort(locals)
	local := locals[len(locals)/2]
	var lat []time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if _, err := c.Submit(ctx, req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	med := lat[len(lat)/2]
	b.ReportMetric(float64(med.Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(local.Microseconds())/1000, "local-ms")
	b.ReportMetric(float64(med)/float64(local), "grid/local")
}
