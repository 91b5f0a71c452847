package node

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Reachability is how other peers can reach a node, as Node.Reachability reports it.
type Reachability string

const (
	ReachabilityUnknown   Reachability = "unknown"   // not known yet (AutoNAT takes ~15 s)
	ReachabilityLoopback  Reachability = "loopback"  // a node on a one-machine grid
	ReachabilityPublic    Reachability = "public"    // peers can dial it directly
	ReachabilityNAT       Reachability = "nat"       // behind NAT; no evidence about hole punching yet
	ReachabilityHolePunch Reachability = "nat-punch" // behind a NAT that hole punching can pass
	ReachabilityRelayed   Reachability = "relayed"   // behind a NAT that hole punching cannot pass: relayed only
)

// Mapping is how the NAT in front of a node maps its outgoing connections, judged from the
// addresses different peers saw them come from.
type mapping int

const (
	mappingUnknown     mapping = iota
	mappingIndependent         // the same public address for every destination: "cone"
	mappingDependent           // a new public port per destination: "symmetric"
)

// reachState is the evidence the reachability is judged from; it is pure, for testing.
type reachState struct {
	loopback  bool
	autonat   network.Reachability
	mapping   mapping
	punchOK   int // hole punches that succeeded
	punchFail int // and failed
}

// class is the reachability that s supports: a success beats everything for a NAT, a
// destination-dependent mapping means hole punching cannot work, and a failure alone says
// little (the other peer's NAT may be the one in the way).
func (s reachState) class() Reachability {
	switch {
	case s.loopback:
		return ReachabilityLoopback
	case s.autonat == network.ReachabilityPublic:
		return ReachabilityPublic
	case s.punchOK > 0:
		return ReachabilityHolePunch
	case s.mapping == mappingDependent:
		return ReachabilityRelayed
	case s.mapping == mappingIndependent && s.autonat == network.ReachabilityPrivate:
		return ReachabilityHolePunch
	case s.autonat == network.ReachabilityPrivate:
		return ReachabilityNAT
	}
	return ReachabilityUnknown
}

// maxObservedLocal and maxObservers bound the observation table: a few listen addresses
// times a few observers each is all the judgement needs.
const (
	maxObservedLocal = 8
	maxObservers     = 8
)

// observations records, per local listen address (IP, transport and port), the public
// address each observer (by IP) saw it as.
type observations map[string]map[netip.Addr]string

// add records one observation and returns the mapping the table now shows.
func (o observations) add(local, observed string, observer netip.Addr) mapping {
	m := o[local]
	if m == nil {
		if len(o) >= maxObservedLocal {
			return o.mapping()
		}
		m = make(map[netip.Addr]string)
		o[local] = m
	}
	if _, ok := m[observer]; ok || len(m) < maxObservers {
		m[observer] = observed
	}
	return o.mapping()
}

// mapping is dependent when two observers saw one local address as different public
// addresses, independent when at least two saw it as the same one.
func (o observations) mapping() mapping {
	r := mappingUnknown
	for _, m := range o {
		seen := map[string]int{}
		for _, obs := range m {
			seen[obs]++
		}
		if len(seen) > 1 {
			return mappingDependent
		}
		for _, n := range seen {
			if n >= 2 {
				r = mappingIndependent
			}
		}
	}
	return r
}

// reachTracker follows the node's reachability and logs each change.
type reachTracker struct {
	log *slog.Logger
	mu  sync.Mutex
	st  reachState
	obs observations
	cur Reachability
}

func newReachTracker(log *slog.Logger, loopback bool) *reachTracker {
	t := &reachTracker{log: log, st: reachState{loopback: loopback}, obs: observations{}, cur: ReachabilityUnknown}
	if loopback {
		t.cur = ReachabilityLoopback
	}
	return t
}

