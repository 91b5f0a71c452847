// Package node wires a gridnode peer together: libp2p host, identity, private DHT, content
// store, worker and submitter.
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/gridnode/gridnode/dht"
	"github.com/gridnode/gridnode/history"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/sandbox"
)

// DefaultPort is the TCP and UDP (QUIC) port a daemon listens on unless told otherwise.
const DefaultPort = 4011

// Config configures Open. The zero value is a persistent worker in the default data dir,
// listening on DefaultPort on all interfaces.
type Config struct {
	DataDir   string   // default DefaultDataDir(); unused when Ephemeral
	Listen    []string // multiaddrs; default TCP and QUIC on DefaultPort (port 0 with Loopback)
	Bootstrap []string // full /p2p/ multiaddrs of peers to join through
	Relays    []string // static relays for the relay client (non-loopback only)
	Slots     int      // concurrent jobs; default jobs.DefaultSlots(), half the cores
	// MaxLoad refuses jobs while the machine's non-grid load is above it (see
	// jobs.WorkerConfig.MaxLoad); 0 means never.
	MaxLoad float64
	// Hours are the donor's windows (jobs.ParseHours), nil for always; CPUShare the percent
	// of the machine's cores jobs may use together (0: all), enforced by the sandbox.
	Hours    *jobs.Hours
	CPUShare int
	// SlotsPerPeer is how many slots one peer may hold; default half the slots, rounded up.
	SlotsPerPeer int
	// StoreQuota bounds the bytes of blobs kept in the data dir; default store.DefaultQuota.
	StoreQuota int64
	Limits     sandbox.Limits
	// JobUIDs is the uid range a root daemon runs jobs as; default sandbox.DefaultJobUIDs.
	JobUIDs  sandbox.UIDRange
	Loopback bool // listen on 127.0.0.1 and skip NAT traversal; implied when every Listen address is loopback
	// MDNS finds and joins gridnode peers on the LAN with multicast DNS (never on loopback).
	// Off by default: tests and loopback testnets on one machine must not find each other.
	MDNS bool
	// RelayService makes the node a circuit relay with RelayResources' limits for peers behind
	// NAT, announced under RelayNamespace, and an AutoNAT server. Only for a node with a
	// public address: it is taken to be publicly reachable.
	RelayService bool
	// Reach bounds the addresses the node dials (see Reach); the default derives it from
	// Listen and Bootstrap, so a node on a loopback testnet dials loopback and a node on the
	// internet only public addresses.
	Reach     Reach
	Worker    bool // run jobs for others and announce capacity
	Ephemeral bool // random identity and a temporary store, removed on Close
	Logger    *slog.Logger
	Runner    Runner           // runs jobs; default &sandbox.Runner{Logger: Logger}
	Progress  func(msg string) // submit progress, for a CLI's stderr; may be nil

	// Trust lists workers whose replicas anchor the quorums of this node's submits (the
	// owner's own machines), besides those in DATA/trusted-peers (TrustFile).
	Trust []peer.ID
	// SamePrefix counts replicas from one network prefix as many votes (docs/TRUST.md).
	// Peers reached on loopback (a testnet) count one each anyway.
	SamePrefix bool
	// Records is the file of the submitter's record of workers; default DATA/workers.json,
	// none (in memory) when Ephemeral.
	Records string
	// History is the history database (package history; node/history.go): default
	// DATA/history.db; an ephemeral node has one only when it is set, and goes without it
	// when a daemon holds it. HistoryMaxJobs and HistoryMaxBytes bound it (0: defaults).
	History         string
	HistoryMaxJobs  int
	HistoryMaxBytes int64

	// Metrics keeps Prometheus metrics, for ServeMetrics (node/metrics.go); libp2p's
	// resource manager's are process-wide.
	Metrics bool

	// DHTBucketSize overrides the Kademlia bucket size; for tests.
	DHTBucketSize int
	// ConnLow and ConnHigh are the connection manager's water marks (default 64 and 128):
	// past ConnHigh connections it closes the least useful of those older than ConnGrace
	// (default a minute) until ConnLow of them are left, besides the peers it keeps: those
	// with jobs in flight and those of the DHT's two nearest buckets. For testnets of many
	// processes on one machine, where every connection's keep-alives and handshakes share
	// the same cores.
	ConnLow, ConnHigh int
	ConnGrace         time.Duration
}

