package jobs

import (
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
	if addr.IsLoopback() {
		return "loopback " + p.String()
	}
	return netprefix.Of(addr).String()
}
