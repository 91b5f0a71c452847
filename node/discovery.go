package node

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/gridnode/gridnode/dht"
	"github.com/gridnode/gridnode/internal/budget"
)

// discoverWant is how many candidate workers a submit's discovery asks the DHT for
// (docs/SCALE.md): the submitter asks up to MaxReplicas+Replicas of them for offers (7 at
// the default two replicas), and some are busy or refuse. The DHT lookup stops once it has
// this many, so a submit costs the same on any grid size.
const discoverWant = 3 * dht.ShardTarget / 4

// discover polls the DHT for up to discoverWant workers for arch from one random shard
// (dht.FindShard) until it finds one or ctx ends: a grid that just started may still be
// announcing.
func (n *Node) discover(ctx context.Context, arch string) ([]peer.AddrInfo, error) {
	return n.pollWorkers(ctx, arch, discoverWant, 1)
}

// Locating a submit's anchors (jobs.SubmitterConfig.Locate). An anchor that is connected
// is at hand. Any other is reached in the background, at most locateLookups per anchor
// wanted: its peerstore addresses are dialled, and if there are none or none reaches it
// (they may be stale, or a DHT server's forgery), a DHT lookup of its ID finds it and its
// addresses are dialled. A submit waits for that, within locateTimeout, only when no anchor
// is at hand; otherwise the anchors reached are at hand for later submits. Concurrent
// submits share one attempt per peer; a peer that could not be reached is not tried again
// for locateRetry, so that an owner's machine that is switched off costs an attempt a
// minute, not one a submit; and attempts are budgeted (locateBudget a minute, in bursts
// of locateBurst), since a local caller may name any number of peers to trust.
const (
	locateTimeout  = 2 * time.Second
	locateRetry    = time.Minute
	locateLookups  = 2
	locateBudget   = 120
	locateBurst    = 32
	missedPeersMax = 4096
)

// locator is the node's state for locating anchors.
type locator struct {
	mu       sync.Mutex
	missed   map[peer.ID]time.Time // peers not reached, and when
	inflight map[peer.ID]*reach
	budget   *budget.Budget // of attempts, all under ""
	closed   bool
	wg       sync.WaitGroup // attempts in the background
}

// close waits for the attempts under way (the node's closing ends them) and starts no more.
func (l *locator) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.wg.Wait()
}

// reach is one attempt to reach a peer; ai is set and done closed once it ends.
type reach struct {
	done chan struct{}
	ai   peer.AddrInfo // its ID unset if the peer was not reached
}

// recent reports whether an attempt missed p less than locateRetry before now.
func (l *locator) recent(p peer.ID, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.missedAt(p, now)
}

// missedAt is recent with l.mu held.
func (l *locator) missedAt(p peer.ID, now time.Time) bool {
	t, ok := l.missed[p]
	return ok && now.Sub(t) < locateRetry
}

// miss notes that an attempt missed p at now. Past missedPeersMax it forgets the expired
// misses, and then, if that is not enough, any until a quarter is free (amortised: a caller
// churning distinct IDs costs no scan per miss). Preconditions: l.mu is held.
func (l *locator) miss(p peer.ID, now time.Time) {
	if l.missed == nil {
		l.missed = make(map[peer.ID]time.Time)
	}
	l.missed[p] = now
	if len(l.missed) <= missedPeersMax {
		return
	}
	for q, t := range l.missed {
		if now.Sub(t) >= locateRetry {
			delete(l.missed, q)
		}
	}
	for q := range l.missed {
		if len(l.missed) <= missedPeersMax*3/4 {
			break
		}
		delete(l.missed, q)
	}
}

// take spends one attempt of the budget at now, if there is one. Preconditions: l.mu is
// held.
func (l *locator) take(now time.Time) bool {
	if l.budget == nil {
		l.budget = budget.New(locateBurst, time.Minute/locateBudget, 1)
	}
	return l.budget.Take("", now)
}

// startAt returns the attempts to reach up to max of ps, in order, where in ps each
// attempt's peer is, and how many of ps it looked at (the rest may be started later): one
// in flight is joined; a peer missed recently, or beyond the budget, is skipped.
func (l *locator) startAt(ps []peer.ID, max int, now time.Time, try func(peer.ID) peer.AddrInfo) (rs []*reach, at []int, scanned int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, p := range ps {
		if len(rs) >= max || l.closed {
			return rs, at, i
		}
		if l.missedAt(p, now) {
			continue
		}
		if r := l.inflight[p]; r != nil {
			rs, at = append(rs, r), append(at, i)
			continue
		}
		if !l.take(now) {
			continue // past the budget: only attempts in flight are joined
		}
		r := &reach{done: make(chan struct{})}
		if l.inflight == nil {
			l.inflight = make(map[peer.ID]*reach)
		}
		l.inflight[p] = r
		l.wg.Go(func() {
			ai := try(p)
			l.mu.Lock()
			delete(l.inflight, p)
			if ai.ID == "" {
				l.miss(p, time.Now())
			} else {
				delete(l.missed, p)
			}
			r.ai = ai
			l.mu.Unlock()
			close(r.done)
		})
		rs, at = append(rs, r), append(at, i)
	}
	return rs, at, len(ps)
}

