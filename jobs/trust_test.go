package jobs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

func TestTallyAnchorsAndPrefixes(t *testing.T) {
	good, bad := Verdict{Status: "exited", OutputCID: cids.Sum([]byte("good"))}, Verdict{Status: "exited", OutputCID: cids.Sum([]byte("bad"))}
	v := func(x Verdict, prefix string, anchored bool) vote {
		return vote{v: x, prefix: prefix, anchored: anchored}
	}
	tests := []struct {
		name        string
		quorum      int
		distinct    bool
		votes       []vote
		accepted    *Verdict
		short       int
		wantsAnchor bool
	}{
		{"nothing yet", 2, true, nil, nil, 2, false},
		{"two strangers agree: not enough", 2, true, []vote{v(bad, "a", false), v(bad, "b", false)}, nil, 1, true},
		{"two strangers and an anchor", 2, true, []vote{v(bad, "a", false), v(good, "c", true), v(good, "b", false)}, &good, 0, false},
		{"one prefix counts once", 2, true, []vote{v(good, "a", true), v(good, "a", false)}, nil, 1, false},
		{"one prefix, same-prefix allowed", 2, false, []vote{v(good, "a", true), v(good, "a", false)}, &good, 0, false},
		{"anchored disagreement", 2, true, []vote{v(good, "a", true), v(bad, "b", true)}, nil, 1, false},
		{"quorum of one needs the anchor", 1, true, []vote{v(bad, "a", false)}, nil, 1, true},
		{"quorum of one, anchored", 1, true, []vote{v(good, "a", true)}, &good, 0, false},
		{"late votes do not count", 2, true, []vote{v(good, "a", true), v(good, "b", false), v(bad, "c", true), v(bad, "d", true)}, &good, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTally(tt.quorum, tt.distinct)
			for _, x := range tt.votes {
				tl.add(x)
			}
			if (tl.accepted == nil) != (tt.accepted == nil) || (tl.accepted != nil && *tl.accepted != *tt.accepted) {
				t.Errorf("accepted %v, want %v", tl.accepted, tt.accepted)
			}
			if got := tl.short(); got != tt.short {
				t.Errorf("short %d, want %d", got, tt.short)
			}
			if got := tl.wantsAnchor(); got != tt.wantsAnchor {
				t.Errorf("wantsAnchor %v, want %v", got, tt.wantsAnchor)
			}
		})
	}
}

func TestPick(t *testing.T) {
	c := func(id, prefix, anchor string) *candidate {
		return &candidate{offer: &protocol.Offer{Peer: peer.ID(id)}, prefix: prefix, anchor: anchor}
	}
	cs := []*candidate{c("a", "p1", ""), c("b", "p1", "trusted"), c("c", "p2", "")}
	tests := []struct {
		name       string
		sent       []string
		prefixes   []string
		wantAnchor bool
		distinct   bool
		want       string
	}{
		{"first in order", nil, nil, false, true, "a"},
		{"a new prefix first", []string{"a"}, []string{"p1"}, false, true, "c"},
		{"same prefix allowed", []string{"a"}, []string{"p1"}, false, false, "b"},
		{"anchor wanted beats prefix", []string{"a"}, []string{"p1"}, true, true, "b"},
		{"none left", []string{"a", "b", "c"}, nil, false, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent, prefixes := map[peer.ID]bool{}, map[string]bool{}
			for _, s := range tt.sent {
				sent[peer.ID(s)] = true
			}
			for _, p := range tt.prefixes {
				prefixes[p] = true
			}
			got := pick(cs, sent, prefixes, tt.wantAnchor, tt.distinct)
			if name := ""; got != nil {
				name = string(got.offer.Peer)
				if name != tt.want {
					t.Errorf("picked %q, want %q", name, tt.want)
				}
			} else if tt.want != "" {
				t.Errorf("picked none, want %q", tt.want)
			}
		})
	}
}

func TestNetPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"/ip4/203.0.113.77/tcp/4001":          "203.0.113.0/24",
		"/ip4/203.0.113.9/udp/4001/quic-v1":   "203.0.113.0/24",
		"/ip6/2001:db8:1234:5678::1/tcp/4001": "2001:db8:1234::/48",
		"/ip6/::ffff:198.51.100.7/tcp/1":      "198.51.100.0/24",
		"/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWLRPJAA5o6xqYqKTBg6DZJTe8WtPWgEQY3J1zRP8A2tSj/p2p-circuit": "relayed",
		"/ip6/2002:c633:6401::1/tcp/1":  "198.51.100.0/24",                   // 6to4
		"/ip6/64:ff9b::c633:6407/tcp/1": "198.51.100.0/24",                   // NAT64
		"/ip4/127.0.0.1/tcp/1":          "loopback " + peer.ID("p").String(), // each peer on this machine is its own
		"/dns4/example.com/tcp/1":       "/dns4/example.com/tcp/1",
	} {
		if got := netPrefix(ma.StringCast(in), "p"); got != want {
			t.Errorf("netPrefix(%s) = %q, want %q", in, got, want)
		}
	}
}

