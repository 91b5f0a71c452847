package dht

import (
	"context"
	"encoding/base32"
	"log/slog"
	"sync"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Provider record bounds. kad-dht v0.42 takes no custom provider store, only a datastore
// for its provider manager, which keeps every ADD_PROVIDER for the provide validity: one
// identity stored 1,000,000 random keys in 7 s (+206-242 MiB). A record costs ~250 bytes
// in memory, so maxProviderRecords bounds the store at ~25 MiB, and one identity can take
// maxProviderRecordsPerPeer of it (~256 KiB). An honest worker holds one capacity record
// and one per job binary it stores, renewed in place; a renewal of a record the store holds
// is always taken. Records leave the store when the provider manager's GC deletes them after
// the validity, which gives their peer room again.
//
// maxProviderRecordsPerKey bounds one key's records: identities cost nothing, and without
// it Sybils could pile the whole store onto one key, so that every GET_PROVIDERS for it
// made this node read and send them all. An honest key holds far fewer: a worker shard
// about 2-4 × ShardTarget (shard.go), a job binary the workers that stored it.
const (
	maxProviderRecords        = 100_000
	maxProviderRecordsPerPeer = 1024
	maxProviderRecordsPerKey  = 1024
)

// providerStore is the provider manager's datastore with the bounds above. Records past a
// bound are dropped without an error: the manager commits its writes in batches, and an
// error would fail (and retry, then drop) the other peers' writes in the same batch.
type providerStore struct {
	ds.Batching
	self    string // this node's key segment; its own records are bounded by what it stores
	total   int
	perPeer int
	perKey  int
	log     *slog.Logger

	mu     sync.Mutex
	n      int            // records held
	byPeer map[string]int // records held per provider's key segment
	byKey  map[string]int // records held per key (the record key's parent)
}

var _ ds.Batching = (*providerStore)(nil)

func newProviderStore(self peer.ID, log *slog.Logger) *providerStore {
	return &providerStore{
		Batching: dssync.MutexWrap(ds.NewMapDatastore()),
		self:     keySegment(self),
		total:    maxProviderRecords,
		perPeer:  maxProviderRecordsPerPeer,
		perKey:   maxProviderRecordsPerKey,
		log:      log,
		byPeer:   make(map[string]int),
		byKey:    make(map[string]int),
	}
}

// keySegment is how the provider manager names a provider in a record's key: /providers/
// KEY/PEER, both unpadded base32.
func keySegment(p peer.ID) string {
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString([]byte(p))
}

func (s *providerStore) Put(ctx context.Context, k ds.Key, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok, err := s.Batching.Has(ctx, k); err != nil || ok {
		return s.Batching.Put(ctx, k, v) // a renewal
	}
	p, key := k.Name(), k.Parent().String()
	if p != s.self {
		if s.n >= s.total || s.byPeer[p] >= s.perPeer || s.byKey[key] >= s.perKey {
			return nil
		}
		if s.byPeer[p]++; s.byPeer[p] == s.perPeer {
			s.log.Warn("provider records: peer reached its bound", "peer", p, "records", s.perPeer)
		}
		if s.byKey[key]++; s.byKey[key] == s.perKey {
			s.log.Warn("provider records: key reached its bound", "key", key, "records", s.perKey)
		}
	}
	s.n++
	if s.n == s.total {
		s.log.Warn("provider records: store full", "records", s.n)
	}
	return s.Batching.Put(ctx, k, v)
}

func (s *providerStore) Delete(ctx context.Context, k ds.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok, err := s.Batching.Has(ctx, k); err != nil || !ok {
		return err
	}
	if p, key := k.Name(), k.Parent().String(); p != s.self {
		if s.byPeer[p]--; s.byPeer[p] <= 0 {
			delete(s.byPeer, p)
		}
		if s.byKey[key]--; s.byKey[key] <= 0 {
			delete(s.byKey, key)
		}
	}
	s.n--
	return s.Batching.Delete(ctx, k)
}

// Batch applies its writes through Put and Delete, so they are counted.
func (s *providerStore) Batch(ctx context.Context) (ds.Batch, error) {
	return ds.NewBasicBatch(s), nil
}
