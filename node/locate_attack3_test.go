package node

// Third attack round on the locator (495e2fc, helper-48): reachPeer's parallel lookup and
// dials, locate's wait. Failing on 495e2fc and answered since: RelayedAnchor (Limited
// connections count), OfflineCrowdOneShot (one more attempt for each that fails). Held
// (logged figures): StrangerAddrsDialled, OneShotCost. Not answered, held to their bounds
// and logged: StallsFillDialSlots and TCPOnlyTarpits. Addresses in kad-dht answers are not
// signed, so a DHT server asked about an anchor's ID can fill the swarm's dial slots for it
// with addresses that never answer; a node not already connected to that anchor then does
// not reach it within locateTimeout, and skips it for locateRetry (docs/SCALE.md).

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/gridnode/gridnode/dht"
)

// locAtk3Forget disconnects c from w, forgets w's addresses and its miss.
func locAtk3Forget(t *testing.T, c *Node, w peer.ID) {
	t.Helper()
	waitUntil(t, 5*time.Second, "the client disconnected from the worker", func() bool {
		c.h.Network().ClosePeer(w) // again: a lookup in flight may redial it
		c.h.Peerstore().ClearAddrs(w)
		time.Sleep(20 * time.Millisecond)
		return len(c.h.Network().ConnsToPeer(w)) == 0
	})
	c.jobs.locator.mu.Lock()
	delete(c.jobs.locator.missed, w)
	c.jobs.locator.mu.Unlock()
}

// locAtk3Hole returns a loopback QUIC address whose UDP socket reads every packet and
// never answers (a "black hole": the QUIC handshake waits until the dialler gives up), and
// counts the packets it read.
func locAtk3Hole(t *testing.T) (multiaddr.Multiaddr, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var n atomic.Int64
	go func() {
		b := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(b); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return multiaddr.StringCast(fmt.Sprintf("/ip4/127.0.0.1/udp/%d/quic-v1", pc.LocalAddr().(*net.UDPAddr).Port)), &n
}

// TestLocateAttack3StallsFillDialSlots: the swarm dials at most 8 addresses of one peer at
// a time (swarm.DefaultPerPeerRateLimit; the rest wait in its limiter), and the resource
// manager lets at most 4 TCP dials of one peer hold a file descriptor (rcmgr's per-peer FD
// limit: a fifth fails at once, and the address is backed off). A stalled dial ends at the
// swarm's dial timeout (5 s on a LAN, 15 s on the internet), past locateTimeout. A
// stranger's DHT server names the anchor's ID at 8 stalling addresses in one closer-peers
// answer (the peerstore keeps maxPeerAddrs = 16 per peer, TempAddrTTL, renewed by each
// answer): QUIC addresses at UDP ports that swallow the handshake, or TCP tarpits.
// reachPeer's first dial takes the 8 slots; the anchor's real addresses, which the lookup
// brings, queue behind them, and so does kad-dht's own dial of the anchor (the same swarm
// dial): the anchor is not reached and is noted missed for locateRetry. Controls: no
// stalls, and 8 TCP tarpits (only 4 dial; the anchor's QUIC address is dialled 30 ms
// later and reaches it).
func TestLocateAttack3StallsFillDialSlots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, c := openGrid(t, ctx, 3, echoRunner)
	w := ws[2].ID()
	// The path: the stranger's answer to any lookup names the anchor at 8 black holes.
	var holes []multiaddr.Multiaddr
	for range 8 {
		a, _ := locAtk3Hole(t)
		holes = append(holes, a)
	}
	var naming atomic.Bool
	naming.Store(true)
	k := newLocAtkKad(t, nil, func(req *pb.Message) *pb.Message {
		resp := pb.NewMessage(req.GetType(), req.GetKey(), 0)
		if naming.Load() {
			resp.CloserPeers = pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: w, Addrs: holes}})
		}
		return resp
	})
	k.join(t, ctx, c)
	locAtk3Forget(t, c, w)
	pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	c.d.FindProviders(pctx, dht.NamespaceCID("any key"))
	pcancel()
	in := 0
	for _, a := range c.h.Peerstore().Addrs(w) {
		for _, h := range holes {
			if a.Equal(h) {
				in++
			}
		}
	}
	t.Logf("one answer of the stranger put %d of its 8 black holes in the peerstore for the anchor's ID", in)
	naming.Store(false) // from here on it answers as an honest server (empty answers)
	g0 := runtime.NumGoroutine()
	defer func() {
		time.Sleep(time.Second)
		t.Logf("goroutines before the cases %d, a second after them %d (24 of them the cases' own listeners)", g0, runtime.NumGoroutine())
	}()
	failed := 0
	for _, tc := range []struct {
		name       string
		tcp, holes int
	}{{"none", 0, 0}, {"8 TCP tarpits", 8, 0}, {"8 QUIC black holes", 0, 8}, {"4 TCP tarpits + 4 QUIC black holes", 4, 4}} {
		// Fresh addresses each case: the swarm backs off an address whose dial failed.
		var stalls []multiaddr.Multiaddr
		var hits []*atomic.Int64
		for range tc.tcp {
			a, n := locAtk2Stall(t)
			stalls, hits = append(stalls, a), append(hits, n)
		}
		for range tc.holes {
			a, n := locAtk3Hole(t)
			stalls, hits = append(stalls, a), append(hits, n)
		}
		locAtk3Forget(t, c, w)
		c.h.Peerstore().AddAddrs(w, stalls, peerstore.TempAddrTTL) // as the answer leaves them
		t0 := time.Now()
		got := c.locate(ctx, []peer.ID{w}, 1)
		took := time.Since(t0)
		dialled := 0
		for _, h := range hits {
			if h.Load() > 0 {
				dialled++
			}
		}
		missed := c.jobs.locator.recent(w, time.Now())
		t.Logf("%s for the anchor in the peerstore: located %d in %v; stalling addresses dialled %d; missed noted: %v",
			tc.name, len(got), took.Round(time.Millisecond), dialled, missed)
		switch {
		case tc.holes == 0 && len(got) != 1:
			t.Fatalf("bad test: with %s the anchor was not located", tc.name)
		case len(got) != 1:
			failed++
			// The next submit's locate, the stalling addresses gone: the miss stands.
			for _, a := range stalls {
				c.h.Peerstore().SetAddr(w, a, 0)
			}
			t1 := time.Now()
			again := c.locate(ctx, []peer.ID{w}, 1)
			t.Logf("  the next locate, stalling addresses gone: located %d in %v (missed until %v from now)", len(again), time.Since(t1).Round(time.Millisecond), locateRetry-time.Since(t0).Round(time.Second))
			t.Logf("  known limit: %s in the peerstore (one closer-peers answer of any DHT server) took the swarm's 8 dial slots for the anchor: its real addresses, found by the lookup, were not dialled within locateTimeout (%v), and the reachable anchor is skipped as missed for %v", tc.name, took.Round(time.Millisecond), locateRetry)
			if took > locateTimeout+500*time.Millisecond || dialled > 8 {
				t.Errorf("%s: locate took %v and dialled %d stalling addresses, want at most locateTimeout and 8", tc.name, took, dialled)
			}
		}
	}
}

