package dht

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

func randomPeer(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestProviderStoreBounds drives kad-dht's own provider manager over providerStore, as the
// DHT's ADD_PROVIDER handler does, and reads the records back through it.
func TestProviderStoreBounds(t *testing.T) {
	ctx := context.Background()
	self, a, b, c := randomPeer(t), randomPeer(t), randomPeer(t), randomPeer(t)
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	st := newProviderStore(self, slog.New(slog.DiscardHandler))
	st.total, st.perPeer = 25, 10
	pm, err := records.NewProviderManager(self, ps, st, records.ProvideValidity(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	addr := ma.StringCast("/ip4/127.0.0.1/tcp/1")
	key := func(p peer.ID, i int) []byte { return []byte(fmt.Sprintf("%s/%d", p, i)) }
	add := func(p peer.ID, n int) {
		for i := range n {
			if err := pm.AddProvider(ctx, key(p, i), peer.AddrInfo{ID: p, Addrs: []ma.Multiaddr{addr}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	held := func(p peer.ID, n int) (got int) {
		for i := range n {
			provs, err := pm.GetProviders(ctx, key(p, i))
			if err != nil {
				t.Fatal(err)
			}
			got += len(provs)
		}
		return got
	}
	add(a, 1000)
	add(a, 5) // renewals of records it holds
	add(b, 1000)
	add(c, 1000)
	add(self, 100)
	// Close flushes the manager's write buffer; a second one reads what the store kept.
	if err := pm.Close(); err != nil {
		t.Fatal(err)
	}
	if pm, err = records.NewProviderManager(self, ps, st, records.ProvideValidity(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		p    peer.ID
		want int
	}{
		{"per peer", a, 10},
		{"second peer", b, 10},
		{"total", c, 5},
		{"self unbounded", self, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := held(tc.p, 1000); got != tc.want {
				t.Errorf("got %d records, want %d", got, tc.want)
			}
		})
	}
	// A deleted (expired) record frees its peer's share.
	res, err := st.Query(ctx, dsq.Query{KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	es, _ := res.Rest()
	for _, e := range es {
		if k := ds.NewKey(e.Key); k.Name() == keySegment(a) {
			if err := st.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	st.mu.Lock()
	n, na := st.n, st.byPeer[keySegment(a)]
	st.mu.Unlock()
	if n != 115 || na != 0 {
		t.Errorf("after deleting a's records: got %d held, %d of a's, want 115, 0", n, na)
	}
}

// TestProviderStoreKeyBound: Sybils (identities are free) cannot pile more than perKey
// records onto one key, and a record that expires makes room for another.
func TestProviderStoreKeyBound(t *testing.T) {
	ctx := context.Background()
	self := randomPeer(t)
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	st := newProviderStore(self, slog.New(slog.DiscardHandler))
	st.perKey = 3
	open := func() *records.ProviderManager {
		pm, err := records.NewProviderManager(self, ps, st, records.ProvideValidity(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return pm
	}
	addr := ma.StringCast("/ip4/127.0.0.1/tcp/1")
	key := []byte("shard")
	pm := open()
	for range 10 {
		p := randomPeer(t)
		if err := pm.AddProvider(ctx, key, peer.AddrInfo{ID: p, Addrs: []ma.Multiaddr{addr}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pm.AddProvider(ctx, []byte("other"), peer.AddrInfo{ID: randomPeer(t), Addrs: []ma.Multiaddr{addr}}); err != nil {
		t.Fatal(err)
	}
	pm.Close()
	pm = open()
	defer pm.Close()
	count := func(k []byte) int {
		provs, err := pm.GetProviders(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		return len(provs)
	}
	if got, other := count(key), count([]byte("other")); got != 3 || other != 1 {
		t.Fatalf("got %d records on the flooded key and %d on another, want 3 and 1", got, other)
	}
	res, err := st.Query(ctx, dsq.Query{KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	es, _ := res.Rest()
	var flooded ds.Key
	for _, e := range es {
		if k := ds.NewKey(e.Key); len(st.byKey[k.Parent().String()]) == 3 {
			flooded = k.Parent()
			if err := st.Delete(ctx, k); err != nil { // one of them expires
				t.Fatal(err)
			}
			break
		}
	}
	late := []ds.Key{flooded.ChildString(keySegment(randomPeer(t))), flooded.ChildString(keySegment(randomPeer(t)))}
	for _, k := range late {
		if err := st.Put(ctx, k, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := st.Has(ctx, late[0]); !ok {
		t.Error("an expired record did not make room on its key")
	}
	if ok, _ := st.Has(ctx, late[1]); ok {
		t.Error("a key took a record past its bound")
	}
}

// TestServedProvidersBounded: what a live node serves for a flooded key stays within its
// bound (plus the manager's unflushed writes), also while the key is being looked up. The
// manager's own cache took every ADD_PROVIDER for a key it had served into memory, past
// the store: 1,303 records served where the bound was 3.
func TestServedProvidersBounded(t *testing.T) {
	ctx := context.Background()
	mn := mocknet.New()
	defer mn.Close()
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(ctx, h, Config{Mode: ModeServer})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.records.mu.Lock()
	d.records.perKey = 3
	d.records.mu.Unlock()
	pm := d.kad.ProviderStore()
	addr := ma.StringCast("/ip4/127.0.0.1/tcp/1")
	key := []byte("a busy shard")
	served := func() int {
		provs, err := pm.GetProviders(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return len(provs)
	}
	const bound = 3 + providerWriteBuffer
	for round := range 6 {
		for range 250 {
			if err := pm.AddProvider(ctx, key, peer.AddrInfo{ID: randomPeer(t), Addrs: []ma.Multiaddr{addr}}); err != nil {
				t.Fatal(err)
			}
		}
		if got := served(); got > bound {
			t.Fatalf("after %d Sybil records: %d served, want at most %d (3 stored, %d unflushed)", 250*(round+1), got, bound, providerWriteBuffer)
		}
	}
	if got := d.ProviderRecords(); got != 3 {
		t.Errorf("the store holds %d records, want 3", got)
	}
}

// TestProviderStoreQuery: a query for one key's prefix returns that key's records only; the
// GC's query for every record returns them all; keys of another shape are not stored.
func TestProviderStoreQuery(t *testing.T) {
	ctx := context.Background()
	st := newProviderStore(randomPeer(t), slog.New(slog.DiscardHandler))
	peers := []string{keySegment(randomPeer(t)), keySegment(randomPeer(t))}
	for _, k := range []string{"/providers/AAAA", "/providers/AAAAB", "/providers/BBBB"} {
		for _, p := range peers {
			if err := st.Put(ctx, ds.NewKey(k+"/"+p), []byte(k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := st.Put(ctx, ds.NewKey("/other/AAAA"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	keys := func(prefix string) (got []string) {
		res, err := st.Query(ctx, dsq.Query{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		es, err := res.Rest()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if !strings.HasPrefix(e.Key, prefix+"/") || string(e.Value) != ds.NewKey(e.Key).Parent().String() {
				t.Errorf("query %q: got %s = %q", prefix, e.Key, e.Value)
			}
			got = append(got, e.Key)
		}
		return got
	}
	if got := keys("/providers/AAAA"); len(got) != 2 {
		t.Errorf("one key: got %v, want its 2 records", got)
	}
	if got := keys("/providers"); len(got) != 6 {
		t.Errorf("every record: got %v, want 6", got)
	}
	if got := keys("/providers/CCCC"); len(got) != 0 {
		t.Errorf("a key with no records: got %v", got)
	}
	if ok, _ := st.Has(ctx, ds.NewKey("/other/AAAA")); ok || st.n != 6 {
		t.Errorf("a key of another shape was stored (%d records)", st.n)
	}
}
