package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"

	"github.com/gridnode/gridnode/dht"
	"github.com/gridnode/gridnode/protocol"
)

// RelayNamespace is the DHT namespace under which relay nodes (Config.RelayService)
// announce themselves; home nodes find their relays there.
const RelayNamespace = "gridnode/v1/relays"

// hopProtocol is circuit v2's relay protocol; a peer that speaks it offers relaying.
const hopProtocol p2pproto.ID = "/libp2p/circuit/relay/0.2.0/hop"

// RelayResources are the limits libp2p's relay enforces for a gridnode relay
// (Config.RelayService), sized for a donor's machine and uplink rather than libp2p's defaults
// (2 minutes and 128 KiB per relayed connection), which are too small to carry a job: a
// relayed connection carries the offer query, the job request, the binary the worker
// pulls, the input and the output. Each relayed connection may carry RelayData bytes in each
// direction for RelayDuration, and a peer may have 8 at a time. On top of these the relay
// service (relayService) bounds what peers and network prefixes reserve and relay over
// time, and the relay's total bandwidth.
func RelayResources() relayv2.Resources {
	r := relayv2.DefaultResources()
	r.Limit = &relayv2.RelayLimit{Duration: RelayDuration, Data: RelayData}
	r.MaxReservations = RelayReservations
	r.MaxReservationsPerIP = RelayReservationsPerPrefix
	r.MaxReservationsPerASN = 32
	r.MaxCircuits = 8
	r.BufferSize = 16 << 10
	return r
}

// The limits of a gridnode relay. Per relayed connection: a job whose binary plus input,
// or whose output, is larger than RelayData cannot run over a relay, nor one that takes
// longer than RelayDuration from the offer query to the result; such jobs need a worker
// the submitter can reach directly (public, UPnP-mapped or hole-punched). Over time: each
// byte relayed counts against both ends, against the peer (RelayPeerBudget) and its
// network prefix, /24 or /48 (RelayPrefixBudget), in any RelayWindow; a peer or prefix
// past its budget has its circuits cut and no new ones until its use of the last window
// falls below the budget. All relayed bytes together are sent at most at RelayRate.
// Reservations: RelayReservations in all, RelayReservationsPerPrefix per prefix.
const (
	RelayData                  = 32 << 20
	RelayDuration              = 35 * time.Minute // the default wall limit (30 min) plus fetches and replies
	RelayPeerBudget            = 2 * RelayData
	RelayPrefixBudget          = 8 * RelayData
	RelayWindow                = 10 * time.Minute
	RelayRate                  = 4 << 20 // bytes per second
	RelayReservations          = 64
	RelayReservationsPerPrefix = 4
)

// relayFree is what each relay stream carries before it counts against a budget: the hop
// and stop messages (at most 4 KiB each), so that a peer past its budget can still renew its
// reservation and be told no.
const relayFree = 8 << 10

// relayMaxTracked bounds the peers and prefixes the relay keeps budgets for; past it new
// ones are refused until old ones' windows empty.
const relayMaxTracked = 4096

// relayWindow counts what was used in a sliding window of length w, approximated from the
// current and the previous fixed window (the previous counts in proportion to how much of it
// the sliding window still covers); it is pure, for testing.
type relayWindow struct {
	start     time.Time // of the current fixed window
	cur, prev int64
}

func (u *relayWindow) roll(now time.Time, w time.Duration) {
	switch d := now.Sub(u.start); {
	case d >= 2*w:
		u.start, u.cur, u.prev = now, 0, 0
	case d >= w:
		u.start, u.prev, u.cur = u.start.Add(w), u.cur, 0
	}
}

// used is the use in the window of length w that ends at now.
func (u *relayWindow) used(now time.Time, w time.Duration) int64 {
	u.roll(now, w)
	left := w - now.Sub(u.start)
	return u.cur + int64(float64(u.prev)*float64(left)/float64(w))
}

func (u *relayWindow) add(now time.Time, w time.Duration, n int64) {
	u.roll(now, w)
	u.cur += n
}

