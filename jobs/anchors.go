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

// locateAnchors runs SubmitterConfig.Locate for anchors while discovery runs (find), and
// returns what discovery found and the anchors to ask first: only those Locate reached.
// Discovery's entry for an anchor proves nothing: it may be a switched-off machine's record
// (kept 30 min) or carry addresses that do not reach it, and taking it as found once
// skipped the wait for Locate and failed every submit (helper-47); Locate dials the
// addresses discovery put in the peerstore too. Without a Locate, the anchors discovery
// found and those connected or with addresses in the peerstore.
func (s *Submitter) locateAnchors(ctx context.Context, anchors []peer.ID, find func() ([]peer.AddrInfo, error)) (found, first []peer.AddrInfo, err error) {
	if len(anchors) == 0 {
		found, err = find()
		return found, nil, err
	}
	if s.cfg.Locate == nil {
		found, err = find()
		return found, s.knownAnchors(anchors, found), err
	}
	located := make(chan []peer.AddrInfo, 1)
	go func() { located <- s.cfg.Locate(ctx, anchors, maxAnchorsAsked) }()
	found, err = find()
	return found, <-located, err
}

// knownAnchors returns, in order and at most maxAnchorsAsked, the anchors in found or
// connected or with addresses in the peerstore.
func (s *Submitter) knownAnchors(anchors []peer.ID, found []peer.AddrInfo) []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, p := range anchors {
		ai := s.cfg.Host.Peerstore().PeerInfo(p)
		if i := slices.IndexFunc(found, func(f peer.AddrInfo) bool { return f.ID == p }); i >= 0 && len(found[i].Addrs) > 0 {
			ai = found[i]
		}
		if len(out) < maxAnchorsAsked && (len(ai.Addrs) > 0 || s.cfg.Host.Network().Connectedness(p) == network.Connected) {
			out = append(out, ai)
		}
	}
	return out
}
