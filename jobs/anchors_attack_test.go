package jobs

// Attack review of c7f79f2 (anchors asked first, located when discovery did not find
// them; helper-46). TestAnchorAttackOfflineTrustedCrowdOut and
// TestAnchorAttackAskedFirstNotHeard failed there (anchors.go and offers answer them); the
// others are defences that held.

import (
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// anchAtkID is a fresh peer ID nobody runs: a switched-off machine, an identity that left.
func anchAtkID(t testing.TB) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// anchAtkLocate is a Locate that finds only the given workers (what node.locate gives for
// an owner's switched-off machine: nothing), counting its calls and the IDs asked.
func anchAtkLocate(calls *atomic.Int64, asked *sync.Map, ais ...peer.AddrInfo) func(context.Context, []peer.ID, int) []peer.AddrInfo {
	return func(ctx context.Context, ps []peer.ID, n int) []peer.AddrInfo {
		calls.Add(1)
		var out []peer.AddrInfo
		for _, p := range ps {
			if asked != nil {
				asked.Store(p, true)
			}
			for _, ai := range ais {
				if ai.ID == p && len(out) < n {
					out = append(out, ai)
				}
			}
		}
		return out
	}
}

// TestAnchorAttackOfflineTrustedCrowdOut: anchorsFor draws up to 4 trusted workers at
// random, then fills with established ones, without regard to whether they can be located;
// one that locate cannot find is dropped and not replaced. So an owner's switched-off
// machines (the case the node's miss cache is for) take the anchor slots:
//
//   - "four-off": 4 trusted machines switched off and one established worker the shard
//     lookup did not return (but locate finds): the established worker is never asked,
//     every submit fails ErrNoTrust, as before the change.
//   - "seven-off": 1 reachable trusted worker not returned by discovery plus 7 trusted
//     IDs that are offline (or a per-request Request.Trust list a local caller passes): the
//     reachable one is drawn in 4 of 8 submits; the rest fail ErrNoTrust.
//   - "sybils-left": nothing trusted; 12 identities of one stranger earned established
//     records (3 agreements each with quorums the owner anchored) and went offline: records
//     do not expire, so they hold 4 anchor draws of 13 against the one honest established
//     worker, in every submit, for good (and each costs a DHT lookup a minute).
func TestAnchorAttackOfflineTrustedCrowdOut(t *testing.T) {
	const submits = 16
	for _, tc := range []struct {
		name     string
		offline  int
		est      bool // the reachable anchor is established, not trusted
		estSybil bool // the offline ones are established records, not trusted
	}{{"four-off", 4, true, false}, {"seven-off", 7, false, false}, {"sybils-left", 12, true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
			anchor := g.hosts[0].ID()
			if tc.est {
				g.trustOnly()
				for range Established {
					g.sub.Records().note(anchor, agreed, time.Now())
				}
			} else {
				g.trustOnly(0)
			}
			for range tc.offline {
				id := anchAtkID(t)
				if !tc.estSybil {
					g.sub.Trust(id)
					continue
				}
				for range Established {
					g.sub.Records().note(id, agreed, time.Now())
				}
			}
			g.findExcept(0) // the shard drawn does not hold the anchor
			var calls atomic.Int64
			var asked sync.Map
			g.sub.cfg.Locate = anchAtkLocate(&calls, &asked, addrInfo(g.hosts[0]))
			failed := 0
			for i := range submits {
				_, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("hi"), SamePrefix: true})
				switch {
				case errors.Is(err, ErrNoTrust):
					failed++
				case err != nil:
					t.Fatalf("submit %d: %v", i, err)
				}
			}
			_, anchorAsked := asked.Load(anchor)
			t.Logf("%d offline anchors + 1 reachable one discovery misses: %d of %d submits failed ErrNoTrust (reachable anchor ever located: %v)", tc.offline, failed, submits, anchorAsked)
			if failed > 0 {
				t.Errorf("%d of %d submits failed ErrNoTrust although the anchor could be located: the anchor slots went to %d anchors locate could not find, and none was replaced", failed, submits, tc.offline)
			}
		})
	}
}

