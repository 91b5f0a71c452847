package node

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/multiformats/go-multiaddr"
)

// TestDialRankerTCPFirstOnLAN: direct private and loopback addresses are dialled TCP first
// and QUIC lanQUICDelay later; public and relay addresses keep libp2p's own ranking.
func TestDialRankerTCPFirstOnLAN(t *testing.T) {
	ma := multiaddr.StringCast
	delays := func(addrs ...multiaddr.Multiaddr) map[string]time.Duration {
		m := map[string]time.Duration{}
		for _, d := range dialRanker(addrs) {
			m[d.Addr.String()] = d.Delay
		}
		if len(m) != len(addrs) {
			t.Fatalf("ranked %d of %d addresses: %v", len(m), len(addrs), m)
		}
		return m
	}
	lan := delays(ma("/ip4/127.0.0.1/udp/4001/quic-v1"), ma("/ip4/127.0.0.1/tcp/4001"),
		ma("/ip4/192.168.1.5/udp/4001/quic-v1"), ma("/ip4/192.168.1.5/tcp/4001"), ma("/ip6/::1/tcp/4001"))
	for a, d := range lan {
		want := time.Duration(0)
		if isQUICAddr(ma(a)) {
			want = lanQUICDelay
		}
		if d != want {
			t.Errorf("%s: delay %v, want %v", a, d, want)
		}
	}
	public := []multiaddr.Multiaddr{ma("/ip4/203.0.113.9/udp/4001/quic-v1"), ma("/ip4/203.0.113.9/tcp/4001"),
		ma("/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit")}
	got := delays(public...)
	for _, d := range swarm.DefaultDialRanker(public) {
		if got[d.Addr.String()] != d.Delay {
			t.Errorf("%s: delay %v, want libp2p's %v", d.Addr, got[d.Addr.String()], d.Delay)
		}
	}
	if got["/ip4/203.0.113.9/tcp/4001"] <= got["/ip4/203.0.113.9/udp/4001/quic-v1"] {
		t.Errorf("public TCP at %v, not after QUIC at %v", got["/ip4/203.0.113.9/tcp/4001"], got["/ip4/203.0.113.9/udp/4001/quic-v1"])
	}
}

// TestLoopbackConnectsOverTCP: two nodes listening on both transports on loopback connect
// over TCP (with libp2p's ranking QUIC always won the race there).
func TestLoopbackConnectsOverTCP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	both := []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	a, err := Open(ctx, Config{Ephemeral: true, Listen: both})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, Config{Ephemeral: true, Listen: both})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.Host().Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	conns := a.Host().Network().ConnsToPeer(b.ID())
	if len(conns) == 0 {
		t.Fatal("no connection")
	}
	for _, c := range conns {
		if !isTCPAddr(c.RemoteMultiaddr()) {
			t.Errorf("connected over %s, want TCP", c.RemoteMultiaddr())
		}
	}
}