// TestRecordsPersistAndMerge: records survive a restart, two processes' updates to one file
// are merged (none lost), a corrupt file is an error that says what to do, and the file
// stays bounded.
func TestRecordsPersistAndMerge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "workers.json")
	a, err := OpenRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	w1, w2 := newHost(t).ID(), newHost(t).ID()
	a.note(w1, agreed, now)
	a.note(w1, agreed, now)
	b.note(w1, disagreed, now)
	b.note(w2, timedOut, now)
	if err := a.Save(); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(); err != nil {
		t.Fatal(err)
	}
	c, err := OpenRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Get(w1); r.Agreed != 2 || r.Disagreed != 1 || r.FirstSeen.IsZero() {
		t.Errorf("w1 after both saves: %+v, want 2 agreed and 1 disagreed", r)
	}
	if r := c.Get(w2); r.TimedOut != 1 {
		t.Errorf("w2: %+v, want 1 timeout", r)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRecords(path); err == nil || !strings.Contains(err.Error(), "move it away") {
		t.Errorf("corrupt records: got %v, want an error saying what to do", err)
	}
	m := map[peer.ID]Record{}
	for i := range 30 {
		m[peer.ID(rune('a'+i))] = Record{LastSeen: now.Add(time.Duration(i) * time.Second)}
	}
	bound(m, 10)
	if len(m) != 10 || m[peer.ID(rune('a'+29))].LastSeen.IsZero() || m["a"] != (Record{}) {
		t.Errorf("bound kept %d records (want the 10 seen last)", len(m))
	}
}

// TestNoTrustedQuorumFailsUpFront: on a grid where no worker is trusted or has a record, a
// submit fails before any job is sent and says how to bootstrap trust. With the defence
// off (no anchor needed) two strangers' word was accepted.
func TestNoTrustedQuorumFailsUpFront(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	g.trustOnly()
	_, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("x")})
	if !errors.Is(err, ErrNoTrust) || !strings.Contains(err.Error(), "--verify-local") {
		t.Fatalf("got %v, want ErrNoTrust naming the ways out", err)
	}
	if n := g.opened(protocol.JobID); n != 0 {
		t.Errorf("%d job streams opened, want none", n)
	}
}

// TestVerifyLocalAnchors: strangers' replicas are accepted when this machine's own run
// agrees, and they earn records; after Established such jobs they anchor quorums alone.
func TestVerifyLocalAnchors(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	g.trustOnly()
	g.sub.cfg.Local = upper
	ctx := context.Background()
	established := func() bool {
		return g.sub.Records().Get(g.hosts[0].ID()).established() && g.sub.Records().Get(g.hosts[1].ID()).established()
	}
	// A replica that answers after the quorum is not needed, so it may take a few more jobs
	// than Established for both to get there.
	for i := 0; !established(); i++ {
		if i == Established {
			t.Fatalf("after %d anchored jobs, records %+v and %+v, want both established", i, g.sub.Records().Get(g.hosts[0].ID()), g.sub.Records().Get(g.hosts[1].ID()))
		}
		// A quorum of all three (the local run is one), so that neither worker's replica
		// is left not needed.
		rep, err := g.sub.Submit(ctx, Request{Binary: testBinary, Input: []byte("hi"), Replicas: 2, Quorum: 3, VerifyLocal: true})
		if err != nil || string(rep.Output) != "HI" {
			t.Fatalf("submit %d with --verify-local: %v", i, err)
		}
		if !slices.ContainsFunc(rep.Replicas, func(r Replica) bool { return r.Local && r.Err == nil }) {
			t.Fatalf("submit %d: no local replica in %+v", i, rep.Replicas)
		}
	}
	g.sub.order = nil
	rep, err := g.sub.Submit(ctx, Request{Binary: testBinary, Input: []byte("ok")})
	if err != nil || string(rep.Output) != "OK" {
		t.Fatalf("submit without --verify-local once the workers are established: %v", err)
	}
}

