package node

// Review of issue 11's networking (joining a grid, mDNS, relays) as a hostile peer on the
// internet and a hostile device on the donor's LAN. Each test demonstrated a problem, and
// passes since it was fixed.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/gridnode/gridnode/dht"
)

// forgedGridPeer is a stranger's host that says it runs gridnode (identify's agent version
// is the only thing isGridPeer and relayACL look at) and announces addrs, whatever it
// listens on.
func forgedGridPeer(t *testing.T, addrs []multiaddr.Multiaddr) host.Host {
	t.Helper()
	opts := []libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.UserAgent(userAgent), libp2p.DisableRelay()}
	if addrs != nil {
		opts = append(opts, libp2p.AddrsFactory(func([]multiaddr.Multiaddr) []multiaddr.Multiaddr { return addrs }))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestReview11RememberedPeersChosenByStrangers: any stranger that connects to a daemon and
// says it runs gridnode is written to DATA/peers with the addresses it announced in
// identify (not the address this node saw it at), and on every restart the daemon dials
// them, and keeps dialling them with backoff while it is out of the grid. Here the
// "stranger" announces a listener that counts connections (127.0.0.2, inside the loopback
// reach of this test node; a donor's node on the internet has public reach, and a stranger
// then names any public host). 32 identities fill the whole file, so after a restart
// with the bootstrap node down, the donor rejoins only through the attacker (an eclipse).
func TestReview11RememberedPeersChosenByStrangers(t *testing.T) {
	fastJoin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	n, err := Open(ctx, Config{DataDir: dir, Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	counter := newConnCounter(t)
	var sybils []peer.ID
	for range maxRemembered {
		h := forgedGridPeer(t, counter.addrs())
		if err := h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: n.Host().Addrs()}); err != nil {
			t.Fatal(err)
		}
		sybils = append(sybils, h.ID())
	}
	waitUntil(t, 10*time.Second, "identify of every stranger", func() bool { return gridPeers(n.Host()) == len(sybils) })
	n.Close()
	remembered, _, err := readPeerFile(filepath.Join(dir, PeersFile), 1000)
	if err != nil && !errors.Is(err, os.ErrNotExist) { // none remembered: no file
		t.Fatal(err)
	}
	chosen := 0
	for _, ai := range remembered {
		for _, a := range ai.Addrs {
			for _, c := range counter.addrs() {
				if a.Equal(c) {
					chosen++
				}
			}
		}
	}
	t.Logf("DATA/peers: %d peers after %d strangers connected inbound; %d addresses the strangers chose", len(remembered), len(sybils), chosen)
	if chosen > 0 {
		t.Errorf("DATA/peers holds %d addresses that strangers announced and this node never connected to, want 0", chosen)
	}
	before := counter.count.Load()
	n2, err := Open(ctx, Config{DataDir: dir, Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && counter.count.Load() == before {
		time.Sleep(20 * time.Millisecond)
	}
	if got := counter.count.Load() - before; got > 0 {
		t.Errorf("after a restart the daemon connected %d times to addresses strangers chose, want 0", got)
	}
}

// TestReview11ForgedGridPeerStopsRejoin: the join loop counts a connected peer as "the
// grid" when identify says "gridnode". A stranger that connects to a daemon whose grid is
// gone makes it log "joined the grid" and stop trying its bootstrap peers: when the
// bootstrap node comes back, the daemon never dials it while the stranger stays connected,
// and its routing table holds only what the stranger gives it.
func TestReview11ForgedGridPeerStopsRejoin(t *testing.T) {
	fastJoin(t) // retries every 20-200 ms
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bootDir := t.TempDir()
	port := freePort(t)
	bootCfg := Config{DataDir: bootDir, Loopback: true, Listen: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}}
	key, err := LoadIdentity(filepath.Join(bootDir, IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	bootID, _ := peer.IDFromPrivateKey(key)
	lg := newLogs()
	n, err := Open(ctx, Config{DataDir: t.TempDir(), Loopback: true, Logger: slog.New(lg),
		Bootstrap: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", port, bootID)}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	at := lg.wait(t, 0, "no known grid peer reachable")

	stranger := forgedGridPeer(t, nil)
	if err := stranger.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: n.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "identify of the stranger", func() bool { return isGridPeer(n.Host(), stranger.ID()) })
	// Still out of the grid: it warns again (it said "joined the grid" before the fix, and
	// stopped trying).
	lg.mu.Lock()
	at = len(lg.msgs)
	lg.mu.Unlock()
	at = lg.wait(t, at, "no known grid peer reachable")

	boot, err := Open(ctx, bootCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	deadline := time.Now().Add(3 * time.Second) // 15 retries at joinMaxBackoff
	for time.Now().Before(deadline) && n.Host().Network().Connectedness(bootID) != network.Connected {
		time.Sleep(20 * time.Millisecond)
	}
	if n.Host().Network().Connectedness(bootID) != network.Connected {
		t.Fatalf("the bootstrap node was back for 3 s and the daemon never dialled it: one stranger saying %q counts as the grid", userAgent)
	}
	lg.wait(t, at, "joined the grid")
}

// TestReview11LANFloodEvictsHonestPeers: a device on the LAN that answers mDNS with fresh
// peer IDs (one answer can carry many, one TXT record each) evicts the honest LAN peers
// from lanPeers, after which the gater of a public-reach node refuses their LAN addresses;
// and an honest answer that arrives while the dial queue is full of the attacker's peers
// is dropped but charged as a dial, so the honest peer is not dialled for lanRedial.
func TestReview11LANFloodEvictsHonestPeers(t *testing.T) {
	l := newLANPeers()
	l.nets = func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")} }
	g := dialGater{reach: ReachPublic, lan: l}
	honest := testID(t, 1)
	honestAddr := multiaddr.StringCast("/ip4/192.168.1.20/tcp/4011")
	now := time.Now()
	if _, dial := l.found(peer.AddrInfo{ID: honest, Addrs: []multiaddr.Multiaddr{honestAddr}}, now); !dial {
		t.Fatal("the honest peer is not dialled")
	}

	// The dial queue is full of the attacker's peers (each dial of a black-holed LAN
	// address takes the 10 s timeout, one at a time); the honest peer re-announces.
	d := &lanDiscovery{h: forgedGridPeer(t, nil), lan: l, log: slog.New(slog.DiscardHandler), queue: make(chan peer.AddrInfo, lanQueue)}
	for i := range lanQueue {
		d.HandlePeerFound(peer.AddrInfo{ID: testID(t, 100+i), Addrs: []multiaddr.Multiaddr{multiaddr.StringCast(fmt.Sprintf("/ip4/192.168.1.%d/tcp/9", 100+i))}})
	}
	l.mu.Lock()
	l.peers[honest].dialed = time.Time{} // its minute is over
	l.mu.Unlock()
	d.HandlePeerFound(peer.AddrInfo{ID: honest, Addrs: []multiaddr.Multiaddr{honestAddr}}) // dropped: the queue is full
	if _, dial := l.found(peer.AddrInfo{ID: honest, Addrs: []multiaddr.Multiaddr{honestAddr}}, time.Now().Add(time.Second)); !dial {
		t.Error("an honest answer dropped because the queue was full still counts as a dial: no dial for lanRedial")
	}

	// 32 fresh identities in one burst.
	for i := range lanMaxPeers {
		l.found(peer.AddrInfo{ID: testID(t, 200+i), Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/192.168.1.99/tcp/9")}}, time.Now().Add(2*time.Second))
	}
	if !g.InterceptAddrDial(honest, honestAddr) {
		t.Errorf("after %d fake mDNS peers, the gater refuses the honest LAN peer's address: evicted", lanMaxPeers)
	}
}

// TestReview11RelayAnnouncementFlood: home nodes take relay candidates from anyone who
// announced RelayNamespace on the DHT, with no check that the announcer is a relay of this
// grid (not the agent version, not a trusted or configured peer, not one per network
// prefix), and autorelay (20 candidates at most, from the first the source offers) then picks
// its 2 relays at random among them. 24 identities announcing the namespace fill the
// candidate list, so the grid's one honest relay is rarely among those tried and a home
// node's circuit addresses, and every relayed job stream, go through the attacker. (It sees
// who talks to whom, when and how much; Noise/TLS runs end to end inside the circuit, so it
// cannot read or alter jobs, binaries or receipts, but it can drop or stall them and make
// the worker unreachable.)
func TestReview11RelayAnnouncementFlood(t *testing.T) {
	const sybils, maxCandidates = 24, 20 // autorelay's default maxCandidates
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	relay, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Worker: true, RelayService: true})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	home, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Bootstrap: relay.AddrStrings()})
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()
	bootAI := peer.AddrInfo{ID: relay.ID(), Addrs: relay.Host().Addrs()}
	for range sybils {
		h := forgedGridPeer(t, nil)
		sd, err := dht.New(ctx, h, dht.Config{Mode: dht.ModeServer, Bootstrap: []peer.AddrInfo{bootAI}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sd.Close() })
		if err := sd.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
		if err := sd.WaitReady(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if err := sd.Announce(ctx, RelayNamespace); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 20*time.Second, "every announcement", func() bool {
		return len(home.DHT().FindProviders(ctx, dht.NamespaceCID(RelayNamespace))) == sybils+1
	})
	src := &relaySource{boot: []peer.AddrInfo{bootAI}} // as Open makes it for a home daemon
	src.set(home.Host(), home.DHT())
	var got []peer.ID
	for ai := range src.peers(ctx, maxCandidates) {
		got = append(got, ai.ID)
	}
	honest := slices.Contains(got, relay.ID())
	t.Logf("%d candidates for autorelay: the honest relay among them: %v; %d from strangers", len(got), honest, len(got)-btoi(honest))
	if !honest {
		t.Errorf("relay candidates %v, want the bootstrap relay %s among them", got, relay.ID())
	}
	if len(got)-btoi(honest) > maxCandidates/2 || len(got)-btoi(honest) > maxDHTRelays {
		t.Errorf("%d of %d relay candidates are strangers that announced %s; want them bounded (trusted, configured or prefix-diverse relays first)", len(got)-btoi(honest), len(got), RelayNamespace)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestReview11JoinHammer: a known peer that accepts connections and closes them at once (a
// hostile remembered peer, or an overloaded bootstrap node) counts as reached, which resets
// the join backoff to its minimum: the daemon dials it, and every other known peer, once per
// joinPoll for as long as it is out of the grid, instead of backing off to joinMaxBackoff.
func TestReview11JoinHammer(t *testing.T) {
	fastJoin(t) // poll and minimum 20 ms, maximum 200 ms
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	closer := forgedGridPeer(t, nil)
	var conns atomic.Int32
	closer.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		conns.Add(1)
		go c.Close()
	}})
	boot := peer.AddrInfo{ID: closer.ID(), Addrs: closer.Addrs()}
	mas, _ := peer.AddrInfoToP2pAddrs(&boot)
	n, err := Open(ctx, Config{DataDir: t.TempDir(), Loopback: true, Bootstrap: []string{mas[0].String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	start := conns.Load()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// Backing off 20, 40, 80, 160, 200, 200 ... ms allows about 12 attempts in 2 s.
	if got := conns.Load() - start; got > 15 {
		t.Errorf("the daemon connected %d times in 2 s to a peer that closes every connection, want a backoff (about 12)", got)
	}
}
