package dht

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"
)

// atkGrid starts n server DHTs on a mocknet with shard target target and bucket size
// bucket, every one bootstrapped to the first, and has each announce itself once as a
// worker of ns at its level. It returns the mocknet (for joining searchers) and the nodes.
func atkGrid(t *testing.T, n, bucket, target int, ns string) (mocknet.Mocknet, []*DHT) {
	t.Helper()
	mn, nodes := startMesh(t, n, Config{BucketSize: bucket, ShardTarget: target})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	// A second refresh, once every node has joined, fills every table (sim.New does the
	// same); then every worker announces once, at the level its full table gives, so that
	// no record of a half-filled table's lower level lingers.
	for _, d := range nodes {
		wg.Go(func() { <-d.kad.RefreshRoutingTable() })
	}
	wg.Wait()
	errs := make([]error, n)
	levels := make([]int, n)
	for i, d := range nodes {
		levels[i] = d.Level()
		wg.Go(func() {
			for _, k := range shardKeys(ns, d.h.ID(), levels[i]) {
				if err := d.Announce(ctx, k); err != nil {
					errs[i] = err
				}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
	}
	hist := map[int]int{}
	for _, l := range levels {
		hist[l]++
	}
	t.Logf("workers announced at levels (level: workers) %v", hist)
	return mn, nodes
}

// atkJoin starts a fresh DHT in mode, linked to the grid, and bootstraps it from the grid's
// first node.
func atkJoin(ctx context.Context, t *testing.T, mn mocknet.Mocknet, boot *DHT, mode Mode, bucket, target int) *DHT {
	t.Helper()
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	d, err := New(ctx, h, Config{
		Bootstrap:   []peer.AddrInfo{{ID: boot.h.ID(), Addrs: boot.h.Addrs()}},
		Mode:        mode,
		BucketSize:  bucket,
		ShardTarget: target,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

// atkSearcher joins a fresh DHT in mode to the grid the way node.Open does for a submitter:
// Bootstrap, then for a client Locate, then WaitReady for one peer. (It once waited before
// Locate, which node.Open does not, and so missed Locate running on an empty table.)
func atkSearcher(t *testing.T, mn mocknet.Mocknet, boot *DHT, mode Mode, bucket, target int) *DHT {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := atkJoin(ctx, t, mn, boot, mode, bucket, target)
	if mode == ModeClient {
		d.Locate(ctx)
	}
	if err := d.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	return d
}

// atkPoll is node.pollWorkers: FindShard for want workers every 50 ms until it finds one
// or wait ends. It returns the most found, the searcher's last level, and the polls made.
func atkPoll(d *DHT, ns string, want int, wait time.Duration) (found, level, polls int) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for {
		ws, _ := d.FindShard(ctx, ns, want)
		polls++
		found, level = max(found, len(ws)), d.Level()
		if found > 0 || ctx.Err() != nil {
			return found, level, polls
		}
		select {
		case <-ctx.Done():
			return found, level, polls
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestAttackClientShardLevel attacks change 3 (a ModeClient DHT does not refresh its routing
// table) for (c): could a client fail to find workers a server-mode searcher finds? No
// attacker is needed, only a grid large enough to shard. A client's routing table holds its
// bootstrap peer, so its first FindShard is at level 0 (tableEstimate: 2 nodes), and then
// the ~20 peers that lookup met, all near the level-0 key: tableEstimate reads about 20/d
// (d the client's XOR distance to that key) whatever the grid's size, and NetworkSize takes
// the lower of it and kad-dht's (FindProviders never feeds that one: "not enough data"). A
// client whose estimate stays under 4·ShardTarget stays at level ≤ 1 and every later poll
// looks up the same level-0 key, meets the same peers and learns nothing, while workers of
// level L ≥ 2 announce only at L and L-1. With ShardTarget 32 that is d > 0.16: ~84% of
// `gridnode submit`s (Ephemeral → ModeClient) on a grid whose workers sit at level 2 or more
// (≳ 256 nodes) would find only the workers that under-estimate the grid, and on ~1,000
// nodes none, failing after findWorkers' 10 s with ErrNoWorkers. The same client after one
// routing-table refresh (Join's, before a738749) estimates the grid and finds them.
//
// Measured (150 servers, bucket 20, ShardTarget 8, each announcing once at its level:
// 2-4, mostly 3-4): the server-mode searcher found 6 (of want 6) at level 4 in one poll;
// every refreshed client found 6 in one poll, table 71-82; of 10 clients, in three runs 10,
// 10 and 5 found fewer than 3: stuck at level 1 with a table of 15-21 and an estimate of
// 21-29, finding 0-2 (workers that had under-estimated) in 53-57 polls over 3 s, each poll
// a full lookup.
//
// Fixed: a client looks up its own ID once (Locate; node.Open does so once its hole
// punching is ready), which brings in the peers nearest it and so its estimate. With it,
// every client found 6 workers in one poll (tables of 21-49).
//
// With the searchers opened in node.Open's real order (Locate before WaitReady), 3 and 5 of
// 10 clients (two runs) still stayed at level 1 and found 0 workers: Locate had run on an
// empty routing table (helper-41; TestAttack2LocateBeforeTable). Locate now waits for the
// table first.
func TestAttackClientShardLevel(t *testing.T) {
	const n, bucket, target, want, clients, refreshed = 150, 20, 8, 6, 10, 3
	ns := WorkerNamespace("test/test")
	mn, nodes := atkGrid(t, n, bucket, target, ns)
	server := atkSearcher(t, mn, nodes[0], ModeServer, bucket, target)
	sFound, sLevel, _ := atkPoll(server, ns, want, 3*time.Second)
	t.Logf("server-mode searcher: %d workers at level %d", sFound, sLevel)
	if sFound == 0 {
		t.Fatal("bad test: the server-mode searcher found no worker either")
	}
	cs := make([]*DHT, clients+refreshed)
	for i := range cs {
		cs[i] = atkSearcher(t, mn, nodes[0], ModeClient, bucket, target)
	}
	for _, c := range cs[clients:] {
		<-c.kad.RefreshRoutingTable() // the control: Join's refresh before a738749
	}
	type result struct{ found, level, polls, table int }
	res := make([]result, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			f, l, p := atkPoll(c, ns, want, 3*time.Second)
			res[i] = result{f, l, p, c.Size()}
		})
	}
	wg.Wait()
	var failed, refreshedFailed int
	for i, r := range res {
		kind := "client"
		if i >= clients {
			kind = "refreshed client"
		}
		t.Logf("%s %d: %d workers at level %d after %d polls, table %d", kind, i, r.found, r.level, r.polls, r.table)
		if r.found < want/2 {
			if i < clients {
				failed++
			} else {
				refreshedFailed++
			}
		}
	}
	if refreshedFailed > 0 {
		t.Errorf("bad test: %d of %d refreshed clients found fewer than %d workers", refreshedFailed, refreshed, want/2)
	}
	if failed > 0 {
		t.Errorf("%d of %d ModeClient searchers found fewer than %d workers in 3 s where a server-mode one found %d at level %d in one poll", failed, clients, want/2, sFound, sLevel)
	}
}

// atkID is a fresh peer ID without a key (a sha256 multihash, as RSA identities are):
// kad-dht's manager needs only that it decodes, and an attacker's identities cost nothing.
func atkID(t testing.TB) peer.ID {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	h, err := mh.Sum(b[:], mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return peer.ID(h)
}

// atkAddrs are n public addresses, as a Sybil lists (AddressFilter keeps 16 a message).
func atkAddrs(n, seed int) []ma.Multiaddr {
	as := make([]ma.Multiaddr, n)
	for i := range as {
		as[i] = ma.StringCast(fmt.Sprintf("/ip4/203.%d.%d.%d/tcp/4001", seed%200, (seed/200)%200, i))
	}
	return as
}

// TestAttackProviderAddrsPastStore attacks the bounds of change 1 (a, e) from the side
// kad-dht writes before the store is asked: ProviderManager.AddProvider puts every
// ADD_PROVIDER's addresses into the host's peerstore (for amino's ProviderAddrTTL, 24 h)
// before it buffers the record, so a record the store then drops still cost the node an
// address-book entry per address, for 24 h, however full the store or the key was.
//
// Measured before the fix (the manager driven directly): 62,500 Sybil ADD_PROVIDERs to one
// full key in ~1.7 s; the store held 1,024 records and the peerstore 1,000,001 addresses
// (go-libp2p's cap), +249 MiB of heap; an honest record was then served with 0 of its 2
// addresses, and a connected worker's with 0 once it disconnected.
//
// Fixed: an OnRequestHook drops an ADD_PROVIDER the store would refuse (providerStore.admits)
// before its handler runs, and provider addresses live as long as records (ProvideValidity).
// What still passes is the manager's unflushed writes (at most 255 records' addresses,
// until its next flush makes the store full). This test sends ADD_PROVIDERs over the
// wire, as Sybils do, to a key the store holds full: none of their addresses reach the
// peerstore, and an honest record for another key still does.
func TestAttackProviderAddrsPastStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mn := mocknet.New()
	defer mn.Close()
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(ctx, h, Config{Mode: ModeServer, Dialable: func(ma.Multiaddr) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const sybils, perMsg, bound = 20, 16, 4
	d.records.mu.Lock()
	d.records.perKey = bound
	d.records.mu.Unlock()
	full := []byte("a full shard key")
	parent := "/providers/" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(full)
	now := binary.AppendVarint(nil, time.Now().UnixNano()) // the manager's encoding of a record's time
	for range bound {
		if err := d.records.Put(ctx, ds.NewKey(parent+"/"+keySegment(atkID(t))), now); err != nil {
			t.Fatal(err)
		}
	}
	send := func(key []byte, i int) peer.ID {
		s, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		if err := mn.LinkAll(); err != nil {
			t.Fatal(err)
		}
		st := atkKadStream(ctx, t, s, h)
		defer st.Close()
		msg := pb.NewMessage(pb.Message_ADD_PROVIDER, key, 0)
		msg.ProviderPeers = pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: s.ID(), Addrs: atkAddrs(perMsg, i)}})
		b, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		if err := msgio.NewVarintWriter(st).WriteMsg(b); err != nil {
			t.Fatal(err)
		}
		return s.ID()
	}
	var ids []peer.ID
	for i := range sybils {
		ids = append(ids, send(full, i))
	}
	// The honest record after them: once it is in, every Sybil message before it on the
	// same node was handled (each its own stream, so wait for it alone first).
	honest := send([]byte("an honest binary"), sybils)
	deadline := time.Now().Add(5 * time.Second)
	for atk2Claimed(h, honest) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the Sybils' streams, handled concurrently
	if want := min(perMsg, maxProviderAddrs); atk2Claimed(h, honest) != want {
		t.Fatalf("the honest record's %d addresses: %d in the peerstore, want %d", perMsg, atk2Claimed(h, honest), want)
	}
	provs, err := d.kad.ProviderStore().GetProviders(ctx, []byte("an honest binary"))
	if err != nil || len(provs) != 1 || provs[0].ID != honest {
		t.Fatalf("the honest record: got %v, %v", provs, err)
	}
	pinned := 0
	for _, id := range ids {
		pinned += atk2Claimed(h, id)
	}
	t.Logf("%d Sybil ADD_PROVIDERs to a full key: %d of their %d addresses in the peerstore", sybils, pinned, sybils*perMsg)
	if pinned > 0 {
		t.Errorf("records the store refuses left %d addresses in the peerstore", pinned)
	}
	if got, _ := d.kad.ProviderStore().GetProviders(ctx, full); len(got) != bound {
		t.Errorf("the full key serves %d records, want its %d", len(got), bound)
	}
}

// atkCheck verifies providerStore's counters against its records: n is every record,
// byPeer every other peer's, no key holds more than perKey records of other peers, no peer
// more than perPeer, and no counter is negative.
func atkCheck(t *testing.T, st *providerStore) (records int) {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	peers := map[string]int{}
	for key, recs := range st.byKey {
		others := 0
		for p := range recs {
			records++
			if p != st.self {
				peers[p]++
				others++
			}
		}
		if len(recs) == 0 {
			t.Errorf("key %s kept with no records", key)
		}
		if others > st.perKey {
			t.Errorf("key %s holds %d records of other peers, bound %d", key, others, st.perKey)
		}
	}
	if records != st.n {
		t.Errorf("n = %d, but %d records are held", st.n, records)
	}
	for p, c := range peers {
		if st.byPeer[p] != c {
			t.Errorf("byPeer[%s] = %d, holds %d", p, st.byPeer[p], c)
		}
		if c > st.perPeer {
			t.Errorf("peer %s holds %d records, bound %d", p, c, st.perPeer)
		}
	}
	for p, c := range st.byPeer {
		if c <= 0 || peers[p] == 0 {
			t.Errorf("byPeer[%s] = %d for a peer holding %d", p, c, peers[p])
		}
	}
	if others := records - func() int {
		self := 0
		for _, recs := range st.byKey {
			if _, ok := recs[st.self]; ok {
				self++
			}
		}
		return self
	}(); others > st.total {
		t.Errorf("%d records of other peers held, bound %d", others, st.total)
	}
	return records
}

// TestAttackProviderStoreRace attacks change 1's counters and locking (d): kad-dht's real
// ProviderManager over providerStore with a 40 ms validity and a 2 ms GC, so expired-record
// deletes (GC batches and loadProviderSet's own) race the manager's flushes of renewals of
// the same records, while Sybils (few keys, few identities, self) add and renew, readers
// GET_PROVIDERS, and a third party queries (both the one-key and the full prefix) and
// deletes behind the manager's back (as the GC does). Under -race. Tight bounds (perKey 8,
// perPeer 16, total 64) make every bound busy.
//
// Measured (the defence held): no race, panic or deadlock; in 2 s under -race ~45,000
// AddProviders, ~19,000 GetProviders and ~15,000 third-party deletes, after which n, byPeer
// and the records agree and no bound is passed (66-73 held: at most 64 of other peers, the rest self's), and once
// everything expired one GC pass left the store empty with every counter gone.
func TestAttackProviderStoreRace(t *testing.T) {
	ctx := context.Background()
	self := atkID(t)
	st := newProviderStore(self, slog.New(slog.DiscardHandler))
	st.total, st.perPeer, st.perKey = 64, 16, 8
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	const validity = 40 * time.Millisecond
	pm, err := records.NewProviderManager(self, ps, st, records.ProvideValidity(validity), records.CleanupInterval(2*time.Millisecond), records.Cache(noCache{}))
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]peer.ID, 24)
	for i := range ids {
		ids[i] = atkID(t)
	}
	ids = append(ids, self)
	keys := make([][]byte, 12)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key %d", i)
	}
	addr := []ma.Multiaddr{ma.StringCast("/ip4/203.0.113.1/tcp/4001")}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var adds, gets, dels int64
	var mu sync.Mutex
	count := func(c *int64) { mu.Lock(); *c++; mu.Unlock() }
	for w := range 4 {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := ids[(i*7)%len(ids)]
				if err := pm.AddProvider(ctx, keys[(i*5)%len(keys)], peer.AddrInfo{ID: p, Addrs: addr}); err != nil {
					t.Error(err)
					return
				}
				count(&adds)
			}
		})
	}
	for w := range 2 {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				provs, err := pm.GetProviders(ctx, keys[i%len(keys)])
				if err != nil {
					t.Error(err)
					return
				}
				if len(provs) > st.perKey+1+providerWriteBuffer {
					t.Errorf("%d providers served for one key", len(provs))
				}
				count(&gets)
			}
		})
	}
	wg.Go(func() { // a third party: queries and deletes
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			prefix := "/providers"
			if i%2 == 0 {
				prefix = "/providers/" + keySegment(peer.ID(keys[i%len(keys)]))
			}
			res, err := st.Query(ctx, dsq.Query{Prefix: prefix})
			if err != nil {
				t.Error(err)
				return
			}
			for e := range res.Next() {
				if i%3 == 0 {
					if err := st.Delete(ctx, ds.RawKey(e.Key)); err != nil {
						t.Error(err)
					}
					count(&dels)
				}
			}
			res.Close()
		}
	})
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if err := pm.Close(); err != nil {
		t.Fatal(err)
	}
	held := atkCheck(t, st)
	t.Logf("%d AddProviders, %d GetProviders, %d third-party deletes: %d records held", adds, gets, dels, held)
	// Everything expires; one GC pass of a new manager must empty the store.
	time.Sleep(2 * validity)
	pm, err = records.NewProviderManager(self, ps, st, records.ProvideValidity(validity), records.CleanupInterval(time.Millisecond), records.Cache(noCache{}))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	pm.Close()
	if held := atkCheck(t, st); held != 0 || len(st.byPeer) != 0 || len(st.byKey) != 0 {
		t.Errorf("after every record expired: %d held, %d peers and %d keys counted", held, len(st.byPeer), len(st.byKey))
	}
}

