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
	got := c.locate(ctx, []peer.ID{nobody, w}, 2)
	if len(got) != 1 || got[0].ID != w || len(got[0].Addrs) == 0 {
		t.Fatalf("located %v, want only %s with addresses", got, w)
	}
	// The attempt for nobody ends on its own (locate returned once it had the worker).
	waitUntil(t, 2*locateTimeout, "nobody's miss noted", func() bool { return c.jobs.locator.recent(nobody, time.Now()) })
	if now := time.Now(); !c.jobs.locator.recent(nobody, now) || c.jobs.locator.recent(w, now) {
		t.Errorf("missed: nobody %v, the worker %v; want only nobody", c.jobs.locator.recent(nobody, now), c.jobs.locator.recent(w, now))
	}
	if got := c.locate(ctx, []peer.ID{nobody}, 1); len(got) != 0 {
		t.Errorf("located %v for a missed peer, want nothing", got)
	}
}

// TestLocatorMisses: misses expire after locateRetry; past missedPeersMax the expired ones
// go first; a peer reached is forgotten as a miss.
func TestLocatorMisses(t *testing.T) {
	var l locator
	t0 := time.Now()
	old := peer.ID("old")
	l.mu.Lock()
	l.miss(old, t0.Add(-2*locateRetry))
	for i := range missedPeersMax {
		l.miss(peer.ID(rune(i+1)), t0)
	}
	l.mu.Unlock()
	if len(l.missed) > missedPeersMax || l.recent(old, t0) {
		t.Fatalf("%d misses kept (want at most %d), the expired one recent: %v", len(l.missed), missedPeersMax, l.recent(old, t0))
	}
	p := peer.ID(rune(1))
	if _, kept := l.missed[p]; kept && (!l.recent(p, t0) || l.recent(p, t0.Add(locateRetry+time.Second))) {
		t.Error("a miss is not recent now, or still recent after locateRetry")
	}
	ok := func(q peer.ID) peer.AddrInfo { return peer.AddrInfo{ID: q} }
	l.missed[p] = t0.Add(-2 * locateRetry)
	for _, r := range l.start([]peer.ID{p}, 1, t0, ok) {
		<-r.done
	}
	if _, kept := l.missed[p]; kept {
		t.Error("a peer reached is still noted as missed")
	}
}

// start is startAt's attempts alone, for the tests that drive the locator directly.
func (l *locator) start(ps []peer.ID, max int, now time.Time, try func(peer.ID) peer.AddrInfo) []*reach {
	rs, _, _ := l.startAt(ps, max, now, try)
	return rs
}
