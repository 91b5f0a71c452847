package node

import (
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
)

// Connection manager water marks: trimmed back to low when above high; peers with jobs in
// flight are protected by the jobs package.
const (
	connLow  = 64
	connHigh = 128
)

// perPeerStreams is how many inbound streams of each grid protocol one peer may have open.
// rcmgr allows 8 connections per IPv4 address (one identity each), so one machine holds at
// most 32 of a protocol's total (256 info, 64 blob, 256 job).
const perPeerStreams = 4

// newResourceManager returns libp2p's scaled default limits plus explicit limits for the
// grid's protocols: one peer cannot hold more than a few streams of each (an honest
// submitter needs one info stream per query and one job stream per replica), far below the
// totals, so that it takes many identities, not one, to fill a protocol's slots: with 32 job
// streams per peer, 9 identities holding 29 idle streams each took all 256 for a minute.
// Streams past a limit are reset before a handler runs. A larger flood (about 128 streams
// opened at once) exhausts the connection's memory budget for yamux receive windows, and
// yamux then drops the flooding peer's whole connection; other peers are not affected
// (TestAbuse, TestHostileStreams).
//
// jobsPerPeer is the per-peer limit for job streams: its unjudged requests (perPeerStreams)
// plus the slots it may hold, so a submitter can use its whole share of a big worker.
// metrics turns on rcmgr's Prometheus metrics (node/metrics.go registers them).
func newResourceManager(jobsPerPeer int, metrics bool) (network.ResourceManager, error) {
	cfg := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&cfg)

	// Per peer, over all protocols.
	cfg.PeerBaseLimit.StreamsInbound = 256
	cfg.PeerBaseLimit.Streams = 512
	cfg.PeerLimitIncrease = rcmgr.BaseLimitIncrease{}

	type lim struct {
		id            p2pproto.ID
		total, byPeer int
		mem           int64
	}
	for _, l := range []lim{
		{protocol.InfoID, 256, perPeerStreams, 4 << 20},
		{protocol.BlobID, 64, perPeerStreams, 128 << 20},
		{protocol.JobID, 256, jobsPerPeer, 64 << 20},
		{protocol.BatchID, 64, jobsPerPeer, 64 << 20}, // a batch is a job's stream with many jobs
		{protocol.CreditID, 32, 2, 1 << 20},           // one delivery per agreeing replica, best effort
	} {
		cfg.AddProtocolLimit(l.id,
			rcmgr.BaseLimit{StreamsInbound: l.total, StreamsOutbound: l.total, Streams: 2 * l.total, Memory: l.mem},
			rcmgr.BaseLimitIncrease{})
		cfg.AddProtocolPeerLimit(l.id,
			rcmgr.BaseLimit{StreamsInbound: l.byPeer, StreamsOutbound: l.byPeer, Streams: 2 * l.byPeer, Memory: l.mem / 4},
			rcmgr.BaseLimitIncrease{})
	}
	var opts []rcmgr.Option
	if !metrics {
		opts = append(opts, rcmgr.WithMetricsDisabled())
	}
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(cfg.AutoScale()), opts...)
}

// jobStreamsPerPeer is perPeerStreams plus the slots one peer may hold on this node.
func jobStreamsPerPeer(cfg Config) int {
	slots := cfg.Slots
	if slots <= 0 {
		slots = jobs.DefaultSlots()
	}
	share := cfg.SlotsPerPeer
	if share <= 0 {
		share = (slots + 1) / 2
	}
	return perPeerStreams + min(share, slots)
}

// A peer whose last connection closed is forgotten (its key, protocols, identify metadata
// and addresses leave the peerstore) forgetAfter later, unless it reconnected, is a
// bootstrap peer, is protected (jobs in flight) or is in the DHT's routing table. Peer IDs
// are free, and the peerstore kept every identity that ever connected (4.5-5.4 KiB each)
// until restart. forgetAfter is longer than a worker's re-announce period (a third of the
// provide validity), so a worker that keeps announcing to this node keeps its addresses in
// this node's provider records. At most forgetMax disconnected peers wait; past that the
// oldest are forgotten at once, which bounds what churn can pin to ~forgetMax x 5 KiB
// (~20 MiB) however fast identities come. Variables, for tests.
var (
	forgetAfter = 15 * time.Minute
	forgetMax   = 4096
)

// forgetQueue decides when disconnected peers are forgotten; it is pure, for testing.
type forgetQueue struct {
	after time.Duration
	max   int
	since map[peer.ID]time.Time // waiting peers, by when they disconnected
	order []forgetEntry         // disconnections, oldest first; entries not in since are stale
}

type forgetEntry struct {
	p  peer.ID
	at time.Time
}

func newForgetQueue(after time.Duration, max int) *forgetQueue {
	return &forgetQueue{after: after, max: max, since: make(map[peer.ID]time.Time)}
}

// disconnected records that p's last connection closed at now.
func (q *forgetQueue) disconnected(p peer.ID, now time.Time) {
	q.since[p] = now
	q.order = append(q.order, forgetEntry{p, now})
	if len(q.order) > 2*q.max+16 { // a peer that reconnects and leaves over and over
		live := q.order[:0]
		for _, e := range q.order {
			if at, ok := q.since[e.p]; ok && at.Equal(e.at) {
				live = append(live, e)
			}
		}
		clear(q.order[len(live):])
		q.order = live
	}
}

// connected records that p is connected again.
func (q *forgetQueue) connected(p peer.ID) { delete(q.since, p) }

// due removes and returns the peers to forget at now: those that left after ago or more,
// and the oldest beyond max.
func (q *forgetQueue) due(now time.Time) []peer.ID {
	var out []peer.ID
	for len(q.order) > 0 {
		e := q.order[0]
		if at, ok := q.since[e.p]; ok && at.Equal(e.at) {
			if now.Sub(e.at) < q.after && len(q.since) <= q.max {
				break
			}
			delete(q.since, e.p)
			out = append(out, e.p)
		}
		q.order[0] = forgetEntry{}
		q.order = q.order[1:]
	}
	return out
}
