package dht

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	mh "github.com/multiformats/go-multihash"

	"github.com/gridnode/gridnode/cids"
)

// startNet starts n DHT nodes on a mocknet, all bootstrapped to the first, with a small bucket
// size so that lookups really route instead of every node holding every record.
func startNet(t *testing.T, n, bucket int) []*DHT {
	_, ds := startMesh(t, n, Config{BucketSize: bucket})
	return ds
}

// startMesh starts n DHT servers configured as cfg on a fully linked mocknet, every one
// bootstrapped to the first, and waits until each table holds min(n-1, cfg.BucketSize)
// peers. It returns the mocknet (for joining more peers) and the nodes.
func startMesh(t *testing.T, n int, cfg Config) (mocknet.Mocknet, []*DHT) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mn, err := mocknet.FullMeshLinked(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mn.Close() })
	hosts := mn.Hosts()
	boot := peer.AddrInfo{ID: hosts[0].ID(), Addrs: hosts[0].Addrs()}
	ds := make([]*DHT, n)
	for i, h := range hosts {
		c := cfg
		c.Mode, c.Bootstrap = ModeServer, nil
		if i > 0 {
			c.Bootstrap = []peer.AddrInfo{boot}
		}
		d, err := New(ctx, h, c)
		if err != nil {
			t.Fatal(err)
		}
		ds[i] = d
	}
	t.Cleanup(func() {
		for _, d := range ds {
			d.Close()
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, d := range ds {
		wg.Go(func() { errs[i] = d.Bootstrap(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("bootstrap node %d: %v", i, err)
		}
	}
	for i, d := range ds {
		if err := d.WaitReady(ctx, min(n-1, cfg.BucketSize)); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	return mn, ds
}

func TestNamespaceCIDMatchesRoutingDiscovery(t *testing.T) {
	ns := WorkerNamespace("linux/amd64")
	if ns != "gridnode/v1/workers/linux/amd64" {
		t.Fatalf("got %q", ns)
	}
	h, err := mh.Sum([]byte(ns), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := NamespaceCID(ns), cid.NewCidV1(cid.Raw, h); !got.Equals(want) {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestDiscovery(t *testing.T) {
	const n, bucket, workers = 40, 4, 6
	ds := startNet(t, n, bucket)
	// Small buckets keep routing tables partial, so that lookups below really route.
	smallest := n
	for i, d := range ds {
		got := d.Size()
		if got > n-1 {
			t.Errorf("node %d: got a routing table of %d peers, want at most %d", i, got, n-1)
		}
		smallest = min(smallest, got)
	}
	if smallest >= n-1 {
		t.Errorf("got a full routing table on every node, want at least one below %d peers", n-1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Workers are spread over the net; the searcher is none of them.
	ns := "gridnode/v1/workers/test/test"
	want := map[peer.ID]bool{}
	for i := range workers {
		w := ds[1+i*(n-2)/workers]
		ready := make(chan struct{})
		w.AnnounceLoop(ns, ready)
		select {
		case <-ready:
		case <-ctx.Done():
			t.Fatalf("worker %d never announced", i)
		}
		want[w.h.ID()] = true
	}
	for _, searcher := range []*DHT{ds[n-1], ds[0], ds[n/2+1]} {
		if want[searcher.h.ID()] {
			t.Fatal("bad test: searcher is a worker")
		}
		got, err := searcher.FindWorkers(ctx, ns)
		if err != nil {
			t.Fatal(err)
		}
		found := map[peer.ID]bool{}
		for _, ai := range got {
			if len(ai.Addrs) == 0 {
				t.Errorf("worker %s without addresses", ai.ID)
			}
			found[ai.ID] = true
		}
		if len(found) != len(want) {
			t.Errorf("searcher %s: got %d workers, want %d", searcher.h.ID(), len(found), len(want))
		}
		for p := range want {
			if !found[p] {
				t.Errorf("searcher %s: worker %s not found", searcher.h.ID(), p)
			}
		}
	}
	// A worker finds the others but not itself.
	w := ds[1]
	got, err := w.FindWorkers(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range got {
		if ai.ID == w.h.ID() {
			t.Error("FindWorkers returned self")
		}
	}
	if len(got) != workers-1 {
		t.Errorf("worker: got %d other workers, want %d", len(got), workers-1)
	}

	// Nothing announced under another namespace.
	if got, _ := ds[3].FindWorkers(ctx, "gridnode/v1/workers/plan9/mips"); len(got) != 0 {
		t.Errorf("empty namespace: got %d workers, want 0", len(got))
	}
}

func TestProvideBlob(t *testing.T) {
	const n = 30
	ds := startNet(t, n, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 5 {
		c := cids.Sum(fmt.Appendf(nil, "blob %d", i))
		prov := ds[(i*7+2)%n]
		if err := prov.Provide(ctx, c); err != nil {
			t.Fatal(err)
		}
		for _, other := range []*DHT{ds[(i*7+9)%n], ds[(i*7+20)%n]} {
			got := other.FindProviders(ctx, c)
			if len(got) != 1 || got[0].ID != prov.h.ID() {
				t.Errorf("blob %d: got providers %v, want [%s]", i, got, prov.h.ID())
			}
		}
	}
	if got := ds[4].FindProviders(ctx, cids.Sum([]byte("nobody has this"))); len(got) != 0 {
		t.Errorf("unknown blob: got %d providers, want 0", len(got))
	}
}

func TestBootstrapUnreachable(t *testing.T) {
	mn, err := mocknet.WithNPeers(2)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	hs := mn.Hosts() // not linked: dials fail
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := New(ctx, hs[0], Config{Bootstrap: []peer.AddrInfo{{ID: hs[1].ID(), Addrs: hs[1].Addrs()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Bootstrap(ctx); !errors.Is(err, ErrNoBootstrap) {
		t.Fatalf("got %v, want ErrNoBootstrap", err)
	}
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if err := d.WaitReady(short, 1); err == nil {
		t.Fatal("WaitReady on an empty table: got nil error")
	}
}

// TestAnnounceSchedule walks the announce loop's schedule through a failure, growth of the
// routing table and the periodic re-announcement, checking it never spins.
func TestAnnounceSchedule(t *testing.T) {
	now := time.Unix(1000, 0)
	s := announceSchedule{bucket: 20, every: 10 * time.Minute}
	s.reset()
	step := func(name string, size int, wantDue bool, ok bool, minWait time.Duration) {
		t.Helper()
		if got := s.due(now, size); got != wantDue {
			t.Fatalf("%s: due %v, want %v", name, got, wantDue)
		}
		if wantDue {
			s.done(now, size, ok)
		}
		if w := s.wait(now); w < minWait {
			t.Fatalf("%s: wait %s, want at least %s (no busy loop)", name, w, minWait)
		}
	}
	step("empty table fails", 0, true, false, 100*time.Millisecond)
	now = now.Add(50 * time.Millisecond)
	step("before the retry", 0, false, false, 50*time.Millisecond)
	now = now.Add(50 * time.Millisecond)
	step("retry succeeds", 3, true, true, announcePoll)
	now = now.Add(announcePoll)
	step("table unchanged", 3, false, false, announcePoll)
	step("table grew", 5, true, true, announcePoll)
	step("table full", 20, true, true, 10*time.Minute)
	now = now.Add(10 * time.Minute)
	step("period over", 20, true, true, 10*time.Minute)
	now = now.Add(time.Minute)
	step("addresses unchanged", 20, false, false, 9*time.Minute)
	s.addrsChanged()
	step("addresses changed", 20, true, true, 10*time.Minute)
}

// TestFindProvidersWithoutAddresses plants 48 provider records for peers that exist nowhere
// and carry no address, on a network whose links take 100 ms each way: FindProviders must
// not spend a DHT lookup on each, one after the other.
//
// Before (run once: every one looked up in turn, each lookup about 230 ms here, up to 5 s
// on a real network) the call took 11.1 s.
func TestFindProvidersWithoutAddresses(t *testing.T) {
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	mn.SetLinkDefaults(mocknet.LinkOptions{Latency: 100 * time.Millisecond})
	ds := make([]*DHT, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range ds {
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		if ds[i], err = New(ctx, h, Config{Mode: ModeServer}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ds[i].Close() })
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if err := d.WaitReady(ctx, 2); err != nil {
			t.Fatal(err)
		}
	}
	c := cids.Sum([]byte("planted"))
	for range 48 {
		p := randPeer(t)
		if err := ds[0].kad.ProviderStore().AddProvider(ctx, c.Hash(), peer.AddrInfo{ID: p}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	got := ds[0].FindProviders(ctx, c)
	took := time.Since(start)
	t.Logf("FindProviders took %v", took)
	if len(got) != 0 {
		t.Errorf("got %d providers, want none", len(got))
	}
	if took > resolveTimeout+2*time.Second {
		t.Errorf("took %v, want at most %v", took, resolveTimeout+2*time.Second)
	}
}

// randPeer is a fresh peer ID that no host has.
func randPeer(t *testing.T) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestClientDialsOnlyBootstrap: a client (a short-lived submitter) connects to its bootstrap
// peer and to no one else until it looks something up. A routing table refresh would dial
// every peer it hears of, NAT'd workers through a relay before the submitter's hole punching
// runs, so their job streams stayed relayed (the NAT lab, under load).
func TestClientDialsOnlyBootstrap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const servers = 6
	mn, err := mocknet.FullMeshLinked(servers + 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mn.Close() })
	hosts := mn.Hosts()
	boot := peer.AddrInfo{ID: hosts[0].ID(), Addrs: hosts[0].Addrs()}
	var ds []*DHT
	for i, h := range hosts {
		cfg := Config{Mode: ModeServer}
		if i > 0 {
			cfg.Bootstrap = []peer.AddrInfo{boot}
		}
		if i == servers {
			cfg.Mode = ModeClient
		}
		d, err := New(ctx, h, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		ds = append(ds, d)
	}
	for _, d := range ds[1:servers] {
		if err := d.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := ds[0].WaitReady(ctx, servers-1); err != nil {
		t.Fatal(err)
	}
	ns := "gridnode/v1/workers/test/test"
	worker := ds[servers-1]
	ready := make(chan struct{})
	worker.AnnounceWorker(ns, ready)
	select {
	case <-ready:
	case <-ctx.Done():
		t.Fatal("the worker never announced")
	}
	client := ds[servers]
	if err := client.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := client.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // a background refresh would have dialled by now
	if peers := client.h.Network().Peers(); len(peers) != 1 || peers[0] != boot.ID {
		t.Fatalf("the client is connected to %d peers %v after its bootstrap, want only the bootstrap peer %s", len(peers), peers, boot.ID)
	}
	// A lookup still walks the grid from the bootstrap peer.
	got, err := client.FindShard(ctx, ns, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != worker.h.ID() {
		t.Fatalf("found %v, want the worker %s", got, worker.h.ID())
	}
}
