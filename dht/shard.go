package dht

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Worker announcements are sharded so that no key carries more than a few dozen records
// at any grid size (docs/SCALE.md). A worker's shard at level l is the first l bits of
// sha256(peer ID); its key is the namespace plus "/l/" and those bits, and level 0 is the
// namespace itself. Every node estimates the grid's size N and takes the level l =
// floor(log2(N/ShardTarget)), so a level-l key holds about N/2^l records, from ShardTarget
// to twice that. A worker announces at its level and the one above (estimates differ
// between nodes by up to 2×, and the parent key holds the child's workers too), and a
// submitter asks one random shard at the level above its own, where the workers of its
// level and of the one above announce, moving up to the parent while it has too few.
const (
	// ShardTarget is the number of records a shard key holds at its level.
	ShardTarget = 32
	// maxLevel bounds the level whatever the estimate: 2^16 shards hold 4 million workers
	// at ShardTarget; a hostile estimate (Sybils near this node) cannot push it further.
	maxLevel = 16
)

// ShardNamespace is the namespace of the level-l shard with the given bits (the first l
// bits of a worker's sha256(peer ID)) under ns; level 0 is ns itself.
func ShardNamespace(ns string, level int, bits uint64) string {
	if level <= 0 {
		return ns
	}
	s := strconv.FormatUint(bits, 2)
	for len(s) < level {
		s = "0" + s
	}
	return ns + "/l/" + s
}

// ShardOf is the first level bits of sha256(p): the shard p announces under at level.
func ShardOf(p peer.ID, level int) uint64 {
	if level <= 0 {
		return 0
	}
	h := sha256.Sum256([]byte(p))
	return binary.BigEndian.Uint64(h[:8]) >> (64 - level)
}

// LevelFor is the shard level for a grid of n nodes and target records per key: the
// largest l with target·2^l ≤ n, at most maxLevel.
func LevelFor(n, target int) int {
	l := 0
	for l < maxLevel && n >= target<<(l+1) {
		l++
	}
	return l
}

// NetworkSize estimates the number of DHT servers from the routing table: the k peers
// closest to this node lie within a normed XOR distance d of it, about k/d nodes in all.
// A table not yet holding k peers is a grid of that size, or a node that has just joined:
// either way a low level, whose keys hold the workers of higher ones. When kad-dht's own
// estimator (fitted to the closest peers its lookups met) has enough data, the lower of the
// two: an estimate too high puts a worker where fewer submitters look (a 50-node grid had
// one node at level 2 with kad-dht's alone), and Sybils near this node must fool both.
func (d *DHT) NetworkSize() int {
	n := tableEstimate(d.h.ID(), d.kad.RoutingTable().ListPeers(), d.bucket)
	if k, err := d.kad.NetworkSize(); err == nil && k > 0 {
		n = min(n, int(k))
	}
	return n
}

// tableEstimate is NetworkSize's estimate from the routing table's peers ps.
func tableEstimate(self peer.ID, ps []peer.ID, k int) int {
	if len(ps) < k {
		return len(ps) + 1
	}
	me := kadKey(self)
	ds := make([]uint64, len(ps))
	for i, p := range ps {
		ds[i] = kadKey(p) ^ me
	}
	slices.Sort(ds)
	far := float64(ds[k-1]) / math.Exp2(64) // the k-th closest, normed to (0, 1)
	if far <= 0 {
		return math.MaxInt32
	}
	return int(math.Min(float64(k)/far, math.MaxInt32)) + 1
}

// kadKey is the first 64 bits of p's position in kad-dht's key space (sha256 of the ID).
func kadKey(p peer.ID) uint64 {
	h := sha256.Sum256([]byte(p))
	return binary.BigEndian.Uint64(h[:8])
}

// Level is the shard level this node announces and looks up at.
func (d *DHT) Level() int { return LevelFor(d.NetworkSize(), d.target) }

// shardKeys are the namespaces this node announces ns under at level l: its shard at l and
// at l-1 (one key at level 0).
func shardKeys(ns string, self peer.ID, l int) []string {
	keys := []string{ShardNamespace(ns, l, ShardOf(self, l))}
	if l > 0 {
		keys = append(keys, ShardNamespace(ns, l-1, ShardOf(self, l-1)))
	}
	return keys
}

// levelCheck is how often a sharded announce loop looks whether its level changed (the
// grid grew or shrank past a power of two); in its first levelSettle, while a joining
// node's routing table fills, every levelCheckNew: a worker that first announced at the
// level of a half-empty table is otherwise looked for a level up, where it is not, for up
// to levelCheck (CI once saw a new worker of a 200-node simulation unfound after 60 s).
const (
	levelCheck    = time.Minute
	levelCheckNew = 2 * time.Second
	levelSettle   = 2 * time.Minute
)