// TestLocateAttack3StrangerAddrsDialled: what one locate of a switched-off anchor dials at
// addresses of a stranger's choosing (a victim's, to reflect traffic at it): its DHT server
// answers every FIND_NODE for the anchor's ID with it at 64 fresh addresses in 4 entries
// (the peerstore keeps 16 per peer), TCP ports that accept and close, or UDP ports that
// swallow QUIC handshakes (no file descriptor limit; each dial sends padded Initial
// packets). Logged: distinct addresses reached, and UDP bytes per answer. Held if within
// maxReachAddrs.
func TestLocateAttack3StrangerAddrsDialled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, c := openGrid(t, ctx, 3, echoRunner)
	for _, kind := range []string{"tcp", "udp"} {
		var mu sync.Mutex
		var pool []multiaddr.Multiaddr
		var hits []*atomic.Int64
		var bytes atomic.Int64
		for range 256 {
			if kind == "tcp" {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				var n atomic.Int64
				go func() {
					for {
						cn, err := l.Accept()
						if err != nil {
							return
						}
						n.Add(1)
						cn.Close()
					}
				}()
				hits = append(hits, &n)
				pool = append(pool, multiaddr.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port)))
				continue
			}
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pc.Close() })
			var n atomic.Int64
			go func() {
				b := make([]byte, 2048)
				for {
					m, _, err := pc.ReadFrom(b)
					if err != nil {
						return
					}
					n.Add(1)
					bytes.Add(int64(m))
				}
			}()
			hits = append(hits, &n)
			pool = append(pool, multiaddr.StringCast(fmt.Sprintf("/ip4/127.0.0.1/udp/%d/quic-v1", pc.LocalAddr().(*net.UDPAddr).Port)))
		}
		next := func(n int) []multiaddr.Multiaddr {
			mu.Lock()
			defer mu.Unlock()
			n = min(n, len(pool))
			out := pool[:n]
			pool = pool[n:]
			return out
		}
		var off atomic.Value
		off.Store(peer.ID(""))
		var answers, answerBytes atomic.Int64
		k := newLocAtkKad(t, nil, func(req *pb.Message) *pb.Message {
			resp := pb.NewMessage(req.GetType(), req.GetKey(), 0)
			if p := off.Load().(peer.ID); p != "" && req.GetType() == pb.Message_FIND_NODE && peer.ID(req.GetKey()) == p {
				answers.Add(1)
				var ais []peer.AddrInfo
				for range 4 {
					ais = append(ais, peer.AddrInfo{ID: p, Addrs: next(16)})
				}
				resp.CloserPeers = pb.RawPeerInfosToPBPeers(ais)
				answerBytes.Add(int64(proto.Size(resp)))
			}
			return resp
		})
		k.join(t, ctx, c)
		o := locAtkIDNear(t, k.ID(), locAtkIDs(ws)...)
		off.Store(o)
		t0 := time.Now()
		got := c.locate(ctx, []peer.ID{o}, 1)
		took := time.Since(t0)
		time.Sleep(time.Second) // retransmissions
		reached := 0
		for _, h := range hits {
			if h.Load() > 0 {
				reached++
			}
		}
		t.Logf("%s: a stranger answering FIND_NODE for a switched-off anchor with fresh addresses (%d answers, %d bytes): located %d in %v; distinct addresses reached %d; UDP bytes at them %d",
			kind, answers.Load(), answerBytes.Load(), len(got), took.Round(time.Millisecond), reached, bytes.Load())
		if reached > maxReachAddrs {
			t.Errorf("one locate dialled %d addresses of a stranger's choosing", reached)
		}
	}
}

