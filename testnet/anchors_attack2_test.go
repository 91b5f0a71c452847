package testnet

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/gridnode/gridnode/jobs"
)

// TestAnchorsAttack2Latency: the 5-node testnet (every worker found by discovery, trusted
// and connected): the latency of sequential submits from one client, and a second,
// one-shot client per submit. Logged, to compare with the tree before c7f79f2 (the same
// file run there): held if about the same.
func TestAnchorsAttack2Latency(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a grid")
	}
	bin := buildJob(t, "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := Start(ctx, Setup{Nodes: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c, err := n.NewClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stats := func(ds []time.Duration) (time.Duration, time.Duration, time.Duration) {
		slices.Sort(ds)
		return ds[len(ds)/2], ds[len(ds)*9/10], ds[len(ds)-1]
	}
	var daemon []time.Duration
	for i := range 40 {
		t0 := time.Now()
		if _, err := c.Submit(ctx, jobs.Request{Binary: bin, Input: []byte("x"), Replicas: 2}); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		if i > 0 { // the first uploads the binary
			daemon = append(daemon, time.Since(t0))
		}
		time.Sleep(30 * time.Millisecond) // past offerTTL now and then
	}
	m, p90, mx := stats(daemon)
	t.Logf("one client, %d sequential submits: median %v, p90 %v, max %v", len(daemon), m, p90, mx)
	var oneShot []time.Duration
	for i := range 6 {
		oc, err := n.NewClient(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if _, err := oc.Submit(ctx, jobs.Request{Binary: bin, Input: []byte("x"), Replicas: 2}); err != nil {
			t.Fatalf("one-shot submit %d: %v", i, err)
		}
		oneShot = append(oneShot, time.Since(t0))
		oc.Close()
	}
	m, p90, mx = stats(oneShot)
	t.Logf("one-shot clients, %d submits: median %v, p90 %v, max %v", len(oneShot), m, p90, mx)
}