// TestAnchorAttackWrongPeerNotAnchor: Locate (a hostile FIND_NODE answer, dht.FindPeer's
// fallback) gives the trusted anchor's ID with another worker's addresses. The dial's
// handshake and the offer's signature are checked against the anchor's ID, so the other
// worker is not counted as the anchor and the submit fails ErrNoTrust: the defence held.
func TestAnchorAttackWrongPeerNotAnchor(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: liar}, WorkerConfig{Runner: liar})
	g.trustOnly()
	anchor := anchAtkID(t) // the trusted machine, not running
	g.sub.Trust(anchor)
	g.findExcept()
	var calls atomic.Int64
	g.sub.cfg.Locate = anchAtkLocate(&calls, nil, peer.AddrInfo{ID: anchor, Addrs: g.hosts[1].Addrs()})
	rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("hi"), SamePrefix: true})
	if !errors.Is(err, ErrNoTrust) && !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("submit with the anchor located at a liar's address: err %v, output %q, anchored by %v; want no trust", err, rep.Output, anchoredBy(rep))
	}
	if rep != nil {
		for _, r := range rep.Replicas {
			if r.Worker == anchor || r.Anchor != "" {
				t.Errorf("replica %+v counted as the anchor", r)
			}
		}
	}
}

// TestAnchorAttackRetryNeverReasks: a trusted anchor discovery never returns fails its
// replica; when the candidates run out the submitter asks again with the workers that had
// the job excluded. The anchor is asked first in every findFit, but never again once it
// had the job: the exclude map held.
func TestAnchorAttackRetryNeverReasks(t *testing.T) {
	boom := RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		return sandbox.Result{}, errors.New("boom")
	})
	g := newGrid(t, WorkerConfig{Runner: boom}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	g.trustOnly(0)
	g.subHost.Peerstore().AddAddrs(g.hosts[0].ID(), g.hosts[0].Addrs(), peerstore.TempAddrTTL)
	var finds atomic.Int64
	g.sub.cfg.FindWorkers = func(ctx context.Context, arch string) ([]peer.AddrInfo, error) {
		if finds.Add(1) == 1 {
			return []peer.AddrInfo{addrInfo(g.hosts[1])}, nil
		}
		return []peer.AddrInfo{addrInfo(g.hosts[1]), addrInfo(g.hosts[2])}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := g.sub.Submit(ctx, Request{Binary: testBinary, Input: []byte("hi"), SamePrefix: true, Replicas: 2, MaxReplicas: 5})
	jobs0 := g.hosts[0].(*countingHost).opened(protocol.JobID)
	t.Logf("submit: %v; %d finds; the failing anchor got %d job streams; replicas %d", err, finds.Load(), jobs0, len(rep.Replicas))
	if finds.Load() < 2 {
		t.Fatalf("bad test: the submitter did not rediscover (%d finds)", finds.Load())
	}
	if jobs0 != 1 {
		t.Errorf("the anchor that had the job (and failed) was sent it %d times", jobs0)
	}
}

// TestAnchorAttackBatchAnchored: SubmitBatch with the one trusted worker outside
// discovery's answer: its batch and its single (large-input) jobs are anchored by it. The
// single jobs run through Submit, up to batchSettle at once, and each calls Locate for
// the same anchor: logged (node.locate shares no lookup between them: see
// node/locate_attack_test.go).
func TestAnchorAttackBatchAnchored(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper, Slots: 8}, WorkerConfig{Runner: upper, Slots: 8}, WorkerConfig{Runner: upper, Slots: 8})
	g.trustOnly(0)
	g.findExcept(0)
	var calls atomic.Int64
	g.sub.cfg.Locate = anchAtkLocate(&calls, nil, addrInfo(g.hosts[0]))
	inputs := [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	for range 8 {
		inputs = append(inputs, make([]byte, BatchMaxInput+1)) // single jobs
	}
	reps, errs := batchRun(t, g, Request{Binary: testBinary, SamePrefix: true}, inputs)
	for i := range inputs {
		if errs[i] != nil {
			t.Errorf("job %d: %v", i, errs[i])
			continue
		}
		if anchoredBy(reps[i])[g.hosts[0].ID()] != "trusted" {
			t.Errorf("job %d anchored by %v, want the trusted worker", i, anchoredBy(reps[i]))
		}
	}
	t.Logf("%d jobs (8 single): Locate called %d times for the same one anchor", len(inputs), calls.Load())
}

