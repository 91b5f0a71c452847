package dht

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"
)

// atk2Server is a server DHT on a fresh mocknet peer, every address dialable (node.Open's
// Dialable keeps public ones; the attacker's are public), with the AddressFilter's 16.
func atk2Server(t *testing.T, mn mocknet.Mocknet) (*DHT, host.Host) {
	t.Helper()
	h := atkNodePeer(t, mn)
	d, err := New(context.Background(), h, Config{Mode: ModeServer, Dialable: func(ma.Multiaddr) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, h
}

// atk2Net is a mocknet with one server (atk2Server) and a context for the test's messages.
func atk2Net(t *testing.T) (context.Context, mocknet.Mocknet, *DHT, host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	d, h := atk2Server(t, mn)
	return ctx, mn, d, h
}

// atk2Sybil is a fresh mocknet peer with a kad stream open to h.
func atk2Sybil(ctx context.Context, t *testing.T, mn mocknet.Mocknet, h host.Host) (host.Host, network.Stream) {
	t.Helper()
	s, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mn.LinkPeers(s.ID(), h.ID()); err != nil { // LinkAll is quadratic
		t.Fatal(err)
	}
	st := atkKadStream(ctx, t, s, h)
	t.Cleanup(func() { st.Reset() })
	return s, st
}

func atk2Write(t *testing.T, st network.Stream, m *pb.Message) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := msgio.NewVarintWriter(st).WriteMsg(b); err != nil {
		t.Fatal(err)
	}
}

// atk2Claimed counts p's attacker addresses (203.*) in h's peerstore.
func atk2Claimed(h host.Host, p peer.ID) (n int) {
	for _, a := range h.Peerstore().Addrs(p) {
		if v, err := a.ValueForProtocol(ma.P_IP4); err == nil && strings.HasPrefix(v, "203.") {
			n++
		}
	}
	return n
}

// TestAttack2DuplicateProviderEntries attacks the AddressFilter's bound (at most 16
// addresses a peer from one DHT message) and the hook: the hook asks admits once per
// message, and kad-dht's handleAddProvider then calls AddProvider once per ProviderPeers
// entry whose ID is the sender, every one through the filter on its own. A Sybil that lists
// its own ID N times, 16 different addresses each, gets N×16 addresses into the peerstore
// (up to go-libp2p's 64 a peer) from one admitted record, and N AddProvider calls (each a
// peerstore write under its lock and the manager's) from one message.
//
// Measured: 8 entries put 64 addresses (go-libp2p's per-peer cap) for one record; a 4 MiB
// message repeating one entry 21,076 times cost the node 21,076 AddProvider calls, ~230-310 ms
// of handler time on one stream, against ~0.5-1 ms for one entry.
func TestAttack2DuplicateProviderEntries(t *testing.T) {
	ctx, mn, d, h := atk2Net(t)
	s, st := atk2Sybil(ctx, t, mn, h)
	const entries = 8
	msg := pb.NewMessage(pb.Message_ADD_PROVIDER, []byte("a shard key"), 0)
	for i := range entries {
		msg.ProviderPeers = append(msg.ProviderPeers, pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: s.ID(), Addrs: atkAddrs(16, 100+i)}})...)
	}
	atk2Write(t, st, msg)
	// A GET_PROVIDERS on the same stream is handled after the ADD_PROVIDER.
	_, provs := atkGetProviders(t, st, []byte("a shard key"))
	got := atk2Claimed(h, s.ID())
	t.Logf("one ADD_PROVIDER with %d entries of the sender's own ID, 16 addresses each: %d addresses in the peerstore, %d record(s) served", entries, got, provs)

	// The CPU side: one message as large as the limit allows, every entry the sender's.
	big := pb.NewMessage(pb.Message_ADD_PROVIDER, []byte("another key"), 0)
	one := pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: s.ID(), Addrs: atkAddrs(16, 7)}})[0]
	for proto.Size(big)+proto.Size(one)+4 < network.MessageSizeMax {
		big.ProviderPeers = append(big.ProviderPeers, one)
	}
	small := pb.NewMessage(pb.Message_ADD_PROVIDER, []byte("a third key"), 0)
	small.ProviderPeers = []*pb.Message_Peer{one}
	timeMsg := func(m *pb.Message, key []byte) time.Duration {
		start := time.Now()
		atk2Write(t, st, m)
		atkGetProviders(t, st, key)
		return time.Since(start)
	}
	tSmall := timeMsg(small, []byte("a third key"))
	tBig := timeMsg(big, []byte("another key"))
	t.Logf("a one-entry ADD_PROVIDER (and a GET_PROVIDERS) took %v; one of %d bytes with %d copies of the entry took %v: %d AddProvider calls for one record",
		tSmall, proto.Size(big), len(big.ProviderPeers), tBig, len(big.ProviderPeers))
	if got > maxPeerAddrs {
		t.Errorf("one admitted ADD_PROVIDER listing its sender %d times put %d of its addresses in the peerstore, past the %d the AddressFilter allows a peer a message", entries, got, maxPeerAddrs)
	}
	_ = d
}