// atkGetProviders sends GET_PROVIDERS for key on s (kad-dht's wire: varint-delimited
// protobuf) and returns the answer's size and providers.
// atkKadStream connects from to to and opens a kad stream, as any peer may.
func atkKadStream(ctx context.Context, t *testing.T, from, to host.Host) network.Stream {
	t.Helper()
	if err := from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := from.NewStream(ctx, to.ID(), ProtocolPrefix+"/kad/1.0.0")
	if err != nil {
		t.Fatalf("kad stream: %v", err)
	}
	return s
}

func atkGetProviders(t *testing.T, s network.Stream, key []byte) (size, provs int) {
	t.Helper()
	req, err := proto.Marshal(pb.NewMessage(pb.Message_GET_PROVIDERS, key, 0))
	if err != nil {
		t.Fatal(err)
	}
	w := msgio.NewVarintWriter(s)
	if err := w.WriteMsg(req); err != nil {
		t.Fatal(err)
	}
	r := msgio.NewVarintReaderSize(s, network.MessageSizeMax)
	b, err := r.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	defer r.ReleaseMsg(b)
	var resp pb.Message
	if err := proto.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	return len(b), len(resp.ProviderPeers)
}

// TestAttackGetProvidersCost attacks change 1's read path (b): what one GET_PROVIDERS, sent
// over the wire to a real node, costs it. A key's answer must cost the records of that key,
// not of the store: the manager's query prefix is always one key's (/providers/KEY; the
// handler refuses an empty key, the one prefix that would read everything), so a small key
// on a store full of Sybil records (100,000 on 1,024 other keys, 98 identities) must cost
// about what it costs on an empty store. A flooded key (1,024 stored + 255 unflushed
// Sybils, 16 long addresses each) costs its records; that is the bound, measured here for
// the record.
//
// Measured (the defence held): a one-record key's GET_PROVIDERS took 15-23 µs on the empty
// store and 14-34 µs on the full one (an 85-byte answer); the flooded key's took 6.5-8 ms
// and answered 1,279 providers in ~2.1 MB to a 21-byte request: one key's records, as
// bounded, but a ~100,000× amplification of bytes any peer may ask for again and again on
// one stream (and a submitter's lookup of a flooded key receives it from each holder it
// asks). The GC's full snapshot of 100,000 records held the store's lock 22-28 ms.
func TestAttackGetProvidersCost(t *testing.T) {
	ctx := context.Background()
	mn := mocknet.New()
	defer mn.Close()
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	asker, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	d, err := New(ctx, h, Config{Mode: ModeServer, Dialable: func(ma.Multiaddr) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pm := d.kad.ProviderStore()
	s := atkKadStream(ctx, t, asker, h)
	defer s.Close()
	small := []byte("a key with one record")
	if err := pm.AddProvider(ctx, small, peer.AddrInfo{ID: atkID(t), Addrs: atkAddrs(2, 7)}); err != nil {
		t.Fatal(err)
	}
	timeGet := func(key []byte, n int) (per time.Duration, size, provs int) {
		start := time.Now()
		for range n {
			size, provs = atkGetProviders(t, s, key)
		}
		return time.Since(start) / time.Duration(n), size, provs
	}
	emptyPer, emptySize, _ := timeGet(small, 200)
	// Fill the store: 98 Sybil identities × 1,024 records, one on each of 1,024 keys.
	for i := range 98 {
		p := atkID(t)
		for j := range 1024 {
			if err := pm.AddProvider(ctx, fmt.Appendf(nil, "filler %d", j), peer.AddrInfo{ID: p, Addrs: atkAddrs(1, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	fullPer, fullSize, _ := timeGet(small, 200)
	// Flood one key with Sybils, 16 long addresses each, and leave 255 unflushed.
	flooded := []byte("a flooded shard")
	long := make([]ma.Multiaddr, 16)
	for i := range long {
		long[i] = ma.StringCast(fmt.Sprintf("/ip6/2001:db8::%x/udp/4001/quic-v1/webtransport/certhash/uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE6g/certhash/uEiAaRZ4q5MJ0mzLwaC9NpPApmeeq1-ZcS9ePZc9-ajL_rg", i))
	}
	// The store is full, so make the flood's room first: some filler records expire (are
	// deleted, as the GC does).
	var expire []ds.Key
	d.records.mu.Lock()
	for key, recs := range d.records.byKey {
		for p := range recs {
			if len(expire) < 1100 && key != "/providers/"+keySegment(peer.ID(small)) {
				expire = append(expire, ds.NewKey(key+"/"+p))
			}
		}
	}
	d.records.mu.Unlock()
	for _, k := range expire {
		if err := d.records.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	// The manager flushes at every 256th write: 100,353 writes so far leave 1 in its buffer,
	// and 1,534 more leave 255 (254 of them the flooded key's).
	for range 1024 + 256 + 254 {
		if err := pm.AddProvider(ctx, flooded, peer.AddrInfo{ID: atkID(t), Addrs: long}); err != nil {
			t.Fatal(err)
		}
	}
	floodPer, floodSize, floodProvs := timeGet(flooded, 20)
	smallAgain, _, _ := timeGet(small, 200)
	// The GC's full snapshot, with the store's lock held.
	start := time.Now()
	res, err := d.records.Query(ctx, dsq.Query{Prefix: "/providers/"})
	if err != nil {
		t.Fatal(err)
	}
	snap := time.Since(start)
	es, _ := res.Rest()
	req, _ := proto.Marshal(pb.NewMessage(pb.Message_GET_PROVIDERS, flooded, 0))
	t.Logf("one-record key: %v a GET_PROVIDERS (%d bytes) on an empty store, %v (%d bytes) on a full one (%d records), %v after the flood", emptyPer, emptySize, fullPer, fullSize, d.ProviderRecords(), smallAgain)
	t.Logf("flooded key: %v a GET_PROVIDERS, %d providers in %d bytes, to a %d-byte request", floodPer, floodProvs, floodSize, len(req))
	t.Logf("GC snapshot: %d records in %v", len(es), snap)
	if fullPer > 10*emptyPer+time.Millisecond {
		t.Errorf("a one-record key's GET_PROVIDERS costs %v on a full store, %v on an empty one", fullPer, emptyPer)
	}
	if floodProvs > maxProviderRecordsPerKey+providerWriteBuffer {
		t.Errorf("a flooded key served %d providers, bound %d + %d unflushed", floodProvs, maxProviderRecordsPerKey, providerWriteBuffer)
	}
}
