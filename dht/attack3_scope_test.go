package dht

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
)

func atk3Has(h host.Host, p peer.ID, a ma.Multiaddr) bool {
	for _, b := range h.Peerstore().Addrs(p) {
		if b.Equal(a) {
			return true
		}
	}
	return false
}

// TestAttack3EvictionScope (defence): a Sybil's ADD_PROVIDERs touch only its own addresses. It puts
// a connected honest worker's address, and the server's own, among its own addresses and
// rotates through 30 renewals of 8 new ones; it also lists, first, entries
// naming the worker and an alternative encoding of its own ID (identity multihash of
// another key's bytes: different ID bytes). The worker's and the server's addresses stay.
func TestAttack3EvictionScope(t *testing.T) {
	ctx, mn, d, h := atk2Net(t)
	w, wst := atk2Sybil(ctx, t, mn, h) // the honest worker, connected
	wAddr := w.Addrs()[0]
	atk2Write(t, wst, atk3Add(atk3Key("shard"), w.ID(), w.Addrs()))
	atk3Sync(t, wst)
	s, st := atk2Sybil(ctx, t, mn, h)
	alt, err := mh.Sum([]byte(s.ID()), mh.IDENTITY, -1)
	if err != nil {
		t.Fatal(err)
	}
	selfAddrs := len(h.Peerstore().Addrs(h.ID()))
	for r := range 30 {
		addrs := atkAddrs(6, 300+r)
		if r == 0 {
			addrs = append(addrs, wAddr, h.Addrs()[0])
		}
		m := pb.NewMessage(pb.Message_ADD_PROVIDER, atk3Key("shard"), 0)
		m.ProviderPeers = pb.RawPeerInfosToPBPeers([]peer.AddrInfo{
			{ID: w.ID(), Addrs: atkAddrs(8, 900+r)},
			{ID: peer.ID(alt), Addrs: atkAddrs(8, 950+r)},
			{ID: s.ID(), Addrs: addrs},
		})
		atk2Write(t, st, m)
		atk3Sync(t, st)
	}
	t.Logf("worker: %d addresses (its own kept: %v, Sybil's under its ID: %d); alt ID: %d; server's own: %d -> %d; Sybil: %d",
		len(h.Peerstore().Addrs(w.ID())), atk3Has(h, w.ID(), wAddr), atk2Claimed(h, w.ID()), len(h.Peerstore().Addrs(peer.ID(alt))),
		selfAddrs, len(h.Peerstore().Addrs(h.ID())), atk2Claimed(h, s.ID()))
	if !atk3Has(h, w.ID(), wAddr) || atk2Claimed(h, w.ID()) > 0 || len(h.Peerstore().Addrs(peer.ID(alt))) > 0 || len(h.Peerstore().Addrs(h.ID())) < selfAddrs {
		t.Errorf("a Sybil's ADD_PROVIDERs changed another peer's addresses")
	}
	if got := atk2Claimed(h, s.ID()); got > maxPeerAddrs {
		t.Errorf("sequential renewals left %d Sybil addresses, past the cap of %d", got, maxPeerAddrs)
	}
	_ = d
}

// TestAttack3ReorderedRenewal (defence): a worker with 7 addresses renewing in a different
// order each time keeps all 7, and after it moves its new addresses are there.
func TestAttack3ReorderedRenewal(t *testing.T) {
	ctx, mn, _, h := atk2Net(t)
	w, st := atk2Sybil(ctx, t, mn, h)
	addrs := atkAddrs(7, 5)
	for range 20 {
		rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
		atk2Write(t, st, atk3Add(atk3Key("shard"), w.ID(), addrs))
		atk3Sync(t, st)
		if got := atk2Claimed(h, w.ID()); got != len(addrs) {
			t.Fatalf("a reordered renewal left %d of the worker's %d addresses", got, len(addrs))
		}
	}
	// An address change is served: 3 new addresses beside the 7 old (the peerstore's cap, 16,
	// replaces the ones that expire first when it is full).
	moved := append(atkAddrs(5, 5)[:5], atkAddrs(3, 6)...)
	atk2Write(t, st, atk3Add(atk3Key("shard"), w.ID(), moved))
	_, _ = atkGetProviders(t, st, atk3Key("shard"))
	for _, a := range moved {
		if !atk3Has(h, w.ID(), a) {
			t.Errorf("the worker's new address %v is not in the peerstore", a)
		}
	}
	t.Logf("20 reordered renewals of 7 addresses: none evicted; after a move to %d addresses the peerstore holds %d of the worker's", len(moved), atk2Claimed(h, w.ID()))
}

