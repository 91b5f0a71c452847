package netprefix

import (
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

func TestPrefix(t *testing.T) {
	for _, tt := range []struct {
		name, addr, want string // want "" for no IP
	}{
		{"ipv4", "/ip4/203.0.113.7/tcp/4001", "203.0.113.0/24"},
		{"ipv6", "/ip6/2001:db8:1:2::7/udp/4001/quic-v1", "2001:db8:1::/48"},
		{"ipv4-mapped", "/ip6/::ffff:198.51.100.9/tcp/1", "198.51.100.0/24"},
		{"circuit is the relay's", "/ip4/192.0.2.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit", "192.0.2.0/24"},
		{"dns", "/dns4/example.com/tcp/1", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ip, ok := IP(ma.StringCast(tt.addr))
			got := ""
			if ok {
				got = Of(ip).String()
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
