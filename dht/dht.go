// Package dht is the private gridnode Kademlia DHT: workers announce capacity, submitters find
// workers, and peers provide and find blobs by CID.
package dht

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/gridnode/gridnode/cids"
)

// ProtocolPrefix keeps the grid's DHT apart from the public IPFS one: /gridnode/kad/1.0.0.
const ProtocolPrefix = "/gridnode"

// DefaultProvideValidity is how long provider records live; announcements are renewed at a
// third of it.
const DefaultProvideValidity = 30 * time.Minute

// ErrNoBootstrap is returned when none of the bootstrap peers could be reached.
var ErrNoBootstrap = errors.New("no bootstrap peer reachable")

// Mode says whether the node answers DHT queries.
type Mode int

const (
	// ModeAutoServer serves queries unless AutoNAT finds the node unreachable.
	ModeAutoServer Mode = iota
	// ModeServer always serves queries.
	ModeServer
	// ModeClient only queries; for short-lived submit-only peers.
	ModeClient
)

// Config configures New. The zero value is a server-capable node with no bootstrap peers.
type Config struct {
	Bootstrap       []peer.AddrInfo
	Mode            Mode
	ProvideValidity time.Duration // default DefaultProvideValidity
	BucketSize      int           // default the Kademlia default (20)
	// ShardTarget is the number of worker records a shard key holds (shard.go); default
	// ShardTarget. Simulations lower it to shard small grids.
	ShardTarget int
	// Dialable, if set, says which addresses from DHT messages (provider records, closer
	// peers) to keep; the others never reach the peerstore. At most maxPeerAddrs are kept
	// per peer.
	Dialable func(ma.Multiaddr) bool
	Logger   *slog.Logger
}

// maxPeerAddrs bounds the addresses kept for one peer from one DHT message: an honest node
// has a few per interface and transport, a hostile one could list thousands to be dialled.
const maxPeerAddrs = 16

// DHT wraps a kad-dht instance with the grid's namespaces and its re-announce loop.
type DHT struct {
	kad       *kaddht.IpfsDHT
	h         host.Host
	bootstrap []peer.AddrInfo
	validity  time.Duration
	bucket    int // Kademlia's k: how many closest peers hold a record
	client    bool
	target    int // Config.ShardTarget
	records   *providerStore
	provide   chan cid.Cid // blobs to provide in the background (ProvideLater)
	log       *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	moveMu sync.Mutex
	moved  chan struct{} // closed and replaced by AddrsChanged
}

// WorkerNamespace is the namespace under which workers that run jobs for arch ("os/arch",
// as sandbox.Arches and sandbox.ArchOf name it) announce.
func WorkerNamespace(arch string) string { return "gridnode/v1/workers/" + arch }

// NamespaceCID is the key provider records of namespace ns live under; the same CID as
// routing.NewRoutingDiscovery uses (CIDv1, raw, sha2-256 of the name).
func NamespaceCID(ns string) cid.Cid { return cids.Sum([]byte(ns)) }