// TestLocateAttack3RelayedAnchor: no attacker. A trusted worker behind a NAT that hole
// punching cannot cross (ReachabilityRelayed: symmetric NAT) is reachable only through a
// relay, and its records carry only its circuit address; the jobs layer uses relayed
// connections when nothing else works (jobHost). On 2adb5d7 reachPeer counted it reached
// once Connect succeeded (the relayed connection); 495e2fc counts only
// Connectedness == Connected, so it is never located, its miss is noted for locateRetry,
// and since locateAnchors now takes only the anchors Locate reached, a submitter whose
// trusted machines are all behind such NATs has no anchor unless discovery's shard
// happens to list one. The attempt ends at once: FindPeer returns at once for a peer with
// a limited connection (FindLocal), the relayed Connect succeeds, and "nothing new, nothing
// working" ends reachPeer at its next poll, also before hole punching (which begins when
// the relayed connection opens) could give the direct connection that would count.
func TestLocateAttack3RelayedAnchor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	relay, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.EnableRelayService(), libp2p.ForceReachabilityPublic())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	rinfo := peer.AddrInfo{ID: relay.ID(), Addrs: relay.Addrs()}
	// The anchor: no direct address at all, a reservation at the relay.
	anchor, err := libp2p.New(libp2p.NoListenAddrs, libp2p.EnableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { anchor.Close() })
	if err := anchor.Connect(ctx, rinfo); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reserve(ctx, anchor, rinfo); err != nil {
		t.Fatalf("reserve: %v", err)
	}
	anchor.SetStreamHandler("/locate-attack3/1", func(s network.Stream) { s.Write([]byte("ok")); s.Close() })
	circuit := multiaddr.StringCast(fmt.Sprintf("%s/p2p/%s/p2p-circuit", relay.Addrs()[0], relay.ID()))

	// The submitter: a host with the relay client (as a non-loopback node has) and its DHT.
	sh, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.EnableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Close() })
	d, err := dht.New(ctx, sh, dht.Config{Mode: dht.ModeClient, Bootstrap: []peer.AddrInfo{rinfo}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	n := &Node{h: sh, d: d, log: slog.New(slog.DiscardHandler)}
	defer func() {
		if n.endLife != nil {
			n.endLife()
		}
	}()
	sh.Peerstore().AddAddrs(anchor.ID(), []multiaddr.Multiaddr{circuit}, peerstore.TempAddrTTL) // its record's address

	// What 2adb5d7 counted: Connect at the peerstore addresses.
	cctx, ccancel := context.WithTimeout(ctx, locateTimeout)
	cerr := sh.Connect(cctx, peer.AddrInfo{ID: anchor.ID()})
	ccancel()
	t.Logf("Connect through the relay: %v; connectedness %v", cerr, sh.Network().Connectedness(anchor.ID()))
	s, serr := sh.NewStream(network.WithAllowLimitedConn(ctx, "jobs"), anchor.ID(), "/locate-attack3/1")
	if serr == nil {
		s.Close()
	}
	t.Logf("a stream over it, as jobHost opens one when nothing direct works: %v", serr)
	if cerr != nil || serr != nil {
		t.Fatal("bad test: the anchor is not reachable through the relay")
	}

	t0 := time.Now()
	ai := n.reachPeer(anchor.ID())
	took := time.Since(t0)
	t.Logf("reachPeer of the relayed-only anchor (already connected through the relay): reached %v in %v", ai.ID != "", took.Round(time.Millisecond))
	sh.Network().ClosePeer(anchor.ID())
	time.Sleep(50 * time.Millisecond)
	// identify took the anchor's own (empty: a test host) record; a NAT'd worker's lists its circuit address
	sh.Peerstore().AddAddrs(anchor.ID(), []multiaddr.Multiaddr{circuit}, peerstore.TempAddrTTL)
	t1 := time.Now()
	ai2 := n.reachPeer(anchor.ID())
	t.Logf("reachPeer of it, not connected: reached %v in %v; connectedness after %v", ai2.ID != "", time.Since(t1).Round(time.Millisecond), sh.Network().Connectedness(anchor.ID()))
	if ai.ID == "" || ai2.ID == "" {
		t.Errorf("a worker reachable only through a relay (the jobs layer uses such connections) is never reached by reachPeer (Connectedness Limited is not Connected); 2adb5d7's reachPeer counted it (Connect succeeds). It is noted missed for %v and, as Locate's answer is now the only source of anchors, never anchors a submit", locateRetry)
	}
}

// TestLocateAttack3OfflineCrowdOneShot: a one-shot submitter (a fresh node: nothing
// missed yet, the anchor not connected) with 12 anchor candidates that cannot be reached
// (an owner's switched-off machines, or 12 identities of a stranger that earned
// established records and went away: records do not expire) and 1 reachable one, in
// anchorsFor's random order. locate starts locateLookups × want = 8 attempts, the first 8
// not missed, and none beyond them however fast those miss: the reachable one is tried in
// about 8 of 13 submits, and the others get no anchor (docs: "the first 4 reachable of up to
// 32 candidates"). A daemon gets past this after one submit (misses are remembered); a
// one-shot `gridnode submit` starts afresh every time.
func TestLocateAttack3OfflineCrowdOneShot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, c := openGrid(t, ctx, 3, echoRunner)
	w := ws[2].ID()
	var off []peer.ID
	for range 12 {
		off = append(off, locAtk2ID(t))
	}
	const trials = 16
	failed := 0
	var took []time.Duration
	for range trials {
		locAtk3Forget(t, c, w)
		c.jobs.locator.mu.Lock()
		c.jobs.locator.missed = nil
		c.jobs.locator.budget = nil // a fresh node's budget
		c.jobs.locator.mu.Unlock()
		ps := append([]peer.ID{w}, off...)
		mrandShuffle(ps)
		t0 := time.Now()
		got := c.locate(ctx, ps, 4)
		took = append(took, time.Since(t0).Round(time.Millisecond))
		if len(got) == 0 {
			failed++
		}
		// let the attempts still running end before the next trial
		waitUntil(t, 3*locateTimeout, "attempts ended", func() bool {
			c.jobs.locator.mu.Lock()
			defer c.jobs.locator.mu.Unlock()
			return len(c.jobs.locator.inflight) == 0
		})
	}
	t.Logf("12 unreachable candidates and 1 reachable, fresh locator each time: %d of %d locates found no anchor (%v)", failed, trials, took)
	if failed > 0 {
		t.Errorf("%d of %d one-shot locates found no anchor although one of the 13 candidates was reachable: only the first %d candidates are ever tried", failed, trials, 2*4)
	}
}