// Node is a running gridnode peer.
type Node struct {
	cfg  Config
	log  *slog.Logger
	h    host.Host
	d    *dht.DHT
	dir  string   // data dir; removed on Close when ephemeral
	lock *os.File // holds the data dir's lock (lockDataDir) unless ephemeral
	jobs *jobsPart
	// events hear what the worker and the submitter do (history, metrics): filled before
	// openJobs, which joins them.
	events  []jobs.Events
	metrics *nodeMetrics // nil without Config.Metrics

	announced chan struct{}
	reach     *reachTracker
	lan       *lanPeers        // LAN peers found by mDNS; nil without mDNS
	lanDisc   *lanDiscovery    // nil without mDNS
	relays    *relaySource     // autorelay's candidates; nil when not a home daemon
	relaySvc  *relayService    // with Config.RelayService
	join      *joiner          // nil for ephemeral nodes
	direct    network.Notifiee // times direct connections after relayed ones; nil on loopback
	forgetMu  sync.Mutex
	forget    *forgetQueue
	notifiee  network.Notifiee
	stop      context.CancelFunc // ends the forget loop
	life      context.Context    // see lifetime
	endLife   context.CancelFunc
	wg        sync.WaitGroup

	apiMu     sync.Mutex
	api       []func() // stop the API servers (ServeAPI)
	closeOnce sync.Once
	closeErr  error

	hist    *history.DB // nil without one (history.go)
	started time.Time
}

