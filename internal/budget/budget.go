// Package budget is a token bucket per peer, for work a stranger could otherwise ask for
// without end.
package budget

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Budget is a token bucket per peer: each peer may spend burst tokens at once, and gets one
// back every period. It tracks at most maxPeers peers: when that many hold spent tokens, a
// new peer gets nothing until some bucket refills (peer IDs are free, so a flood of new
// identities must not grow the map or buy fresh budgets).
type Budget struct {
	burst    int
	period   time.Duration
	maxPeers int

	mu    sync.Mutex
	peers map[peer.ID]bucket
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was computed
}

// New returns a Budget of burst tokens a peer, one more every period, for at most maxPeers
// peers at once.
func New(burst int, period time.Duration, maxPeers int) *Budget {
	return &Budget{burst: burst, period: period, maxPeers: maxPeers, peers: make(map[peer.ID]bucket)}
}

// Take spends one of p's tokens at time now and reports whether it had one.
func (b *Budget) Take(p peer.ID, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk, ok := b.peers[p]
	if !ok {
		if len(b.peers) >= b.maxPeers {
			b.prune(now)
			if len(b.peers) >= b.maxPeers {
				return false
			}
		}
		bk = bucket{tokens: float64(b.burst), at: now}
	}
	bk = b.refill(bk, now)
	if bk.tokens < 1 {
		b.peers[p] = bk
		return false
	}
	bk.tokens--
	b.peers[p] = bk
	return true
}

// Spent reports whether p is tracked and has no whole token left at time now. An untracked
// peer has its whole burst, even when the budget tracks all the peers it may: Spent refuses
// nothing to newcomers, Take then charges nothing beyond maxPeers.
func (b *Budget) Spent(p peer.ID, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk, ok := b.peers[p]
	return ok && b.refill(bk, now).tokens < 1
}

func (b *Budget) refill(bk bucket, now time.Time) bucket {
	if d := now.Sub(bk.at); d > 0 {
		bk.tokens = min(float64(b.burst), bk.tokens+float64(d)/float64(b.period))
		bk.at = now
	}
	return bk
}

// prune forgets the peers whose buckets are full again: they are as good as new.
// Preconditions: b.mu is held.
func (b *Budget) prune(now time.Time) {
	for p, bk := range b.peers {
		if b.refill(bk, now).tokens >= float64(b.burst) {
			delete(b.peers, p)
		}
	}
}
