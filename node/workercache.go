package node

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// workersTTL is how long the submitter reuses the DHT's answer to "which workers run
// arch": a lookup per submit cost a loopback grid about 12% of its CPU at 400 jobs/s,
// while provider records change on a scale of minutes (dht's announce schedule). A worker
// that left stays listed at most this long longer; its offer query fails fast.
const workersTTL = 2 * time.Second

// workerCache holds recent non-empty discover answers by architecture and lets
// concurrent submits share one lookup (findWorkers). It relies on the submitter taking its
// own resource manager's refusal (network.ErrResourceLimitExceeded) as BUSY: with lookups
// this cheap, concurrent submits open job streams faster than that manager allows per
// worker.
type workerCache struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*workersEntry
}

type workersEntry struct {
	done chan struct{} // closed once ais and err are set
	at   time.Time
	ais  []peer.AddrInfo
	err  error
}

// get returns the cached workers for arch when fresh; otherwise it calls find once for
// all callers waiting on arch and caches a non-empty answer.
func (c *workerCache) get(ctx context.Context, arch string, find func(context.Context) ([]peer.AddrInfo, error)) ([]peer.AddrInfo, error) {
	now := c.now()
	c.mu.Lock()
	if c.entries == nil {
		c.entries = make(map[string]*workersEntry)
	}
	e := c.entries[arch]
	if e != nil {
		select {
		case <-e.done:
			if e.err != nil || len(e.ais) == 0 || now.Sub(e.at) >= c.ttl {
				e = nil // stale or useless: look again
			}
		default: // a lookup in flight: wait for it below
		}
	}
	mine := e == nil
	if mine {
		e = &workersEntry{done: make(chan struct{})}
		c.entries[arch] = e
	}
	c.mu.Unlock()
	if mine {
		e.ais, e.err = find(ctx)
		e.at = c.now()
		close(e.done)
		return slices.Clone(e.ais), e.err
	}
	select {
	case <-e.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if e.err != nil || len(e.ais) == 0 {
		return find(ctx) // the shared lookup failed (perhaps by its caller's ctx): one of our own
	}
	return slices.Clone(e.ais), nil
}
