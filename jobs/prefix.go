package jobs

import (
	"net/netip"

	"github.com/gridnode/gridnode/internal/netprefix"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// netPrefix names the network that a connection's remote address a is in, for replica
// diversity: the /24 of an IPv4 address, the /48 of an IPv6 one. IPv4 addresses inside
// IPv6 ones (IPv4-mapped, 6to4 2002::/16, NAT64 64:ff9b::/96) count as the IPv4 address. Every
// relayed connection (p2p-circuit) is one network, "relayed", whatever the relay: a
// worker chooses its relay, so a relay's prefix would be free. A loopback address is named
// by the peer p: peers on this machine (a testnet) are as many as they are. An address
// without an IP is itself.
func netPrefix(a ma.Multiaddr, p peer.ID) string {
	if a == nil {
		return "unknown"
	}
	for _, c := range a {
		if c.Protocol().Code == ma.P_CIRCUIT {
			return "relayed"
		}
	}
	addr, ok := netprefix.IP(a)
	if !ok {
		return a.String()
	}
	addr = embeddedIPv4(addr)
	if addr.IsLoopback() {
		return "loopback " + p.String()
	}
	return netprefix.Of(addr).String()
}

var (
	sixToFour = netip.MustParsePrefix("2002::/16")
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
)

// embeddedIPv4 returns the IPv4 address a 6to4 or NAT64 address carries, else a.
func embeddedIPv4(a netip.Addr) netip.Addr {
	b := a.As16()
	switch {
	case !a.Is6():
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
	case nat64.Contains(a):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	return a
}
