package sim

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gridnode/gridnode/dht"
)

// Submits ask for node's discoverWant workers and query MaxReplicas+Replicas of them for
// offers (7 at the default two replicas).
const (
	want = 3 * dht.ShardTarget / 4
	ask  = 7
)

var heapProfile = flag.String("sim.heap", "", "write a heap profile of each grid once built to this path plus .N")

var sizes = flag.String("sim.sizes", "50,1000", "BenchmarkDiscoveryScale: grid sizes, the first the baseline")

// result is what measure found on one grid.
type result struct {
	n                   int
	build               time.Duration
	phases              [3]time.Duration
	levels              map[int]int
	keys, keyMax        int     // worker keys announced, and the most workers under one
	busiest, medRecords int     // provider records on the busiest node, and the median
	requests, bytes     float64 // DHT requests and bytes per submit (mean)
	offers              float64 // offer queries per submit (mean)
	minFound            int     // fewest workers a submit found
	lowFound            int     // workers found by the node that estimates the grid's size lowest
	findNew             time.Duration
	heapMiB             float64
}

func (r result) cost() float64 { return r.requests + r.offers }

func (r result) String() string {
	return fmt.Sprintf("n=%d build=%v %v levels=%v keys=%d max/key=%d busiest=%d median=%d records; per submit: %.1f DHT requests, %.0f B, %.1f offers, found>=%d (lowest estimate: %d); new worker findable in %v; heap %.0f MiB",
		r.n, r.build.Round(time.Millisecond), r.phases, r.levels, r.keys, r.keyMax, r.busiest, r.medRecords, r.requests, r.bytes, r.offers, r.minFound, r.lowFound, r.findNew.Round(time.Millisecond), r.heapMiB)
}

// measure builds a grid of n and runs submits submits from random nodes, one at a time
// (each submitter's counts are then its submit's alone).
func measure(tb testing.TB, n, submits int, cfg Config) result {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	g, err := New(ctx, n, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "n=%d built in %v %v\n", n, time.Since(start).Round(time.Millisecond), g.Phases)
	}
	closed := false
	defer func() {
		if !closed {
			g.Close()
		}
	}()
	if *heapProfile != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d", *heapProfile, n))
		if err != nil {
			tb.Fatal(err)
		}
		runtime.GC()
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	r := result{n: n, build: time.Since(start), phases: g.Phases, levels: g.Levels(), minFound: 1 << 30}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.heapMiB = float64(ms.HeapInuse) / (1 << 20)
	loads := g.KeyLoads()
	r.keys = len(loads)
	for _, v := range loads {
		r.keyMax = max(r.keyMax, v)
	}
	// The first submitter is the node that estimates the grid's size lowest, the others
	// random: a node that underestimates the grid looks at a level above the one most
	// workers announce at, and 20 random submitters met one only now and then (CI saw 6
	// workers found; the level-0 key held 5-31 workers on this VM's 200-node grids).
	low := slices.MinFunc(g.Nodes, func(a, b *Node) int { return a.DHT.NetworkSize() - b.DHT.NetworkSize() })
	for i := range submits {
		nd := g.Nodes[rand.IntN(len(g.Nodes))]
		if i == 0 {
			nd = low
		}
		before := nd.Snapshot()
		found, offers, err := Submit(ctx, nd, want, ask)
		if err != nil {
			tb.Fatal(err)
		}
		d := nd.Snapshot().Sub(before)
		r.requests += float64(d.DHTRequests) / float64(submits)
		r.bytes += float64(d.DHTBytes) / float64(submits)
		r.offers += float64(d.Offers) / float64(submits)
		r.minFound = min(r.minFound, len(found))
		if i == 0 {
			r.lowFound = len(found)
		}
		if offers < min(ask, len(found)) {
			tb.Errorf("n=%d: %d of %d offer queries answered", n, offers, min(ask, len(found)))
		}
	}
	r.findNew = findNew(tb, ctx, g)
	// Closing flushes each provider manager's write buffer (up to 256 records) into the
	// store, whose count is then every record the node took.
	g.Close()
	closed = true
	recs := g.Records()
	slices.Sort(recs)
	r.busiest, r.medRecords = recs[len(recs)-1], recs[len(recs)/2]
	if testing.Verbose() {
		fmt.Fprintln(os.Stderr, r) // a long benchmark's b.Log shows only at its end
	}
	debug.FreeOSMemory()
	return r
}