// relayBudgets holds the windows of peers and prefixes.
type relayBudgets struct {
	mu       sync.Mutex
	w        time.Duration
	peerMax  int64
	prefMax  int64
	peers    map[peer.ID]*relayWindow
	prefixes map[string]*relayWindow
}

func newRelayBudgets(w time.Duration, peerMax, prefMax int64) *relayBudgets {
	return &relayBudgets{w: w, peerMax: peerMax, prefMax: prefMax, peers: map[peer.ID]*relayWindow{}, prefixes: map[string]*relayWindow{}}
}

// left is how many bytes p in prefix may still relay at now; 0 also when the tables are
// full.
func (b *relayBudgets) left(now time.Time, p peer.ID, prefix string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	pw, qw := b.get(now, p, prefix)
	if pw == nil {
		return 0
	}
	return max(0, min(b.peerMax-pw.used(now, b.w), b.prefMax-qw.used(now, b.w)))
}

func (b *relayBudgets) charge(now time.Time, p peer.ID, prefix string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if pw, qw := b.get(now, p, prefix); pw != nil {
		pw.add(now, b.w, int64(n))
		qw.add(now, b.w, int64(n))
	}
}

// get returns p's and prefix's windows, made if need be, or nils when the tables are full
// of windows still in use. Preconditions: b.mu is held.
func (b *relayBudgets) get(now time.Time, p peer.ID, prefix string) (*relayWindow, *relayWindow) {
	pw, qw := b.peers[p], b.prefixes[prefix]
	if (pw == nil || qw == nil) && len(b.peers)+len(b.prefixes) >= relayMaxTracked {
		for id, u := range b.peers {
			if u.used(now, b.w) == 0 {
				delete(b.peers, id)
			}
		}
		for k, u := range b.prefixes {
			if u.used(now, b.w) == 0 {
				delete(b.prefixes, k)
			}
		}
		if len(b.peers)+len(b.prefixes) >= relayMaxTracked {
			return nil, nil
		}
	}
	if pw == nil {
		pw = &relayWindow{start: now}
		b.peers[p] = pw
	}
	if qw == nil {
		qw = &relayWindow{start: now}
		b.prefixes[prefix] = qw
	}
	return pw, qw
}

// errRelayBudget ends a relayed connection whose peer or prefix spent its budget.
var errRelayBudget = errors.New("relay budget spent")

// relayService is a gridnode relay (Config.RelayService): libp2p's circuit v2 relay with
// RelayResources, on a host whose relay streams count every byte against the budgets of
// the peer at their other end and its prefix, and wait for the total rate; its ACL lets
// only gridnode peers (by identify's agent version) reserve or be relayed to, within the
// reservation bounds and budgets. The agent version can be forged: the prefixes and budgets
// are what bound a stranger with many identities, not the ACL.
type relayService struct {
	h       host.Host
	relay   *relayv2.Relay
	budgets *relayBudgets
	rate    *rate.Limiter
	ctx     context.Context
	cancel  context.CancelFunc
	log     *slog.Logger

	mu     sync.Mutex
	rsv    map[peer.ID]relayReservation
	notify network.Notifiee
}

type relayReservation struct {
	prefix string
	expire time.Time
}

var _ relayv2.ACLFilter = (*relayService)(nil)

func startRelayService(h host.Host, log *slog.Logger) (*relayService, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &relayService{
		h: h, log: log, ctx: ctx, cancel: cancel,
		budgets: newRelayBudgets(RelayWindow, RelayPeerBudget, RelayPrefixBudget),
		rate:    rate.NewLimiter(RelayRate, 64<<10),
		rsv:     map[peer.ID]relayReservation{},
	}
	s.notify = &network.NotifyBundle{DisconnectedF: func(nw network.Network, c network.Conn) {
		if p := c.RemotePeer(); nw.Connectedness(p) != network.Connected {
			s.mu.Lock()
			delete(s.rsv, p) // the relay drops its reservation too
			s.mu.Unlock()
		}
	}}
	h.Network().Notify(s.notify)
	r, err := relayv2.New(relayHost{h, s}, relayv2.WithResources(RelayResources()), relayv2.WithACL(s))
	if err != nil {
		s.close()
		return nil, fmt.Errorf("relay service: %w", err)
	}
	s.relay = r
	return s, nil
}