// Open starts a node: host, DHT (bootstrapped through cfg.Bootstrap), store, and the worker
// when cfg.Worker. It returns once the node is listening and has reached a bootstrap peer;
// see WaitAnnounced for when other peers can find a worker.
func Open(ctx context.Context, cfg Config) (_ *Node, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	boot, err := ParseAddrs(cfg.Bootstrap)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if !cfg.Loopback {
		if cfg.Loopback, err = allLoopback(cfg.Listen, boot); err != nil {
			return nil, err
		}
	}
	var fileBoot, remembered []peer.AddrInfo
	if !cfg.Ephemeral {
		if cfg.DataDir == "" {
			if cfg.DataDir, err = DefaultDataDir(); err != nil {
				return nil, err
			}
		}
		var bad []string
		if fileBoot, remembered, bad, err = loadPeerFiles(cfg.DataDir); err != nil {
			return nil, err
		}
		for _, l := range bad {
			cfg.Logger.Warn("bootstrap file: not a full /p2p/ multiaddr, skipped", "line", l)
		}
	}
	if cfg.Reach == ReachAuto {
		// The bootstrap file is the user's, like --bootstrap; remembered peers are not.
		if cfg.Reach, err = autoReach(cfg, slices.Concat(boot, fileBoot)); err != nil {
			return nil, err
		}
	}
	n := &Node{cfg: cfg, log: cfg.Logger, announced: make(chan struct{}), started: time.Now()}
	n.events = append(n.events, n.memoryEvents()) // memory.go
	if cfg.Metrics {
		n.metrics = newMetrics(n)
		n.events = append(n.events, n.metrics.events())
	}
	n.reach = newReachTracker(n.log, cfg.Loopback)
	if cfg.MDNS && !cfg.Loopback {
		n.lan = newLANPeers()
	}
	if !cfg.Loopback && !cfg.Ephemeral && !cfg.RelayService {
		relays, err := ParseAddrs(cfg.Relays)
		if err != nil {
			return nil, fmt.Errorf("relays: %w", err)
		}
		n.relays = &relaySource{static: relays, boot: slices.Concat(boot, fileBoot)}
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	var key crypto.PrivKey
	if cfg.Ephemeral {
		if n.dir, err = os.MkdirTemp("", "gridnode-ephemeral-"); err != nil {
			return nil, err
		}
		if key, _, err = crypto.GenerateEd25519Key(nil); err != nil {
			return nil, err
		}
	} else {
		if n.dir = cfg.DataDir; n.dir == "" {
			if n.dir, err = DefaultDataDir(); err != nil {
				return nil, err
			}
		}
		if err = os.MkdirAll(n.dir, 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		if n.lock, err = lockDataDir(n.dir); err != nil {
			return nil, err
		}
		if key, err = LoadIdentity(filepath.Join(n.dir, IdentityFile)); err != nil {
			return nil, err
		}
	}

	if n.h, err = n.newHost(key); err != nil {
		return nil, err
	}
	if err = n.reach.watch(n.lifetime(), n.h, &n.wg); err != nil {
		return nil, err
	}
	if !cfg.Loopback {
		n.direct = newDirectTimer(n.log.With("component", "net")).notifiee()
		n.h.Network().Notify(n.direct)
	}
	mode := dht.ModeAutoServer
	if !cfg.Worker && cfg.Ephemeral {
		mode = dht.ModeClient // a short-lived submitter should not enter routing tables
	}
	dialable := func(a multiaddr.Multiaddr) bool { return within(cfg.Reach, a) }
	if cfg.RelayService {
		mode = dht.ModeServer
	}
	if n.d, err = dht.New(ctx, n.h, dht.Config{Bootstrap: slices.Concat(boot, fileBoot), Mode: mode, BucketSize: cfg.DHTBucketSize, Dialable: dialable, Logger: n.log.With("component", "dht")}); err != nil {
		return nil, err
	}
	if err = n.openHistory(); err != nil {
		return nil, err
	}
	if n.jobs, err = openJobs(n); err != nil {
		return nil, err
	}
	if n.relays != nil {
		n.relays.set(n.h, n.d)
	}
	if cfg.Ephemeral {
		// A short-lived submitter fails at once when its bootstrap peers are down.
		if err = n.d.Bootstrap(ctx); err != nil {
			return nil, err
		}
		if !cfg.Loopback {
			n.waitHolePunching(ctx)
		}
		// Only now: the lookup connects to DHT servers other than the bootstrap peers.
		n.d.Locate(ctx)
	} else {
		// A daemon keeps trying (the join loop, started below); the first try is now, so
		// that Open returns joined when the grid is there.
		n.join = &joiner{n: n, boot: slices.Concat(boot, fileBoot), remembered: remembered,
			path: filepath.Join(n.dir, PeersFile), sched: newJoinSchedule(joinMinBackoff, joinMaxBackoff)}
		if ok, tried := n.join.attempt(ctx); tried > 0 && ok == 0 {
			n.log.Warn("no known grid peer reachable yet; retrying in the background", "tried", tried)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	if len(n.h.Network().Peers()) > 0 {
		// A connected bootstrap peer enters the routing table once identify has run.
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := n.d.WaitReady(wctx, 1)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			n.log.Warn("routing table still empty", "err", err)
		}
	}
	if err = n.watchAddrs(n.lifetime()); err != nil {
		return nil, err
	}
	if cfg.Worker {
		n.d.AnnounceWorker(dht.WorkerNamespace(n.jobs.worker.Arch()), n.announced)
	}
	if cfg.RelayService {
		n.d.AnnounceLoop(RelayNamespace, nil)
	}
	n.forgetPeers(slices.Concat(boot, fileBoot))
	if n.lan != nil {
		if n.lanDisc, err = startLAN(n.h, n.lan, n.log.With("component", "lan"), nil); err != nil {
			return nil, fmt.Errorf("mdns: %w", err)
		}
	}
	if n.join != nil {
		jctx := n.lifetime()
		n.wg.Go(func() { n.join.run(jctx) })
	}
	n.log.Info("node started", "self", n.h.ID(), "worker", cfg.Worker, "relay_service", cfg.RelayService,
		"mdns", n.lan != nil, "addrs", n.h.Addrs(), "dial_reach", cfg.Reach)
	return n, nil
}

// lifetime is a context that ends when Close begins.
func (n *Node) lifetime() context.Context {
	if n.life == nil {
		n.life, n.endLife = context.WithCancel(context.Background())
	}
	return n.life
}

func (n *Node) newHost(key crypto.PrivKey) (host.Host, error) {
	cfg := n.cfg
	listen := cfg.Listen
	if len(listen) == 0 {
		if cfg.Loopback {
			listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
		} else {
			p := DefaultPort
			if cfg.Ephemeral {
				p = 0
			}
			listen = []string{
				fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", p), fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", p),
				fmt.Sprintf("/ip6/::/tcp/%d", p), fmt.Sprintf("/ip6/::/udp/%d/quic-v1", p),
			}
		}
	}
	if err := checkPortsFree(listen); err != nil {
		return nil, err
	}
	rm, err := newResourceManager(jobStreamsPerPeer(cfg), cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(cmp.Or(cfg.ConnLow, connLow), cmp.Or(cfg.ConnHigh, connHigh), connmgr.WithGracePeriod(cmp.Or(cfg.ConnGrace, time.Minute)))
	if err != nil {
		return nil, fmt.Errorf("connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.ConnectionGater(dialGater{reach: cfg.Reach, lan: n.lan}),
		libp2p.UserAgent(userAgent),
		libp2p.DisableMetrics(),
		libp2p.SwarmOpts(swarm.WithDialRanker(dialRanker)),
	}
	if n.metrics != nil {
		opts = append(opts, libp2p.BandwidthReporter(n.metrics.blobReport))
	}
	switch {
	case cfg.Loopback:
		opts = append(opts, libp2p.DisableRelay(), libp2p.Muxer(yamux.ID, loopbackMuxer()))
	case cfg.RelayService:
		// A relay is a public node by the operator's word: AutoNAT would need another
		// public node to confirm it, and the relay service starts only once it is public.
		opts = append(opts, libp2p.ForceReachabilityPublic(), libp2p.EnableNATService(), libp2p.EnableAutoNATv2(),
			libp2p.EnableHolePunching(holepunch.WithTracer(&punchTracer{log: n.log, reach: n.reach})))
		h, err := n.buildHost(opts, rm, cm)
		if err != nil {
			return nil, err
		}
		if n.relaySvc, err = startRelayService(h, n.log.With("component", "relay")); err != nil {
			h.Close()
			return nil, err
		}
		return h, nil
	default:
		opts = append(opts, libp2p.NATPortMap(), libp2p.EnableAutoNATv2(),
			libp2p.EnableHolePunching(holepunch.WithTracer(&punchTracer{log: n.log, reach: n.reach})))
		if !cfg.Ephemeral {
			// Daemons answer AutoNAT for others (dial-backs pass the gater) and find relays
			// through the grid; a short-lived submitter only dials out.
			opts = append(opts, libp2p.EnableNATService(), libp2p.EnableAutoRelayWithPeerSource(n.relays.peers, relayOptions()...))
		}
	}
	return n.buildHost(opts, rm, cm)
}

// loopbackMuxer is yamux without keep-alives and measuring round trips every 10 minutes,
// not 30 s: on one machine the kernel resets a dead node's connections and no NAT needs
// traffic to keep a mapping, while the two pings per connection end every 30 s were most
// of an idle testnet's CPU (its connections open together, so they come in bursts).
func loopbackMuxer() *yamux.Transport {
	t := *yamux.DefaultTransport
	t.EnableKeepAlive = false
	t.MeasureRTTInterval = 10 * time.Minute
	return &t
}

func (n *Node) buildHost(opts []libp2p.Option, rm network.ResourceManager, cm *connmgr.BasicConnMgr) (host.Host, error) {
	ps, err := dht.NewPeerstore() // its per-peer address cap bounds what DHT peers can pin
	if err != nil {
		rm.Close()
		cm.Close()
		return nil, fmt.Errorf("start host: %w", err)
	}
	h, err := libp2p.New(append(slices.Clip(opts), libp2p.Peerstore(ps))...)
	if err != nil {
		ps.Close()
		rm.Close()
		cm.Close()
		return nil, fmt.Errorf("start host: %w", err)
	}
	return h, nil
}

// allLoopback reports whether every listen address is on loopback or, without listen
// addresses, every bootstrap address: a node joining a loopback grid stays on loopback.
func allLoopback(listen []string, boot []peer.AddrInfo) (bool, error) {
	var addrs []multiaddr.Multiaddr
	for _, s := range listen {
		a, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return false, fmt.Errorf("address %q: %w", s, err)
		}
		addrs = append(addrs, a)
	}
	if len(listen) == 0 {
		for _, b := range boot {
			addrs = append(addrs, b.Addrs...)
		}
	}
	for _, a := range addrs {
		if !manet.IsIPLoopback(a) {
			return false, nil
		}
	}
	return len(addrs) > 0, nil
}

// autoReach is the reach of ReachAuto: ReachLoopback with cfg.Loopback, else the widest
// class among the listen and bootstrap addresses.
func autoReach(cfg Config, boot []peer.AddrInfo) (Reach, error) {
	if cfg.Loopback {
		return ReachLoopback, nil
	}
	var addrs []multiaddr.Multiaddr
	for _, s := range cfg.Listen {
		a, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return 0, fmt.Errorf("address %q: %w", s, err)
		}
		addrs = append(addrs, a)
	}
	for _, b := range boot {
		addrs = append(addrs, b.Addrs...)
	}
	return deriveReach(addrs), nil
}

// forgetPeers removes peers from the peerstore some time after their last connection
// closed (see forgetAfter), bootstrap peers excepted, until Close.
func (n *Node) forgetPeers(boot []peer.AddrInfo) {
	keep := make(map[peer.ID]bool, len(boot))
	for _, b := range boot {
		keep[b.ID] = true
	}
	n.forget = newForgetQueue(forgetAfter, forgetMax)
	n.notifiee = &network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			n.forgetMu.Lock()
			n.forget.connected(c.RemotePeer())
			n.forgetMu.Unlock()
		},
		DisconnectedF: func(nw network.Network, c network.Conn) {
			p := c.RemotePeer()
			if keep[p] || nw.Connectedness(p) == network.Connected {
				return
			}
			n.forgetMu.Lock()
			n.forget.disconnected(p, time.Now())
			n.forgetMu.Unlock()
			n.forgetDue() // past forgetMax, the oldest go now
		},
	}
	n.h.Network().Notify(n.notifiee)
	ctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	every := max(min(forgetAfter/4, time.Minute), 10*time.Millisecond)
	n.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n.forgetDue()
			}
		}
	})
}