// TestAnchorAttackCancelledLocate: a Locate that is slow (a stalled DHT lookup) does not
// hold a submit past its context, and the submit's goroutines end: held.
func TestAnchorAttackCancelledLocate(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	g.trustOnly()
	g.sub.Trust(anchAtkID(t))
	g.findExcept()
	var inLocate atomic.Int64
	g.sub.cfg.Locate = func(ctx context.Context, ps []peer.ID, n int) []peer.AddrInfo {
		inLocate.Add(1)
		defer inLocate.Add(-1)
		<-ctx.Done()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := g.sub.Submit(ctx, Request{Binary: testBinary, Input: []byte("hi"), SamePrefix: true})
	took := time.Since(start)
	if err == nil || took > 2*time.Second {
		t.Errorf("submit with a stalled Locate: %v after %v, want an error within the 300 ms context", err, took)
	}
	waitFor(t, "Locate to return", func() bool { return inLocate.Load() == 0 })
	if !slices.Contains([]bool{errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrNoTrust), errors.Is(err, ErrNoWorkers)}, true) {
		t.Logf("error: %v", err)
	}
}

// anchAtkFar is a submitter's host to which one peer is d farther away than the others: a
// stream to it opens d later (a worker across an ocean, or reached over a relay, among
// strangers nearby).
type anchAtkFar struct {
	host.Host
	far peer.ID
	d   time.Duration
}

func (h *anchAtkFar) NewStream(ctx context.Context, p peer.ID, ids ...p2pproto.ID) (network.Stream, error) {
	if p == h.far {
		select {
		case <-time.After(h.d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h.Host.NewStream(ctx, p, ids...)
}

// TestAnchorAttackAskedFirstNotHeard: the anchor is asked first, but offers returns once
// MaxReplicas+Replicas (7) offers fit, in the order they arrive: 7 strangers that answer
// before the anchor push it out, and the submit fails ErrNoTrust although its trusted
// worker was asked and answered. Here the trusted worker is 50 ms farther away than 11
// strangers (submits more than offerTTL apart: no cached offers). This is also why
// TestAnchorsAskedFirst is flaky (go test -count=10 -run TestAnchorsAskedFirst ./jobs
// failed in 5 of 10 runs here, "none of the 7 workers that can take the job is
// trusted"): there all answer at loopback speed and the anchor's is sometimes 8th.
func TestAnchorAttackAskedFirstNotHeard(t *testing.T) {
	cfgs := make([]WorkerConfig, 12)
	for i := range cfgs {
		cfgs[i] = WorkerConfig{Runner: upper}
	}
	g := newGrid(t, cfgs...)
	g.trustOnly(11)
	g.findExcept()
	g.sub.cfg.Host = &anchAtkFar{Host: g.subHost, far: g.hosts[11].ID(), d: 50 * time.Millisecond}
	const submits = 8
	failed := 0
	for i := range submits {
		g.sub.offerMu.Lock()
		g.sub.offerCache = nil // submits more than offerTTL apart
		g.sub.offerMu.Unlock()
		_, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("hi"), SamePrefix: true})
		switch {
		case errors.Is(err, ErrNoTrust):
			failed++
		case err != nil:
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	t.Logf("trusted worker 50 ms farther than 11 strangers, asked first: %d of %d submits failed ErrNoTrust", failed, submits)
	if failed > 0 {
		t.Errorf("%d of %d submits failed ErrNoTrust: the anchor was asked first, but the offers of 7 nearer strangers filled the submit's want before its answer came", failed, submits)
	}
}
