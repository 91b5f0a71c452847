// Package sim builds in-process grids on libp2p's mocknet that run the real dht package
// (kad-dht's protocol, the grid's provider store and sharded announcements) and measures
// what worker discovery costs per submit as the grid grows (docs/SCALE.md).
//
// Offers are answered by a minimal responder (OfferID: a few bytes each way), not by
// jobs.Worker: what a submit costs the grid is the number of peers it asks, which the
// responder counts; what one offer costs is measured by the jobs benchmarks.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/gridnode/gridnode/dht"
)

// OfferID is the simulated offer protocol.
const OfferID protocol.ID = "/gridnode/sim/offer/1"

// Arch is the architecture the simulated workers announce.
const Arch = "linux/amd64"

// Config shapes a grid. The zero value is production's: k = 20, dht.ShardTarget.
type Config struct {
	BucketSize  int // Kademlia's k; default 20
	ShardTarget int // default dht.ShardTarget
	Joining     int // nodes joining at once while the grid is built; default 16
	Logger      *slog.Logger
}

// Counts are one host's outbound traffic: streams it opened, messages it wrote on them
// (kad-dht writes each request in one Write), and bytes both ways on them. A DHT lookup's
// every request is sent by the node looking up, so a submitter's counts are its submit's
// whole DHT cost.
type Counts struct {
	DHTStreams, DHTRequests, DHTBytes atomic.Int64
	Offers                            atomic.Int64 // offer queries sent
	OffersServed                      atomic.Int64 // offer queries answered
}

// Snapshot is a copy of Counts.
type Snapshot struct{ DHTStreams, DHTRequests, DHTBytes, Offers, OffersServed int64 }

func (c *Counts) snapshot() Snapshot {
	return Snapshot{c.DHTStreams.Load(), c.DHTRequests.Load(), c.DHTBytes.Load(), c.Offers.Load(), c.OffersServed.Load()}
}

// Sub is s - o.
func (s Snapshot) Sub(o Snapshot) Snapshot {
	return Snapshot{s.DHTStreams - o.DHTStreams, s.DHTRequests - o.DHTRequests, s.DHTBytes - o.DHTBytes, s.Offers - o.Offers, s.OffersServed - o.OffersServed}
}

// Node is one simulated grid node: a mocknet host and a real DHT in server mode.
type Node struct {
	Host   host.Host
	DHT    *dht.DHT
	Counts *Counts
	ready  chan struct{} // closed after the first announcement
}

// Grid is a mocknet grid of worker nodes.
type Grid struct {
	cfg   Config
	mn    mocknet.Mocknet
	mu    sync.Mutex
	Nodes []*Node
	// Phases is how long New took to connect, refresh and announce.
	Phases [3]time.Duration
}