// TestAttack2AdmittedRecordsFillPeerstore attacks the arithmetic of the bounds: the hook keeps
// refused records' addresses out of the peerstore, but every record the store admits brings
// addresses for ProvideValidity, renewable. Before NewPeerstore's cap (provaddrs.go) the
// store admitted 100,000 records from as many free identities, 16 addresses each:
// 1,600,000 addresses, past go-libp2p's 1,000,000 unconnected-address cap, after which the
// peerstore took no more and honest providers' records were served without their addresses.
// Here the store is filled to just under its bound by Sybils with one record each and 16
// public addresses, and a tenth of them renew with 16 new addresses (a Sybil that changes
// its addresses every time), all driven as the node does it: the hook's screen, then
// handleAddProvider's steps (62,500 mocknet hosts would not fit a test); then an honest
// worker sends its ADD_PROVIDER over the wire.
//
// Measured before the cap: 62,500 Sybils, all admitted in 2.6-3.2 s; the peerstore held
// 1,000,001 addresses (+261-265 MiB of heap); the honest worker's record was then stored
// with 0 of its 4 addresses.
func TestAttack2AdmittedRecordsFillPeerstore(t *testing.T) {
	if testing.Short() {
		t.Skip("25,000 records, ~60 MiB")
	}
	ctx, mn, d, h := atk2Net(t)
	pm := d.kad.ProviderStore()
	// handle is what the hook and handleAddProvider do with an ADD_PROVIDER from id.
	handle := func(id peer.ID, key []byte, addrs []ma.Multiaddr) bool {
		msg := pb.NewMessage(pb.Message_ADD_PROVIDER, key, 0)
		msg.ProviderPeers = pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: id, Addrs: addrs}})
		d.records.screen(msg, id, func(ma.Multiaddr) bool { return true })
		stored := false
		for _, pi := range pb.PBPeersToPeerInfos(msg.GetProviderPeers()) {
			if pi.ID != id || len(pi.Addrs) < 1 {
				continue
			}
			if err := pm.AddProvider(ctx, key, peer.AddrInfo{ID: pi.ID, Addrs: pi.Addrs[:min(len(pi.Addrs), maxPeerAddrs)]}); err != nil {
				t.Fatal(err)
			}
			stored = true
		}
		return stored
	}
	sybils := maxProviderRecords - 2*providerWriteBuffer // room for the honest record
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	start := time.Now()
	admitted := 0
	addrs := func(i, round int) []ma.Multiaddr {
		as := make([]ma.Multiaddr, 16)
		for j := range as {
			as[j] = ma.StringCast(fmt.Sprintf("/ip4/203.%d.%d.%d/tcp/%d", i%200, (i/200)%200, i/40000, 4000+16*round+j))
		}
		return as
	}
	ids := make([]peer.ID, sybils)
	for i := range sybils {
		ids[i] = atkID(t)
		if handle(ids[i], fmt.Appendf(nil, "sybil key %d", i/1000), addrs(i, 0)) {
			admitted++
		}
	}
	for i := 0; i < sybils; i += 10 {
		handle(ids[i], fmt.Appendf(nil, "sybil key %d", i/1000), addrs(i, 1)) // a renewal, new addresses
	}
	took := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	total, _ := atk2Addrs(h)
	t.Logf("%d Sybils: %d admitted, the store holds %d records (bound %d) in %v; the peerstore holds %d addresses, heap +%d MiB",
		sybils, admitted, d.ProviderRecords(), maxProviderRecords, took, total, (int64(m1.HeapAlloc)-int64(m0.HeapAlloc))>>20)
	if bound := maxProviderRecords*maxPeerAddrs + 16; total > bound {
		t.Errorf("%d Sybil records the store admitted put %d addresses in the peerstore, past the %d that maxProviderRecords and NewPeerstore's cap allow", admitted, total, bound)
	}
	if renewed := atk2Claimed(h, ids[0]); renewed > maxPeerAddrs {
		t.Errorf("a Sybil that renewed with 16 new addresses holds %d in the peerstore, past the peerstore's cap of %d a peer", renewed, maxPeerAddrs)
	}
	// An honest worker's record, over the wire.
	w, st := atk2Sybil(ctx, t, mn, h)
	msg := pb.NewMessage(pb.Message_ADD_PROVIDER, []byte("an honest binary"), 0)
	msg.ProviderPeers = pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: w.ID(), Addrs: atkAddrs(4, 199)}})
	atk2Write(t, st, msg)
	_, provs := atkGetProviders(t, st, []byte("an honest binary"))
	got := atk2Claimed(h, w.ID())
	t.Logf("the honest record: %d served, %d of its 4 addresses in the peerstore", provs, got)
	if provs != 1 || got < 4 {
		t.Errorf("%d Sybil records the store admitted (%d%% of its bound) left %d addresses in the peerstore; an honest worker's record was then served %d times with %d of its 4 addresses",
			admitted, 100*admitted/maxProviderRecords, total, provs, got)
	}
}