// New starts a DHT on h. It does not connect anywhere until Bootstrap.
func New(ctx context.Context, h host.Host, cfg Config) (*DHT, error) {
	if cfg.ProvideValidity <= 0 {
		cfg.ProvideValidity = DefaultProvideValidity
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ShardTarget <= 0 {
		cfg.ShardTarget = ShardTarget
	}
	mode := kaddht.ModeAutoServer
	switch cfg.Mode {
	case ModeServer:
		mode = kaddht.ModeServer
	case ModeClient:
		mode = kaddht.ModeClient
	}
	store := newProviderStore(h.ID(), cfg.Logger)
	opts := []kaddht.Option{
		kaddht.ProtocolPrefix(ProtocolPrefix),
		kaddht.Mode(mode),
		// Expired records are collected every sixth of the validity (the default is an
		// hour), so they do not hold a peer's share of the bounded store for long.
		// A provider's addresses live as long as its record, not amino's 24 h.
		kaddht.ProviderManagerOpts(records.ProvideValidity(cfg.ProvideValidity), records.CleanupInterval(cfg.ProvideValidity/6),
			records.Cache(noCache{}), records.ProviderAddrTTL(cfg.ProvideValidity)),
		// An ADD_PROVIDER the store would drop is dropped before its handler puts the
		// provider's addresses in the peerstore, and one it keeps brings at most
		// maxProviderAddrs of them (provaddrs.go).
		kaddht.OnRequestHook(func(_ context.Context, s network.Stream, req *pb.Message) {
			store.screen(req, s.Conn().RemotePeer(), cfg.Dialable)
		}),
		kaddht.ProviderDatastore(store),
		kaddht.DisableValues(),
		kaddht.BootstrapPeers(cfg.Bootstrap...),
	}
	if cfg.BucketSize > 0 {
		opts = append(opts, kaddht.BucketSize(cfg.BucketSize))
	}
	if mode == kaddht.ModeClient {
		// A short-lived submitter does not refresh its routing table: a refresh dials every
		// peer it is told of, some of them (NAT'd workers not yet known to be clients)
		// through a relay before the submitter's hole punching runs, so those connections
		// stay relayed; and each bucket query waits up to 10 s on peers that never answer
		// (the NAT lab saw 43 s). It looks up its own ID once instead (Locate), when its
		// node is ready to.
		opts = append(opts, kaddht.DisableAutoRefresh())
	}
	if ok := cfg.Dialable; ok != nil {
		opts = append(opts, kaddht.AddressFilter(func(as []ma.Multiaddr) []ma.Multiaddr {
			var out []ma.Multiaddr
			for _, a := range as {
				if len(out) < maxPeerAddrs && ok(a) {
					out = append(out, a)
				}
			}
			return out
		}))
	}
	kad, err := kaddht.New(h, opts...)
	if err != nil {
		return nil, fmt.Errorf("start dht: %w", err)
	}
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d := &DHT{
		kad:       kad,
		h:         h,
		bootstrap: cfg.Bootstrap,
		validity:  cfg.ProvideValidity,
		bucket:    cmp.Or(cfg.BucketSize, 20),
		client:    mode == kaddht.ModeClient,
		target:    cfg.ShardTarget,
		records:   store,
		provide:   make(chan cid.Cid, provideQueue),
		moved:     make(chan struct{}),
		log:       cfg.Logger,
		ctx:       dctx,
		cancel:    cancel,
	}
	if mode != kaddht.ModeClient {
		d.wg.Go(d.provideLoop)
	}
	return d, nil
}

// Size is the number of peers in the routing table.
func (d *DHT) Size() int { return d.kad.RoutingTable().Size() }

// ProviderRecords is the number of provider records this node holds for others and itself.
func (d *DHT) ProviderRecords() int {
	d.records.mu.Lock()
	defer d.records.mu.Unlock()
	return d.records.n
}

// Routes reports whether p is in the routing table.
func (d *DHT) Routes(p peer.ID) bool { return d.kad.RoutingTable().Find(p) != "" }

// locateWait bounds Locate: peers that never answer hold a lookup until their dials fail.
const locateWait = 3 * time.Second

// Locate looks up this node's own ID once, for at most locateWait. A client refreshes no
// routing table (New), and a table that holds only its bootstrap peers and the peers near
// the keys it looked up sizes the grid wrong (NetworkSize reads the spread of the peers
// nearest this node), so its shard level, and with it the keys its lookups ask, would be
// off: on a grid whose workers sit at level 2 or more, most clients stayed at level 1 and
// found none. The lookup brings in the peers nearest this node and feeds kad-dht's own
// estimator. A server's refresh (Join) starts with the same lookup.
//
// A peer enters the routing table only after it answers a check that follows the connection,
// and a lookup from an empty table ends at once having asked no one: node.Open calls Locate
// right after Bootstrap, and 4-5 of 5 clients did no lookup (helper-41). So Locate first
// waits, within the same budget, for the table to hold a peer, while it is connected to any.
func (d *DHT) Locate(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, locateWait)
	defer cancel()
	if len(d.h.Network().Peers()) == 0 {
		return // no one to enter the table, or to ask
	}
	if err := d.waitTable(ctx, 1, false); err != nil {
		d.log.Debug("lookup of this node's own ID", "err", err)
		return
	}
	if _, err := d.kad.GetClosestPeers(ctx, string(d.h.ID())); err != nil {
		d.log.Debug("lookup of this node's own ID", "err", err)
	}
}

// Bootstrap connects to the bootstrap peers and refreshes the routing table. It fails only
// when bootstrap peers were given and none could be reached.
func (d *DHT) Bootstrap(ctx context.Context) error {
	_, err := d.Join(ctx, d.bootstrap)
	return err
}

