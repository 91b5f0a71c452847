package node

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// MDNSService is the DNS-SD service name gridnode nodes announce on the LAN; it differs
// from libp2p's default (_p2p._udp) so that other libp2p programs on the LAN (IPFS) are not
// connected to.
const MDNSService = "_gridnode._udp"

// Bounds on what mDNS can make a node do. Anyone on the LAN can answer mDNS queries with
// any peer ID and addresses, so: at most lanMaxPeers LAN peers are remembered (the oldest
// go first), each with at most lanMaxAddrs addresses, only addresses in a subnet of one of
// this machine's own interfaces (the LAN, never beyond it, never loopback) are kept, a peer
// is dialled at most once per lanRedial, and found peers wait in a queue of lanQueue (more
// are dropped until it drains).
const (
	lanMaxPeers = 32
	lanMaxAddrs = 8
	lanRedial   = time.Minute
	lanQueue    = 16
	lanTTL      = 15 * time.Minute // how long a LAN peer's addresses stay allowed without a new announcement
)

// lanPeers are peers found by mDNS on this machine's LAN and the LAN addresses they
// announced. The dial gater allows those addresses for those peers even when the node's
// reach is public: a donor's node on the public grid can still meet its LAN neighbours,
// and a stranger elsewhere cannot make it dial LAN hosts (DHT records never enter here).
type lanPeers struct {
	mu    sync.Mutex
	peers map[peer.ID]*lanPeer
	nets  func() []netip.Prefix // this machine's interface subnets; a field, for tests
}

type lanPeer struct {
	addrs  []multiaddr.Multiaddr
	seen   time.Time // last announcement
	dialed time.Time // last dial we started
}

func newLANPeers() *lanPeers {
	return &lanPeers{peers: make(map[peer.ID]*lanPeer), nets: interfaceNets}
}

// interfaceNets lists the subnets of this machine's up, non-loopback interfaces.
func interfaceNets() []netip.Prefix {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if p, err := netip.ParsePrefix(ipn.String()); err == nil {
					out = append(out, p.Masked())
				}
			}
		}
	}
	return out
}

// onLink reports whether a is a LAN address (private or link-local) inside one of nets.
func onLink(a multiaddr.Multiaddr, nets []netip.Prefix) bool {
	if reachOf(a) != ReachLAN || isRelayed(a) {
		return false
	}
	ip, err := manet.ToIP(a)
	if err != nil {
		return false
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	addr = addr.Unmap()
	for _, n := range nets {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// found records ai's on-link addresses at now and returns them, and whether to dial now.
func (l *lanPeers) found(ai peer.AddrInfo, now time.Time) (peer.AddrInfo, bool) {
	nets := l.nets()
	var keep []multiaddr.Multiaddr
	for _, a := range ai.Addrs {
		if len(keep) < lanMaxAddrs && onLink(a, nets) {
			keep = append(keep, a)
		}
	}
	if len(keep) == 0 {
		return peer.AddrInfo{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.peers[ai.ID]
	if p == nil {
		for len(l.peers) >= lanMaxPeers {
			l.dropOldest()
		}
		p = &lanPeer{}
		l.peers[ai.ID] = p
	}
	p.addrs, p.seen = keep, now
	dial := now.Sub(p.dialed) >= lanRedial
	if dial {
		p.dialed = now
	}
	return peer.AddrInfo{ID: ai.ID, Addrs: keep}, dial
}

func (l *lanPeers) dropOldest() {
	var old peer.ID
	var at time.Time
	for id, p := range l.peers {
		if old == "" || p.seen.Before(at) {
			old, at = id, p.seen
		}
	}
	delete(l.peers, old)
}

// allowed reports whether a is an address mDNS announced for p, recently.
func (l *lanPeers) allowed(p peer.ID, a multiaddr.Multiaddr, now time.Time) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lp := l.peers[p]
	if lp == nil || now.Sub(lp.seen) > lanTTL {
		return false
	}
	for _, b := range lp.addrs {
		if b.Equal(a) {
			return true
		}
	}
	return false
}

// lanDiscovery runs mDNS for a node: announces it on the LAN and connects to the gridnode
// peers it hears of.
type lanDiscovery struct {
	h     host.Host
	lan   *lanPeers
	log   *slog.Logger
	queue chan peer.AddrInfo
	svc   mdns.Service
	stop  context.CancelFunc
	wg    sync.WaitGroup
	// joined, if set, is told of each LAN peer this node connected to.
	joined func(peer.ID)
}

// HandlePeerFound implements mdns.Notifee. mDNS calls it in a new goroutine per answer,
// so it only queues.
func (d *lanDiscovery) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == d.h.ID() {
		return
	}
	got := len(ai.Addrs)
	ai, dial := d.lan.found(ai, time.Now())
	d.log.Debug("mdns answer", "peer", ai.ID, "addrs", got, "on_link", ai.Addrs, "dial", dial)
	if !dial {
		return
	}
	select {
	case d.queue <- ai:
	default:
	}
}

func startLAN(h host.Host, lan *lanPeers, log *slog.Logger, joined func(peer.ID)) (*lanDiscovery, error) {
	d := &lanDiscovery{h: h, lan: lan, log: log, queue: make(chan peer.AddrInfo, lanQueue), joined: joined}
	d.svc = mdns.NewMdnsService(h, MDNSService, d)
	if err := d.svc.Start(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	d.wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ai := <-d.queue:
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := h.Connect(cctx, ai)
				cancel()
				if err != nil {
					d.log.Debug("lan peer unreachable", "peer", ai.ID, "addrs", ai.Addrs, "err", err)
					continue
				}
				d.log.Info("lan peer found", "peer", ai.ID, "addrs", ai.Addrs)
				if d.joined != nil {
					d.joined(ai.ID)
				}
			}
		}
	})
	log.Info("lan discovery on (mDNS)", "service", MDNSService)
	return d, nil
}

func (d *lanDiscovery) close() {
	d.svc.Close()
	d.stop()
	d.wg.Wait()
}
