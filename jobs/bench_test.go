package jobs

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/gridnode/gridnode/sandbox"
)

// BenchmarkSubmit measures a verified job (R=2, binary cached, trivial fake run) on three
// loopback workers against the same run done locally.
func BenchmarkSubmit(b *testing.B) {
	g := newGrid(b, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	ctx := context.Background()
	req := Request{Binary: testBinary, Input: []byte("bench"), Replicas: 2}
	if _, err := g.sub.Submit(ctx, req); err != nil { // warm: connections, cached binary
		b.Fatal(err)
	}
	start := time.Now()
	const local = 1000
	for range local {
		upper.Run(ctx, sandbox.Job{Binary: testBinary, Stdin: bytes.NewReader(req.Input)}, sandbox.DefaultLimits())
	}
	perLocal := time.Since(start) / local
	b.ResetTimer()
	for b.Loop() {
		if _, err := g.sub.Submit(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	perGrid := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(perGrid.Microseconds())/1000, "ms/submit")
	b.ReportMetric(float64(perGrid)/float64(max(perLocal, 1)), "grid/local")
}

// BenchmarkFetchBlob measures pulling a 64 MiB blob over loopback, hash checks on both ends
// included, against storing the same bytes from memory.
func BenchmarkFetchBlob(b *testing.B) {
	ctx := context.Background()
	blob := bytes.Repeat([]byte("0123456789abcdef"), 4<<20)
	client, server := newHost(b), newHost(b)
	if err := client.Connect(ctx, addrInfo(server)); err != nil {
		b.Fatal(err)
	}
	src := newStore(b)
	ServeBlobs(server, src, nil)
	c, err := src.Put(ctx, blob)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := newStore(b).PutReader(ctx, c, bytes.NewReader(blob), 0); err != nil {
		b.Fatal(err)
	}
	local := time.Since(start)
	b.SetBytes(int64(len(blob)))
	b.ResetTimer()
	for b.Loop() {
		if err := FetchBlob(ctx, client, server.ID(), c, newStore(b), 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed()/time.Duration(b.N))/float64(local), "fetch/local")
}