// Join connects to peers, all at once, and (unless a client) refreshes the routing table when
// it reached any.
// It returns how many it reached, and fails only when peers were given and none could be
// reached.
func (d *DHT) Join(ctx context.Context, peers []peer.AddrInfo) (int, error) {
	var (
		mu   sync.Mutex
		ok   int
		errs []error
		wg   sync.WaitGroup
	)
	for _, ai := range peers {
		if ai.ID == d.h.ID() {
			continue
		}
		wg.Go(func() {
			err := d.h.Connect(ctx, ai)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("connect %s: %w", ai.ID, err))
				return
			}
			ok++
		})
	}
	wg.Wait()
	if len(errs) > 0 && ok == 0 {
		return 0, fmt.Errorf("%w: %w", ErrNoBootstrap, errors.Join(errs...))
	}
	for _, err := range errs {
		d.log.Warn("bootstrap peer unreachable", "err", err)
	}
	if ok == 0 {
		return 0, nil // the first node of a grid
	}
	if d.client {
		return ok, nil // no refresh (New)
	}
	select {
	case err := <-d.kad.RefreshRoutingTable():
		if err != nil {
			d.log.Debug("routing table refresh", "err", err)
		}
		return ok, nil
	case <-ctx.Done():
		return ok, ctx.Err()
	}
}

// WaitReady polls until the routing table holds at least min peers or ctx ends. While it
// waits it asks for a routing table refresh now and then: peers that joined after this node's
// last refresh are only found by another lookup.
func (d *DHT) WaitReady(ctx context.Context, min int) error { return d.waitTable(ctx, min, true) }

// waitTable waits until the routing table holds min peers, nudging kad-dht's refresh every
// half second after the first 200 ms if nudge is set.
func (d *DHT) waitTable(ctx context.Context, min int, nudge bool) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	next := time.Now().Add(200 * time.Millisecond)
	for {
		if d.Size() >= min {
			return nil
		}
		if nudge && time.Now().After(next) {
			d.kad.RefreshRoutingTable() // buffered; the result does not matter
			next = time.Now().Add(500 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d dht peers (have %d): %w", min, d.Size(), ctx.Err())
		case <-t.C:
		}
	}
}

// Provide announces this node as a provider of c to the closest peers.
func (d *DHT) Provide(ctx context.Context, c cid.Cid) error {
	if err := d.kad.Provide(ctx, c, true); err != nil {
		return fmt.Errorf("provide %s: %w", c, err)
	}
	return nil
}

// Announce provides namespace ns once.
func (d *DHT) Announce(ctx context.Context, ns string) error {
	if err := d.kad.Provide(ctx, NamespaceCID(ns), true); err != nil {
		return fmt.Errorf("announce %s: %w", ns, err)
	}
	return nil
}

// AnnounceLoop announces ns now, again while the routing table is still growing towards k
// peers (an announcement made from a nearly empty table may miss the peers closest to the
// key), and then every third of the provide validity until Close. Failures (for example an
// empty routing table) are retried with a backoff capped at 10 s. ready, if not nil, is
// closed after the first successful announcement.
func (d *DHT) AnnounceLoop(ns string, ready chan<- struct{}) {
	d.announceLoop(func() []string { return []string{ns} }, ready)
}

// announceLoop is AnnounceLoop for the namespaces keys returns, which it asks again at
// every look (at least every levelCheck): a change is announced at once.
func (d *DHT) announceLoop(keys func() []string, ready chan<- struct{}) {
	d.wg.Go(func() {
		s := announceSchedule{bucket: d.bucket, every: d.validity / 3}
		s.reset()
		began := time.Now()
		var seen []string
		for {
			size, ns := d.Size(), keys()
			if seen != nil && !slices.Equal(ns, seen) {
				s.addrsChanged() // a new level: announce its keys now (once: a failure backs off)
			}
			seen = ns
			if s.due(time.Now(), size) {
				ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
				var errs []error
				for _, k := range ns {
					errs = append(errs, d.Announce(ctx, k))
				}
				err := errors.Join(errs...)
				cancel()
				if d.ctx.Err() != nil {
					return
				}
				ok := err == nil && size > 0
				s.done(time.Now(), size, ok)
				d.log.Debug("announce", "ns", ns, "peers", size, "ok", ok, "err", err)
				if ok && ready != nil {
					close(ready)
					ready = nil
				}
			}
			check := levelCheck
			if time.Since(began) < levelSettle {
				check = levelCheckNew
			}
			t := time.NewTimer(min(s.wait(time.Now()), check))
			select {
			case <-d.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			case <-d.movedCh():
				t.Stop()
				s.addrsChanged()
			}
		}
	})
}

