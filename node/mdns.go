package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/zeroconf/v2"
	"github.com/miekg/dns"
	"github.com/multiformats/go-multiaddr"
	"golang.org/x/net/ipv4"

	"github.com/gridnode/gridnode/internal/netprefix"
)

// MDNSService is the DNS-SD service name gridnode nodes announce on the LAN; it differs
// from libp2p's default (_p2p._udp) so that other libp2p programs on the LAN (IPFS) are not
// connected to.
const MDNSService = "_gridnode._udp"

// Bounds on what mDNS can make a node do. Anyone on the LAN can answer mDNS queries with
// any peer ID and addresses, so: an answer counts only for the address it came from (a LAN
// host can make this node dial itself, no other host), only when that address is in a
// subnet of the interface it came on and is not this machine's; at most lanMaxPeers LAN
// peers are remembered, at most lanPerIP per IP address, and peers this node connected to
// are never evicted by new ones; a peer is dialled at most once per lanRedial, and found
// peers wait in a queue of lanQueue (more are dropped, and not counted as dialled, until it
// drains). Nothing else of an answer is kept: memory does not grow with what the LAN sends.
const (
	lanMaxPeers = 32
	lanMaxAddrs = 8
	lanPerIP    = 2
	lanRedial   = time.Minute
	lanQueue    = 16
	lanTTL      = 15 * time.Minute // how long a LAN peer's addresses stay allowed without a new announcement

	lanPacket       = 9000 // the largest mDNS message (RFC 6762 section 17)
	lanPacketPeers  = 4    // peers taken from one message
	lanPacketTXT    = 64   // TXT strings read from one message
	lanQueryMax     = time.Minute
	lanIfacesMaxAge = 10 * time.Second
)

// lanPeers are peers found by mDNS on this machine's LAN and the LAN addresses they
// announced. The dial gater allows those addresses for those peers even when the node's
// reach is public: a donor's node on the public grid can still meet its LAN neighbours,
// and a stranger elsewhere cannot make it dial LAN hosts (DHT records never enter here).
type lanPeers struct {
	mu    sync.Mutex
	peers map[peer.ID]*lanPeer
	nets  func() []netip.Prefix // this machine's LAN subnets; a field, for tests
}

type lanPeer struct {
	addrs    []multiaddr.Multiaddr
	ip       netip.Addr // of the first address: what lanPerIP counts
	seen     time.Time  // last announcement
	dialed   time.Time  // last dial queued
	verified bool       // this node connected to it at one of addrs
}

func newLANPeers() *lanPeers {
	return &lanPeers{peers: make(map[peer.ID]*lanPeer), nets: cachedNets(interfaceNets, lanIfacesMaxAge)}
}

// cachedNets returns nets' answer, asking it again once the answer is older than maxAge:
// every mDNS answer a LAN host sends is checked against the subnets, and listing them
// reads every interface's addresses from the kernel.
func cachedNets(nets func() []netip.Prefix, maxAge time.Duration) func() []netip.Prefix {
	var mu sync.Mutex
	var at time.Time
	var last []netip.Prefix
	return func() []netip.Prefix {
		mu.Lock()
		defer mu.Unlock()
		if at.IsZero() || time.Since(at) > maxAge {
			at, last = time.Now(), nets()
		}
		return last
	}
}

// lanInterface reports whether mDNS runs on ifc: up, multicast, neither loopback nor
// point-to-point (a VPN tunnel, wireguard, ppp: not the home LAN).
func lanInterface(ifc net.Interface) bool {
	return ifc.Flags&net.FlagUp != 0 && ifc.Flags&net.FlagMulticast != 0 &&
		ifc.Flags&(net.FlagLoopback|net.FlagPointToPoint) == 0
}

// lanInterfaces lists the interfaces mDNS runs on.
func lanInterfaces() []net.Interface {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []net.Interface
	for _, ifc := range ifs {
		if lanInterface(ifc) {
			out = append(out, ifc)
		}
	}
	return out
}

// ifaceNets lists the subnets of ifc, and its own addresses.
func ifaceNets(ifc net.Interface) (nets []netip.Prefix, own []netip.Addr) {
	addrs, err := ifc.Addrs()
	if err != nil {
		return nil, nil
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if p, err := netip.ParsePrefix(ipn.String()); err == nil {
				nets = append(nets, p.Masked())
				own = append(own, p.Addr().Unmap())
			}
		}
	}
	return nets, own
}