// New builds a grid of n worker nodes: each connects to node 0 and two random earlier
// nodes, every node refreshes its routing table once all have, and then every node
// announces (dht.AnnounceWorker); New returns when every node has announced once.
func New(ctx context.Context, n int, cfg Config) (*Grid, error) {
	if cfg.BucketSize <= 0 {
		cfg.BucketSize = 20
	}
	if cfg.ShardTarget <= 0 {
		cfg.ShardTarget = dht.ShardTarget
	}
	if cfg.Joining <= 0 {
		cfg.Joining = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Grid{cfg: cfg, mn: mocknet.New()}
	for range n {
		if _, err := g.add(ctx); err != nil {
			g.Close()
			return nil, err
		}
	}
	t0 := time.Now()
	// Every node connects to its introducers, and then every node refreshes its routing
	// table (dht.Join on an introducer it is connected to): the lookups of a refresh on a
	// grid that is whole fill every table at once.
	if err := g.each(ctx, g.Nodes[1:], func(i int, nd *Node) error {
		for _, ai := range g.introducers(i + 1) {
			if err := nd.Host.Connect(ctx, ai); err != nil {
				return fmt.Errorf("connect: %w", err)
			}
		}
		return nil
	}); err != nil {
		g.Close()
		return nil, err
	}
	t1 := time.Now()
	if err := g.each(ctx, g.Nodes, func(i int, nd *Node) error {
		_, err := nd.DHT.Join(ctx, g.introducers(max(i, 1))[:1])
		g.trimNode(nd)
		return err
	}); err != nil {
		g.Close()
		return nil, fmt.Errorf("refresh: %w", err)
	}
	g.trim()
	t2 := time.Now()
	// Announce Joining nodes at a time, trimming each once it has: a provide meets a few
	// dozen peers.
	if err := g.each(ctx, g.Nodes, func(i int, nd *Node) error {
		nd.DHT.AnnounceWorker(dht.WorkerNamespace(Arch), nd.ready)
		select {
		case <-nd.ready:
		case <-ctx.Done():
			return fmt.Errorf("node %d announced: %w", i, ctx.Err())
		}
		g.trimNode(nd)
		return nil
	}); err != nil {
		g.Close()
		return nil, err
	}
	g.trim()
	g.Phases = [3]time.Duration{t1.Sub(t0), t2.Sub(t1), time.Since(t2)}
	return g, nil
}

// trim closes each node's connections to peers outside its routing table, as the
// connection manager of a real node (which kad-dht tags its table's peers for) does once
// past its high water: a refresh or an announcement meets hundreds of peers, and mocknet
// hosts have no connection manager.
func (g *Grid) trim() {
	for _, nd := range g.Nodes {
		g.trimNode(nd)
	}
}

func (g *Grid) trimNode(nd *Node) {
	for _, p := range nd.Host.Network().Peers() {
		if !nd.DHT.Routes(p) {
			nd.Host.Network().ClosePeer(p)
		}
	}
}

// introducers are node 0 and two random nodes before i.
func (g *Grid) introducers(i int) []peer.AddrInfo {
	ais := []peer.AddrInfo{{ID: g.Nodes[0].Host.ID()}}
	for range 2 {
		if j := rand.IntN(i); j > 0 {
			ais = append(ais, peer.AddrInfo{ID: g.Nodes[j].Host.ID()})
		}
	}
	return ais
}

// each runs f on nds, cfg.Joining at a time in order.
func (g *Grid) each(ctx context.Context, nds []*Node, f func(i int, nd *Node) error) error {
	sem := make(chan struct{}, g.cfg.Joining)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, nd := range nds {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(i, nd); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// add makes a node (host, counting wrapper, DHT, offer responder) without joining it.
func (g *Grid) add(ctx context.Context) (*Node, error) {
	inner, err := g.mn.GenPeer()
	if err != nil {
		return nil, fmt.Errorf("mock host: %w", err)
	}
	c := &Counts{}
	h := &linkHost{Host: inner, mn: g.mn, c: c}
	d, err := dht.New(ctx, h, dht.Config{Mode: dht.ModeServer, BucketSize: g.cfg.BucketSize, ShardTarget: g.cfg.ShardTarget, Logger: g.cfg.Logger})
	if err != nil {
		return nil, err
	}
	inner.SetStreamHandler(OfferID, func(s network.Stream) {
		defer s.Close()
		s.SetDeadline(time.Now().Add(5 * time.Second))
		var req [8]byte
		if _, err := io.ReadFull(s, req[:]); err != nil {
			s.Reset()
			return
		}
		c.OffersServed.Add(1)
		s.Write(req[:]) // an offer: the job's key back
	})
	nd := &Node{Host: h, DHT: d, Counts: c, ready: make(chan struct{})}
	g.mu.Lock()
	g.Nodes = append(g.Nodes, nd)
	g.mu.Unlock()
	return nd, nil
}

// AddWorker starts one more worker, joins it through three random nodes and starts its
// announcements; ready is closed after its first.
func (g *Grid) AddWorker(ctx context.Context) (nd *Node, ready <-chan struct{}, err error) {
	g.mu.Lock()
	boot := make([]peer.AddrInfo, 0, 3)
	for range 3 {
		boot = append(boot, peer.AddrInfo{ID: g.Nodes[rand.IntN(len(g.Nodes))].Host.ID()})
	}
	g.mu.Unlock()
	if nd, err = g.add(ctx); err != nil {
		return nil, nil, err
	}
	if _, err := nd.DHT.Join(ctx, boot); err != nil {
		return nil, nil, fmt.Errorf("join: %w", err)
	}
	nd.DHT.AnnounceWorker(dht.WorkerNamespace(Arch), nd.ready)
	return nd, nd.ready, nil
}

// Submit is one submit's discovery on nd: dht.FindShard for want workers (as node's
// discover), then offer queries to up to ask of them, 8 at a time (as jobs.Submitter's
// offers). It returns the workers found and the offers answered.
func Submit(ctx context.Context, nd *Node, want, ask int) (found []peer.AddrInfo, offers int, err error) {
	found, err = nd.DHT.FindShard(ctx, dht.WorkerNamespace(Arch), want)
	if err != nil {
		return nil, 0, err
	}
	cands := slices.Clone(found)
	rand.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	cands = cands[:min(ask, len(cands))]
	var (
		wg sync.WaitGroup
		ok atomic.Int64
	)
	sem := make(chan struct{}, 8)
	for _, ai := range cands {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if queryOffer(ctx, nd, ai.ID) == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	return found, int(ok.Load()), nil
}

func queryOffer(ctx context.Context, nd *Node, p peer.ID) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := nd.Host.NewStream(ctx, p, OfferID)
	if err != nil {
		return fmt.Errorf("offer stream: %w", err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(5 * time.Second))
	nd.Counts.Offers.Add(1)
	req := []byte("jobjobjo")
	if _, err := s.Write(req); err != nil {
		s.Reset()
		return fmt.Errorf("offer: %w", err)
	}
	s.CloseWrite()
	var resp [8]byte
	if _, err := io.ReadFull(s, resp[:]); err != nil {
		s.Reset()
		return fmt.Errorf("offer: %w", err)
	}
	return nil
}

// Snapshot is nd's counts now.
func (nd *Node) Snapshot() Snapshot { return nd.Counts.snapshot() }

// Ready is closed after nd's first announcement.
func (nd *Node) Ready() <-chan struct{} { return nd.ready }

// Records returns the provider records every node holds.
func (g *Grid) Records() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]int, len(g.Nodes))
	for i, nd := range g.Nodes {
		out[i] = nd.DHT.ProviderRecords()
	}
	return out
}

// KeyLoads counts the workers announcing under each worker key, from every node's level
// now (dht's own choice: AnnounceWorker announces the same keys).
func (g *Grid) KeyLoads() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]int{}
	ns := dht.WorkerNamespace(Arch)
	for _, nd := range g.Nodes {
		l := nd.DHT.Level()
		out[dht.ShardNamespace(ns, l, dht.ShardOf(nd.Host.ID(), l))]++
		if l > 0 {
			out[dht.ShardNamespace(ns, l-1, dht.ShardOf(nd.Host.ID(), l-1))]++
		}
	}
	return out
}

