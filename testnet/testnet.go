// Package testnet starts a grid of real nodes on 127.0.0.1 inside one process, for tests and
// demos.
package testnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
)

// Setup describes a test grid. Zero fields take defaults.
type Setup struct {
	Nodes  int         // default 5
	Slots  int         // job slots per node; default 2
	Runner node.Runner // default the real sandbox runner
	// NodeRunner, if set, gives node i its runner instead of Runner (to tell apart what
	// each node runs).
	NodeRunner func(i int) node.Runner
	Limits     sandbox.Limits
	Logger     *slog.Logger
	BucketSize int // DHT bucket size; default the Kademlia default
	// Behaviours makes node i misbehave (see Behaviour); nodes not in it are honest. A
	// faulty node without a Runner of the caller's wraps a real sandbox runner.
	Behaviours map[int]Behaviour
}

// Net is a running test grid. Every node is a worker; the first is the others' bootstrap peer.
type Net struct {
	setup Setup
	nodes []*node.Node
	mu    sync.Mutex
	extra []*node.Node // clients, closed with the net
}

// Start starts s.Nodes worker nodes and returns once every routing table is filled and every
// worker's announcement can be found, or ctx ends.
func Start(ctx context.Context, s Setup) (_ *Net, err error) {
	if s.Nodes <= 0 {
		s.Nodes = 5
	}
	if s.Slots <= 0 {
		s.Slots = 2
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Net{setup: s, nodes: make([]*node.Node, s.Nodes)}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	open := func(i int, boot []string) (*node.Node, error) {
		cfg := node.Config{
			Ephemeral:     true,
			Loopback:      true,
			Worker:        true,
			Bootstrap:     boot,
			Slots:         s.Slots,
			Limits:        s.Limits,
			Runner:        s.Runner,
			DHTBucketSize: s.BucketSize,
			Logger:        s.Logger.With("node", i),
		}
		if s.NodeRunner != nil {
			cfg.Runner = s.NodeRunner(i)
		}
		started := s.Behaviours[i].Configure(&cfg)
		nd, err := node.Open(ctx, cfg)
		if err != nil {
			return nil, err
		}
		if err := started(ctx, nd); err != nil {
			nd.Close()
			return nil, err
		}
		return nd, nil
	}
	if n.nodes[0], err = open(0, nil); err != nil {
		return nil, fmt.Errorf("start node 0: %w", err)
	}
	boot := n.Bootstrap()
	var wg sync.WaitGroup
	errs := make([]error, s.Nodes)
	for i := 1; i < s.Nodes; i++ {
		wg.Go(func() {
			if n.nodes[i], errs[i] = open(i, boot); errs[i] != nil {
				errs[i] = fmt.Errorf("start node %d: %w", i, errs[i])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := n.wait(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// wait polls until routing tables are full enough and all workers are findable from every
// node. Announcements made while a routing table was still nearly empty may have landed on
// peers that are not the closest to the key; dht.AnnounceLoop announces again as the table
// grows.
func (n *Net) wait(ctx context.Context) error {
	bucket := n.setup.BucketSize
	if bucket <= 0 {
		bucket = 20
	}
	want := min(len(n.nodes)-1, bucket/2)
	for i, nd := range n.nodes {
		if err := nd.DHT().WaitReady(ctx, want); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
	}
	if len(n.nodes) == 1 {
		return nil // a lone node has nobody to announce to
	}
	for i, nd := range n.nodes {
		if err := nd.WaitAnnounced(ctx); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		missing := map[peer.ID]bool{}
		for _, nd := range n.nodes {
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ws, err := nd.FindWorkers(fctx, sandbox.ArchAMD64)
			cancel()
			if err != nil && ctx.Err() != nil {
				return err
			}
			found := map[peer.ID]bool{}
			for _, w := range ws {
				found[w.ID] = true
			}
			for _, o := range n.nodes {
				if o != nd && !found[o.ID()] {
					missing[o.ID()] = true
				}
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d workers to be findable: %w", len(missing), ctx.Err())
		case <-tick.C:
		}
	}
}

// Behaviour returns node i's behaviour.
func (n *Net) Behaviour(i int) Behaviour { return n.setup.Behaviours[i] }

// Honest returns the peer IDs of the nodes without a Behaviour: those a test's submitter
// may trust (jobs.Request.Trust).
func (n *Net) Honest() []peer.ID {
	var ids []peer.ID
	for i, nd := range n.nodes {
		if n.setup.Behaviours[i] == 0 {
			ids = append(ids, nd.ID())
		}
	}
	return ids
}

// Nodes returns the worker nodes; the first is the bootstrap peer.
func (n *Net) Nodes() []*node.Node { return n.nodes }

// Bootstrap returns the bootstrap peer's full multiaddrs.
func (n *Net) Bootstrap() []string { return n.nodes[0].AddrStrings() }

// NewClient starts an ephemeral peer that submits jobs but runs none, joined to the net. The
// net closes it too.
func (n *Net) NewClient(ctx context.Context) (*node.Node, error) {
	c, err := node.Open(ctx, node.Config{
		Ephemeral: true,
		Loopback:  true,
		Bootstrap: n.Bootstrap(),
		Logger:    n.setup.Logger.With("node", "client"),
	})
	if err != nil {
		return nil, fmt.Errorf("start client: %w", err)
	}
	// The testnet's owner runs every node, and trusts the honest ones: a client's quorums
	// are anchored by them (docs/TRUST.md). Tests of trust make their own clients.
	c.Trust(n.Honest()...)
	n.mu.Lock()
	n.extra = append(n.extra, c)
	n.mu.Unlock()
	return c, nil
}

// Close stops all nodes and clients.
func (n *Net) Close() error {
	n.mu.Lock()
	all := append(n.extra, n.nodes...)
	n.extra = nil
	n.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(all))
	for i, nd := range all {
		if nd != nil {
			wg.Go(func() { errs[i] = nd.Close() })
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}