// AnnounceWorker is AnnounceLoop for a worker namespace: it announces this node's shards
// of ns at its level and the one above, and again at once when its level changes.
func (d *DHT) AnnounceWorker(ns string, ready chan<- struct{}) {
	d.announceLoop(func() []string { return shardKeys(ns, d.h.ID(), d.Level()) }, ready)
}

// FindShard returns up to want providers of ns other than this node from a random shard
// at the level above this node's (l-1, whose keys hold 2-4 × the target at an agreed l:
// the workers that estimate the grid's size as this node does and those that estimate it
// at half), then its sibling and its parents while it has fewer, up to level 0; and then,
// while it still has fewer, the shards below the first one (widen). Each lookup stops once
// it has want providers, so it asks a few peers near one key whatever the grid's size.
// want ≤ 0 lists every provider at each level from the first shard's up to level 0.
//
// The parents hold the workers whose estimate of the grid's size is at most this node's;
// the shards below, those whose estimate is higher. A worker at level m announces at m and
// m-1 only, so a submitter that underestimates the grid finds nobody above it: on a
// 200-node grid whose workers nearly all sat at level 2 (keys at levels 2 and 1), a
// submitter whose estimate was under 128 (level 1) asked only the level-0 key, which held
// the few workers that had estimated under 128 when they announced: 5-31 of the 24 wanted
// on this VM's grids (5 < the 7 a submit asks; CI once found 6).
func (d *DHT) FindShard(ctx context.Context, ns string, want int) ([]peer.AddrInfo, error) {
	size := d.NetworkSize()
	level := LevelFor(size, d.target)
	l := max(level-1, 0)
	bits := rand.Uint64() >> (64 - l) // 0 at level 0: a shift by 64 is 0
	seen := map[peer.ID]bool{}
	var out []peer.AddrInfo
	short := func() bool { return want <= 0 || len(out) < want }
	// ask looks up the shard sh at level lv and returns how many providers of that shard
	// it met, new or already seen.
	ask := func(lv int, sh uint64) int {
		// A peer's shard is its ID's: one identity cannot stand in every shard.
		ofShard := func(p peer.ID) bool { return ShardOf(p, lv) == sh }
		ais := d.findProviders(ctx, NamespaceCID(ShardNamespace(ns, lv, sh)), want, ofShard)
		for _, ai := range ais {
			if !seen[ai.ID] && short() {
				seen[ai.ID] = true
				out = append(out, ai)
			}
		}
		return len(ais)
	}
	// The shard, its sibling (a shard may hold fewer than want: keys spread around their
	// mean), then the parents.
	ask(l, bits)
	if l > 0 && short() && ctx.Err() == nil {
		ask(l, bits^1)
	}
	for lv := l - 1; lv >= 0 && short() && ctx.Err() == nil; lv-- {
		ask(lv, bits>>(l-lv))
	}
	if want > 0 {
		// One level more when what was found falls far short of the grid this node sees
		// (a level-0 node of a 200-node grid found 17 of the 24 it wants; a 5-node
		// testnet's finds all 4 others and does not look below).
		low := level
		if len(out) < size/2 {
			low++
		}
		d.widen(ctx, l, low, bits, short, ask)
	}
	if len(out) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("find workers: %w", ctx.Err())
	}
	return out, nil
}

// widen is FindShard's way down from the shard sh at level l while short: at each level
// below, down to level low, a random child of the shard last asked and, while still short,
// that child's sibling (the two together hold the workers of their parent's that estimate
// the grid's size higher). The keys at this node's level hold the workers that estimate
// the grid's size as this node does or at twice: with the parents, that covers a factor of
// 2 either way. FindShard goes one level lower only when it found under half the grid this
// node sees: a lookup that meets no provider runs to its end, dialling any departed peer
// on its way (5 s every submit on a 5-node testnet whose level-1 keys are empty).
func (d *DHT) widen(ctx context.Context, l, low int, sh uint64, short func() bool, ask func(int, uint64) int) {
	for lv := l + 1; lv <= min(low, maxLevel) && short() && ctx.Err() == nil; lv++ {
		sh = sh<<1 | rand.Uint64N(2)
		met := ask(lv, sh)
		if short() && ctx.Err() == nil {
			met += ask(lv, sh^1)
		}
		if met == 0 {
			return
		}
	}
}
