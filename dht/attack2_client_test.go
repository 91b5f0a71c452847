package dht

import (
	"context"
	"encoding/binary"
	"runtime"
	"sync"
	"testing"
	"time"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"
)

// atk2Hostile makes h a hostile kad server: every request it reads on the grid's kad
// protocol is answered with answer(req), or, if answer returns nil, not at all (the stream is
// held open, read from, until the peer gives up).
func atk2Hostile(h host.Host, answer func(req *pb.Message) *pb.Message) {
	h.SetStreamHandler(ProtocolPrefix+"/kad/1.0.0", func(s network.Stream) {
		defer s.Reset()
		r := msgio.NewVarintReaderSize(s, network.MessageSizeMax)
		w := msgio.NewVarintWriter(s)
		for {
			b, err := r.ReadMsg()
			if err != nil {
				return
			}
			var req pb.Message
			err = proto.Unmarshal(b, &req)
			r.ReleaseMsg(b)
			if err != nil {
				return
			}
			resp := answer(&req)
			if resp == nil {
				continue // stall: never answer
			}
			out, err := proto.Marshal(resp)
			if err != nil {
				return
			}
			if w.WriteMsg(out) != nil {
				return
			}
		}
	})
}

// atk2FakePeers are n fresh identities, 16 public addresses each, as raw Message_Peers (the
// bytes a hostile server writes; built without multiaddr parsing to keep the test cheap).
// seed separates the addresses of different calls.
func atk2FakePeers(t testing.TB, n, seed int) []*pb.Message_Peer {
	out := make([]*pb.Message_Peer, n)
	for i := range out {
		addrs := make([][]byte, 16)
		for j := range addrs {
			// /ip4/203.A.B.C/tcp/P: 0x04, 4 bytes, 0x06, 2 bytes.
			a := []byte{0x04, 203, byte(seed), byte(i >> 8), byte(i), 0x06, 0, 0}
			binary.BigEndian.PutUint16(a[6:], uint16(4000+j))
			addrs[j] = a
		}
		out[i] = &pb.Message_Peer{Id: []byte(atkID(t)), Addrs: addrs}
	}
	return out
}

// atk2Addrs is the number of addresses in h's peerstore (every peer's), and the peers holding any.
func atk2Addrs(h host.Host) (addrs, peers int) {
	for _, p := range h.Peerstore().PeersWithAddrs() {
		if n := len(h.Peerstore().Addrs(p)); n > 0 {
			addrs += n
			peers++
		}
	}
	return addrs, peers
}

