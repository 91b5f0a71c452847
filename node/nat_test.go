package node

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
	"github.com/multiformats/go-multiaddr"
)

func TestReachClass(t *testing.T) {
	pub, priv := network.ReachabilityPublic, network.ReachabilityPrivate
	for _, tc := range []struct {
		name string
		s    reachState
		want Reachability
	}{
		{"nothing known", reachState{}, ReachabilityUnknown},
		{"loopback", reachState{loopback: true, autonat: priv}, ReachabilityLoopback},
		{"public", reachState{autonat: pub, mapping: mappingDependent}, ReachabilityPublic},
		{"nat, no evidence", reachState{autonat: priv}, ReachabilityNAT},
		{"cone", reachState{autonat: priv, mapping: mappingIndependent}, ReachabilityHolePunch},
		{"cone before autonat", reachState{mapping: mappingIndependent}, ReachabilityUnknown},
		{"symmetric", reachState{autonat: priv, mapping: mappingDependent}, ReachabilityRelayed},
		{"symmetric before autonat", reachState{mapping: mappingDependent}, ReachabilityRelayed},
		{"a punch worked", reachState{autonat: priv, mapping: mappingDependent, punchOK: 1}, ReachabilityHolePunch},
		{"failures alone say little", reachState{autonat: priv, punchFail: 5}, ReachabilityNAT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.class(); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestObservations(t *testing.T) {
	a, b, c := netip.MustParseAddr("192.0.0.65"), netip.MustParseAddr("192.0.0.66"), netip.MustParseAddr("192.0.0.67")
	const local = "/ip4/10.1.0.2/tcp/4011"
	for _, tc := range []struct {
		name string
		obs  []struct {
			by  netip.Addr
			saw string
		}
		want mapping
	}{
		{"one observer", []struct {
			by  netip.Addr
			saw string
		}{{a, "/ip4/192.0.0.71/tcp/4011"}}, mappingUnknown},
		{"two agree: cone", []struct {
			by  netip.Addr
			saw string
		}{{a, "/ip4/192.0.0.71/tcp/4011"}, {b, "/ip4/192.0.0.71/tcp/4011"}}, mappingIndependent},
		{"two differ: symmetric", []struct {
			by  netip.Addr
			saw string
		}{{a, "/ip4/192.0.0.71/tcp/4011"}, {b, "/ip4/192.0.0.71/tcp/51234"}}, mappingDependent},
		{"one observer twice", []struct {
			by  netip.Addr
			saw string
		}{{a, "/ip4/192.0.0.71/tcp/4011"}, {a, "/ip4/192.0.0.71/tcp/4011"}}, mappingUnknown},
		{"a later disagreement wins", []struct {
			by  netip.Addr
			saw string
		}{{a, "/ip4/192.0.0.71/tcp/4011"}, {b, "/ip4/192.0.0.71/tcp/4011"}, {c, "/ip4/192.0.0.71/tcp/999"}}, mappingDependent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := observations{}
			var got mapping
			for _, ob := range tc.obs {
				got = o.add(local, ob.saw, ob.by)
			}
			if got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
	t.Run("bounded", func(t *testing.T) {
		o := observations{}
		for i := range 100 {
			for j := range 100 {
				o.add(fmt.Sprintf("/ip4/10.0.0.%d/tcp/1", i), "/ip4/192.0.0.71/tcp/1", netip.AddrFrom4([4]byte{192, 0, 0, byte(j)}))
			}
		}
		if len(o) > maxObservedLocal {
			t.Errorf("%d local addresses kept, want at most %d", len(o), maxObservedLocal)
		}
		for l, m := range o {
			if len(m) > maxObservers {
				t.Errorf("%s: %d observers kept, want at most %d", l, len(m), maxObservers)
			}
		}
	})
}

func testID(t *testing.T, i int) peer.ID {
	t.Helper()
	ai, err := peer.AddrInfoFromString(testPeerAddr(t, i))
	if err != nil {
		t.Fatal(err)
	}
	return ai.ID
}

// TestLANPeers: mDNS answers make only on-link LAN addresses dialable, only for the peer
// that announced them, for a while, and the table stays bounded.
func TestLANPeers(t *testing.T) {
	l := newLANPeers()
	l.nets = func() []netip.Prefix {
		return []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("fe80::/64")}
	}
	ma := multiaddr.StringCast
	now := time.Now() // the gater judges at time.Now
	p, q := testID(t, 1), testID(t, 2)
	ai, dial := l.found(peer.AddrInfo{ID: p, Addrs: []multiaddr.Multiaddr{
		ma("/ip4/192.168.1.20/tcp/4011"),
		ma("/ip4/192.168.7.1/tcp/80"), // private, but not on any of our links
		ma("/ip4/127.0.0.1/tcp/4011"), // loopback
		ma("/ip4/8.8.8.8/tcp/53"),     // public: mDNS does not widen the reach there
		ma("/ip4/10.0.0.1/tcp/22"),    // private, off-link
		ma("/ip6/fe80::1/udp/4011/quic-v1"),
	}}, now)
	if !dial || len(ai.Addrs) != 2 {
		t.Fatalf("found: dial %v addrs %v, want a dial to the two on-link addresses", dial, ai.Addrs)
	}
	if _, dial := l.found(peer.AddrInfo{ID: p, Addrs: ai.Addrs}, now.Add(time.Second)); dial {
		t.Error("a second answer within lanRedial dials again")
	}
	g := dialGater{reach: ReachPublic, lan: l}
	for _, tc := range []struct {
		p    peer.ID
		a    string
		want bool
	}{
		{p, "/ip4/192.168.1.20/tcp/4011", true},
		{q, "/ip4/192.168.1.20/tcp/4011", false}, // announced for p, not q
		{p, "/ip4/192.168.1.21/tcp/4011", false}, // not announced
		{p, "/ip4/192.168.7.1/tcp/80", false},
		{p, "/ip4/127.0.0.1/tcp/4011", false},
		{p, "/ip4/8.8.8.8/tcp/53", true}, // public: within the reach anyway
	} {
		if got := g.InterceptAddrDial(tc.p, ma(tc.a)); got != tc.want {
			t.Errorf("dial %s at %s: got %v, want %v", tc.p, tc.a, got, tc.want)
		}
	}
	if l.allowed(p, ma("/ip4/192.168.1.20/tcp/4011"), now.Add(lanTTL+time.Minute)) {
		t.Error("a LAN address stays allowed after lanTTL without a new announcement")
	}
	if (dialGater{reach: ReachPublic}).InterceptAddrDial(p, ma("/ip4/192.168.1.20/tcp/4011")) {
		t.Error("without mDNS a public-reach node dials a LAN address")
	}
	for i := range 3 * lanMaxPeers {
		var addrs []multiaddr.Multiaddr
		for j := range 3 * lanMaxAddrs {
			addrs = append(addrs, ma(fmt.Sprintf("/ip4/192.168.1.%d/tcp/%d", i%250+1, 1000+j)))
		}
		l.found(peer.AddrInfo{ID: testID(t, 10+i), Addrs: addrs}, now.Add(time.Duration(i)*time.Second))
	}
	if len(l.peers) > lanMaxPeers {
		t.Errorf("%d LAN peers kept, want at most %d", len(l.peers), lanMaxPeers)
	}
	for id, lp := range l.peers {
		if len(lp.addrs) > lanMaxAddrs {
			t.Errorf("%s: %d addresses kept, want at most %d", id, len(lp.addrs), lanMaxAddrs)
		}
	}

	// A peer this node connected to stays: new identities do not evict it, and answers
	// naming other addresses for its ID change nothing.
	v := testID(t, 500)
	vAddr := ma("/ip4/192.168.1.250/tcp/4011")
	later := now.Add(time.Hour)
	if _, dial := l.found(peer.AddrInfo{ID: v, Addrs: []multiaddr.Multiaddr{vAddr}}, later); !dial {
		t.Fatal("a new LAN peer is not dialled")
	}
	l.connected(v)
	for i := range 2 * lanMaxPeers {
		l.found(peer.AddrInfo{ID: testID(t, 600+i), Addrs: []multiaddr.Multiaddr{ma(fmt.Sprintf("/ip4/192.168.1.%d/tcp/9", i%200+1))}}, later.Add(time.Second))
	}
	l.found(peer.AddrInfo{ID: v, Addrs: []multiaddr.Multiaddr{ma("/ip4/192.168.1.7/tcp/22")}}, later.Add(2*time.Second))
	if !l.allowed(v, vAddr, later.Add(2*time.Second)) || l.allowed(v, ma("/ip4/192.168.1.7/tcp/22"), later.Add(2*time.Second)) {
		t.Errorf("the verified peer's addresses are %v, want only %s", l.peers[v], vAddr)
	}
	// At most lanPerIP identities per IP address.
	for i := range 10 {
		l.found(peer.AddrInfo{ID: testID(t, 700+i), Addrs: []multiaddr.Multiaddr{ma("/ip4/192.168.1.99/tcp/9")}}, later.Add(3*time.Second))
	}
	atIP := 0
	for _, lp := range l.peers {
		if lp.ip == netip.MustParseAddr("192.168.1.99") {
			atIP++
		}
	}
	if atIP > lanPerIP {
		t.Errorf("%d LAN peers at one IP address, want at most %d", atIP, lanPerIP)
	}
}

// TestAnswerPeers: an mDNS answer counts only for the address it came from.
func TestAnswerPeers(t *testing.T) {
	id, other := testID(t, 1), testID(t, 2)
	from := netip.MustParseAddr("192.168.77.3")
	txt := func(name string, ss ...string) dns.RR {
		return &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: ss}
	}
	inst := "x." + MDNSService + ".local."
	m := &dns.Msg{Answer: []dns.RR{
		txt(inst,
			"dnsaddr=/ip4/192.168.77.3/tcp/4011/p2p/"+id.String(),
			"dnsaddr=/ip4/192.168.77.3/udp/4011/quic-v1/p2p/"+id.String(),
			"dnsaddr=/ip4/10.77.0.5/tcp/6379/p2p/"+id.String(),       // behind the donor's VPN
			"dnsaddr=/ip4/192.168.77.2/tcp/631/p2p/"+id.String(),     // the donor itself
			"dnsaddr=/ip4/192.168.77.9/tcp/4011/p2p/"+other.String(), // another LAN host
			"junk=1", "dnsaddr=/not/an/addr"),
		txt("y._other._udp.local.", "dnsaddr=/ip4/192.168.77.3/tcp/1/p2p/"+other.String()),
	}}
	got := answerPeers(m, from)
	if len(got) != 1 || got[0].ID != id || len(got[0].Addrs) != 2 {
		t.Fatalf("got %v, want %s with its two addresses at %s", got, id, from)
	}
}

// TestRelayBudgets: the sliding window and the per-peer and per-prefix budgets.
func TestRelayBudgets(t *testing.T) {
	const w = 10 * time.Minute
	t0 := time.Unix(1000, 0)
	var u relayWindow
	u.add(t0, w, 100)
	for _, tc := range []struct {
		at   time.Duration
		want int64
	}{{0, 100}, {w / 2, 100}, {w, 100}, {w + w/2, 50}, {2*w - 1, 0}, {3 * w, 0}} {
		v := u
		if got := v.used(t0.Add(tc.at), w); got != tc.want && !(tc.at == 2*w-1 && got <= 1) {
			t.Errorf("used %v after: got %d, want %d", tc.at, got, tc.want)
		}
	}
	b := newRelayBudgets(w, 100, 150)
	p, q := testID(t, 1), testID(t, 2)
	b.charge(t0, p, "10.0.0.0/24", 80)
	if got := b.left(t0, p, "10.0.0.0/24"); got != 20 {
		t.Errorf("p left %d, want 20", got)
	}
	if got := b.left(t0, q, "10.0.0.0/24"); got != 70 {
		t.Errorf("q, same prefix, left %d, want 70 (the prefix's)", got)
	}
	b.charge(t0, p, "10.0.0.0/24", 80)
	if got := b.left(t0, p, "10.0.0.0/24"); got != 0 {
		t.Errorf("p past its budget left %d, want 0", got)
	}
	if got := b.left(t0.Add(2*w), p, "10.0.0.0/24"); got != 100 {
		t.Errorf("two windows later p left %d, want 100", got)
	}
}

// TestRelayResources: the limits docs/donating.md promises.
func TestRelayResources(t *testing.T) {
	r := RelayResources()
	if r.Limit == nil || r.Limit.Data != 32<<20 || r.Limit.Duration != 35*time.Minute {
		t.Errorf("per-connection limit %+v, want 32 MiB each way for 35 min", r.Limit)
	}
	if r.MaxReservations != 64 || r.MaxReservationsPerIP != 4 || r.MaxCircuits != 8 {
		t.Errorf("reservations %d (per IP %d), circuits per peer %d; want 64, 4, 8", r.MaxReservations, r.MaxReservationsPerIP, r.MaxCircuits)
	}
	if RelayReservationsPerPrefix != 4 || RelayPeerBudget != 64<<20 || RelayPrefixBudget != 256<<20 || RelayWindow != 10*time.Minute || RelayRate != 4<<20 {
		t.Errorf("per prefix %d reservations, budgets %d/%d B per %v, rate %d B/s; want 4, 64 MiB/256 MiB per 10 min, 4 MiB/s",
			RelayReservationsPerPrefix, RelayPeerBudget, RelayPrefixBudget, RelayWindow, RelayRate)
	}
}

// TestRelaysFoundOnTheGrid: a relay node announces itself under RelayNamespace, and a home
// node's relay source offers it to autorelay without any static relay configured.
func TestRelaysFoundOnTheGrid(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	relay, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Worker: true, RelayService: true})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	boot := relay.AddrStrings()
	other, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Worker: true, Bootstrap: boot})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	home, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Bootstrap: other.AddrStrings()})
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()
	src := &relaySource{}
	src.set(home.Host(), home.DHT())
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var got []peer.ID
		for ai := range src.peers(ctx, 4) {
			got = append(got, ai.ID)
		}
		if slices.Contains(got, relay.ID()) {
			if slices.Contains(got, other.ID()) {
				t.Errorf("relay candidates %v include %s, which is no relay", got, other.ID())
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("relay candidates %v, want the relay %s (found through the DHT)", got, relay.ID())
		case <-tick.C:
		}
	}
}

// TestCachedNets: the LAN subnets are listed once per maxAge, not once per mDNS answer.
func TestCachedNets(t *testing.T) {
	for _, tt := range []struct {
		name   string
		maxAge time.Duration
		want   int
	}{
		{"fresh", time.Hour, 1},
		{"always stale", -1, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			nets := cachedNets(func() []netip.Prefix { calls++; return nil }, tt.maxAge)
			for range 3 {
				nets()
			}
			if calls != tt.want {
				t.Errorf("got %d listings, want %d", calls, tt.want)
			}
		})
	}
}