// forgetDue forgets the peers that are due, keeping those that reconnected, are protected
// or are in the routing table: those wait another round.
func (n *Node) forgetDue() {
	n.forgetMu.Lock()
	ps := n.forget.due(time.Now())
	n.forgetMu.Unlock()
	var again []peer.ID
	for _, p := range ps {
		switch {
		case n.h.Network().Connectedness(p) == network.Connected:
		case n.h.ConnManager().IsProtected(p, "") || n.d.Routes(p):
			again = append(again, p)
		default:
			n.h.Peerstore().RemovePeer(p)
			n.h.Peerstore().ClearAddrs(p)
		}
	}
	if len(again) > 0 {
		n.forgetMu.Lock()
		for _, p := range again {
			n.forget.disconnected(p, time.Now())
		}
		n.forgetMu.Unlock()
	}
}

// ParseAddrs parses full /p2p/ multiaddrs, merging addresses of the same peer.
func ParseAddrs(ss []string) ([]peer.AddrInfo, error) {
	var mas []multiaddr.Multiaddr
	for _, s := range ss {
		ma, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("parse %q: %w", s, err)
		}
		mas = append(mas, ma)
	}
	ais, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("parse addresses: %w (want /ip4/…/tcp/…/p2p/<peer id>)", err)
	}
	return ais, nil
}

