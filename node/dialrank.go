package node

import (
	"cmp"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// lanQUICDelay is how long a dial to a private or loopback address waits for TCP before it
// tries QUIC too: libp2p's own wait, the other way round.
const lanQUICDelay = swarm.PrivateQUICDelay

// dialRanker is libp2p's default ranking (swarm.DefaultDialRanker) but for direct private
// and loopback addresses, where TCP is dialled first and QUIC lanQUICDelay later, instead
// of QUIC first and TCP 30 ms later. Where there is no NAT to punch and no loss to recover
// from, quic-go's user-space stack costs more CPU per byte than the kernel's TCP: over
// loopback a 48 MiB job moved at 180 MB/s on QUIC and 300 MB/s on TCP, and a plain stream
// at 620 against 1850 MB/s (BenchmarkTransfer, docs/SCALE.md). Public addresses keep
// libp2p's order (QUIC first: it punches NATs and starts in one round trip fewer).
func dialRanker(addrs []multiaddr.Multiaddr) []network.AddrDelay {
	var lan, rest []multiaddr.Multiaddr
	for _, a := range addrs {
		if manet.IsPrivateAddr(a) && !isRelayed(a) {
			lan = append(lan, a)
		} else {
			rest = append(rest, a)
		}
	}
	res := swarm.DefaultDialRanker(rest)
	for _, a := range lan {
		var d time.Duration
		switch {
		case isTCPAddr(a):
		case isQUICAddr(a):
			d = lanQUICDelay
		default: // WebSocket, WebRTC and the like: as libp2p delays them
			d = swarm.PrivateOtherDelay
		}
		res = append(res, network.AddrDelay{Addr: a, Delay: d})
	}
	slices.SortStableFunc(res, func(a, b network.AddrDelay) int { return cmp.Compare(a.Delay, b.Delay) })
	return res
}

// isTCPAddr is a plain TCP address: not WebSocket or another protocol over TCP.
func isTCPAddr(a multiaddr.Multiaddr) bool {
	_, err := a.ValueForProtocol(multiaddr.P_TCP)
	if err != nil {
		return false
	}
	for _, p := range a.Protocols() {
		switch p.Code {
		case multiaddr.P_WS, multiaddr.P_WSS, multiaddr.P_TLS, multiaddr.P_HTTP, multiaddr.P_HTTPS:
			return false
		}
	}
	return true
}

func isQUICAddr(a multiaddr.Multiaddr) bool {
	_, err := a.ValueForProtocol(multiaddr.P_QUIC_V1)
	return err == nil
}
