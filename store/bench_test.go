package store

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkFetchBlob pulls a 64 MiB blob over loopback (hash checks on both ends) and, in
// the same loop, stores the same bytes from memory with PutReader (one hash, one write):
// MB/s is the fetch's median throughput, ratio the fetch over the local store.
func BenchmarkFetchBlob(b *testing.B) {
	ctx := context.Background()
	blob := bytes.Repeat([]byte("0123456789abcdef"), 4<<20)
	client, server := newHost(b), newHost(b)
	if err := client.Connect(ctx, addrInfo(server)); err != nil {
		b.Fatal(err)
	}
	src := newStore(b)
	serve(b, server, src)
	c, err := src.Put(ctx, blob)
	if err != nil {
		b.Fatal(err)
	}
	var fetch, local []time.Duration
	for b.Loop() {
		dstLocal, dstFetch := newStore(b), newStore(b)
		t0 := time.Now()
		if err := dstLocal.PutReader(ctx, c, bytes.NewReader(blob), 0); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := Fetch(ctx, client, server.ID(), c, dstFetch, 0); err != nil {
			b.Fatal(err)
		}
		local, fetch = append(local, t1.Sub(t0)), append(fetch, time.Since(t1))
	}
	slices.Sort(fetch)
	slices.Sort(local)
	mf, ml := fetch[len(fetch)/2], local[len(local)/2]
	b.ReportMetric(float64(len(blob))/mf.Seconds()/1e6, "fetch-MB/s")
	b.ReportMetric(float64(mf)/float64(ml), "ratio")
}