func mrandShuffle(ps []peer.ID) {
	for i := len(ps) - 1; i > 0; i-- {
		var b [1]byte
		crand.Read(b[:])
		j := int(b[0]) % (i + 1)
		ps[i], ps[j] = ps[j], ps[i]
	}
}

// TestLocateAttack3OneShotCost: what a one-shot submitter (nothing connected, nothing
// missed) pays to locate with 1 reachable anchor (disconnected, its addresses forgotten:
// the lookup finds it) and 4 switched-off ones whose lookups a stranger's DHT server holds
// to locateTimeout: the reachable one's lookup plus reachGrace. Held if well under
// locateTimeout.
func TestLocateAttack3OneShotCost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, c := openGrid(t, ctx, 3, echoRunner)
	held := map[peer.ID]bool{}
	var heldV atomic.Value
	heldV.Store(held)
	k := newLocAtkKad(t, nil, func(req *pb.Message) *pb.Message {
		if heldV.Load().(map[peer.ID]bool)[peer.ID(req.GetKey())] {
			return nil
		}
		return pb.NewMessage(req.GetType(), req.GetKey(), 0)
	})
	k.join(t, ctx, c)
	var off []peer.ID
	for range 4 {
		off = append(off, locAtkIDNear(t, k.ID(), locAtkIDs(ws)...))
	}
	m := map[peer.ID]bool{}
	for _, p := range off {
		m[p] = true
	}
	heldV.Store(m)
	w := ws[2].ID()
	var took []time.Duration
	for range 4 {
		locAtk3Forget(t, c, w)
		c.jobs.locator.mu.Lock()
		c.jobs.locator.missed = nil
		c.jobs.locator.mu.Unlock()
		waitUntil(t, 3*locateTimeout, "attempts ended", func() bool {
			c.jobs.locator.mu.Lock()
			defer c.jobs.locator.mu.Unlock()
			return len(c.jobs.locator.inflight) == 0
		})
		ps := append(append([]peer.ID{}, off...), w)
		t0 := time.Now()
		got := c.locate(ctx, ps, 4)
		took = append(took, time.Since(t0).Round(time.Millisecond))
		if len(got) != 1 {
			t.Fatalf("located %d", len(got))
		}
	}
	t.Logf("1 reachable anchor (needs its lookup) after 4 switched-off ones whose lookups are held: locate took %v", took)
	for _, d := range took {
		if d > locateTimeout/2 {
			t.Errorf("locate took %v", d)
		}
	}
}