// TestAttack2HookLargeKey attacks the hook's place in front of the handler: handleAddProvider
// refuses a key over 80 bytes, but the hook runs first and admits base32-encodes the key and
// looks it up in byKey with the store's lock held. A stranger's ADD_PROVIDER with a ~4 MiB
// key costs the node that encoding (~6.7 MB, twice: the encoding and "/providers/"+it) and
// a hash of 6.7 MB under the lock every Put and GET_PROVIDERS takes. Measured directly on
// admits (what the hook calls), and sent over the wire once to show the message reaches it
// and the node survives.
//
// Measured: admits allocated 528 bytes for an 80-byte key and 20,136,064 (4.8× the key) in
// 8-9 ms for a 4,193,280-byte one.
func TestAttack2HookLargeKey(t *testing.T) {
	ctx, mn, d, h := atk2Net(t)
	s, st := atk2Sybil(ctx, t, mn, h)
	huge := bytes.Repeat([]byte{0xa5}, network.MessageSizeMax-1024)
	cost := func(key []byte) (alloc uint64, per time.Duration) {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		const n = 10
		start := time.Now()
		for range n {
			d.records.admits(key, s.ID())
		}
		per = time.Since(start) / n
		runtime.ReadMemStats(&m1)
		return (m1.TotalAlloc - m0.TotalAlloc) / n, per
	}
	aSmall, tSmall := cost(bytes.Repeat([]byte{0xa5}, 80))
	aHuge, tHuge := cost(huge)
	// Over the wire: the handler refuses it and resets the stream; the node still serves.
	atk2Write(t, st, &pb.Message{Type: pb.Message_ADD_PROVIDER, Key: huge,
		ProviderPeers: pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: s.ID(), Addrs: atkAddrs(1, 3)}})})
	_, st2 := atk2Sybil(ctx, t, mn, h)
	_, provs := atkGetProviders(t, st2, []byte("anything"))
	t.Logf("admits: %d bytes and %v for an 80-byte key; %d bytes and %v for a %d-byte key the handler then refuses; the node still answers (%d providers)",
		aSmall, tSmall, aHuge, tHuge, len(huge), provs)
	if aHuge > 100*aSmall+4096 {
		t.Errorf("an ADD_PROVIDER with a %d-byte key (the handler refuses over 80) made the hook allocate %d bytes (%.1f× the key) and spend %v, part of it under the store's lock; an 80-byte key costs %d bytes",
			len(huge), aHuge, float64(aHuge)/float64(len(huge)), tHuge, aSmall)
	}
}