// AddrsChanged tells the announce loops that this node's dialable addresses changed (a
// relay reservation, a port mapping, a new observed address), so they announce again at
// once: peers drop a provider record that comes with no address they may dial, and a node
// behind NAT has none until its relay reservation.
func (d *DHT) AddrsChanged() {
	d.moveMu.Lock()
	close(d.moved)
	d.moved = make(chan struct{})
	d.moveMu.Unlock()
}

func (d *DHT) movedCh() <-chan struct{} {
	d.moveMu.Lock()
	defer d.moveMu.Unlock()
	return d.moved
}

// announceSchedule decides when AnnounceLoop announces; it is pure, for testing.
type announceSchedule struct {
	bucket int           // k: a table this full needs no more growth-driven announcements
	every  time.Duration // the re-announce period

	lastSize int       // routing table size at the last success, -1 before any
	lastAt   time.Time // time of the last success
	retryAt  time.Time // after a failure, when to try again; zero otherwise
	backoff  time.Duration
}

// announcePoll is how often a routing table that is still growing is looked at.
const announcePoll = time.Second

func (s *announceSchedule) reset() { s.lastSize, s.backoff = -1, 100*time.Millisecond }

// due reports whether to announce now, with size peers in the routing table.
func (s *announceSchedule) due(now time.Time, size int) bool {
	if now.Before(s.retryAt) {
		return false
	}
	grew := size > s.lastSize && s.lastSize < s.bucket
	return grew || now.Sub(s.lastAt) >= s.every
}

// done records an announcement's outcome.
func (s *announceSchedule) done(now time.Time, size int, ok bool) {
	if !ok {
		s.retryAt = now.Add(s.backoff)
		s.backoff = min(2*s.backoff, 10*time.Second)
		return
	}
	s.lastSize, s.lastAt, s.retryAt = size, now, time.Time{}
	s.backoff = 100 * time.Millisecond
}

// addrsChanged makes an announcement due at once.
func (s *announceSchedule) addrsChanged() {
	s.lastAt, s.retryAt = time.Time{}, time.Time{}
	s.backoff = 100 * time.Millisecond
}

// wait is how long to sleep before looking again.
func (s *announceSchedule) wait(now time.Time) time.Duration {
	w := announcePoll
	if s.lastSize >= s.bucket {
		w = s.lastAt.Add(s.every).Sub(now)
	}
	if !s.retryAt.IsZero() {
		w = min(w, s.retryAt.Sub(now))
	}
	return max(w, 0)
}

// provideQueue bounds the blobs waiting to be provided; more are dropped, which only means
// that workers fetch them from the submitter, as they try first anyway.
const provideQueue = 64

// ProvideLater queues c to be provided on the DHT in the background, without blocking.
func (d *DHT) ProvideLater(c cid.Cid) {
	select {
	case d.provide <- c:
	default:
		d.log.Debug("provide queue full, dropping", "cid", c)
	}
}

func (d *DHT) provideLoop() {
	for {
		select {
		case <-d.ctx.Done():
			return
		case c := <-d.provide:
			ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
			if err := d.Provide(ctx, c); err != nil {
				d.log.Debug("provide failed", "cid", c, "err", err)
			}
			cancel()
		}
	}
}

// Providers without addresses in their records are looked up on the DHT: at most
// resolveMax of them, all at once, within resolveTimeout. Honest records carry addresses, so
// the others are stale or planted, and looking each up in turn (5 s apiece) let planted
// records stall a caller for minutes.
const (
	resolveMax     = 8
	resolveTimeout = 2 * time.Second
)

// providersQuiet ends a provider lookup that has found providers and then none new for
// this long. Every one of the closest peers holds the same records, so the first answers
// carry nearly all of them, and the rest of a lookup is waiting on peers that do not answer:
// a departed peer still in others' routing tables cost every fresh submitter its 5 s dial
// timeout.
var providersQuiet = 300 * time.Millisecond