func (s *relayService) close() {
	if s.relay != nil {
		s.relay.Close()
	}
	s.h.Network().StopNotify(s.notify)
	s.cancel()
}

// prefixKey is the network prefix budgets count a's bytes against.
func prefixKey(a multiaddr.Multiaddr) string {
	if k, ok := netPrefix(a); ok {
		return k
	}
	return "unknown"
}

// AllowReserve implements relayv2.ACLFilter: a gridnode peer, while the prefix it connects
// from holds fewer than RelayReservationsPerPrefix reservations and all fewer than
// RelayReservations. (libp2p's own count per IP address is no bound: one IPv6 host has
// billions, and 16 IPv4 addresses in one /24 took all 64 reservations.)
func (s *relayService) AllowReserve(p peer.ID, a multiaddr.Multiaddr) bool {
	if !isGridPeer(s.h, p) {
		return false
	}
	prefix, now := prefixKey(a), time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	total, same := 0, 0
	for q, r := range s.rsv {
		switch {
		case now.After(r.expire):
			delete(s.rsv, q)
		case q == p:
		default:
			total++
			if r.prefix == prefix {
				same++
			}
		}
	}
	if total >= RelayReservations || same >= RelayReservationsPerPrefix {
		s.log.Debug("relay reservation refused", "peer", p, "prefix", prefix, "prefix_holds", same, "total", total)
		return false
	}
	s.rsv[p] = relayReservation{prefix: prefix, expire: now.Add(relayv2.DefaultResources().ReservationTTL)}
	return true
}

// AllowConnect implements relayv2.ACLFilter: between gridnode peers, while both and their
// prefixes have budget left.
func (s *relayService) AllowConnect(src peer.ID, srcAddr multiaddr.Multiaddr, dest peer.ID) bool {
	if !isGridPeer(s.h, src) || !isGridPeer(s.h, dest) {
		return false
	}
	s.mu.Lock()
	destPrefix := s.rsv[dest].prefix
	s.mu.Unlock()
	if cs := s.h.Network().ConnsToPeer(dest); len(cs) > 0 {
		destPrefix = prefixKey(cs[0].RemoteMultiaddr()) // what its stop stream will count against
	}
	now := time.Now()
	ok := s.budgets.left(now, src, prefixKey(srcAddr)) > 0 && s.budgets.left(now, dest, destPrefix) > 0
	if !ok {
		s.log.Debug("relayed connection refused: budget spent", "src", src, "dest", dest)
	}
	return ok
}

// relayHost is the host libp2p's relay runs on: the streams it accepts (hop) and opens
// (stop) are relayStreams.
type relayHost struct {
	host.Host
	s *relayService
}

func (h relayHost) SetStreamHandler(pid p2pproto.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, func(st network.Stream) { handler(h.s.wrap(st)) })
}

func (h relayHost) NewStream(ctx context.Context, p peer.ID, pids ...p2pproto.ID) (network.Stream, error) {
	st, err := h.Host.NewStream(ctx, p, pids...)
	if err != nil {
		return nil, err
	}
	return h.s.wrap(st), nil
}

func (s *relayService) wrap(st network.Stream) network.Stream {
	return &relayStream{Stream: st, s: s, peer: st.Conn().RemotePeer(), prefix: prefixKey(st.Conn().RemoteMultiaddr()), free: relayFree}
}

// relayStream is a relay stream to one peer: what is read from it (sent by the peer) and
// written to it (sent to the peer) counts against the peer's and its prefix's budget, and
// writes wait for the relay's total rate.
type relayStream struct {
	network.Stream
	s      *relayService
	peer   peer.ID
	prefix string
	free   int // bytes still uncounted
}

// allow is how much of n bytes the stream may carry now.
func (r *relayStream) allow(n int) int {
	if n <= r.free {
		return n
	}
	return r.free + int(min(int64(n-r.free), r.s.budgets.left(time.Now(), r.peer, r.prefix)))
}

