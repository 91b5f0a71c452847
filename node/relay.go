package node

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/multiformats/go-multiaddr"

	"github.com/gridnode/gridnode/dht"
	"github.com/gridnode/gridnode/protocol"
)

// RelayNamespace is the DHT namespace under which relay nodes (Config.RelayService)
// announce themselves; home nodes find their relays there.
const RelayNamespace = "gridnode/v1/relays"

// hopProtocol is circuit v2's relay protocol; a peer that speaks it offers relaying.
const hopProtocol p2pproto.ID = "/libp2p/circuit/relay/0.2.0/hop"

// RelayResources are the limits of a gridnode relay (Config.RelayService), sized for a
// donor's machine and uplink rather than libp2p's defaults (2 minutes and 128 KiB per
// relayed connection), which are too small to carry a job: a relayed connection carries the
// offer query, the job request, the binary the worker pulls, the input and the output. Each
// relayed connection may carry RelayData bytes in each direction for RelayDuration; a relay
// keeps at most 64 reservations (4 per IP address) and 8 relayed connections per peer, so
// what one relay can be made to carry at once is bounded (64 x 8 x 2 x 32 MiB in the
// theoretical worst case, far less in practice as the data flows at uplink speed), and its
// memory use stays within the resource manager's limits for the relay service.
func RelayResources() relayv2.Resources {
	r := relayv2.DefaultResources()
	r.Limit = &relayv2.RelayLimit{Duration: RelayDuration, Data: RelayData}
	r.MaxReservations = 64
	r.MaxReservationsPerIP = 4
	r.MaxReservationsPerASN = 32
	r.MaxCircuits = 8
	r.BufferSize = 16 << 10
	return r
}

// The per-connection limits of a gridnode relay: a job whose binary plus input, or whose
// output, is larger than RelayData cannot run over a relay, nor one that takes longer than
// RelayDuration from the offer query to the result. Such jobs need a worker the submitter
// can reach directly (public, UPnP-mapped or hole-punched).
const (
	RelayData     = 32 << 20
	RelayDuration = 35 * time.Minute // the default wall limit (30 min) plus fetches and replies
)

// relayACL lets only gridnode peers (by identify's agent version) reserve or use the relay:
// the relay's address is not in any public DHT, but a stranger who connects could otherwise
// use a donor's bandwidth for other traffic. Agent versions can be forged; this keeps the
// relay to its grid's honest users, and the limits above bound the rest.
type relayACL struct{ h atomic.Pointer[host.Host] } // set once the host is built

var _ relayv2.ACLFilter = (*relayACL)(nil)

func (a *relayACL) AllowReserve(p peer.ID, _ multiaddr.Multiaddr) bool { return a.gridPeer(p) }
func (a *relayACL) AllowConnect(src peer.ID, _ multiaddr.Multiaddr, dest peer.ID) bool {
	return a.gridPeer(src) && a.gridPeer(dest)
}

func (a *relayACL) gridPeer(p peer.ID) bool {
	h := a.h.Load()
	return h != nil && isGridPeer(*h, p)
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

// relaySource is autorelay's source of relay candidates: static relays first, then peers
// that announced RelayNamespace on the DHT, then connected peers that speak the relay
// protocol (a grid's bootstrap node often does). The DHT is set once the node has one.
type relaySource struct {
	static []peer.AddrInfo
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
		if d == nil || h == nil {
			return
		}
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		provs := d.FindProviders(fctx, dht.NamespaceCID(RelayNamespace))
		cancel()
		for _, ai := range provs {
			if !send(ai) {
				return
			}
		}
		for _, p := range h.Network().Peers() {
			if ok, _ := h.Peerstore().SupportsProtocols(p, hopProtocol); len(ok) == 0 {
				continue
			}
			if !send(peer.AddrInfo{ID: p, Addrs: h.Peerstore().Addrs(p)}) {
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

// logStream logs the connection under a job or blob stream: at info for the job streams
// a worker accepts, at debug for the rest.
func (h jobHost) logStream(dir string, s network.Stream, pids []p2pproto.ID) {
	if s == nil {
		return
	}
	c := s.Conn()
	lvl := slog.LevelDebug
	if dir == "inbound" {
		lvl = slog.LevelInfo
	}
	h.log.Log(context.Background(), lvl, "job stream", "dir", dir, "protocol", s.Protocol(),
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