// findNew starts a worker and returns how long until a random other node finds it under
// the key most submits that draw its shard look at: its shard one level above its own
// (dht.FindShard), where the submitters that estimate the grid's size as it does look.
func findNew(tb testing.TB, ctx context.Context, g *Grid) time.Duration {
	tb.Helper()
	start := time.Now()
	nw, _, err := g.AddWorker(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	sub := g.Nodes[rand.IntN(len(g.Nodes)-1)]
	ns := dht.WorkerNamespace(Arch)
	for {
		l := max(nw.DHT.Level()-1, 0) // its table may still grow
		for _, ai := range sub.DHT.FindProviders(ctx, dht.NamespaceCID(dht.ShardNamespace(ns, l, dht.ShardOf(nw.Host.ID(), l)))) {
			if ai.ID == nw.Host.ID() {
				return time.Since(start)
			}
		}
		if ctx.Err() != nil || time.Since(start) > time.Minute {
			tb.Fatalf("a new worker was not found at level %d within %v", l, time.Since(start))
		}
		time.Sleep(20 * time.Millisecond) // a poll: the lookup itself takes longer
	}
}

// TestDiscoveryScale is the quick version of BenchmarkDiscoveryScale: a submit's cost on a
// grid of 200 is within 2× of one of 50, and every submit finds enough workers.
func TestDiscoveryScale(t *testing.T) {
	cfg := Config{}
	small := measure(t, 50, 20, cfg)
	t.Log(small)
	large := measure(t, 200, 20, cfg)
	t.Log(large)
	check(t, small, large)
}

func check(tb testing.TB, small, large result) {
	tb.Helper()
	for _, r := range []result{small, large} {
		if r.minFound < ask {
			tb.Errorf("n=%d: a submit found %d workers, fewer than the %d it asks", r.n, r.minFound, ask)
		}
		// Every grid here has more than want workers, and FindShard looks below its level
		// while it has fewer: the node that underestimates the grid most found 12-20 of 24
		// before it did.
		if r.lowFound < want {
			tb.Errorf("n=%d: the submitter with the lowest size estimate found %d workers, want %d", r.n, r.lowFound, want)
		}
		// A level l-1 key holds N/2^(l-1) < 4T workers on average; the spread between keys
		// and the nodes whose estimate puts them a level off add up to half as much again.
		if r.keyMax > 6*dht.ShardTarget {
			tb.Errorf("n=%d: %d workers under one key, more than 6 × %d", r.n, r.keyMax, dht.ShardTarget)
		}
	}
	if ratio := large.cost() / small.cost(); ratio > 2 {
		tb.Errorf("cost per submit %.1f at n=%d, %.1f at n=%d: ratio %.2f > 2", large.cost(), large.n, small.cost(), small.n, ratio)
	}
}

// BenchmarkDiscoveryScale measures per-submit discovery cost on grids of -sim.sizes
// (default 50 and 1,000 nodes), -sim.submits submits each, in one run and reports the
// largest's over the first's. Grids take minutes to build, so they are measured once per
// process whatever b.N (the testing package calls a benchmark with b.N = 1 first).
//
//	go test -run XXX -bench DiscoveryScale -benchtime 1x -timeout 2h ./sim/
//	go test -run XXX -bench DiscoveryScale -benchtime 1x -timeout 2h ./sim/ -sim.sizes 50,200,1000
func BenchmarkDiscoveryScale(b *testing.B) {
	benchOnce.Do(func() {
		for _, s := range strings.Split(*sizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 2 {
				b.Fatalf("-sim.sizes: %q", s)
			}
			r := measure(b, n, *submits, Config{})
			b.Log(r)
			benchResults = append(benchResults, r)
		}
	})
	rs := benchResults
	if len(rs) == 0 {
		b.Fatal("no grid was measured")
	}
	for b.Loop() {
	}
	for _, r := range rs {
		b.ReportMetric(r.cost(), "cost/submit@"+strconv.Itoa(r.n))
		b.ReportMetric(r.requests, "dhtreq/submit@"+strconv.Itoa(r.n))
		b.ReportMetric(float64(r.busiest), "busiest-records@"+strconv.Itoa(r.n))
		b.ReportMetric(float64(r.keyMax), "max-per-key@"+strconv.Itoa(r.n))
		b.ReportMetric(r.findNew.Seconds(), "s-find-new@"+strconv.Itoa(r.n))
	}
	last := rs[len(rs)-1]
	b.ReportMetric(last.cost()/rs[0].cost(), fmt.Sprintf("ratio%d/%d", last.n, rs[0].n))
	check(b, rs[0], last)
}

var (
	benchOnce    sync.Once
	benchResults []result
	submits      = flag.Int("sim.submits", 50, "BenchmarkDiscoveryScale: submits per grid")
)