func (r *relayStream) charge(n int) {
	if f := min(n, r.free); f > 0 {
		r.free -= f
		n -= f
	}
	if n > 0 {
		r.s.budgets.charge(time.Now(), r.peer, r.prefix, n)
	}
}

func (r *relayStream) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return r.Stream.Read(b)
	}
	n := r.allow(len(b))
	if n == 0 {
		r.Stream.Reset()
		return 0, errRelayBudget
	}
	k, err := r.Stream.Read(b[:n])
	r.charge(k)
	return k, err
}

func (r *relayStream) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n := min(r.allow(len(b)-done), r.s.rate.Burst())
		if n == 0 {
			r.Stream.Reset()
			return done, errRelayBudget
		}
		if err := r.s.rate.WaitN(r.s.ctx, n); err != nil {
			return done, err
		}
		k, err := r.Stream.Write(b[done : done+n])
		r.charge(k)
		done += k
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// userAgent is what identify tells peers this node runs.
const userAgent = "gridnode"

// relayOptions are the autorelay options of a home node: candidates come from source, one
// is enough, and a relay that refused is tried again after a minute, not libp2p's hour.
func relayOptions() []autorelay.Option {
	return []autorelay.Option{
		autorelay.WithMinCandidates(1),
		autorelay.WithNumRelays(2),
		autorelay.WithBootDelay(0),
		autorelay.WithMinInterval(5 * time.Second),
		autorelay.WithBackoff(time.Minute),
	}
}

// maxDHTRelays bounds the relay candidates taken from DHT announcements, which anyone can
// make: at most this many, one per network prefix, chosen at random.
const maxDHTRelays = 4

// relaySource is autorelay's source of relay candidates, most trusted first: static relays
// (--relay), then bootstrap peers that speak the relay protocol or announced
// RelayNamespace, then a few other peers that announced RelayNamespace on the DHT (at most
// maxDHTRelays, one per network prefix, shuffled: announcements are free, and a flood of
// them must not be all a home node tries). The DHT is set once the node has one.
type relaySource struct {
	static []peer.AddrInfo
	boot   []peer.AddrInfo
	mu     sync.Mutex
	d      *dht.DHT
	h      host.Host
}

func (s *relaySource) set(h host.Host, d *dht.DHT) {
	s.mu.Lock()
	s.h, s.d = h, d
	s.mu.Unlock()
}