// TestAttack3EvictsConnectedAddress: a connected worker with 10 dialable addresses
// (IPv4+IPv6 x tcp/quic/webtransport/webrtc, and relay ones, are past 8) whose first 8
// change order between renewals keeps its real, identify-learned address. (A per-provider
// budget that evicted with SetAddr(p, a, 0) removed it, whatever had put it there.)
func TestAttack3EvictsConnectedAddress(t *testing.T) {
	ctx, mn, _, h := atk2Net(t)
	w, st := atk2Sybil(ctx, t, mn, h)
	real := w.Addrs()[0]
	for deadline := time.Now().Add(3 * time.Second); !atk3Has(h, w.ID(), real) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if !atk3Has(h, w.ID(), real) {
		t.Fatalf("bad test: identify never gave the server the worker's address %v", real)
	}
	others := atkAddrs(9, 7)
	atk2Write(t, st, atk3Add(atk3Key("shard"), w.ID(), append([]ma.Multiaddr{real}, others...)))
	atk3Sync(t, st)
	atk2Write(t, st, atk3Add(atk3Key("shard"), w.ID(), append(append([]ma.Multiaddr(nil), others...), real)))
	atk3Sync(t, st)
	kept := atk3Has(h, w.ID(), real)
	t.Logf("connected worker (%v) renewed with 10 addresses in another order: its real address in the server's peerstore: %v; connectedness %v",
		real, kept, h.Network().Connectedness(w.ID()))
	if !kept {
		t.Errorf("a renewal that only reordered a connected worker's 10 addresses removed its real, identify-learned address %v from the peerstore (SetAddr TTL 0) while it was connected", real)
	}
}

// TestAttack3RaceBudget runs ADD_PROVIDERs (rotating addresses, many keys so the manager
// flushes), GET_PROVIDERS and the GC (validity 1.2 s, cleanup every 200 ms) together; run
// with -race. Afterwards no Sybil holds more than the peerstore's cap.
func TestAttack3RaceBudget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mn := mocknet.New()
	defer mn.Close()
	h := atkNodePeer(t, mn)
	d, err := New(ctx, h, Config{Mode: ModeServer, ProvideValidity: 1200 * time.Millisecond, Dialable: func(ma.Multiaddr) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const sybils = 6
	var wg sync.WaitGroup
	stop := time.Now().Add(3 * time.Second)
	var mu sync.Mutex
	sent := 0
	for i := range sybils {
		s, st := atk2Sybil(ctx, t, mn, h)
		_, gst := atk2Sybil(ctx, t, mn, h)
		wg.Go(func() {
			for n := 0; time.Now().Before(stop); n++ {
				atk2Write(t, st, atk3Add(atk3Key(string(rune('a'+n%600))), s.ID(), atkAddrs(3, i*1000+n%40)))
				if n%50 == 0 {
					atk3Sync(t, st)
				}
				mu.Lock()
				sent++
				mu.Unlock()
			}
		})
		wg.Go(func() {
			for n := 0; time.Now().Before(stop); n++ {
				atkGetProviders(t, gst, atk3Key(string(rune('a'+n%600))))
				d.ProviderRecords()
			}
		})
	}
	wg.Wait()
	held := 0
	for _, p := range h.Peerstore().PeersWithAddrs() {
		held = max(held, atk2Claimed(h, p))
	}
	t.Logf("%d ADD_PROVIDERs from %d Sybils with GET_PROVIDERS and GC: %d records, at most %d addresses a Sybil", sent, sybils, d.ProviderRecords(), held)
	if held > maxPeerAddrs {
		t.Errorf("after the race a Sybil holds %d addresses, past the cap of %d", held, maxPeerAddrs)
	}
}

// TestAttack3LocateWait (defence, with the cost measured): Locate on a node with no peers
// returns at once; connected only to a peer that never enters the routing table (it does
// not speak kad), it waits its 3 s and no longer.
func TestAttack3LocateWait(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	plain, err := mn.GenPeer() // a relay, or a bootstrap peer that refuses kad
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []Mode{ModeClient, ModeServer} {
		d, h := atk2Client(t, mn, plain, mode)
		start := time.Now()
		d.Locate(context.Background())
		alone := time.Since(start)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := d.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		start = time.Now()
		d.Locate(context.Background())
		stuck := time.Since(start)
		t.Logf("mode %v: Locate with no peers %v; connected to %d non-kad peer(s), table %d: %v", mode, alone, len(h.Network().Peers()), d.Size(), stuck)
		if alone > 100*time.Millisecond {
			t.Errorf("Locate with no peers took %v", alone)
		}
		if stuck > locateWait+500*time.Millisecond {
			t.Errorf("a connected peer outside the table held Locate %v, past %v", stuck, locateWait)
		}
		h.Network().ClosePeer(plain.ID())
	}
	_ = network.Connected
}
