// Package netprefix names the network an address is in: the /24 of an IPv4 address, the
// /48 of an IPv6 one (what one home, one hoster's customer or one attacker's block
// usually holds).
package netprefix

import (
	"net/netip"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// IP is the IP address a starts with, an IPv4-mapped IPv6 address as the IPv4 one; ok is
// false for an address without an IP (a DNS name, a bare peer ID).
func IP(a ma.Multiaddr) (addr netip.Addr, ok bool) {
	ip, err := manet.ToIP(a)
	if err != nil {
		return netip.Addr{}, false
	}
	addr, ok = netip.AddrFromSlice(ip)
	return addr.Unmap(), ok
}

// Of is the /24 of an IPv4 address, the /48 of an IPv6 one. An IPv4 address inside an
// IPv6 one (6to4 2002::/16, NAT64 64:ff9b::/96) counts as that IPv4 address: one IPv4 /24
// would otherwise be 256 6to4 /48s.
func Of(ip netip.Addr) netip.Prefix {
	ip = embeddedIPv4(ip.Unmap())
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p
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