// peers implements autorelay.PeerSource.
func (s *relaySource) peers(ctx context.Context, num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo, num)
	s.mu.Lock()
	h, d := s.h, s.d
	s.mu.Unlock()
	go func() {
		defer close(out)
		sent := map[peer.ID]bool{}
		send := func(ai peer.AddrInfo) bool {
			if len(sent) >= num || sent[ai.ID] || (h != nil && ai.ID == h.ID()) {
				return len(sent) < num
			}
			sent[ai.ID] = true
			select {
			case out <- ai:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for _, ai := range s.static {
			if !send(ai) {
				return
			}
		}
		if h == nil {
			return
		}
		var provs []peer.AddrInfo
		if d != nil {
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			provs = d.FindProviders(fctx, dht.NamespaceCID(RelayNamespace))
			cancel()
		}
		announced := map[peer.ID]bool{}
		for _, ai := range provs {
			announced[ai.ID] = true
		}
		for _, ai := range s.boot {
			if ok, _ := h.Peerstore().SupportsProtocols(ai.ID, hopProtocol); len(ok) == 0 && !announced[ai.ID] {
				continue
			}
			if !send(peer.AddrInfo{ID: ai.ID, Addrs: slices.Concat(ai.Addrs, h.Peerstore().Addrs(ai.ID))}) {
				return
			}
		}
		rand.Shuffle(len(provs), func(i, j int) { provs[i], provs[j] = provs[j], provs[i] })
		prefixes := map[string]bool{}
		taken := 0
		for _, ai := range provs {
			if taken >= maxDHTRelays || sent[ai.ID] || len(ai.Addrs) == 0 {
				continue
			}
			k, ok := netPrefix(ai.Addrs[0])
			if !ok || prefixes[k] {
				continue
			}
			prefixes[k] = true
			taken++
			if !send(ai) {
				return
			}
		}
	}()
	return out
}

// directWait is how long a stream to a peer reached only through a relay waits for hole
// punching to give a direct connection before it uses the relayed one. Hole punching starts
// when the relayed connection opens and takes about three round trips.
const directWait = 3 * time.Second

// jobHost is the host the jobs package sees: a stream to a peer that is reachable only
// through a relay waits up to directWait for a hole-punched connection and then uses the
// relayed one, within the relay's limits (libp2p refuses relayed connections to streams
// unless asked); and every job stream a worker accepts is logged with the connection that
// carries it, so that a donor (and the NAT lab) can see whether jobs came direct or relayed.
type jobHost struct {
	host.Host
	log *slog.Logger
}

// relayedOK marks a context whose streams may use a relayed connection.
func relayedOK(ctx context.Context) context.Context {
	return network.WithAllowLimitedConn(ctx, "gridnode: relayed when no direct connection")
}

func (h jobHost) Connect(ctx context.Context, ai peer.AddrInfo) error {
	return h.Host.Connect(relayedOK(ctx), ai)
}

func (h jobHost) NewStream(ctx context.Context, p peer.ID, pids ...p2pproto.ID) (network.Stream, error) {
	if ok, _ := network.GetAllowLimitedConn(ctx); ok {
		return h.Host.NewStream(ctx, p, pids...)
	}
	if nodial, _ := network.GetNoDial(ctx); !nodial {
		if err := h.Host.Connect(relayedOK(ctx), peer.AddrInfo{ID: p}); err != nil {
			return nil, err
		}
	}
	if h.Network().Connectedness(p) == network.Limited {
		wait := directWait
		for _, c := range h.Network().ConnsToPeer(p) {
			wait = min(wait, directWait-time.Since(c.Stat().Opened)) // punching began when it opened
		}
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl)/2)
		}
		wait = max(wait, 10*time.Millisecond)
		wctx, cancel := context.WithTimeout(ctx, wait)
		s, err := h.Host.NewStream(network.WithDialPeerTimeout(wctx, wait), p, pids...)
		cancel()
		if err == nil || ctx.Err() != nil || h.Network().Connectedness(p) != network.Limited {
			h.logStream("outbound", s, pids)
			return s, err
		}
		h.log.Debug("no direct connection yet, using the relay", "peer", p, "waited", wait, "err", err)
		ctx = relayedOK(ctx)
	}
	s, err := h.Host.NewStream(ctx, p, pids...)
	h.logStream("outbound", s, pids)
	return s, err
}

func (h jobHost) SetStreamHandler(pid p2pproto.ID, handler network.StreamHandler) {
	if pid == protocol.JobID {
		inner := handler
		handler = func(s network.Stream) {
			h.logStream("inbound", s, nil)
			inner(s)
		}
	}
	h.Host.SetStreamHandler(pid, handler)
}

// logStream logs the connection under a job or blob stream, at debug: any peer can open
// job streams, as often as its stream limits allow.
func (h jobHost) logStream(dir string, s network.Stream, pids []p2pproto.ID) {
	if s == nil {
		return
	}
	c := s.Conn()
	h.log.Debug("job stream", "dir", dir, "protocol", s.Protocol(),
		"peer", c.RemotePeer(), "relayed", isRelayed(c.RemoteMultiaddr()), "remote", c.RemoteMultiaddr())
}

// isRelayed reports whether a is a circuit (relayed) address. A relay may grant unlimited
// circuits, so this, not the connection's Limited flag, says what carries the bytes.
func isRelayed(a multiaddr.Multiaddr) bool {
	_, err := a.ValueForProtocol(multiaddr.P_CIRCUIT)
	return err == nil
}

// punchTracer logs hole punching and feeds the reachability tracker.
type punchTracer struct {
	log   *slog.Logger
	reach *reachTracker
}