// ID is the node's peer ID.
func (n *Node) ID() peer.ID { return n.h.ID() }

// Host is the node's libp2p host.
func (n *Node) Host() host.Host { return n.h }

// DHT is the node's DHT.
func (n *Node) DHT() *dht.DHT { return n.d }

// Addrs are the node's listen addresses as full /p2p/ multiaddrs.
func (n *Node) Addrs() []multiaddr.Multiaddr {
	mas, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Addrs()})
	if err != nil {
		return nil
	}
	return mas
}

// AddrStrings are Addrs as strings, the form Config.Bootstrap takes.
func (n *Node) AddrStrings() []string {
	var out []string
	for _, a := range n.Addrs() {
		out = append(out, a.String())
	}
	return out
}

// Reachability is how other peers can reach this node, as far as it knows.
func (n *Node) Reachability() Reachability { return n.reach.get() }

// WaitAnnounced waits until a worker's first capacity announcement reached the DHT.
func (n *Node) WaitAnnounced(ctx context.Context) error {
	if !n.cfg.Worker {
		return ErrNotWorker
	}
	select {
	case <-n.announced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for announcement: %w", ctx.Err())
	}
}

// FindWorkers lists the workers other than this node that run jobs for arch
// ("linux/amd64", as sandbox.ArchOf names a binary's): every one on a grid small enough
// for shard level 0 (under 2·dht.ShardTarget nodes), on a larger one those of a random
// shard and of the shards above it (dht.FindShard). Submits ask for fewer (discover).
func (n *Node) FindWorkers(ctx context.Context, arch string) ([]peer.AddrInfo, error) {
	return n.d.FindShard(ctx, dht.WorkerNamespace(arch), 0)
}

