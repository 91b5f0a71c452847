package dht

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func TestShardNames(t *testing.T) {
	if got := ShardNamespace("ns", 0, 5); got != "ns" {
		t.Errorf("level 0: %q, want ns", got)
	}
	if got := ShardNamespace("ns", 4, 5); got != "ns/l/0101" {
		t.Errorf("level 4, bits 5: %q, want ns/l/0101", got)
	}
	p := peer.ID("some peer")
	for l := 1; l <= maxLevel; l++ {
		if ShardOf(p, l)>>1 != ShardOf(p, l-1) {
			t.Fatalf("level %d: shard %b is not under its parent %b", l, ShardOf(p, l), ShardOf(p, l-1))
		}
		if ShardOf(p, l) >= 1<<l {
			t.Fatalf("level %d: shard %b has more than %d bits", l, ShardOf(p, l), l)
		}
	}
	keys := shardKeys("ns", p, 3)
	if len(keys) != 2 || keys[0] != ShardNamespace("ns", 3, ShardOf(p, 3)) || keys[1] != ShardNamespace("ns", 2, ShardOf(p, 2)) {
		t.Errorf("keys at level 3: %q", keys)
	}
	if keys := shardKeys("ns", p, 0); len(keys) != 1 || keys[0] != "ns" {
		t.Errorf("keys at level 0: %q", keys)
	}
}

func TestLevelFor(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{0, 0}, {5, 0}, {63, 0}, {64, 1}, {127, 1}, {128, 2}, {1000, 4}, {100_000, 11}, {1 << 40, maxLevel},
	} {
		if got := LevelFor(tc.n, 32); got != tc.want {
			t.Errorf("LevelFor(%d, 32) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

// TestTableEstimate: the distance of the k-th closest of n uniformly placed peers gives n
// within a factor the two announced levels absorb.
func TestTableEstimate(t *testing.T) {
	for _, n := range []int{10, 200, 5000, 100_000} {
		ps := make([]peer.ID, n-1)
		for i := range ps {
			ps[i] = peer.ID(fmt.Sprint("peer", i))
		}
		const k = 20
		// A routing table holds the closest peers and a sample of the rest; the estimate
		// reads only the k closest, so give it all.
		got := tableEstimate(peer.ID("self"), ps, k)
		if n < k {
			if got != n {
				t.Errorf("n=%d: estimate %d, want exactly %d", n, got, n)
			}
			continue
		}
		if got < n/2 || got > 2*n {
			t.Errorf("n=%d: estimate %d, not within 2×", n, got)
		}
	}
}

// TestFindShardSybil: a peer announcing under shards that are not its own (one identity in
// every shard) is never returned, though its records are there.
func TestFindShardSybil(t *testing.T) {
	ds := startNet(t, 30, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := WorkerNamespace("linux/amd64")
	for _, d := range ds {
		d.target = 4 // levels 1-3 on 30 nodes
	}
	honest, sub, sybil := ds[:len(ds)-2], ds[len(ds)-2], ds[len(ds)-1]
	for _, d := range honest {
		ready := make(chan struct{})
		d.AnnounceWorker(ns, ready)
		select {
		case <-ready:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	me := sybil.h.ID()
	var foreign []string
	for l := 1; l <= 4; l++ {
		for bits := range uint64(1) << l {
			if bits != ShardOf(me, l) {
				foreign = append(foreign, ShardNamespace(ns, l, bits))
				if err := sybil.Announce(ctx, foreign[len(foreign)-1]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	planted := false
	for _, ai := range sub.FindProviders(ctx, NamespaceCID(foreign[0])) {
		planted = planted || ai.ID == me
	}
	if !planted {
		t.Fatal("the Sybil's record is not on the DHT: the test shows nothing")
	}
	for range 20 {
		ws, err := sub.FindShard(ctx, ns, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) == 0 {
			t.Fatal("no workers found")
		}
		for _, w := range ws {
			if w.ID == me {
				t.Fatalf("the Sybil was returned (level %d)", sub.Level())
			}
		}
	}
}

// TestFindShardCrowded: a shard key crowded with records of peers of another shard (Sybils
// that did not grind IDs into it) still yields its own workers. The lookup stopped at want
// providers and dropped the foreign ones only after, so it returned almost none.
func TestFindShardCrowded(t *testing.T) {
	ds := startNet(t, 6, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const lv, sh, sybils, honest, want = 1, 0, 200, 4, 4
	key := []byte(NamespaceCID(ShardNamespace("gridnode/v1/workers/test/test", lv, sh)).Hash())
	of := func(in bool) peer.ID {
		for {
			if p := randPeer(t); (ShardOf(p, lv) == sh) == in {
				return p
			}
		}
	}
	addr := []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/9")}
	var ids []peer.ID
	for range sybils {
		ids = append(ids, of(false))
	}
	mine := map[peer.ID]bool{}
	for range honest {
		p := of(true)
		mine[p] = true
		ids = append(ids, p)
	}
	for _, d := range ds[:len(ds)-1] { // every holder: the grid is smaller than k
		for _, p := range ids {
			if err := d.kad.ProviderStore().AddProvider(ctx, key, peer.AddrInfo{ID: p, Addrs: addr}); err != nil {
				t.Fatal(err)
			}
		}
	}
	searcher := ds[len(ds)-1]
	got := searcher.findProviders(ctx, NamespaceCID(ShardNamespace("gridnode/v1/workers/test/test", lv, sh)), want,
		func(p peer.ID) bool { return ShardOf(p, lv) == sh })
	found := 0
	for _, ai := range got {
		if !mine[ai.ID] {
			t.Errorf("a provider of another shard came back: %s", ai.ID)
			continue
		}
		found++
	}
	if found != want {
		t.Fatalf("found %d of the shard's %d workers among %d foreign records, want %d", found, honest, sybils, want)
	}
}