// TestLocateAttack3TCPOnlyTarpits: the same with an anchor that has TCP addresses only
// (a network that blocks UDP, or a worker with QUIC off): 4 TCP tarpits are enough, since
// the resource manager lets 4 TCP dials of one peer hold a file descriptor and a further
// one fails at once; that failure also backs the anchor's real address off in the swarm
// (5 s + 1 s x tries²), so for ~6 s after the locate even a Connect at the right address
// fails (the tarpits, still in the peerstore, are dialled again and the real address is
// skipped). Control: 3 tarpits.
func TestLocateAttack3TCPOnlyTarpits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, c := openGridConfig(t, ctx, 3, Config{Runner: echoRunner, Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	w := ws[2].ID()
	for _, n := range []int{3, 4} {
		var pits []multiaddr.Multiaddr
		for range n {
			a, _ := locAtk2Stall(t)
			pits = append(pits, a)
		}
		locAtk3Forget(t, c, w)
		c.h.Peerstore().AddAddrs(w, pits, peerstore.TempAddrTTL)
		t0 := time.Now()
		got := c.locate(ctx, []peer.ID{w}, 1)
		took := time.Since(t0)
		// Then: Connects at the anchor's real address (as a submit's offer query would
		// dial it), 1 s each, until one succeeds.
		var err error
		t1 := time.Now()
		for time.Since(t1) < 8*time.Second {
			cctx, ccancel := context.WithTimeout(ctx, time.Second)
			err = c.h.Connect(cctx, peer.AddrInfo{ID: w, Addrs: ws[2].h.Addrs()})
			ccancel()
			if err == nil {
				break
			}
		}
		t.Logf("TCP-only anchor, %d TCP tarpits in the peerstore: located %d in %v; Connects at its real address after it: %v after %v",
			n, len(got), took.Round(time.Millisecond), err, time.Since(t1).Round(time.Millisecond))
		switch {
		case n < 4 && len(got) != 1:
			t.Fatalf("bad test: with %d tarpits the anchor was not located", n)
		case len(got) != 1:
			t.Logf("known limit: %d TCP tarpits kept a reachable TCP-only anchor from being located (%v); it is skipped as missed for %v", n, took.Round(time.Millisecond), locateRetry)
			if took > locateTimeout+500*time.Millisecond {
				t.Errorf("locate took %v, want at most locateTimeout", took)
			}
		}
	}
}
