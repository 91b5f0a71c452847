package node

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestLocateAnchor: the client forgets a worker's addresses and drops its connection
// (the worker stays in its routing table), and locate finds the addresses again through
// the DHT; a peer nobody knows is not found, and is remembered as missed (not looked up
// again for locateRetry). kad-dht's FindPeer alone said "not found" here (run once): it
// does not dial a peer it only heard of during its lookup.
func TestLocateAnchor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, c := openGrid(t, ctx, 3, echoRunner)
	w := ws[2].ID()
	c.h.Network().ClosePeer(w)
	c.h.Peerstore().ClearAddrs(w)
	waitUntil(t, 5*time.Second, "the client disconnected from the worker", func() bool {
		return len(c.h.Network().ConnsToPeer(w)) == 0
	})
	if !c.d.Routes(w) {
		t.Fatal("the worker left the client's routing table")
	}
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nobody, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	got := c.locate(ctx, []peer.ID{nobody, w})
	if len(got) != 1 || got[0].ID != w || len(got[0].Addrs) == 0 {
		t.Fatalf("located %v, want only %s with addresses", got, w)
	}
	if now := time.Now(); !c.jobs.missed.recent(nobody, now) || c.jobs.missed.recent(w, now) {
		t.Errorf("missed: nobody %v, the worker %v; want only nobody", c.jobs.missed.recent(nobody, now), c.jobs.missed.recent(w, now))
	}
	if got := c.locate(ctx, []peer.ID{nobody}); len(got) != 0 {
		t.Errorf("located %v for a missed peer, want nothing", got)
	}
}

// TestMissedPeersBounded: misses expire after locateRetry and at most missedPeersMax are
// kept, the oldest going first.
func TestMissedPeersBounded(t *testing.T) {
	var m missedPeers
	t0 := time.Now()
	for i := range missedPeersMax + 10 {
		m.add(peer.ID(rune(i+1)), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if len(m.at) != missedPeersMax {
		t.Fatalf("%d misses kept, want %d", len(m.at), missedPeersMax)
	}
	if m.recent(peer.ID(rune(1)), t0) {
		t.Error("the oldest miss was kept")
	}
	last := peer.ID(rune(missedPeersMax + 10))
	if !m.recent(last, t0) || m.recent(last, t0.Add(locateRetry+time.Second)) {
		t.Error("the newest miss is not recent now, or still recent after locateRetry")
	}
	m.forget(last)
	if m.recent(last, t0) {
		t.Error("a forgotten miss is still recent")
	}
}