// TestLiarPlacedFirstIsOutvotedAndAvoided: a trusted liar placed first is outvoted by two
// honest workers, recorded as disagreeing, and then almost never placed.
func TestLiarPlacedFirstIsOutvotedAndAvoided(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: liar}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	g.placeFirst(g.hosts[0].ID())
	ctx := context.Background()
	rep, err := g.sub.Submit(ctx, Request{Binary: testBinary, Input: []byte("hi"), Replicas: 2, SamePrefix: true})
	if err != nil || string(rep.Output) != "HI" {
		t.Fatalf("got %v, %v; want the honest output", rep, err)
	}
	liarID := g.hosts[0].ID()
	if r := g.sub.Records().Get(liarID); r.Disagreed != 1 {
		t.Errorf("liar's record %+v, want one disagreement", r)
	}
	g.sub.order = nil
	placed := 0
	for range 20 {
		rep, err := g.sub.Submit(ctx, Request{Binary: testBinary, Input: []byte("again"), Replicas: 2, SamePrefix: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rep.Replicas {
			if r.Worker == liarID {
				placed++
			}
		}
	}
	if placed > 2 {
		t.Errorf("the recorded liar was given %d of 20 later jobs, want it avoided", placed)
	}
}

// TestLiarsWithoutHonestQuorumFail: two strangers that agree on a forged output, and one
// trusted honest worker: M is reached without an accepted verdict, and the forged output
// is never returned.
func TestLiarsWithoutHonestQuorumFail(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: liar}, WorkerConfig{Runner: liar}, WorkerConfig{Runner: upper})
	g.trustOnly(2)
	g.placeFirst(g.hosts[0].ID(), g.hosts[1].ID())
	rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("hi"), Replicas: 2, MaxReplicas: 3, SamePrefix: true})
	if !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("got %v, want ErrNoQuorum", err)
	}
	if rep == nil || len(rep.Output) != 0 || rep.Status != "" {
		t.Errorf("a failed submit returned output %q status %q", rep.Output, rep.Status)
	}
	if len(rep.Replicas) != 3 {
		t.Errorf("%d replicas, want all 3 (M)", len(rep.Replicas))
	}
}

// TestStrangersCannotFormAQuorumAlone runs many submits on a grid of three established
// honest workers and two fresh liars that agree: the forged output is never accepted.
func TestStrangersCannotFormAQuorumAlone(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper},
		WorkerConfig{Runner: liar}, WorkerConfig{Runner: liar})
	g.trustOnly()
	now := time.Now()
	for i := range 3 {
		for range Established {
			g.sub.Records().note(g.hosts[i].ID(), agreed, now)
		}
	}
	g.placeFirst(g.hosts[3].ID(), g.hosts[4].ID()) // the liars first, every time: the worst placement
	for i := range 20 {
		rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("hi"), SamePrefix: true})
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		if string(rep.Output) != "HI" {
			t.Fatalf("submit %d accepted %q", i, rep.Output)
		}
	}
}

// TestSubmitWaitsForASlot: with every slot busy a submit waits (and says so) instead of
// failing, and runs once a slot is free; with a timeout it gives up with the deadline.
func TestSubmitWaitsForASlot(t *testing.T) {
	b := newBlocker()
	gate := make(chan struct{})
	var once sync.Once
	busyThenUpper := RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		first := false
		once.Do(func() { first = true })
		if first {
			b.started <- struct{}{}
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
		return upper(ctx, job, lim)
	})
	g := newGrid(t, WorkerConfig{Runner: busyThenUpper, Slots: 1})
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := g.sub.Submit(ctx, Request{Binary: testBinary, Input: []byte("one"), Replicas: 1})
		first <- err
	}()
	recv(t, b.started, "the first job to hold the slot")
	tctx, cancel := context.WithTimeout(ctx, 600*time.Millisecond)
	_, err := g.sub.Submit(tctx, Request{Binary: testBinary, Input: []byte("two"), Replicas: 1})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("submit on a busy grid with a timeout: %v, want the deadline", err)
	}
	second := make(chan error, 1)
	go func() {
		rep, err := g.sub.Submit(ctx, Request{Binary: testBinary, Input: []byte("two"), Replicas: 1})
		if err == nil && string(rep.Output) != "TWO" {
			err = errors.New("wrong output " + string(rep.Output))
		}
		second <- err
	}()
	waitFor(t, "the submitter to say it waits", func() bool { return g.said("waiting for a free slot") })
	close(gate)
	if err := recv(t, first, "the first submit"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, second, "the waiting submit"); err != nil {
		t.Fatal(err)
	}
}

// said reports whether a progress line contains s.
func (g *grid) said(s string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.ContainsFunc(g.progress, func(m string) bool { return strings.Contains(m, s) })
}

// TestAdaptiveReplication: a worker with a long record runs most jobs alone, and about
// adaptiveCheck of them are still replicated.
func TestAdaptiveReplication(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	g.trustOnly()
	now := time.Now()
	for _, h := range g.hosts {
		for range adaptiveAgreed {
			g.sub.Records().note(h.ID(), agreed, now)
		}
	}
	const n = 100
	replicated := 0
	for range n {
		rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("a"), Adaptive: true, SamePrefix: true})
		if err != nil || string(rep.Output) != "A" {
			t.Fatal(err)
		}
		if len(rep.Replicas) > 1 {
			replicated++
		}
	}
	if replicated == 0 || replicated > 30 {
		t.Errorf("%d of %d adaptive jobs replicated, want about %d", replicated, n, int(n*adaptiveCheck))
	}
}
