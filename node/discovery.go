package node

import (
	"context"
	"slices"
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

// Locating a submit's anchors (jobs.SubmitterConfig.Locate): a peer's addresses come from
// the peerstore, or else from a DHT lookup of its ID (all at once, within locateTimeout). A
// peer the lookup did not find is not looked up again for locateRetry, so that an owner's
// machine that is switched off costs one lookup a minute, not one every submit;
// missedPeersMax bounds what is remembered.
const (
	locateTimeout  = 2 * time.Second
	locateRetry    = time.Minute
	missedPeersMax = 256
)

// missedPeers are the peers a lookup did not find, and when.
type missedPeers struct {
	mu sync.Mutex
	at map[peer.ID]time.Time
}

// recent reports whether a lookup missed p less than locateRetry before now.
func (m *missedPeers) recent(p peer.ID, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.at[p]
	return ok && now.Sub(t) < locateRetry
}

// add notes that a lookup missed p at now, forgetting the oldest misses past
// missedPeersMax.
func (m *missedPeers) add(p peer.ID, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.at == nil {
		m.at = make(map[peer.ID]time.Time)
	}
	m.at[p] = now
	for len(m.at) > missedPeersMax {
		var oldest peer.ID
		for q, t := range m.at {
			if oldest == "" || t.Before(m.at[oldest]) {
				oldest = q
			}
		}
		delete(m.at, oldest)
	}
}

// forget drops p's miss: it was found.
func (m *missedPeers) forget(p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.at, p)
}

// locate returns the addresses of those of ps this node can find (jobs.SubmitterConfig.Locate).
func (n *Node) locate(parent context.Context, ps []peer.ID) []peer.AddrInfo {
	ctx, cancel := context.WithTimeout(parent, locateTimeout)
	defer cancel()
	now := time.Now()
	found := make([]peer.AddrInfo, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		if ai := n.h.Peerstore().PeerInfo(p); len(ai.Addrs) > 0 || n.h.Network().Connectedness(p) == network.Connected {
			found[i] = ai
			continue
		}
		if n.jobs.missed.recent(p, now) {
			continue
		}
		wg.Go(func() {
			ai, err := n.d.FindPeer(ctx, p)
			if err != nil || len(ai.Addrs) == 0 {
				n.log.Debug("anchor not found", "peer", p, "err", err)
				if parent.Err() == nil { // not found, rather than given up with the submit
					n.jobs.missed.add(p, time.Now())
				}
				return
			}
			n.jobs.missed.forget(p)
			found[i] = ai
		})
	}
	wg.Wait()
	return slices.DeleteFunc(found, func(ai peer.AddrInfo) bool { return ai.ID == "" })
}
