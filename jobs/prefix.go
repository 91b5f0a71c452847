package jobs

import (
	"net/netip"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// netPrefix names the network a connection's remote address a is in, for replica
// diversity: the /24 of an IPv4 address, the /48 of an IPv6 one (an IPv4-mapped IPv6
// address counts as IPv4). A relayed connection (p2p-circuit) is named by its relay's
// prefix: every peer behind one relay looks alike. An address without an IP is itself.
func netPrefix(a ma.Multiaddr) string {
	if a == nil {
		return "unknown"
	}
	relayed := false
	if head, _ := ma.SplitFunc(a, func(c ma.Component) bool { return c.Protocol().Code == ma.P_CIRCUIT }); len(head) < len(a) {
		relayed, a = true, head
	}
	name := a.String()
	if ip, err := manet.ToIP(a); err == nil {
		if addr, ok := netip.AddrFromSlice(ip); ok {
			addr = addr.Unmap()
			bits := 48
			if addr.Is4() {
				bits = 24
			}
			if p, err := addr.Prefix(bits); err == nil {
				name = p.String()
			}
		}
	}
	if relayed {
		return "relay " + name
	}
	return name
}
