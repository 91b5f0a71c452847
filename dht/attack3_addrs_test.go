package dht

import (
	"sync"
	"testing"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// atk3Key is a valid (<= 80 bytes) provider key.
func atk3Key(s string) []byte { return NamespaceCID(s).Hash() }

// atk3Add is an ADD_PROVIDER of key by id with addrs.
func atk3Add(key []byte, id peer.ID, addrs []ma.Multiaddr) *pb.Message {
	m := pb.NewMessage(pb.Message_ADD_PROVIDER, key, 0)
	m.ProviderPeers = pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: id, Addrs: addrs}})
	return m
}

// atk3Sync waits until a GET_PROVIDERS on st is answered: the messages before it on st are handled.
func atk3Sync(t *testing.T, st network.Stream) { t.Helper(); atkGetProviders(t, st, atk3Key("sync")) }

// TestAttack3ConcurrentStreamsEscapeBudget is the same over the wire: one Sybil opens 32 kad
// streams to a server and sends, on all at once, renewals of one record, each with 8 new
// addresses. A node's peerstore holds at most maxPeerAddrs of a peer's (NewPeerstore); a
// per-provider budget kept by the hook did not hold here (the hook and the handler run
// under no common lock): 64 addresses.
func TestAttack3ConcurrentStreamsEscapeBudget(t *testing.T) {
	ctx, mn, _, h := atk2Net(t)
	s, first := atk2Sybil(ctx, t, mn, h)
	key := atk3Key("shard")
	atk2Write(t, first, atk3Add(key, s.ID(), atkAddrs(8, 1)))
	atk3Sync(t, first)
	const streams, rounds = 32, 20
	sts := []network.Stream{first}
	for len(sts) < streams {
		st, err := s.NewStream(ctx, h.ID(), ProtocolPrefix+"/kad/1.0.0")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Reset()
		sts = append(sts, st)
	}
	seed := 2
	maxGot := 0
	for range rounds {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, st := range sts {
			m := atk3Add(key, s.ID(), atkAddrs(8, seed+i))
			wg.Go(func() { <-start; atk2Write(t, st, m) })
		}
		seed += len(sts)
		close(start)
		wg.Wait()
		for _, st := range sts {
			atk3Sync(t, st)
		}
		got := atk2Claimed(h, s.ID())
		maxGot = max(maxGot, got)
	}
	t.Logf("%d rounds of %d concurrent renewals (8 new addresses each): at most %d of the Sybil's addresses in the server's peerstore", rounds, streams, maxGot)
	if maxGot > maxPeerAddrs {
		t.Errorf("one Sybil's concurrent ADD_PROVIDERs on %d streams kept %d of its addresses in the peerstore, past its cap of %d (go-libp2p's default is 64: %d records x 64 = %d)",
			streams, maxGot, maxPeerAddrs, maxProviderRecords, maxProviderRecords*64)
	}
}

// TestAttack3HostileAnswerDuplicateIDs attacks maxProvidersSeen from a hostile server's
// GET_PROVIDERS answer: kad-dht's findProvidersAsyncRoutine writes every entry's addresses
// to the peerstore (maybeAddAddrs, 16 a call) before its psTryAdd, which hands on only a
// new ID, so findProviders' count sees each ID once. An answer repeating 1,200 IDs (under
// the 1,280 cut) 4 times, 16 different addresses each, fills each to go-libp2p's 64.
func TestAttack3HostileAnswerDuplicateIDs(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	const ids, copies = 1200, 4
	base := atk2FakePeers(t, ids, 0)
	var entries []*pb.Message_Peer
	for c := range copies {
		for i, f := range atk2FakePeers(t, ids, 50+c) {
			entries = append(entries, &pb.Message_Peer{Id: base[i].Id, Addrs: f.Addrs})
		}
	}
	d, h, ctx := atk2ProvidersClient(t, mn, entries)
	before, _ := atk2Addrs(h)
	provs := d.FindProviders(ctx, NamespaceCID("a blob"))
	after, peers := atk2Addrs(h)
	const honestMax = maxProviderRecordsPerKey + providerWriteBuffer
	bound := (honestMax + 64) * maxPeerAddrs // TestAttack2HostileProvidersResponse's
	t.Logf("one answer of %d entries (%d IDs x %d): FindProviders returned %d; the peerstore went from %d to %d addresses (%d peers)", len(entries), ids, copies, len(provs), before, after, peers)
	if added := after - before; added > bound {
		t.Errorf("one hostile GET_PROVIDERS answer repeating %d IDs %d times put %d addresses in the client's peerstore (%d a fake peer), past the %d maxProvidersSeen was to allow: duplicate IDs are not counted",
			ids, copies, added, added/max(peers, 1), bound)
	}
}