// TestAttack2MalformedMessages is a defence check: strangers send every malformed or
// off-path message shape kad-dht accepts on the wire, concurrently (run with -race), and
// keys that could alias a record key ("/", "..", "/providers/x", bytes a path would clean).
// None may panic the node, put an address of a peer other than the sender in the peerstore,
// or leave the store's counters off its records; every odd key is a record of its own under
// its base32 name, counted against its sender; and the node still answers.
func TestAttack2MalformedMessages(t *testing.T) {
	ctx, mn, d, h := atk2Net(t)
	victim := atkID(t) // a peer the attackers name as provider
	vAddrs := atkAddrs(4, 150)
	peerOf := func(id peer.ID, as []ma.Multiaddr) *pb.Message_Peer {
		return pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: id, Addrs: as}})[0]
	}
	oddKeys := [][]byte{[]byte("/"), []byte(".."), []byte("/providers/x"), []byte("a/../b"), []byte("a//b/"),
		{0}, bytes.Repeat([]byte{0xff}, 80), []byte("A"), []byte("a")}
	type shape struct {
		name string
		msg  func(self peer.ID) *pb.Message
		raw  []byte
	}
	shapes := []shape{
		{name: "garbage", raw: []byte{0xff, 0xff, 0xff, 0x0f, 0x01}},
		{name: "empty", msg: func(peer.ID) *pb.Message { return &pb.Message{} }},
		{name: "unknown type", msg: func(peer.ID) *pb.Message { return &pb.Message{Type: 99, Key: []byte("k")} }},
		{name: "negative level", msg: func(peer.ID) *pb.Message {
			return &pb.Message{Type: pb.Message_FIND_NODE, Key: []byte("k"), ClusterLevelRaw: -5}
		}},
		{name: "FIND_NODE empty", msg: func(peer.ID) *pb.Message { return &pb.Message{Type: pb.Message_FIND_NODE} }},
		{name: "PUT_VALUE", msg: func(p peer.ID) *pb.Message {
			return &pb.Message{Type: pb.Message_PUT_VALUE, Key: []byte("/pk/x"), Record: &recpb.Record{Key: []byte("/pk/x"), Value: []byte("v")},
				CloserPeers: []*pb.Message_Peer{peerOf(victim, vAddrs)}, ProviderPeers: []*pb.Message_Peer{peerOf(victim, vAddrs)}}
		}},
		{name: "GET_VALUE", msg: func(peer.ID) *pb.Message { return &pb.Message{Type: pb.Message_GET_VALUE, Key: []byte("/pk/x")} }},
		{name: "PING with peers", msg: func(peer.ID) *pb.Message {
			return &pb.Message{Type: pb.Message_PING, CloserPeers: []*pb.Message_Peer{peerOf(victim, vAddrs)}, ProviderPeers: []*pb.Message_Peer{peerOf(victim, vAddrs)}}
		}},
		{name: "FIND_NODE with peers", msg: func(peer.ID) *pb.Message {
			return &pb.Message{Type: pb.Message_FIND_NODE, Key: []byte(victim), CloserPeers: []*pb.Message_Peer{peerOf(victim, vAddrs)}, ProviderPeers: []*pb.Message_Peer{peerOf(victim, vAddrs)}}
		}},
		{name: "GET_PROVIDERS with peers", msg: func(peer.ID) *pb.Message {
			return &pb.Message{Type: pb.Message_GET_PROVIDERS, Key: []byte("k"), CloserPeers: []*pb.Message_Peer{peerOf(victim, vAddrs)}, ProviderPeers: []*pb.Message_Peer{peerOf(victim, vAddrs)}}
		}},
		{name: "GET_PROVIDERS empty", msg: func(peer.ID) *pb.Message { return &pb.Message{Type: pb.Message_GET_PROVIDERS} }},
		{name: "GET_PROVIDERS 81", msg: func(peer.ID) *pb.Message {
			return &pb.Message{Type: pb.Message_GET_PROVIDERS, Key: bytes.Repeat([]byte("k"), 81)}
		}},
		{name: "ADD_PROVIDER empty key", msg: func(p peer.ID) *pb.Message {
			return &pb.Message{Type: pb.Message_ADD_PROVIDER, ProviderPeers: []*pb.Message_Peer{peerOf(p, atkAddrs(1, 1))}}
		}},
		{name: "ADD_PROVIDER 81", msg: func(p peer.ID) *pb.Message {
			return &pb.Message{Type: pb.Message_ADD_PROVIDER, Key: bytes.Repeat([]byte("k"), 81), ProviderPeers: []*pb.Message_Peer{peerOf(p, atkAddrs(1, 1))}}
		}},
		{name: "ADD_PROVIDER no peers", msg: func(peer.ID) *pb.Message { return &pb.Message{Type: pb.Message_ADD_PROVIDER, Key: []byte("k")} }},
		{name: "ADD_PROVIDER other's ID", msg: func(peer.ID) *pb.Message {
			return &pb.Message{Type: pb.Message_ADD_PROVIDER, Key: []byte("k"), ProviderPeers: []*pb.Message_Peer{peerOf(victim, vAddrs)}}
		}},
		{name: "ADD_PROVIDER nil and empty entries", msg: func(p peer.ID) *pb.Message {
			return &pb.Message{Type: pb.Message_ADD_PROVIDER, Key: []byte("k"), ProviderPeers: []*pb.Message_Peer{{}, {Id: []byte{}}, {Id: []byte("not an id")}, {Id: []byte(p)}}}
		}},
		{name: "ADD_PROVIDER bad addrs", msg: func(p peer.ID) *pb.Message {
			return &pb.Message{Type: pb.Message_ADD_PROVIDER, Key: []byte("k"), ProviderPeers: []*pb.Message_Peer{{Id: []byte(p), Addrs: [][]byte{{0xff, 0xff}, {}, {0x04, 1}}}}}
		}},
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	senders := map[peer.ID]bool{}
	for round := range 3 {
		for _, sh := range shapes {
			s, st := atk2Sybil(ctx, t, mn, h)
			mu.Lock()
			senders[s.ID()] = true
			mu.Unlock()
			wg.Go(func() {
				w := msgio.NewVarintWriter(st)
				b := sh.raw
				if sh.msg != nil {
					b, _ = proto.Marshal(sh.msg(s.ID()))
				}
				_ = w.WriteMsg(b)
				// Read whatever comes back (an answer, a reset, or nothing for 200 ms).
				st.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				r := msgio.NewVarintReaderSize(st, network.MessageSizeMax)
				if m, err := r.ReadMsg(); err == nil {
					var resp pb.Message
					if proto.Unmarshal(m, &resp) == nil && (len(resp.CloserPeers) > 0 || len(resp.ProviderPeers) > 0) && (sh.name == "PING with peers") {
						t.Errorf("round %d %s: the node echoed %d closer and %d provider peers", round, sh.name, len(resp.CloserPeers), len(resp.ProviderPeers))
					}
				}
			})
		}
	}
	// Odd keys from one Sybil, on one stream, while the others run.
	odd, ost := atk2Sybil(ctx, t, mn, h)
	for _, k := range oddKeys {
		atk2Write(t, ost, &pb.Message{Type: pb.Message_ADD_PROVIDER, Key: k, ProviderPeers: []*pb.Message_Peer{peerOf(odd.ID(), atkAddrs(2, 9))}})
	}
	_, _ = atkGetProviders(t, ost, []byte("sync")) // the odd keys were handled
	wg.Wait()
	// The node still answers, on a fresh stream.
	_, st := atk2Sybil(ctx, t, mn, h)
	size, _ := atkGetProviders(t, st, []byte("k"))
	if err := d.kad.ProviderStore().Close(); err != nil { // flush the manager's buffer into the store
		t.Fatal(err)
	}
	held := atkCheck(t, d.records)
	d.records.mu.Lock()
	oddHeld := d.records.byPeer[keySegment(odd.ID())]
	var badKeys []string
	for key := range d.records.byKey {
		if len(ds2(key)) != 2 {
			badKeys = append(badKeys, key)
		}
	}
	d.records.mu.Unlock()
	if n := atk2Claimed(h, victim); n > 0 {
		t.Errorf("messages naming another peer put %d of its addresses in the peerstore", n)
	}
	if oddHeld != len(oddKeys) {
		t.Errorf("%d odd keys from one Sybil: %d records counted against it", len(oddKeys), oddHeld)
	}
	if len(badKeys) > 0 {
		t.Errorf("record keys of another shape held: %q", badKeys)
	}
	for _, k := range oddKeys {
		if !d.records.admits(k, odd.ID()) {
			t.Errorf("odd key %q: its renewal is not admitted (the record is not where admits looks)", k)
		}
	}
	t.Logf("%d malformed messages from %d strangers and %d odd keys: %d records held, %d of the odd Sybil's; the node still answers (%d bytes)",
		3*len(shapes), len(senders), len(oddKeys), held, oddHeld, size)
}

// ds2 splits a record-key parent into its namespaces.
func ds2(key string) []string { return strings.Split(strings.TrimPrefix(key, "/"), "/") }
