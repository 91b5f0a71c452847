package node

import (
	"net/netip"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/gridnode/gridnode/internal/netprefix"
)

// Reach is the widest class of addresses a node dials. Peers choose the addresses they
// announce (in DHT records, identify, provider lists), so without it a stranger could make a
// donor's node connect to hosts on the donor's LAN or to the donor's own machine.
type Reach int

const (
	// ReachAuto derives the reach from the listen and bootstrap addresses: the widest class
	// among them, at least ReachPublic; ReachLoopback with Config.Loopback.
	ReachAuto Reach = iota
	// ReachPublic dials public unicast addresses only.
	ReachPublic
	// ReachLAN also dials private (RFC 1918, CGNAT, ULA) and link-local addresses: a grid
	// on a private network.
	ReachLAN
	// ReachLoopback also dials loopback addresses: a grid on one machine.
	ReachLoopback

	// reachNever is for addresses no grid node dials: unspecified, multicast, broadcast,
	// documentation and other reserved ranges.
	reachNever Reach = 99
)

// ParseReach parses "auto", "public", "lan" or "loopback".
func ParseReach(s string) (Reach, bool) {
	for r, name := range reachNames {
		if strings.EqualFold(s, name) {
			return r, true
		}
	}
	return 0, false
}

var reachNames = map[Reach]string{ReachAuto: "auto", ReachPublic: "public", ReachLAN: "lan", ReachLoopback: "loopback"}

func (r Reach) String() string {
	if s, ok := reachNames[r]; ok {
		return s
	}
	return "never"
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// reachOf is the narrowest reach that dials a, judged by its first IP component (a relay's
// for a circuit address). A DNS name counts as public, except localhost names: the swarm
// resolves names before it asks the gater, so the gater sees the IP addresses behind them.
func reachOf(a multiaddr.Multiaddr) Reach {
	r := reachNever
	multiaddr.ForEach(a, func(c multiaddr.Component) bool {
		switch c.Protocol().Code {
		case multiaddr.P_IP6ZONE:
			return true
		case multiaddr.P_IP4, multiaddr.P_IP6:
			ip, ok := netip.AddrFromSlice(c.RawValue())
			if ok {
				r = reachOfIP(ip.Unmap())
			}
		case multiaddr.P_DNS, multiaddr.P_DNS4, multiaddr.P_DNS6, multiaddr.P_DNSADDR:
			r = ReachPublic
			if h := strings.ToLower(strings.TrimSuffix(c.Value(), ".")); h == "localhost" || strings.HasSuffix(h, ".localhost") {
				r = ReachLoopback
			}
		}
		return false
	})
	return r
}

func reachOfIP(ip netip.Addr) Reach {
	switch {
	case !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return reachNever
	case ip.IsLoopback():
		return ReachLoopback
	case ip.IsPrivate() || ip.IsLinkLocalUnicast() || cgnat.Contains(ip):
		return ReachLAN
	}
	ma, err := manet.FromIP(ip.AsSlice())
	if err != nil || !manet.IsPublicAddr(ma) {
		return reachNever
	}
	return ReachPublic
}

// deriveReach is ReachAuto's choice: the widest class among the given addresses that is
// not reachNever (unspecified listen addresses say nothing), and at least ReachPublic.
func deriveReach(addrs []multiaddr.Multiaddr) Reach {
	r := ReachPublic
	for _, a := range addrs {
		if ar := reachOf(a); ar != reachNever {
			r = max(r, ar)
		}
	}
	return r
}

// within reports whether a is inside reach r.
func within(r Reach, a multiaddr.Multiaddr) bool { return reachOf(a) <= r }

// dialGater refuses every dial outside the node's reach: the one place every outgoing
// connection passes, whoever asked for it (DHT queries, provider fetches, offers, identify
// and hole punching, AutoNAT dial-backs, relays). The one exception is a LAN address that
// mDNS on this LAN announced for the very peer being dialled (see lanPeers), when mDNS is on.
type dialGater struct {
	reach Reach
	lan   *lanPeers // nil without mDNS
}

var _ connmgr.ConnectionGater = dialGater{}

func (dialGater) InterceptPeerDial(peer.ID) bool { return true }
func (g dialGater) InterceptAddrDial(p peer.ID, a multiaddr.Multiaddr) bool {
	return within(g.reach, a) || g.lan.allowed(p, a, time.Now())
}
func (dialGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }
func (dialGater) InterceptSecured(network.Direction, peer.ID, network.ConnMultiaddrs) bool {
	return true
}
func (dialGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// netPrefix names the network prefix of a's IP address, as netprefix.Of does: the /24 of
// an IPv4 address, the /48 of an IPv6 one. Unlike jobs' replica diversity, a circuit address
// is the relay's and loopback is one prefix (6to4 and NAT64 addresses count as their IPv4
// ones, as there). ok is false for an address without an IP.
func netPrefix(a multiaddr.Multiaddr) (string, bool) {
	ip, ok := netprefix.IP(a)
	if !ok {
		return "", false
	}
	return netprefix.Of(ip).String(), true
}