// FindPeer looks p's addresses up: from a connection to it if there is one, else a lookup
// of the peers closest to p's ID, which ends once p is dialled. kad-dht reports a peer it
// heard of but did not dial during its lookup as not found, although the answers put its
// addresses in the peerstore: a peer still in the routing table whose addresses had
// expired is such a one (its neighbours' answers list them). Those are returned; dialling
// them checks that they are p's.
func (d *DHT) FindPeer(ctx context.Context, p peer.ID) (peer.AddrInfo, error) {
	ai, err := d.kad.FindPeer(ctx, p)
	if len(ai.Addrs) == 0 {
		if pi := d.h.Peerstore().PeerInfo(p); len(pi.Addrs) > 0 {
			return pi, nil
		}
	}
	return ai, err
}

// FindProviders lists the providers of c other than this node, resolving addresses of
// providers the records did not carry any for.
func (d *DHT) FindProviders(ctx context.Context, c cid.Cid) []peer.AddrInfo {
	return d.findProviders(ctx, c, 0, nil)
}

// maxProvidersSeen bounds the providers one lookup takes, kept or not: an honest DHT node
// serves at most maxProviderRecordsPerKey records of a key (and its unflushed writes), but
// one hostile server's 4 MB GET_PROVIDERS answer gave a lookup 20,000 providers to dial and
// put 320,000 addresses (~80 MiB) in the peerstore (helper-41). Cancelling the lookup stops
// kad-dht reading the rest of an answer into the peerstore.
const maxProvidersSeen = maxProviderRecordsPerKey + providerWriteBuffer

// findProviders is FindProviders ending the lookup once it has count providers that keep
// (nil: any) takes; 0 lists them all. Providers keep refuses do not count: a key's records
// of peers that do not belong under it (Sybils of another shard) would otherwise end the
// lookup before it met the ones that do.
func (d *DHT) findProviders(ctx context.Context, c cid.Cid, count int, keep func(peer.ID) bool) []peer.AddrInfo {
	var out []peer.AddrInfo
	var unknown []peer.ID
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	quiet := time.AfterFunc(time.Hour, cancel)
	defer quiet.Stop()
	n := max(count, 0)
	if n > 0 {
		n++ // this node may be one of them
	}
	if keep != nil {
		n = 0 // kad-dht would count the refused; this loop stops the lookup instead
	}
	seen := 0
	for ai := range d.kad.FindProvidersAsync(lctx, c, n) {
		quiet.Reset(providersQuiet)
		if seen++; seen > maxProvidersSeen {
			cancel() // see maxProvidersSeen
			continue
		}
		if ai.ID == d.h.ID() || keep != nil && !keep(ai.ID) {
			continue
		}
		if count > 0 && len(out)+len(unknown) >= count {
			cancel()
			continue // drain: kad-dht closes the channel once the lookup ends
		}
		if len(ai.Addrs) == 0 {
			ai.Addrs = d.h.Peerstore().Addrs(ai.ID)
		}
		if len(ai.Addrs) == 0 && d.h.Network().Connectedness(ai.ID) == network.NotConnected {
			if len(unknown) < resolveMax {
				unknown = append(unknown, ai.ID)
			}
			continue
		}
		out = append(out, ai)
	}
	found := make([]peer.AddrInfo, len(unknown))
	var wg sync.WaitGroup
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	for i, p := range unknown {
		wg.Go(func() {
			ai, err := d.kad.FindPeer(rctx, p)
			if err != nil {
				d.log.Debug("provider without addresses", "peer", p, "err", err)
				return
			}
			found[i] = ai
		})
	}
	wg.Wait()
	for _, ai := range found {
		if ai.ID != "" && len(ai.Addrs) > 0 {
			out = append(out, ai)
		}
	}
	return out
}

// FindWorkers lists the peers that announced namespace ns, excluding this node.
func (d *DHT) FindWorkers(ctx context.Context, ns string) ([]peer.AddrInfo, error) {
	ws := d.FindProviders(ctx, NamespaceCID(ns))
	if len(ws) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("find workers: %w", ctx.Err())
	}
	return ws, nil
}

// Close stops the announce loop and the DHT. Close it before the host.
func (d *DHT) Close() error {
	d.cancel()
	d.wg.Wait()
	return d.kad.Close()
}