// interfaceNets lists the subnets of the interfaces mDNS runs on.
func interfaceNets() []netip.Prefix {
	var out []netip.Prefix
	for _, ifc := range lanInterfaces() {
		nets, _ := ifaceNets(ifc)
		out = append(out, nets...)
	}
	return out
}

// onLink reports whether a is a LAN address (private or link-local) inside one of nets.
func onLink(a multiaddr.Multiaddr, nets []netip.Prefix) bool {
	if reachOf(a) != ReachLAN || isRelayed(a) {
		return false
	}
	addr, ok := netprefix.IP(a)
	if !ok {
		return false
	}
	for _, n := range nets {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// found records ai's on-link addresses at now and returns them, and whether to dial now;
// a caller that does not queue the dial says so with unqueued.
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
	ip, _ := netprefix.IP(keep[0])
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.peers[ai.ID]
	switch {
	case p != nil && p.verified && now.Sub(p.seen) <= lanTTL:
		// Anyone can answer for a peer ID: a verified peer's addresses stay those this
		// node connected to, and only an answer naming one of them keeps it fresh.
		if !slices.ContainsFunc(keep, func(a multiaddr.Multiaddr) bool { return slices.ContainsFunc(p.addrs, a.Equal) }) {
			return peer.AddrInfo{}, false
		}
		keep = p.addrs
	case p == nil:
		if !l.makeRoom(ip, now) {
			return peer.AddrInfo{}, false
		}
		p = &lanPeer{}
		l.peers[ai.ID] = p
		fallthrough
	default:
		p.addrs, p.ip, p.verified = keep, ip, false
	}
	p.seen = now
	dial := now.Sub(p.dialed) >= lanRedial
	if dial {
		p.dialed = now
	}
	return peer.AddrInfo{ID: ai.ID, Addrs: keep}, dial
}

// makeRoom makes a place for a new peer at ip, evicting, in this order, an expired peer,
// the oldest unverified peer at ip if ip holds lanPerIP, the oldest unverified peer if the
// table is full. It reports false when there is no place: verified peers are not evicted.
// Preconditions: l.mu is held.
func (l *lanPeers) makeRoom(ip netip.Addr, now time.Time) bool {
	var atIP int
	for id, p := range l.peers {
		if now.Sub(p.seen) > lanTTL {
			delete(l.peers, id)
		} else if p.ip == ip {
			atIP++
		}
	}
	oldest := func(match func(*lanPeer) bool) bool {
		var old peer.ID
		var at time.Time
		for id, p := range l.peers {
			if !p.verified && match(p) && (old == "" || p.seen.Before(at)) {
				old, at = id, p.seen
			}
		}
		if old == "" {
			return false
		}
		delete(l.peers, old)
		return true
	}
	if atIP >= lanPerIP && !oldest(func(p *lanPeer) bool { return p.ip == ip }) {
		return false
	}
	if len(l.peers) >= lanMaxPeers && !oldest(func(*lanPeer) bool { return true }) {
		return false
	}
	return true
}

// unqueued undoes found's dial: the dial was not queued, so a later answer may dial.
func (l *lanPeers) unqueued(p peer.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lp := l.peers[p]; lp != nil {
		lp.dialed = time.Time{}
	}
}

// connected records that this node connected to p at the addresses mDNS gave.
func (l *lanPeers) connected(p peer.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lp := l.peers[p]; lp != nil {
		lp.verified = true
	}
}

// verified reports whether this node connected to p at the addresses mDNS gave, recently.
func (l *lanPeers) verified(p peer.ID) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lp := l.peers[p]
	return lp != nil && lp.verified && time.Since(lp.seen) <= lanTTL
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

// lanDiscovery runs mDNS for a node: announces it on the LAN (zeroconf's responder, which
// keeps no state per message) and asks for and reads answers itself (zeroconf's browser
// keeps every instance a LAN host names until the TTL that host chose), connecting to the
// gridnode peers it hears of.
type lanDiscovery struct {
	h      host.Host
	lan    *lanPeers
	log    *slog.Logger
	queue  chan peer.AddrInfo
	server *zeroconf.Server
	conn   *ipv4.PacketConn
	stop   context.CancelFunc
	wg     sync.WaitGroup
	// joined, if set, is told of each LAN peer this node connected to.
	joined func(peer.ID)

	ifMu    sync.Mutex
	ifAt    time.Time
	ifs     map[int][]netip.Prefix // subnets per interface index
	own     map[netip.Addr]bool    // this machine's addresses
	joined4 map[int]bool           // interfaces whose multicast group conn joined
}

// HandlePeerFound records a peer an answer named and queues a dial to it.
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
		d.lan.unqueued(ai.ID)
	}
}