// atk2Client starts a DHT in mode on a fresh mocknet peer bootstrapped to boot, with every
// address dialable (node.Open's Dialable keeps public ones: the attacker's are public).
func atk2Client(t *testing.T, mn mocknet.Mocknet, boot host.Host, mode Mode) (*DHT, host.Host) {
	t.Helper()
	h := atkNodePeer(t, mn)
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), h, Config{
		Bootstrap: []peer.AddrInfo{{ID: boot.ID(), Addrs: boot.Addrs()}},
		Mode:      mode,
		Dialable:  func(ma.Multiaddr) bool { return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, h
}

// atk2Providers is the most fake providers that fit one 4 MiB answer (~199 bytes each).
const atk2Providers = 20_000

// atk2ProvidersClient is a ModeClient DHT joined (table ready) through a hostile bootstrap
// server that answers every GET_PROVIDERS with providers.
func atk2ProvidersClient(t *testing.T, mn mocknet.Mocknet, providers []*pb.Message_Peer) (*DHT, host.Host, context.Context) {
	t.Helper()
	evil, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	atk2Hostile(evil, func(req *pb.Message) *pb.Message {
		resp := pb.NewMessage(req.GetType(), req.GetKey(), 0)
		if req.GetType() == pb.Message_GET_PROVIDERS {
			resp.ProviderPeers = providers
		}
		return resp
	})
	d, h := atk2Client(t, mn, evil, ModeClient)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	if err := d.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	return d, h, ctx
}

// TestAttack2HostileProvidersResponse attacks the client side of the provider bounds: the
// OnRequestHook and the store bound what this node takes from ADD_PROVIDERs, but a
// GET_PROVIDERS answer from a hostile DHT server (any stranger that gets into the routing
// table, or a bootstrap peer) goes through kad-dht's findProvidersAsyncRoutine, which puts
// every provider's addresses into the peerstore (maybeAddAddrs, TempAddrTTL 2 min) before
// handing it to findProviders, and FindProviders (count 0: findAll) takes every one. An
// honest server holds at most maxProviderRecordsPerKey + providerWriteBuffer records a key.
//
// One hostile server answers a GET_PROVIDERS with 20,000 fresh identities, 16 public
// addresses each (~4 MB, within the 4 MiB message limit). FindProviders (jobs.go's blob
// lookup, relay.go's relay discovery) and FindShard(ns, 0) (node.go's worker listing) are
// what a submitter calls.
//
// Measured: one 3,980,040-byte answer made FindProviders return 20,000 providers in 0.5-0.8 s
// and left 320,000 addresses (20,000 peers, ~80 MiB) in the client's peerstore for 2 min:
// four such answers reach go-libp2p's 1,000,000-address cap. FindShard(ns, 0) listed 20,000
// "workers". (With want > 0 the lookup is cut at want: TestAttack2HostileProvidersWanted.)
func TestAttack2HostileProvidersResponse(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	fakes := atk2FakePeers(t, atk2Providers, 1)
	respSize := proto.Size(&pb.Message{Type: pb.Message_GET_PROVIDERS, ProviderPeers: fakes})
	d, h, ctx := atk2ProvidersClient(t, mn, fakes)
	before, _ := atk2Addrs(h)
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	start := time.Now()
	provs := d.FindProviders(ctx, NamespaceCID("a blob"))
	took := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	after, peers := atk2Addrs(h)
	heap := (int64(m1.HeapAlloc) - int64(m0.HeapAlloc)) >> 20
	t.Logf("one hostile GET_PROVIDERS answer (%d bytes): FindProviders returned %d providers in %v; the client's peerstore went from %d to %d addresses (%d peers), heap +%d MiB (fakes held by the test included)",
		respSize, len(provs), took, before, after, peers, heap)
	const honestMax = maxProviderRecordsPerKey + providerWriteBuffer
	if len(provs) > honestMax {
		t.Errorf("one hostile server made FindProviders return %d providers (an honest server holds at most %d a key): the caller gets them all to dial", len(provs), honestMax)
	}
	// kad-dht hands providers over on a channel and has a few more in flight when the lookup
	// is cancelled (5 seen): 64 of slack. Before maxProvidersSeen: 20,000 peers, 320,000
	// addresses.
	if added := after - before; added > (honestMax+64)*maxPeerAddrs {
		t.Errorf("one hostile GET_PROVIDERS answer put %d addresses of %d fake peers in the client's peerstore for 2 min (%d such answers reach go-libp2p's 1,000,000 cap); an honest key's records carry at most %d",
			added, peers, (1_000_000+added-1)/max(added, 1), honestMax*maxPeerAddrs)
	}
	// FindShard(ns, 0), node.go's worker listing, goes through the same loop.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	ws, _ := d.FindShard(wctx, WorkerNamespace("test/test"), 0)
	t.Logf("FindShard(ns, 0) at level %d: %d workers", d.Level(), len(ws))
	if len(ws) > honestMax {
		t.Errorf("FindShard(ns, 0) listed %d workers from one hostile server's answer", len(ws))
	}
}

// TestAttack2HostileProvidersWanted is the defence for a bounded lookup: FindShard with
// want > 0 cancels the lookup once it has want, and kad-dht stops taking the hostile answer's
// providers (and their addresses) at the cancel, so one 4 MB answer costs the client a few
// providers' addresses, not 20,000.
func TestAttack2HostileProvidersWanted(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	d, h, ctx := atk2ProvidersClient(t, mn, atk2FakePeers(t, atk2Providers, 2))
	before, _ := atk2Addrs(h)
	ws, err := d.FindShard(ctx, WorkerNamespace("test/test"), 6)
	after, _ := atk2Addrs(h)
	t.Logf("FindShard(want 6) at level %d: %d workers, %v; peerstore +%d addresses", d.Level(), len(ws), err, after-before)
	if len(ws) > 6 {
		t.Errorf("FindShard(want 6) returned %d", len(ws))
	}
	if after-before > 64*maxPeerAddrs {
		t.Errorf("a lookup wanting 6 took %d addresses from one hostile answer", after-before)
	}
}

// TestAttack2HostileCloserPeers is a defence check for the FIND_NODE side of Locate (and of
// every lookup): a hostile bootstrap peer answers FIND_NODE with 20,000 fresh identities, 16
// public addresses each (~4 MB). kad-dht's query takes at most 2×bucketSize (40) closer peers
// from one answer before it writes their addresses to the peerstore (query.go, maxCloserPeers),
// so the answer costs the client at most 40 peers' addresses, and Locate still ends within
// locateWait.
func TestAttack2HostileCloserPeers(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	evil, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	fakes := atk2FakePeers(t, atk2Providers, 3)
	atk2Hostile(evil, func(req *pb.Message) *pb.Message {
		resp := pb.NewMessage(req.GetType(), req.GetKey(), 0)
		resp.CloserPeers = fakes
		return resp
	})
	d, h := atk2Client(t, mn, evil, ModeClient)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := d.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	before, _ := atk2Addrs(h)
	lstart := time.Now()
	d.Locate(ctx)
	locate := time.Since(lstart)
	after, peers := atk2Addrs(h)
	t.Logf("hostile bootstrap answering FIND_NODE with %d closer peers: open (bootstrap, wait, Locate) took %v, Locate %v; the client's peerstore went from %d to %d addresses (%d peers), routing table %d",
		len(fakes), time.Since(start), locate, before, after, peers, d.Size())
	if locate > locateWait+time.Second {
		t.Errorf("Locate took %v with a garbage-answering bootstrap peer, bound %v", locate, locateWait)
	}
	if added := after - before; added > 10*20*maxPeerAddrs {
		t.Errorf("one hostile FIND_NODE answer to Locate put %d addresses of %d fake peers in the client's peerstore for 2 min; an honest answer carries k=20 peers (%d addresses)", added, peers, 20*maxPeerAddrs)
	}
}

// TestAttack2StalledBootstrap: a hostile bootstrap peer that reads every kad request and
// never answers. node.Open for a client does Bootstrap, Locate, then WaitReady(1) bounded
// by 10 s; the DHT's part (Bootstrap, Locate) must end in bounded time, Locate's 3 s, not
// kad-dht's 10 s read timeout, and a FindShard on the stalled table must end with the
// caller's context. (The stalled peer never enters the routing table: kad-dht adds a peer
// only after it answers a FIND_NODE, so node.Open's WaitReady then spends its 10 s.)
func TestAttack2StalledBootstrap(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	evil, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	atk2Hostile(evil, func(*pb.Message) *pb.Message { return nil })
	d, _ := atk2Client(t, mn, evil, ModeClient)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := d.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	d.Locate(ctx)
	open := time.Since(start)
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	werr := d.WaitReady(wctx, 1)
	wcancel()
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
	defer fcancel()
	fstart := time.Now()
	ws, err := d.FindShard(fctx, WorkerNamespace("test/test"), 3)
	find := time.Since(fstart)
	t.Logf("stalling bootstrap: Bootstrap+Locate took %v; WaitReady (2 s): %v; FindShard with a 2 s context: %d workers, %v, after %v", open, werr, len(ws), err, find)
	if open > locateWait+time.Second {
		t.Errorf("a client's Bootstrap+Locate took %v against a stalling bootstrap peer, bound ~%v", open, locateWait)
	}
	if find > 3*time.Second {
		t.Errorf("FindShard with a 2 s context took %v against a stalling peer", find)
	}
}

// TestAttack2StalledAfterJoin: the bootstrap peer answers the FIND_NODE that puts it in the
// routing table, then stalls every later request. Locate must still end within locateWait
// (its lookup waits on a peer that never answers), and a FindShard within the caller's
// context.
func TestAttack2StalledAfterJoin(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	evil, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	var answered int
	var mu sync.Mutex
	atk2Hostile(evil, func(req *pb.Message) *pb.Message {
		mu.Lock()
		defer mu.Unlock()
		if req.GetType() == pb.Message_FIND_NODE && answered == 0 {
			answered++
			return pb.NewMessage(req.GetType(), req.GetKey(), 0)
		}
		return nil
	})
	d, _ := atk2Client(t, mn, evil, ModeClient)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d.Locate(ctx)
	locate := time.Since(start)
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
	defer fcancel()
	fstart := time.Now()
	ws, err := d.FindShard(fctx, WorkerNamespace("test/test"), 3)
	find := time.Since(fstart)
	t.Logf("bootstrap stalling after joining the table: Locate %v; FindShard (2 s context): %d workers, %v, after %v", locate, len(ws), err, find)
	if locate > locateWait+time.Second {
		t.Errorf("Locate took %v against a stalling peer, bound %v", locate, locateWait)
	}
	if find > 3*time.Second {
		t.Errorf("FindShard with a 2 s context took %v against a stalling peer", find)
	}
}

// TestAttack2LocateBeforeTable attacks the Locate fix of ab4bb70 through node.Open's order:
// an Ephemeral node does Bootstrap, waitHolePunching (which returns at once unless a
// connection is public and hole punching is not yet ready: on a LAN, on loopback, or once
// it is ready), then Locate, and only then WaitReady(1). kad-dht puts the bootstrap peer in
// the routing table only after it has answered a FIND_NODE (peerFound's lookupCheck), which
// Bootstrap does not wait for; Locate on an empty table is a no-op (GetClosestPeers: "failed
// to find any peer in table"), so the client never looks up its own ID and sizes the grid from
// its bootstrap peer alone: TestAttackClientShardLevel's failure (stuck at level ≤ 1) is back
// whenever Locate wins the race. No attacker needed; a slow bootstrap peer (one that answers
// FIND_NODE late) makes it certain. Measured on a 40-server grid: clients in node.Open's
// order against clients that WaitReady first (as atkSearcher does).
//
// Measured: 4-5 of 5 clients in node.Open's order did no lookup (Locate returned in 9-25 µs,
// table 1 after it); 5 of 5 that waited first grew their table to 16-23 in 8-36 ms.
func TestAttack2LocateBeforeTable(t *testing.T) {
	const n, bucket, target, clients = 40, 20, 8, 5
	mn, nodes := atkGrid(t, n, bucket, target, WorkerNamespace("test/test"))
	boot := nodes[0]
	open := func(waitFirst bool) (size int, took time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d := atkJoin(ctx, t, mn, boot, ModeClient, bucket, target)
		if waitFirst {
			if err := d.WaitReady(ctx, 1); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		d.Locate(ctx)
		took = time.Since(start)
		if err := d.WaitReady(ctx, 1); err != nil { // node.Open's, after Locate
			t.Fatal(err)
		}
		return d.Size(), took
	}
	var raced, fine int
	for i := range clients {
		s, took := open(false)
		c, ctook := open(true)
		t.Logf("client %d: node.Open's order: table %d after a Locate of %v; WaitReady first: table %d after a Locate of %v", i, s, took, c, ctook)
		if s <= 1 {
			raced++
		}
		if c > 1 {
			fine++
		}
	}
	if fine < clients {
		t.Errorf("bad test: %d of %d clients that waited for their table grew it with Locate", fine, clients)
	}
	if raced > 0 {
		t.Errorf("%d of %d clients opened in node.Open's order (Bootstrap, Locate, WaitReady) did no lookup: Locate found an empty routing table and returned at once, leaving a table of just the bootstrap peer (WaitReady first: %d of %d grew theirs)", raced, clients, fine, clients)
	}
}
