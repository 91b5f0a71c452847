package node

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/dht"
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
	tokens   float64 // of the attempt budget
	refilled time.Time
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
	if l.refilled.IsZero() {
		l.tokens = locateBurst
	} else {
		l.tokens = min(locateBurst, l.tokens+now.Sub(l.refilled).Minutes()*locateBudget)
	}
	l.refilled = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// start returns the attempts to reach up to max of ps, in order: one in flight is joined;
// a peer missed recently, or beyond the budget, is skipped.
func (l *locator) start(ps []peer.ID, max int, now time.Time, try func(peer.ID) peer.AddrInfo) []*reach {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*reach
	for _, p := range ps {
		if len(out) >= max {
			break
		}
		if t, ok := l.missed[p]; ok && now.Sub(t) < locateRetry {
			continue
		}
		if r := l.inflight[p]; r != nil {
			out = append(out, r)
			continue
		}
		if l.closed || !l.take(now) {
			break
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
		out = append(out, r)
	}
	return out
}

// locate returns up to want of ps that this node can reach, in ps's order
// (jobs.SubmitterConfig.Locate).
func (n *Node) locate(ctx context.Context, ps []peer.ID, want int) []peer.AddrInfo {
	var out []peer.AddrInfo
	var rest []peer.ID
	for _, p := range ps {
		switch {
		case n.h.Network().Connectedness(p) == network.Connected:
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
	reaches := n.jobs.locator.start(rest, locateLookups*(want-len(out)), time.Now(), n.reachPeer)
	if len(out) > 0 {
		return out // the rest connect meanwhile, for later submits
	}
	for _, r := range reaches {
		select {
		case <-r.done:
		case <-ctx.Done():
			return out
		}
		if r.ai.ID != "" && len(out) < want {
			out = append(out, r.ai)
		}
	}
	return out
}

// reachPeer connects to p within locateTimeout: at its peerstore addresses, else (none, or
// none that reach it) at those a DHT lookup of its ID finds. It returns p's addresses, or
// an empty AddrInfo if p could not be reached. The node's closing ends it.
func (n *Node) reachPeer(p peer.ID) peer.AddrInfo {
	ctx, cancel := context.WithTimeout(n.lifetime(), locateTimeout)
	defer cancel()
	ai := n.h.Peerstore().PeerInfo(p)
	err := errNoAddrs
	if len(ai.Addrs) > 0 {
		err = n.h.Connect(ctx, ai)
	}
	if err != nil && ctx.Err() == nil {
		if ai, err = n.d.FindPeer(ctx, p); err == nil {
			err = n.h.Connect(ctx, ai)
		}
	}
	if err != nil {
		n.log.Debug("anchor not reached", "peer", p, "err", err)
		return peer.AddrInfo{}
	}
	return n.h.Peerstore().PeerInfo(p)
}

var errNoAddrs = errors.New("no addresses")