// WaitWorkers polls FindWorkers until it lists at least min workers for arch, and returns
// them; it fails when ctx ends first. A grid that just started may still be announcing.
func (n *Node) WaitWorkers(ctx context.Context, arch string, min int) ([]peer.AddrInfo, error) {
	return n.pollWorkers(ctx, arch, 0, min)
}

// pollWorkers polls dht.FindShard for want workers for arch (0: all it finds) until it
// has at least min, every 50 ms, or ctx ends.
func (n *Node) pollWorkers(ctx context.Context, arch string, want, min int) ([]peer.AddrInfo, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	found := 0
	for {
		ws, err := n.d.FindShard(ctx, dht.WorkerNamespace(arch), want)
		if err == nil && len(ws) >= min {
			return ws, nil
		}
		found = max(found, len(ws))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %d worker(s) (found %d): %w", min, found, ctx.Err())
		case <-tick.C:
		}
	}
}

// Close stops the API servers, the worker (cancelling running jobs), the blob handler, the
// store, the DHT and then the host. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.join != nil && n.h != nil && n.d != nil {
			n.join.save()
		}
		if n.endLife != nil {
			n.endLife()
		}
		if n.lanDisc != nil {
			n.lanDisc.close()
		}
		n.closeAPI()
		if n.jobs != nil {
			// The worker, then the blob handler, then the store.
			errs = append(errs, n.jobs.close())
		}
		if n.hist != nil {
			errs = append(errs, n.hist.Close()) // no event comes once the jobs are closed
		}
		if n.direct != nil {
			n.h.Network().StopNotify(n.direct)
		}
		if n.stop != nil {
			n.h.Network().StopNotify(n.notifiee)
			n.stop()
		}
		n.wg.Wait() // the forget, join and event loops
		if n.relaySvc != nil {
			n.relaySvc.close()
		}
		if n.d != nil {
			errs = append(errs, n.d.Close())
		}
		if n.h != nil {
			errs = append(errs, n.h.Close())
		}
		if n.cfg.Ephemeral && n.dir != "" {
			errs = append(errs, os.RemoveAll(n.dir))
		}
		if n.lock != nil {
			errs = append(errs, n.lock.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}