// Levels counts the nodes at each shard level.
func (g *Grid) Levels() map[int]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[int]int{}
	for _, nd := range g.Nodes {
		out[nd.DHT.Level()]++
	}
	return out
}

// Close stops every DHT and the mocknet.
func (g *Grid) Close() error {
	g.mu.Lock()
	nds := slices.Clone(g.Nodes)
	g.mu.Unlock()
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, nd := range nds {
		wg.Go(func() {
			err := nd.DHT.Close()
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	errs = append(errs, g.mn.Close())
	return errors.Join(errs...)
}

// linkHost links two mocknet peers when one first dials the other (mocknet dials only
// linked peers, and linking all n² pairs up front costs gigabytes at 10,000 nodes), and
// counts the DHT streams it opens.
type linkHost struct {
	host.Host
	mn mocknet.Mocknet
	c  *Counts
}

func (h *linkHost) link(p peer.ID) {
	if p != h.ID() && len(h.mn.LinksBetweenPeers(h.ID(), p)) == 0 {
		h.mn.LinkPeers(h.ID(), p)
	}
}

func (h *linkHost) Connect(ctx context.Context, ai peer.AddrInfo) error {
	h.link(ai.ID)
	return h.Host.Connect(ctx, ai)
}

func (h *linkHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	h.link(p)
	s, err := h.Host.NewStream(ctx, p, pids...)
	if err != nil || len(pids) == 0 || pids[0] == OfferID {
		return s, err
	}
	h.c.DHTStreams.Add(1)
	return &countStream{Stream: s, c: h.c}, nil
}

// countStream counts a DHT stream's writes (one per request) and bytes.
type countStream struct {
	network.Stream
	c *Counts
}

func (s *countStream) Write(b []byte) (int, error) {
	s.c.DHTRequests.Add(1)
	s.c.DHTBytes.Add(int64(len(b)))
	return s.Stream.Write(b)
}

func (s *countStream) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	s.c.DHTBytes.Add(int64(n))
	return n, err
}
