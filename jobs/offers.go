package jobs

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/protocol"
)

// Offers are shared by the submits of one submitter: a worker is asked at most once per
// offerTTL, and submits that want its offer meanwhile wait for that one query. Without
// it, a client running many submits at once asked every worker once per submit: past the
// worker's 4 info streams per peer the resource manager reset the rest, and 121 of 200
// concurrent submits failed "1 of 5 candidates can take the job". An offer is a hint
// (free slots change as jobs come and go; a stale one costs a BUSY refusal, after which
// the entry is dropped), and its freshness is still proved by the worker's signature over
// a nonce at most offerTTL old.
const (
	offerTTL      = time.Second
	busyOfferTTL  = 10 * time.Millisecond
	offerCacheMax = 4096 // entries; past it, expired ones are dropped
)

// offerEntry is one worker's offer query, pending until done is closed.
type offerEntry struct {
	done   chan struct{}
	at     time.Time // when the query ended
	o      *protocol.Offer
	prefix string
	err    error
}

// offer returns ai's offer, from a query at most offerTTL old or one it makes now (within
// offerTimeout, whatever ctx; ctx ends only this caller's wait).
func (s *Submitter) offer(ctx context.Context, ai peer.AddrInfo) (*protocol.Offer, string, error) {
	s.offerMu.Lock()
	if s.offerCache == nil {
		s.offerCache = make(map[peer.ID]*offerEntry)
	}
	e := s.offerCache[ai.ID]
	if e == nil || (isDone(e.done) && time.Since(e.at) > e.ttl()) {
		e = &offerEntry{done: make(chan struct{})}
		s.offerCache[ai.ID] = e
		s.pruneOffers()
		s.offerMu.Unlock()
		go func() {
			o, prefix, err := s.queryOffer(context.Background(), ai)
			e.o, e.prefix, e.err, e.at = o, prefix, err, time.Now()
			close(e.done)
		}()
	} else {
		s.offerMu.Unlock()
	}
	select {
	case <-e.done:
		return e.o, e.prefix, e.err
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
}

// ttl is how long e may be reused: an offer without a free slot only briefly, since a slot
// frees as soon as a job ends (kept for offerTTL, busy offers held submits on a full grid
// up to 1.3 s for nothing). Preconditions: e is done.
func (e *offerEntry) ttl() time.Duration {
	if e.err == nil && e.o != nil && e.o.SlotsFree == 0 {
		return busyOfferTTL
	}
	return offerTTL
}

// dropOffer forgets p's offer, after it refused a job its offer said it had room for.
func (s *Submitter) dropOffer(p peer.ID) {
	s.offerMu.Lock()
	defer s.offerMu.Unlock()
	if e := s.offerCache[p]; e != nil && isDone(e.done) {
		delete(s.offerCache, p)
	}
}

// pruneOffers drops expired entries once the cache is full. Preconditions: offerMu held.
func (s *Submitter) pruneOffers() {
	if len(s.offerCache) <= offerCacheMax {
		return
	}
	for p, e := range s.offerCache {
		if isDone(e.done) && time.Since(e.at) > offerTTL {
			delete(s.offerCache, p)
		}
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
