package jobs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// findExcept makes the grid's discovery return every worker but those of idx, as a sharded
// DHT's lookup of a shard they are not in does.
func (g *grid) findExcept(idx ...int) {
	var ais []peer.AddrInfo
	for i, h := range g.hosts {
		if !slices.Contains(idx, i) {
			ais = append(ais, addrInfo(h))
		}
	}
	g.sub.cfg.FindWorkers = findOnly(ais...)
}

// anchoredBy returns the workers of rep's replicas that anchored its quorum, and how.
func anchoredBy(rep *Report) map[peer.ID]string {
	out := map[peer.ID]string{}
	for _, r := range rep.Replicas {
		if r.Anchor != "" && r.Err == nil {
			out[r.Worker] = r.Anchor
		}
	}
	return out
}

// TestAnchorsAskedWhenNotFound: the one trusted worker is not in discovery's answer (on a
// sharded grid a submit draws one shard of many). The submit still asks it, located
// through Locate or the peerstore, and its replica anchors the quorum. Before, every such
// submit failed with ErrNoTrust (run once with anchorsFor returning nil: "submit: no
// trusted or established worker").
func TestAnchorsAskedWhenNotFound(t *testing.T) {
	for _, how := range []string{"locate", "peerstore"} {
		t.Run(how, func(t *testing.T) {
			g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
			g.trustOnly(0)
			g.findExcept(0)
			anchor := g.hosts[0].ID()
			var mu sync.Mutex
			var asked [][]peer.ID
			switch how {
			case "locate":
				g.sub.cfg.Locate = func(ctx context.Context, ps []peer.ID, n int) []peer.AddrInfo {
					mu.Lock()
					asked = append(asked, slices.Clone(ps))
					mu.Unlock()
					var out []peer.AddrInfo
					for _, p := range ps {
						if p == anchor {
							out = append(out, addrInfo(g.hosts[0]))
						}
					}
					return out
				}
			case "peerstore":
				g.subHost.Peerstore().AddAddrs(anchor, g.hosts[0].Addrs(), peerstore.TempAddrTTL)
			}
			for i := range 3 {
				rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("hi"), SamePrefix: true})
				if err != nil {
					t.Fatalf("submit %d: %v", i, err)
				}
				if string(rep.Output) != "HI" || anchoredBy(rep)[anchor] != "trusted" {
					t.Fatalf("submit %d: output %q anchored by %v, want HI anchored by the trusted worker", i, rep.Output, anchoredBy(rep))
				}
			}
			if how == "locate" {
				for _, ps := range asked {
					if !slices.Equal(ps, []peer.ID{anchor}) {
						t.Errorf("Locate asked for %v, want only the anchor", ps)
					}
				}
				if len(asked) == 0 {
					t.Error("Locate was never asked")
				}
			}
		})
	}
}

// TestEstablishedAnchorAskedWhenNotFound: with nothing trusted, a worker with an
// established record that discovery does not return is asked and anchors the quorum.
func TestEstablishedAnchorAskedWhenNotFound(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	g.trustOnly()
	g.findExcept(2)
	est := g.hosts[2].ID()
	now := time.Now()
	for range Established {
		g.sub.Records().note(est, agreed, now)
	}
	g.subHost.Peerstore().AddAddrs(est, g.hosts[2].Addrs(), peerstore.TempAddrTTL)
	rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("hi"), SamePrefix: true})
	if err != nil {
		t.Fatal(err)
	}
	if anchoredBy(rep)[est] != "established" {
		t.Errorf("anchored by %v, want the established worker", anchoredBy(rep))
	}
}

// TestAnchorsAskedFirst: discovery returns the trusted worker among 11 strangers, last.
// The submitter asks offerQueries candidates at a time and stops at MaxReplicas+Replicas
// offers, so, in a random order, the trusted worker was not asked in about half the
// submits, which then failed with ErrNoTrust; asked first, it is in every one.
func TestAnchorsAskedFirst(t *testing.T) {
	cfgs := make([]WorkerConfig, 12)
	for i := range cfgs {
		cfgs[i] = WorkerConfig{Runner: upper}
	}
	g := newGrid(t, cfgs...)
	g.trustOnly(11)
	g.findExcept() // all of them, the trusted one last
	for i := range 8 {
		// Strangers that agreed with 3 anchored quorums would anchor too: none may.
		g.sub.records, _ = OpenRecords("")
		rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("hi"), SamePrefix: true})
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		if anchoredBy(rep)[g.hosts[11].ID()] != "trusted" {
			t.Fatalf("submit %d anchored by %v, want the trusted worker", i, anchoredBy(rep))
		}
	}
}

// TestAnchorsFor: trusted workers come before established ones, never the submitter
// itself or a worker excluded (one that had the job); at most maxAnchorCandidates.
func TestAnchorsFor(t *testing.T) {
	g := newGrid(t)
	ids := make([]peer.ID, 8)
	for i := range ids {
		ids[i] = peer.ID(string(rune('a' + i)))
	}
	now := time.Now()
	for _, p := range ids[2:] {
		for range Established {
			g.sub.Records().note(p, agreed, now)
		}
	}
	g.sub.Records().note(ids[7], disagreed, now) // no longer established
	j := &job{trusted: map[peer.ID]bool{ids[0]: true, ids[1]: true, g.subHost.ID(): true}}
	many := &job{trusted: map[peer.ID]bool{}}
	for i := range 2 * maxAnchorCandidates {
		many.trusted[peer.ID(fmt.Sprint(i))] = true
	}
	if got := g.sub.anchorsFor(many, nil); len(got) != maxAnchorCandidates {
		t.Errorf("%d trusted: got %d candidates, want %d", len(many.trusted), len(got), maxAnchorCandidates)
	}
	for range 20 {
		got := g.sub.anchorsFor(j, map[peer.ID]bool{ids[3]: true})
		if len(got) != 6 { // 2 trusted, ids 2, 4, 5 and 6 established
			t.Fatalf("got %v, want 6 anchors", got)
		}
		if !slices.Contains(got[:2], ids[0]) || !slices.Contains(got[:2], ids[1]) {
			t.Fatalf("got %v, want the two trusted ones first", got)
		}
		for _, p := range got[2:] {
			if p == ids[3] || p == ids[7] || p == g.subHost.ID() || !g.sub.Records().Get(p).established() {
				t.Fatalf("got %v: %s is excluded, not established or the submitter", got, p)
			}
		}
	}
}