// locate returns up to want of ps that this node can reach, in ps's order
// (jobs.SubmitterConfig.Locate).
func (n *Node) locate(ctx context.Context, ps []peer.ID, want int) []peer.AddrInfo {
	var out []peer.AddrInfo
	var rest []peer.ID
	for _, p := range ps {
		switch {
		case reachable(n.h.Network().Connectedness(p)):
			if len(out) < want {
				out = append(out, n.h.Peerstore().PeerInfo(p))
			}
		case p != n.h.ID():
			rest = append(rest, p)
		}
	}
	if len(out) >= want {
		return out
	}
	// Attempts for the rest, locateLookups per anchor wanted at a time, one more for each
	// that fails (a fresh node with 12 switched-off candidates among 13 tried only the first
	// 8, and found none in 7 of 16 locates).
	type attempt struct {
		r  *reach
		at int // in rest
	}
	var atts []attempt
	scanned := 0
	wctx, cancel := context.WithTimeout(ctx, locateTimeout)
	defer cancel()
	ended := make(chan int, len(rest))
	launch := func(max int) int {
		rs, at, k := n.jobs.locator.startAt(rest[scanned:], max, time.Now(), n.reachPeer)
		for j, r := range rs {
			atts = append(atts, attempt{r, scanned + at[j]})
			i := len(atts) - 1
			go func() {
				select {
				case <-r.done:
					ended <- i
				case <-wctx.Done():
				}
			}()
		}
		scanned += k
		return len(rs)
	}
	inflight := launch(locateLookups * (want - len(out)))
	if len(out) > 0 || inflight == 0 {
		return out // the rest connect meanwhile, for later submits
	}
	// The first want reached, in ps's order among those done: a stranger holding one
	// attempt to its end must not hold the others' answer (it held 4 reached anchors 2 s).
	// One anchor reached is enough to anchor a quorum; the others get reachGrace more.
	reached := make([]bool, len(rest))
	var grace <-chan time.Time
wait:
	for got := 0; inflight > 0 && got < want; {
		select {
		case i := <-ended:
			inflight--
			if atts[i].r.ai.ID != "" {
				reached[atts[i].at] = true
				if got++; grace == nil {
					grace = time.After(reachGrace)
				}
			} else if grace == nil && scanned < len(rest) {
				inflight += launch(1)
			}
		case <-grace:
			break wait
		case <-wctx.Done():
			break wait
		}
	}
	for _, a := range atts {
		if reached[a.at] && len(out) < want {
			out = append(out, a.r.ai)
		}
	}
	return out
}

// reachPeer connects to p within locateTimeout, or fails: it returns p's addresses, or an
// empty AddrInfo. A DHT lookup of p's ID runs from the start, beside the dial of the
// addresses the peerstore has: those may be stale, or a stranger's (any DHT server can put
// addresses for any ID in the peerstore through a closer-peers answer), and a tarpit among
// them (it accepts and never answers) held the first version's dial to the end of its time,
// leaving none for the lookup. kad-dht's lookup can itself be held by peers that never
// answer (a made-up ID near the key, at a tarpit: it waits for the nearest three), while
// the honest answers have already put p's addresses in the peerstore. So every address of
// p that appears there is dialled as it appears (the swarm adds it to its dial of p),
// until p is connected. The node's closing ends it.
func (n *Node) reachPeer(p peer.ID) peer.AddrInfo {
	ctx, cancel := context.WithTimeout(n.lifetime(), locateTimeout)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var working atomic.Int32 // the lookup and the dials under way
	working.Add(1)
	wg.Go(func() {
		defer working.Add(-1)
		n.d.FindPeer(ctx, p)
	})
	tried := map[string]bool{}
	tick := time.NewTicker(reachPoll)
	defer tick.Stop()
	for {
		if reachable(n.h.Network().Connectedness(p)) {
			return n.h.Peerstore().PeerInfo(p)
		}
		// Read before the addresses: work that ends after this read is seen at the next
		// poll; work that ended before it had put its addresses in the peerstore already.
		idle := working.Load() == 0
		var fresh []multiaddr.Multiaddr
		for _, a := range n.h.Peerstore().Addrs(p) {
			if k := string(a.Bytes()); !tried[k] && len(tried) < maxReachAddrs {
				tried[k] = true
				fresh = append(fresh, a)
			}
		}
		if len(fresh) > 0 {
			working.Add(1)
			wg.Go(func() {
				defer working.Add(-1)
				if err := n.h.Connect(ctx, peer.AddrInfo{ID: p, Addrs: fresh}); err != nil {
					n.log.Debug("anchor not reached", "peer", p, "err", err)
				}
			})
		} else if idle {
			return peer.AddrInfo{} // looked up and dialled everything it heard of
		}
		select {
		case <-ctx.Done():
			return peer.AddrInfo{}
		case <-tick.C:
		}
	}
}

// reachable reports whether a connection state lets jobs reach the peer: Limited is a
// relayed connection, which jobs use where hole punching fails (jobHost); a relay-only
// anchor was never reached when only Connected counted. Either is authenticated as the
// peer's ID.
func reachable(c network.Connectedness) bool {
	return c == network.Connected || c == network.Limited
}

// reachPoll is how often reachPeer looks for new addresses of the peer it is reaching, and
// whether it is connected; maxReachAddrs bounds the addresses it dials. reachGrace is how
// long locate still waits for other anchors once it reached one.
const (
	reachPoll     = 20 * time.Millisecond
	maxReachAddrs = 64
	reachGrace    = 150 * time.Millisecond
)
