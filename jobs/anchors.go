package jobs

import (
	"context"
	mrand "math/rand/v2"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Anchors a submit asks whether discovery found them or not. On a sharded grid a submit's
// lookup draws one shard of many (docs/SCALE.md), so the workers that can anchor its quorum
// (the ones it trusts and the ones with an established record) were found about once in
// N/24 submits: on a grid of thousands nearly every submit failed with ErrNoTrust unless
// it also ran the job locally. A submit now also asks up to maxAnchorsAsked of them,
// first: trusted ones before established ones, each group in random order.
const maxAnchorsAsked = 4

// anchorsFor returns up to maxAnchorsAsked workers that could anchor j's quorum, none of
// them in exclude or this submitter itself.
func (s *Submitter) anchorsFor(j *job, exclude map[peer.ID]bool) []peer.ID {
	self := s.cfg.Host.ID()
	ok := func(p peer.ID) bool { return p != self && p != "" && !exclude[p] }
	var trusted []peer.ID
	for p := range j.trusted {
		if ok(p) {
			trusted = append(trusted, p)
		}
	}
	out := pickRandom(trusted, maxAnchorsAsked)
	if left := maxAnchorsAsked - len(out); left > 0 {
		var est []peer.ID
		for _, p := range s.records.establishedPeers() {
			if ok(p) && !j.trusted[p] {
				est = append(est, p)
			}
		}
		out = append(out, pickRandom(est, left)...)
	}
	return out
}

// pickRandom returns up to n of ps in random order; it may reorder ps.
func pickRandom(ps []peer.ID, n int) []peer.ID {
	mrand.Shuffle(len(ps), func(a, b int) { ps[a], ps[b] = ps[b], ps[a] })
	return ps[:min(n, len(ps))]
}

// locate returns the addresses of those of ps the node can find: through
// SubmitterConfig.Locate, or else what the peerstore holds. A peer it cannot find is left
// out; a peer already connected needs no address.
func (s *Submitter) locate(ctx context.Context, ps []peer.ID) []peer.AddrInfo {
	if s.cfg.Locate != nil {
		return s.cfg.Locate(ctx, ps)
	}
	var out []peer.AddrInfo
	for _, p := range ps {
		ai := s.cfg.Host.Peerstore().PeerInfo(p)
		if len(ai.Addrs) > 0 || len(s.cfg.Host.Network().ConnsToPeer(p)) > 0 {
			out = append(out, ai)
		}
	}
	return out
}

// orderAnchors returns the anchors (in their order) that discovery found, with the
// addresses it found them at, or that locate found: an anchor found by neither is left
// out, since it could not be reached.
func orderAnchors(anchors []peer.ID, found, located []peer.AddrInfo) []peer.AddrInfo {
	at := make(map[peer.ID]peer.AddrInfo, len(found)+len(located))
	for _, ai := range located {
		at[ai.ID] = ai
	}
	for _, ai := range found {
		if _, ok := at[ai.ID]; !ok || len(ai.Addrs) > 0 {
			at[ai.ID] = ai
		}
	}
	var out []peer.AddrInfo
	for _, p := range anchors {
		if ai, ok := at[p]; ok {
			out = append(out, ai)
		}
	}
	return out
}
