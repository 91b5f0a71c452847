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

// Of is the /24 of an IPv4 address, the /48 of an IPv6 one.
func Of(ip netip.Addr) netip.Prefix {
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p
}