func (t *reachTracker) get() Reachability {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

// update applies f to the state and logs the class if it changed.
func (t *reachTracker) update(f func(*reachState)) {
	t.mu.Lock()
	f(&t.st)
	c, st := t.st.class(), t.st
	changed := c != t.cur
	t.cur = c
	t.mu.Unlock()
	if changed {
		t.log.Info("reachability", "reach", c, "why", reachWhy(c, st))
	}
}

func reachWhy(c Reachability, s reachState) string {
	switch c {
	case ReachabilityPublic:
		return "AutoNAT: other peers dialled this node back"
	case ReachabilityHolePunch:
		if s.punchOK > 0 {
			return "behind NAT; hole punching worked"
		}
		return "behind NAT that keeps one public port for every destination (cone); hole punching should work"
	case ReachabilityRelayed:
		return "behind NAT that picks a new public port per destination (symmetric); peers reach this node through relays only"
	case ReachabilityNAT:
		return "AutoNAT: peers cannot dial this node; it waits for a relay and tries hole punching"
	}
	return ""
}

func (t *reachTracker) punched(ok bool) {
	t.update(func(s *reachState) {
		if ok {
			s.punchOK++
		} else {
			s.punchFail++
		}
	})
}

// observed records what a peer saw one of our connections come from (identify's observed
// address). Relayed connections and private addresses say nothing about the NAT.
func (t *reachTracker) observed(c network.Conn, observed multiaddr.Multiaddr) {
	if c == nil || observed == nil || isRelayed(c.RemoteMultiaddr()) || !manet.IsPublicAddr(observed) {
		return
	}
	local, ok1 := thinWaist(c.LocalMultiaddr())
	obs, ok2 := thinWaist(observed)
	rip, err := manet.ToIP(c.RemoteMultiaddr())
	if !ok1 || !ok2 || err != nil {
		return
	}
	observer, ok := netip.AddrFromSlice(rip)
	if !ok {
		return
	}
	t.mu.Lock()
	m := t.obs.add(local, obs, observer.Unmap())
	t.mu.Unlock()
	t.update(func(s *reachState) { s.mapping = m })
}

// thinWaist is the IP, transport and port of a, as a string.
func thinWaist(a multiaddr.Multiaddr) (string, bool) {
	if len(a) < 2 {
		return "", false
	}
	c0, c1 := a[0].Code(), a[1].Code()
	if (c0 != multiaddr.P_IP4 && c0 != multiaddr.P_IP6) || (c1 != multiaddr.P_TCP && c1 != multiaddr.P_UDP) {
		return "", false
	}
	return a[:2].String(), true
}

// watch feeds the tracker from the host's events until ctx ends: AutoNAT's verdict,
// identify's observed addresses, and this node's relay (circuit) addresses, which are
// logged when they change.
func (t *reachTracker) watch(ctx context.Context, h host.Host, wg *sync.WaitGroup) error {
	sub, err := h.EventBus().Subscribe([]any{
		new(event.EvtLocalReachabilityChanged),
		new(event.EvtPeerIdentificationCompleted),
		new(event.EvtLocalAddressesUpdated),
	}, eventbus.Name("gridnode reachability"))
	if err != nil {
		return err
	}
	wg.Go(func() {
		defer sub.Close()
		relays := -1
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				switch ev := e.(type) {
				case event.EvtLocalReachabilityChanged:
					t.update(func(s *reachState) { s.autonat = ev.Reachability })
				case event.EvtPeerIdentificationCompleted:
					t.observed(ev.Conn, ev.ObservedAddr)
				case event.EvtLocalAddressesUpdated:
					var circ []multiaddr.Multiaddr
					for _, a := range ev.Current {
						if isRelayed(a.Address) {
							circ = append(circ, a.Address)
						}
					}
					if len(circ) != relays && (relays >= 0 || len(circ) > 0) {
						t.log.Info("relay addresses", "count", len(circ), "addrs", circ)
					}
					relays = len(circ)
				}
			}
		}
	})
	return nil
}

// watchAddrs tells the DHT's announce loops when the addresses other peers may dial this
// node at change, until ctx ends (see dht.AddrsChanged).
func (n *Node) watchAddrs(ctx context.Context) error {
	sub, err := n.h.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated), eventbus.Name("gridnode addrs"))
	if err != nil {
		return err
	}
	n.wg.Go(func() {
		defer sub.Close()
		var last []string
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				var cur []string
				for _, a := range e.(event.EvtLocalAddressesUpdated).Current {
					if r := reachOf(a.Address); r != reachNever && r <= n.cfg.Reach && r != ReachLoopback || n.cfg.Loopback {
						cur = append(cur, a.Address.String())
					}
				}
				slices.Sort(cur)
				if !slices.Equal(cur, last) {
					last = cur
					n.d.AddrsChanged()
				}
			}
		}
	})
	return nil
}
