package jobs

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/internal/testelf"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/store"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// transform returns a runner that exits 0 with f(stdin) as output.
func transform(f func([]byte) []byte) RunnerFunc {
	return RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		in, err := io.ReadAll(job.Stdin)
		if err != nil {
			return sandbox.Result{}, err
		}
		out := f(in)
		return sandbox.Result{Status: sandbox.StatusExited, Output: out, OutputCID: cids.Sum(out),
			CPUTime: time.Millisecond, WallTime: 2 * time.Millisecond}, nil
	})
}

var (
	upper = transform(bytes.ToUpper)
	liar  = transform(func([]byte) []byte { return []byte("LIES") })
)

// blocker is a runner that blocks until its ctx is done and reports that it saw it.
type blocker struct {
	started   chan struct{} // one value per run started
	cancelled chan error    // ctx.Err() of each run
}

func newBlocker() *blocker {
	return &blocker{started: make(chan struct{}, 16), cancelled: make(chan error, 16)}
}

func (b *blocker) Run(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
	b.started <- struct{}{}
	<-ctx.Done()
	b.cancelled <- ctx.Err()
	return sandbox.Result{}, ctx.Err()
}

// recv waits for a value on c or fails the test.
func recv[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// waitFor polls cond until it holds or fails the test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newHost returns a TCP-only loopback host, closed at the end of the test.
func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableRelay(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// newStore returns a store in a temporary dir, closed at the end of the test.
func newStore(t testing.TB) *store.Store {
	t.Helper()
	st, _ := newStoreDir(t)
	return st
}

// newStoreDir is newStore, and the directory that holds its blob files.
func newStoreDir(t testing.TB) (*store.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, filepath.Join(dir, "blobs")
}

// dirNames lists the files in dir.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// serveStore serves st's blobs on h until the end of the test, as a node serves its store.
func serveStore(t testing.TB, h host.Host, st *store.Store) {
	sv := store.NewServer(st, nil)
	h.SetStreamHandler(protocol.BlobID, sv.Handle)
	t.Cleanup(func() {
		h.RemoveStreamHandler(protocol.BlobID)
		sv.Close()
	})
}

// newSubmitter returns a submitter on a host of its own, serving its store as a node does.
func newSubmitter(t testing.TB, find func(context.Context, string) ([]peer.AddrInfo, error)) *Submitter {
	t.Helper()
	h, st := newHost(t), newStore(t)
	serveStore(t, h, st)
	// It trusts the workers find lists now.
	cfg := SubmitterConfig{Host: h, Store: st, FindWorkers: find}
	ais, _ := find(context.Background(), sandbox.ArchAMD64)
	for _, ai := range ais {
		cfg.Trusted = append(cfg.Trusted, ai.ID)
	}
	sub, err := NewSubmitter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func addrInfo(h host.Host) peer.AddrInfo { return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()} }

// grid is a submitter and workers on loopback.
type grid struct {
	sub      *Submitter
	subHost  host.Host
	subDir   string // of the submitter's store's blob files
	workers  []*Worker
	hosts    []host.Host
	stores   []*store.Store
	dirs     []string // of the stores' blob files
	progress []string
	arches   []string // what FindWorkers was asked for
	mu       sync.Mutex
}

// newGrid starts one worker per config (Host, Store and Logger are filled in) and a
// submitter that knows them all.
func newGrid(t testing.TB, cfgs ...WorkerConfig) *grid {
	t.Helper()
	g := &grid{subHost: &countingHost{Host: newHost(t)}}
	var infos []peer.AddrInfo
	for _, cfg := range cfgs {
		var dir string
		cfg.Host = &countingHost{Host: newHost(t)}
		cfg.Store, dir = newStoreDir(t)
		serveStore(t, cfg.Host, cfg.Store)
		if cfg.Validate == nil {
			cfg.Validate = acceptAny // raw peers' variants of testBinary need not be valid
		}
		w, err := NewWorker(cfg)
		if err != nil {
			t.Fatal(err)
		}
		w.Start()
		t.Cleanup(func() { w.Close() })
		g.workers, g.hosts, g.stores, g.dirs = append(g.workers, w), append(g.hosts, cfg.Host), append(g.stores, cfg.Store), append(g.dirs, dir)
		infos = append(infos, addrInfo(cfg.Host))
	}
	subStore, subDir := newStoreDir(t)
	g.subDir = subDir
	serveStore(t, g.subHost, subStore)
	sub, err := NewSubmitter(SubmitterConfig{
		Host:  g.subHost,
		Store: subStore,
		FindWorkers: func(ctx context.Context, arch string) ([]peer.AddrInfo, error) {
			g.mu.Lock()
			g.arches = append(g.arches, arch)
			g.mu.Unlock()
			return append([]peer.AddrInfo{addrInfo(g.subHost)}, infos...), nil // itself too: must be skipped
		},
		Progress: func(msg string) {
			g.mu.Lock()
			g.progress = append(g.progress, msg)
			g.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	g.sub = sub
	for _, h := range g.hosts {
		sub.Trust(h.ID())
	}
	return g
}

// opened returns how many streams of protocol id the workers' handlers were given.
func (g *grid) opened(id p2pproto.ID) int {
	n := 0
	for _, h := range g.hosts {
		n += h.(*countingHost).opened(id)
	}
	return n
}

// countingHost counts the streams its handlers are given and the streams it asks
// NewStream for, by protocol.
type countingHost struct {
	host.Host
	mu      sync.Mutex
	in, out map[p2pproto.ID]int
}

func (h *countingHost) SetStreamHandler(id p2pproto.ID, f network.StreamHandler) {
	h.Host.SetStreamHandler(id, func(s network.Stream) {
		h.count(&h.in, id)
		f(s)
	})
}

func (h *countingHost) NewStream(ctx context.Context, p peer.ID, ids ...p2pproto.ID) (network.Stream, error) {
	for _, id := range ids {
		h.count(&h.out, id)
	}
	return h.Host.NewStream(ctx, p, ids...)
}

func (h *countingHost) count(m *map[p2pproto.ID]int, id p2pproto.ID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if *m == nil {
		*m = make(map[p2pproto.ID]int)
	}
	(*m)[id]++
}

// opened is how many streams of id the host's handlers were given.
func (h *countingHost) opened(id p2pproto.ID) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.in[id]
}

// asked is how many streams of id the host asked NewStream for.
func (h *countingHost) asked(id p2pproto.ID) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.out[id]
}

// placeFirst makes the submitter place the workers ps first, in that order, instead of
// drawing them by weight.
func (g *grid) placeFirst(ps ...peer.ID) {
	rank := map[peer.ID]int{}
	for r, p := range ps {
		rank[p] = r - len(ps)
	}
	g.sub.order = func(cs []*candidate) {
		slices.SortStableFunc(cs, func(a, b *candidate) int { return rank[a.offer.Peer] - rank[b.offer.Peer] })
	}
}

// trustOnly makes the submitter trust exactly the workers idx (none: nobody). newGrid
// trusts them all, as an owner trusts their own machines, so that tests of other things
// are not tests of trust.
func (g *grid) trustOnly(idx ...int) {
	g.sub.mu.Lock()
	clear(g.sub.trusted)
	g.sub.mu.Unlock()
	for _, i := range idx {
		g.sub.Trust(g.hosts[i].ID())
	}
}

// testBinary is a valid job, as the submitter checks; the fake runners do not run it.
var testBinary = testelf.Exit0([]byte("the fake runners do not read it"))

// findOnly returns a FindWorkers that finds ais for any architecture.
func findOnly(ais ...peer.AddrInfo) func(context.Context, string) ([]peer.AddrInfo, error) {
	return func(context.Context, string) ([]peer.AddrInfo, error) { return ais, nil }
}

// statusOf returns the status res's receipt states, as a submitter reads it: the receipt is
// the one source of a result's status. A result without a valid receipt gives "".
func statusOf(res *protocol.JobResult) string {
	if res == nil {
		return ""
	}
	r, _, err := protocol.OpenReceipt(res.Receipt)
	if err != nil {
		return ""
	}
	return r.Status
}

func acceptAny([]byte, sandbox.Limits) error { return nil }