var _ holepunch.EventTracer = (*punchTracer)(nil)

func (t *punchTracer) Trace(e *holepunch.Event) {
	switch ev := e.Evt.(type) {
	case *holepunch.EndHolePunchEvt:
		if ev.Success {
			t.log.Info("hole punch succeeded", "peer", e.Remote, "took", ev.EllapsedTime)
		} else {
			t.log.Info("hole punch failed", "peer", e.Remote, "took", ev.EllapsedTime, "err", ev.Error)
		}
		t.reach.punched(ev.Success)
	case *holepunch.ProtocolErrorEvt:
		t.log.Info("hole punch not started", "peer", e.Remote, "err", ev.Error)
	case *holepunch.DirectDialEvt:
		t.log.Debug("direct dial before hole punch", "peer", e.Remote, "ok", ev.Success, "took", ev.EllapsedTime, "err", ev.Error)
	case *holepunch.StartHolePunchEvt:
		t.log.Debug("hole punch started", "peer", e.Remote, "their_addrs", ev.RemoteAddrs, "rtt", ev.RTT)
	}
}

// holePunchWait bounds how long a short-lived submitter waits for its hole punching service.
const holePunchWait = 3 * time.Second

// waitHolePunching waits, up to holePunchWait, until the hole punching service takes
// requests. libp2p starts it only once a peer told this node its public address; a worker
// that got a relayed connection from this node before then asks once, is refused, and
// never punches (measured in the NAT lab: every job of a fresh submitter went relayed).
// Only worth waiting for when a connected peer is public and so can tell that address.
func (n *Node) waitHolePunching(ctx context.Context) {
	public := false
	for _, c := range n.h.Network().Conns() {
		if reachOf(c.RemoteMultiaddr()) == ReachPublic && !isRelayed(c.RemoteMultiaddr()) {
			public = true
		}
	}
	if !public {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, holePunchWait)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if slices.Contains(n.h.Mux().Protocols(), holepunch.Protocol) {
			return
		}
		select {
		case <-ctx.Done():
			n.log.Debug("hole punching not ready", "waited", holePunchWait)
			return
		case <-t.C:
		}
	}
}

// maxRelayedPeers bounds the peers directTimer follows; past it new relayed peers are not
// timed.
const maxRelayedPeers = 1024

// directTimer logs how long after a peer's first relayed connection a direct one (hole
// punched, or dialled) followed: the time to a direct connection.
type directTimer struct {
	log *slog.Logger
	mu  sync.Mutex
	at  map[peer.ID]time.Time // peers with only relayed connections, since when
}

func newDirectTimer(log *slog.Logger) *directTimer {
	return &directTimer{log: log, at: make(map[peer.ID]time.Time)}
}

func (d *directTimer) notifiee() network.Notifiee {
	return &network.NotifyBundle{
		ConnectedF: func(nw network.Network, c network.Conn) {
			p := c.RemotePeer()
			d.mu.Lock()
			defer d.mu.Unlock()
			since, timing := d.at[p]
			switch {
			case isRelayed(c.RemoteMultiaddr()):
				if !timing && len(d.at) < maxRelayedPeers && !hasDirect(nw, p) {
					d.at[p] = c.Stat().Opened
				}
			case timing:
				delete(d.at, p)
				d.log.Info("direct connection", "peer", p, "after_relayed", time.Since(since).Round(time.Microsecond),
					"dir", c.Stat().Direction, "remote", c.RemoteMultiaddr())
			}
		},
		DisconnectedF: func(nw network.Network, c network.Conn) {
			p := c.RemotePeer()
			if len(nw.ConnsToPeer(p)) > 0 {
				return
			}
			d.mu.Lock()
			delete(d.at, p)
			d.mu.Unlock()
		},
	}
}

func hasDirect(nw network.Network, p peer.ID) bool {
	for _, c := range nw.ConnsToPeer(p) {
		if !isRelayed(c.RemoteMultiaddr()) {
			return true
		}
	}
	return false
}