var errNoLANAddr = errors.New("no LAN address to announce")

var mdnsGroup = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}

// startLAN starts LAN discovery; on a machine with no LAN address it does nothing and
// returns nil.
func startLAN(h host.Host, lan *lanPeers, log *slog.Logger, joined func(peer.ID)) (_ *lanDiscovery, err error) {
	d := &lanDiscovery{h: h, lan: lan, log: log, queue: make(chan peer.AddrInfo, lanQueue), joined: joined, joined4: map[int]bool{}}
	ifs := lanInterfaces()
	if d.server, err = announceLAN(h, ifs); errors.Is(err, errNoLANAddr) {
		log.Info("lan discovery off: no LAN address (mDNS finds private and link-local addresses only)")
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	// Bound, like zeroconf's, to the multicast wildcard: Go sets SO_REUSEADDR for it, so the
	// responder and this reader share port 5353.
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(224, 0, 0, 0), Port: 5353})
	if err != nil {
		d.server.Shutdown()
		return nil, err
	}
	d.conn = ipv4.NewPacketConn(c)
	if err := d.conn.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		d.close()
		return nil, err
	}
	d.conn.SetMulticastTTL(255)
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	d.wg.Go(d.read)
	d.wg.Go(func() { d.ask(ctx) })
	d.wg.Go(func() { d.dial(ctx) })
	log.Info("lan discovery on (mDNS)", "service", MDNSService)
	return d, nil
}

// announceLAN starts the responder that answers queries for MDNSService with this node's
// LAN addresses, as libp2p's mDNS service does (the TXT records carry the addresses).
func announceLAN(h host.Host, ifs []net.Interface) (*zeroconf.Server, error) {
	listen, err := h.Network().InterfaceListenAddresses()
	if err != nil {
		return nil, err
	}
	var txts, ips []string
	var ip4, ip6 bool
	for _, a := range listen {
		if reachOf(a) != ReachLAN || isRelayed(a) {
			continue
		}
		if len(txts) < lanMaxAddrs {
			txts = append(txts, "dnsaddr="+a.String()+"/p2p/"+h.ID().String())
		}
		if ip, ok := netprefix.IP(a); ok && (ip.Is4() && !ip4 || ip.Is6() && !ip6) {
			ip4, ip6 = ip4 || ip.Is4(), ip6 || ip.Is6()
			ips = append(ips, ip.String())
		}
	}
	if len(ips) == 0 {
		return nil, errNoLANAddr
	}
	b := make([]byte, 16)
	rand.Read(b)
	name := hex.EncodeToString(b)
	// The port is required, and unused: peers read the TXT records.
	return zeroconf.RegisterProxy(name, MDNSService, "local", 4001, name, ips, txts, ifs)
}

