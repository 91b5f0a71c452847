package jobs

import (
	"context"
	mrand "math/rand/v2"
	"slices"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Anchors a submit asks whether discovery found them or not. On a sharded grid a submit's
// lookup draws one shard of many (docs/SCALE.md), so the workers that can anchor its quorum
// (the ones it trusts and the ones with an established record) were found about once in
// N/24 submits: on a grid of thousands nearly every submit failed with ErrNoTrust unless
// it also ran the job locally. A submit now also asks up to maxAnchorsAsked of them that
// can be reached, first, and waits for their offers (offers). Locate picks them from up
// to maxAnchorCandidates, trusted ones before established ones, each group in random
// order: switched-off machines and departed workers must not hold the places of
// reachable ones (four of them once failed every submit).
const (
	maxAnchorsAsked     = 4
	maxAnchorCandidates = 32
)

// anchorsFor returns up to maxAnchorCandidates workers that could anchor j's quorum, in the
// order they are to be tried, none of them in exclude or this submitter itself.
func (s *Submitter) anchorsFor(j *job, exclude map[peer.ID]bool) []peer.ID {
	self := s.cfg.Host.ID()
	ok := func(p peer.ID) bool { return p != self && p != "" && !exclude[p] }
	var trusted []peer.ID
	for p := range j.trusted {
		if ok(p) {
			trusted = append(trusted, p)
		}
	}
	out := pickRandom(trusted, maxAnchorCandidates)
	if left := maxAnchorCandidates - len(out); left > 0 {
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

// locate returns up to n of ps that can be reached, in ps's order: through
// SubmitterConfig.Locate, or else those connected or with addresses in the peerstore.
func (s *Submitter) locate(ctx context.Context, ps []peer.ID, n int) []peer.AddrInfo {
	if s.cfg.Locate != nil {
		return s.cfg.Locate(ctx, ps, n)
	}
	var out []peer.AddrInfo
	for _, p := range ps {
		ai := s.cfg.Host.Peerstore().PeerInfo(p)
		if len(out) < n && (len(ai.Addrs) > 0 || s.cfg.Host.Network().Connectedness(p) == network.Connected) {
			out = append(out, ai)
		}
	}
	return out
}

// locateAnchors runs locate for anchors while discovery runs (find), and returns what
// discovery found and the anchors to ask first (orderAnchors). When discovery found an
// anchor, it takes what locate has by then without waiting for its lookups.
func (s *Submitter) locateAnchors(ctx context.Context, anchors []peer.ID, find func() ([]peer.AddrInfo, error)) (found, first []peer.AddrInfo, err error) {
	if len(anchors) == 0 {
		found, err = find()
		return found, nil, err
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	located := make(chan []peer.AddrInfo, 1)
	go func() { located <- s.locate(lctx, anchors, maxAnchorsAsked) }()
	found, err = find()
	var loc []peer.AddrInfo
	if slices.ContainsFunc(found, func(ai peer.AddrInfo) bool { return slices.Contains(anchors, ai.ID) }) {
		select {
		case loc = <-located:
		default:
		}
	} else {
		loc = <-located
	}
	return found, orderAnchors(anchors, found, loc), err
}

// orderAnchors returns, in the anchors' order and at most maxAnchorsAsked, the anchors that
// locate found (it reached them) or discovery found (with the addresses it found them at,
// when it has some): an anchor found by neither could not be reached.
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
		if ai, ok := at[p]; ok && len(out) < maxAnchorsAsked {
			out = append(out, ai)
		}
	}
	return out
}
