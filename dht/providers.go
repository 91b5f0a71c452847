package dht

import (
	"context"
	"encoding/base32"
	"log/slog"
	"strings"
	"sync"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Provider record bounds. kad-dht v0.42 takes no custom provider store, only a datastore
// for its provider manager, which keeps every ADD_PROVIDER for the provide validity: one
// identity stored 1,000,000 random keys in 7 s (+206-242 MiB). A record costs ~250 bytes
// in memory, so maxProviderRecords bounds the store at ~3 MiB (and its providers'
// addresses in the peerstore at maxProviderRecords × maxPeerAddrs: NewPeerstore), and one
// identity can take maxProviderRecordsPerPeer of it (~256 KiB). An honest worker holds one capacity record
// and one per job binary it stores, renewed in place; a renewal of a record the store holds
// is always taken. Records leave the store when the provider manager's GC deletes them after
// the validity, which gives their peer room again.
//
// maxProviderRecordsPerKey bounds one key's records: identities cost nothing, and without
// it Sybils could pile the whole store onto one key, so that every GET_PROVIDERS for it
// made this node read and send them all. An honest key holds far fewer: a worker shard
// about 2-4 × ShardTarget (shard.go), a job binary the workers that stored it.
//
// The bounds hold for what the node serves only because the manager keeps no cache of its
// own (noCache): its LRU of provider sets took every ADD_PROVIDER for a cached key in
// memory past the store, so a key that was being looked up (a busy shard) grew without
// bound (1,300 Sybil records served where the bound was 3), until its GET_PROVIDERS
// answers passed the 4 MiB message limit and the key could no longer be served at all.
// What is served past the bounds is the manager's unflushed writes, at most
// providerWriteBuffer of them, kept until its next flush.
const (
	maxProviderRecords        = 12_500
	maxProviderRecordsPerPeer = 1024
	maxProviderRecordsPerKey  = 1024
	providerWriteBuffer       = 256 // records.batchBufferSize in kad-dht v0.42.2
)

// providerStore is the provider manager's datastore with the bounds above. Records past a
// bound are dropped without an error: the manager commits its writes in batches, and an
// error would fail (and retry, then drop) the other peers' writes in the same batch.
//
// Records are held by key, so the manager's load of one key's providers (a query for the
// prefix /providers/KEY, on every GET_PROVIDERS since there is no cache) reads that key's
// records, not the whole store. The manager writes only provider records,
// /providers/KEY/PEER; anything else is dropped.
type providerStore struct {
	self    string // this node's key segment; its own records are bounded by what it stores
	total   int
	perPeer int
	perKey  int
	log     *slog.Logger

	mu     sync.Mutex
	n      int                          // records held
	byPeer map[string]int               // records held per provider's key segment
	byKey  map[string]map[string][]byte // record key's parent (/providers/KEY) → provider → value
}

var _ ds.Batching = (*providerStore)(nil)

func newProviderStore(self peer.ID, log *slog.Logger) *providerStore {
	return &providerStore{
		self:    keySegment(self),
		total:   maxProviderRecords,
		perPeer: maxProviderRecordsPerPeer,
		perKey:  maxProviderRecordsPerKey,
		log:     log,
		byPeer:  make(map[string]int),
		byKey:   make(map[string]map[string][]byte),
	}
}

// keySegment is how the provider manager names a provider in a record's key: /providers/
// KEY/PEER, both unpadded base32.
func keySegment(p peer.ID) string {
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString([]byte(p))
}

// split is a record key's parent and provider; ok is false for a key of any other shape.
func split(k ds.Key) (parent, p string, ok bool) {
	if len(k.Namespaces()) != 3 || !strings.HasPrefix(k.String(), "/providers/") {
		return "", "", false
	}
	return k.Parent().String(), k.Name(), true
}

func (s *providerStore) Put(ctx context.Context, k ds.Key, v []byte) error {
	key, p, ok := split(k)
	if !ok {
		s.log.Debug("provider records: not a provider record", "key", k)
		return nil
	}
	v = append([]byte(nil), v...) // the caller may reuse v
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := s.byKey[key]
	if _, ok := recs[p]; ok {
		recs[p] = v // a renewal
		return nil
	}
	if p != s.self {
		if s.n >= s.total || s.byPeer[p] >= s.perPeer || len(recs) >= s.perKey {
			return nil
		}
		if s.byPeer[p]++; s.byPeer[p] == s.perPeer {
			s.log.Warn("provider records: peer reached its bound", "peer", p, "records", s.perPeer)
		}
		if len(recs)+1 == s.perKey {
			s.log.Warn("provider records: key reached its bound", "key", key, "records", s.perKey)
		}
	}
	if recs == nil {
		recs = make(map[string][]byte)
		s.byKey[key] = recs
	}
	recs[p] = v
	if s.n++; s.n == s.total {
		s.log.Warn("provider records: store full", "records", s.n)
	}
	return nil
}

// admits reports whether a new ADD_PROVIDER of key by p would be stored: a renewal or this
// node's own record always, another while no bound is reached. The manager calls
// AddProvider before the store is asked, and AddProvider puts the provider's addresses in
// the peerstore whether or not the store then keeps the record: Sybils flooding a full key
// filled it to go-libp2p's 1,000,000 addresses (+249 MiB), after which honest records
// were served without theirs. Records the manager has not flushed yet are not counted.
func (s *providerStore) admits(key []byte, p peer.ID) bool {
	if len(key) == 0 || len(key) > maxKeyLen {
		return false // the handler refuses it; a 4 MiB key cost 20 MB of encoding here
	}
	parent := "/providers/" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(key)
	seg := keySegment(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := s.byKey[parent]
	if _, ok := recs[seg]; ok || seg == s.self {
		return true
	}
	return s.n < s.total && s.byPeer[seg] < s.perPeer && len(recs) < s.perKey
}

func (s *providerStore) Delete(ctx context.Context, k ds.Key) error {
	key, p, ok := split(k)
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := s.byKey[key]
	if _, ok := recs[p]; !ok {
		return nil
	}
	if delete(recs, p); len(recs) == 0 {
		delete(s.byKey, key)
	}
	if p != s.self {
		if s.byPeer[p]--; s.byPeer[p] <= 0 {
			delete(s.byPeer, p)
		}
	}
	s.n--
	return nil
}

func (s *providerStore) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	key, p, _ := split(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.byKey[key][p]
	if !ok {
		return nil, ds.ErrNotFound
	}
	return append([]byte(nil), v...), nil
}

func (s *providerStore) Has(ctx context.Context, k ds.Key) (bool, error) {
	_, err := s.Get(ctx, k)
	return err == nil, nil
}

func (s *providerStore) GetSize(ctx context.Context, k ds.Key) (int, error) {
	v, err := s.Get(ctx, k)
	if err != nil {
		return -1, err
	}
	return len(v), nil
}

// Query returns a snapshot, so the manager may delete (expired records) while it reads.
// A prefix of one key (/providers/KEY) reads that key's records only; any other prefix
// (the GC's, /providers) reads them all.
func (s *providerStore) Query(ctx context.Context, q dsq.Query) (dsq.Results, error) {
	prefix := ds.NewKey(q.Prefix)
	s.mu.Lock()
	var es []dsq.Entry
	add := func(key string, recs map[string][]byte) {
		for p, v := range recs {
			e := dsq.Entry{Key: key + "/" + p, Size: len(v)}
			if !q.KeysOnly {
				e.Value = append([]byte(nil), v...)
			}
			es = append(es, e)
		}
	}
	if len(prefix.Namespaces()) == 2 {
		add(prefix.String(), s.byKey[prefix.String()])
	} else {
		es = make([]dsq.Entry, 0, s.n)
		for key, recs := range s.byKey {
			add(key, recs)
		}
	}
	s.mu.Unlock()
	return dsq.NaiveQueryApply(q, dsq.ResultsWithEntries(q, es)), nil
}

// Batch applies its writes through Put and Delete, so they are counted.
func (s *providerStore) Batch(ctx context.Context) (ds.Batch, error) {
	return ds.NewBasicBatch(s), nil
}

func (s *providerStore) Sync(context.Context, ds.Key) error { return nil }
func (s *providerStore) Close() error                       { return nil }

// noCache is the provider manager's LRU cache, holding nothing: see the bounds above.
type noCache struct{}

func (noCache) Add(key, value any) bool                 { return false }
func (noCache) Get(key any) (value any, ok bool)        { return nil, false }
func (noCache) Contains(key any) bool                   { return false }
func (noCache) Peek(key any) (value any, ok bool)       { return nil, false }
func (noCache) Remove(key any) bool                     { return false }
func (noCache) RemoveOldest() (key, value any, ok bool) { return nil, nil, false }
func (noCache) GetOldest() (key, value any, ok bool)    { return nil, nil, false }
func (noCache) Keys() []any                             { return nil }
func (noCache) Len() int                                { return 0 }
func (noCache) Purge()                                  {}
func (noCache) Resize(int) int                          { return 0 }
