package node

import (
	"runtime"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

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
func newResourceManager(jobsPerPeer int) (network.ResourceManager, error) {
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
	} {
		cfg.AddProtocolLimit(l.id,
			rcmgr.BaseLimit{StreamsInbound: l.total, StreamsOutbound: l.total, Streams: 2 * l.total, Memory: l.mem},
			rcmgr.BaseLimitIncrease{})
		cfg.AddProtocolPeerLimit(l.id,
			rcmgr.BaseLimit{StreamsInbound: l.byPeer, StreamsOutbound: l.byPeer, Streams: 2 * l.byPeer, Memory: l.mem / 4},
			rcmgr.BaseLimitIncrease{})
	}
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(cfg.AutoScale()), rcmgr.WithMetricsDisabled())
}

// jobStreamsPerPeer is perPeerStreams plus the slots one peer may hold on this node.
func jobStreamsPerPeer(cfg Config) int {
	slots := cfg.Slots
	if slots <= 0 {
		slots = runtime.NumCPU()
	}
	share := cfg.SlotsPerPeer
	if share <= 0 {
		share = (slots + 1) / 2
	}
	return perPeerStreams + min(share, slots)
}