// ask sends a query for MDNSService on every LAN interface now, then at growing intervals
// up to lanQueryMax, joining the multicast group on interfaces that appeared.
func (d *lanDiscovery) ask(ctx context.Context) {
	m := new(dns.Msg)
	m.SetQuestion(MDNSService+".local.", dns.TypePTR)
	m.RecursionDesired = false
	q, err := m.Pack()
	if err != nil {
		return
	}
	wait := time.Second
	for {
		for _, ifc := range lanInterfaces() {
			if !d.joined4[ifc.Index] {
				if err := d.conn.JoinGroup(&ifc, &net.UDPAddr{IP: mdnsGroup.IP}); err == nil {
					d.joined4[ifc.Index] = true
				}
			}
			if d.joined4[ifc.Index] {
				d.conn.WriteTo(q, &ipv4.ControlMessage{IfIndex: ifc.Index}, mdnsGroup)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, lanQueryMax)
	}
}

// read reads mDNS messages until the connection closes.
func (d *lanDiscovery) read() {
	buf := make([]byte, lanPacket)
	for {
		n, cm, src, err := d.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		u, ok := src.(*net.UDPAddr)
		if cm == nil || !ok {
			continue
		}
		from, ok := netip.AddrFromSlice(u.IP)
		if !ok || !d.onInterface(from.Unmap(), cm.IfIndex) {
			continue
		}
		var m dns.Msg
		if m.Unpack(buf[:n]) != nil || !m.Response {
			continue
		}
		for _, ai := range answerPeers(&m, from.Unmap()) {
			d.HandlePeerFound(ai)
		}
	}
}

// onInterface reports whether from is a neighbour on interface ifIndex: inside one of its
// subnets, and not an address of this machine.
func (d *lanDiscovery) onInterface(from netip.Addr, ifIndex int) bool {
	d.ifMu.Lock()
	defer d.ifMu.Unlock()
	if time.Since(d.ifAt) > lanIfacesMaxAge {
		d.ifAt, d.ifs, d.own = time.Now(), map[int][]netip.Prefix{}, map[netip.Addr]bool{}
		if ifs, err := net.Interfaces(); err == nil {
			for _, ifc := range ifs {
				nets, own := ifaceNets(ifc)
				if lanInterface(ifc) {
					d.ifs[ifc.Index] = nets
				}
				for _, a := range own {
					d.own[a] = true
				}
			}
		}
	}
	if d.own[from] {
		return false
	}
	for _, n := range d.ifs[ifIndex] {
		if n.Contains(from) {
			return true
		}
	}
	return false
}

// answerPeers lists the gridnode peers an mDNS message from address from names in its TXT
// records ("dnsaddr=/ip4/…/p2p/ID"), each with only the addresses at from: whoever sent the
// message can name any address, and only its own is one it is sure to be.
func answerPeers(m *dns.Msg, from netip.Addr) []peer.AddrInfo {
	suffix := "." + MDNSService + ".local."
	var out []peer.AddrInfo
	strs := 0
	for _, rr := range append(m.Answer, m.Extra...) {
		txt, ok := rr.(*dns.TXT)
		if !ok || !strings.HasSuffix(strings.ToLower(txt.Hdr.Name), suffix) {
			continue
		}
		for _, s := range txt.Txt {
			if strs++; strs > lanPacketTXT {
				return out
			}
			v, ok := strings.CutPrefix(s, "dnsaddr=")
			if !ok {
				continue
			}
			a, err := multiaddr.NewMultiaddr(v)
			if err != nil {
				continue
			}
			ai, err := peer.AddrInfoFromP2pAddr(a)
			if err != nil || len(ai.Addrs) != 1 {
				continue
			}
			if ip, ok := netprefix.IP(ai.Addrs[0]); !ok || ip != from {
				continue
			}
			i := slices.IndexFunc(out, func(o peer.AddrInfo) bool { return o.ID == ai.ID })
			switch {
			case i >= 0 && len(out[i].Addrs) < lanMaxAddrs:
				out[i].Addrs = append(out[i].Addrs, ai.Addrs[0])
			case i < 0 && len(out) < lanPacketPeers:
				out = append(out, *ai)
			}
		}
	}
	return out
}

// dial connects to the queued LAN peers until ctx ends.
func (d *lanDiscovery) dial(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ai := <-d.queue:
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := d.h.Connect(cctx, ai)
			cancel()
			if err != nil {
				d.log.Debug("lan peer unreachable", "peer", ai.ID, "addrs", ai.Addrs, "err", err)
				continue
			}
			d.lan.connected(ai.ID)
			d.log.Info("lan peer found", "peer", ai.ID, "addrs", ai.Addrs)
			if d.joined != nil {
				d.joined(ai.ID)
			}
		}
	}
}

func (d *lanDiscovery) close() {
	if d.server != nil {
		d.server.Shutdown()
	}
	if d.stop != nil {
		d.stop()
	}
	if d.conn != nil {
		d.conn.Close()
	}
	d.wg.Wait()
}
