package node

// Attack review of c7f79f2 (helper-46): (*Node).locate, the anchors' DHT lookup. Each
// test failed on c7f79f2 unless it says "held"; the locator (discovery.go) answers them.

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-msgio"
	"github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/gridnode/gridnode/dht"
	"github.com/gridnode/gridnode/jobs"
)

// locAtkKad is a stranger's DHT server: a plain libp2p host on loopback that speaks the
// grid's kad protocol, answers every request with answer(req) after delay(req) (nil: never
// answers, holding the request), and counts the FIND_NODE requests it reads, by key.
type locAtkKad struct {
	host.Host
	mu    sync.Mutex
	finds map[string]int
}

func newLocAtkKad(t *testing.T, delay func(*pb.Message) time.Duration, answer func(*pb.Message) *pb.Message) *locAtkKad {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.Transport(tcp.NewTCPTransport), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	k := &locAtkKad{Host: h, finds: map[string]int{}}
	h.SetStreamHandler(dht.ProtocolPrefix+"/kad/1.0.0", func(s network.Stream) {
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
			if req.GetType() == pb.Message_FIND_NODE {
				k.mu.Lock()
				k.finds[string(req.GetKey())]++
				k.mu.Unlock()
			}
			if delay != nil {
				time.Sleep(delay(&req))
			}
			resp := pb.NewMessage(req.GetType(), req.GetKey(), 0)
			if answer != nil {
				resp = answer(&req)
			}
			if resp == nil {
				continue // holds the request: the client gives up
			}
			out, _ := proto.Marshal(resp)
			if w.WriteMsg(out) != nil {
				return
			}
		}
	})
	return k
}

// found is how many FIND_NODE requests for p's ID it read.
func (k *locAtkKad) found(p peer.ID) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.finds[string(p)]
}

// join puts k in n's routing table, as any DHT server that n connects to enters it.
func (k *locAtkKad) join(t *testing.T, ctx context.Context, n *Node) {
	t.Helper()
	if err := n.h.Connect(ctx, peer.AddrInfo{ID: k.ID(), Addrs: k.Addrs()}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the stranger's DHT server in the routing table", func() bool { return n.d.Routes(k.ID()) })
}

// locAtkIDNear returns a fresh peer ID nobody runs whose closest peer among others is
// first: a lookup of it must wait for first's answer (kad-dht ends a lookup once the
// closest peers it knows answered). Grinding a few bits costs a stranger nothing either.
func locAtkIDNear(t *testing.T, first peer.ID, others ...peer.ID) peer.ID {
	t.Helper()
	all := append([]peer.ID{first}, others...)
	for range 10000 {
		_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := peer.IDFromPublicKey(pub)
		if kb.SortClosestPeers(slices.Clone(all), kb.ConvertPeerID(id))[0] == first {
			return id
		}
	}
	t.Fatal("no ID found")
	return ""
}

func locAtkIDs(ws []*Node) []peer.ID {
	var ids []peer.ID
	for _, w := range ws {
		ids = append(ids, w.ID())
	}
	return ids
}

// TestLocateAttackConcurrentLookups: N submits at once that need the same unlocated anchor
// (an owner's switched-off machine, its miss just expired; a daemon's concurrent API
// submits; SubmitBatch's single jobs, batchSettle = 32 at once) share one attempt. On
// c7f79f2 each made its own lookup: 16 FIND_NODE requests at one DHT server that answers in
// 100 ms (kad-dht sends one request at a time to a peer), waits 0.10 to 1.6 s.
func TestLocateAttackConcurrentLookups(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, c := openGrid(t, ctx, 3, echoRunner)
	var target peer.ID
	k := newLocAtkKad(t, func(req *pb.Message) time.Duration {
		if peer.ID(req.GetKey()) == target {
			return 100 * time.Millisecond
		}
		return 0
	}, nil)
	k.join(t, ctx, c)
	target = locAtkIDNear(t, k.ID(), locAtkIDs(ws)...)
	const n = 16
	start := make(chan struct{})
	var wg sync.WaitGroup
	took := make([]time.Duration, n)
	for i := range n {
		wg.Go(func() {
			<-start
			t0 := time.Now()
			c.locate(ctx, []peer.ID{target}, 1)
			took[i] = time.Since(t0)
		})
	}
	close(start)
	wg.Wait()
	slices.Sort(took)
	lookups := k.found(target)
	t.Logf("%d concurrent locates of one anchor nobody runs: %d FIND_NODE requests for it reached one DHT server (one per lookup); waits %v .. %v", n, lookups, took[0], took[n-1])
	if lookups > 2 {
		t.Errorf("%d concurrent locates of the same missing anchor made %d lookups of it, want one shared lookup", n, lookups)
	}
	// Then the miss holds: the next locates make none (the daemon's one a minute).
	before := k.found(target)
	for range 4 {
		c.locate(ctx, []peer.ID{target}, 1)
	}
	if k.found(target) != before {
		t.Errorf("locate looked up a recent miss again")
	}
}

// TestLocateAttackStalledLookup: a stranger's DHT server near the ID of a trusted machine
// that is switched off reads FIND_NODE for it and never answers. The lookup is held to
// locateTimeout (2 s). On c7f79f2 the submit waited for it however fast discovery was: a
// daemon paid that once a minute, and a one-shot `gridnode submit` (a fresh node, with an
// empty miss cache: cmd/gridnode/submit.go) on every submit (2.002 s, 2.002 s). A submit
// now waits for no attempt while another anchor is at hand.
func TestLocateAttackStalledLookup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, c := openGrid(t, ctx, 3, echoRunner)
	var target atomic.Value
	target.Store(peer.ID(""))
	k := newLocAtkKad(t, nil, func(req *pb.Message) *pb.Message {
		if req.GetType() == pb.Message_FIND_NODE && peer.ID(req.GetKey()) == target.Load().(peer.ID) {
			return nil
		}
		return pb.NewMessage(req.GetType(), req.GetKey(), 0)
	})
	k.join(t, ctx, c)
	off := locAtkIDNear(t, k.ID(), locAtkIDs(ws)...)
	target.Store(off)
	submit := func(n *Node) (time.Duration, error) {
		t0 := time.Now()
		_, err := n.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte("hi"), Replicas: 2})
		return time.Since(t0), err
	}
	base, err := submit(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Trust(off) // the owner's machine, switched off
	var daemon []time.Duration
	for range 4 {
		d, err := submit(c)
		if err != nil {
			t.Fatal(err)
		}
		daemon = append(daemon, d)
	}
	t.Logf("one node: submit %v before trusting the switched-off machine; then %v", base, daemon)
	for _, d := range daemon {
		if d > time.Second {
			t.Errorf("a submit with another anchor at hand took %v", d)
		}
	}
	// One-shot submits: a fresh client node each, the same trust and grid.
	var oneShot []time.Duration
	for range 2 {
		n, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Bootstrap: ws[0].AddrStrings()})
		if err != nil {
			t.Fatal(err)
		}
		trustWorkers([]*Node{n}, ws)
		n.Trust(off)
		k.join(t, ctx, n)
		d, err := submit(n)
		n.Close()
		if err != nil {
			t.Fatal(err)
		}
		oneShot = append(oneShot, d)
	}
	t.Logf("one-shot submits (a fresh node each, as gridnode submit without a daemon): %v", oneShot)
	for _, d := range oneShot {
		if d > time.Second {
			t.Errorf("one-shot submits with a switched-off trusted machine and others at hand: %v", oneShot)
		}
	}
}

// TestLocateAttackMissCacheThrash: the miss cache kept 256 misses and evicted the oldest.
// A trust list with more unreachable IDs than that (a trust file may hold ~19,000:
// maxTrustFile) or a local caller's per-request Trust lists churned it: on c7f79f2 at least
// 256 of 300 IDs missed seconds earlier were looked up again, and 100 submits with 12 fresh
// Trust IDs each made ~300 lookups in 127 ms and evicted the owner's switched-off machine,
// looked up again 115 ms after its first lookup. Now: a peer missed is not tried again
// within locateRetry while the cache has room (4,096), and attempts are budgeted
// (locateBurst, then locateBudget a minute) whatever the churn.
func TestLocateAttackMissCacheThrash(t *testing.T) {
	fresh := func(n int) []peer.ID {
		var ids []peer.ID
		for range n {
			_, pub, _ := crypto.GenerateEd25519Key(rand.Reader)
			id, _ := peer.IDFromPublicKey(pub)
			ids = append(ids, id)
		}
		return ids
	}
	// try fails every attempt, counting them by peer.
	var mu sync.Mutex
	tries := map[peer.ID]int{}
	try := func(p peer.ID) peer.AddrInfo {
		mu.Lock()
		tries[p]++
		mu.Unlock()
		return peer.AddrInfo{}
	}
	wait := func(rs []*reach) {
		for _, r := range rs {
			<-r.done
		}
	}
	t.Run("trust-list", func(t *testing.T) {
		var l locator
		clear(tries)
		ids := fresh(300)
		now := time.Now()
		// Two passes over 300 unreachable IDs, 4 at a time, a minute's budget apart: each is
		// tried at most once within locateRetry.
		for pass := range 2 {
			for i := 0; i < len(ids); i += 4 {
				now = now.Add(locateRetry / 400) // 300/4 × 2 rounds within the minute
				wait(l.start(ids[i:i+4], 4, now, try))
			}
			_ = pass
		}
		total, again := 0, 0
		for _, n := range tries {
			total += n
			if n > 1 {
				again++
			}
		}
		t.Logf("300 unreachable trusted IDs, 4 a submit, twice within a minute: %d attempts, %d IDs tried twice", total, again)
		if again > 0 {
			t.Errorf("%d IDs missed within the minute were tried again", again)
		}
		if max := locateBurst + int(locateBudget*1.0) + 1; total > max {
			t.Errorf("%d attempts within a minute, want at most %d (the budget)", total, max)
		}
	})
	t.Run("per-request-trust", func(t *testing.T) {
		var l locator
		clear(tries)
		off := fresh(1)[0]
		now := time.Now()
		wait(l.start([]peer.ID{off}, 4, now, try))
		for range 100 {
			// A local API caller's trust list: 12 IDs nobody runs, with the owner's
			// switched-off machine, 100 submits within 10 s.
			now = now.Add(100 * time.Millisecond)
			wait(l.start(append([]peer.ID{off}, fresh(12)...), 4, now, try))
		}
		total := 0
		for _, n := range tries {
			total += n
		}
		t.Logf("100 submits with per-request Trust lists in 10 s: %d attempts; the owner's switched-off machine tried %d times", total, tries[off])
		if tries[off] != 1 {
			t.Errorf("the owner's switched-off machine was tried %d times within the minute, want once", tries[off])
		}
		if max := locateBurst + locateBudget/6 + 1; total > max {
			t.Errorf("%d attempts in 10 s, want at most %d (the budget)", total, max)
		}
	})
}

// TestLocateAttackDeadPeerstoreAddrs: any DHT server can put addresses for any peer ID it
// names in a closer-peers answer into the submitter's peerstore (kad-dht's query.go
// maybeAddAddrs, TempAddrTTL 2 min; the submitter looks the DHT up every workersTTL), and a
// worker that moved leaves its old ones. On c7f79f2 locate took any peerstore address as
// found and looked nothing up: the anchor was "located" where it could not be reached.
// Now an anchor counts as located once it is connected, dialled at its peerstore addresses
// or else at those a DHT lookup finds.
func TestLocateAttackDeadPeerstoreAddrs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, c := openGrid(t, ctx, 3, echoRunner)
	w := ws[2].ID()
	c.h.Network().ClosePeer(w)
	c.h.Peerstore().ClearAddrs(w)
	waitUntil(t, 5*time.Second, "the client disconnected from the worker", func() bool {
		return len(c.h.Network().ConnsToPeer(w)) == 0
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := multiaddr.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port))
	l.Close()                                                                       // nothing listens there now
	c.h.Peerstore().AddAddrs(w, []multiaddr.Multiaddr{dead}, peerstore.TempAddrTTL) // what one closer-peers answer does
	got := c.locate(ctx, []peer.ID{w}, 1)
	reach := func(ais []peer.AddrInfo) error {
		if len(ais) != 1 {
			return fmt.Errorf("located %v", ais)
		}
		dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
		defer dcancel()
		return c.h.Connect(dctx, ais[0])
	}
	err = reach(got)
	t.Logf("anchor with a dead address in the peerstore: located %v; connecting: %v", got, err)
	if err != nil {
		t.Errorf("locate returned the anchor at an address that does not reach it (%v) and made no DHT lookup; the lookup finds it (TestLocateAnchor)", err)
	}
}

// TestLocateAttackForgedFindNode: a stranger's DHT server answers FIND_NODE for the ID of
// a trusted machine that is switched off with that ID at 20 addresses of its choosing.
// On c7f79f2 locate counted the anchor found (no miss noted) and submits dialled the forged
// addresses. Now the dial must reach the peer: the anchor is not located and its miss is
// noted. Held throughout: locate ends within its timeout, at most maxPeerAddrs (16)
// addresses are taken, and a located-but-wrong peer is never counted as the anchor (jobs'
// TestAnchorAttackWrongPeerNotAnchor).
func TestLocateAttackForgedFindNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, c := openGrid(t, ctx, 3, echoRunner)
	var accepts atomic.Int64
	var victims []multiaddr.Multiaddr
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				cn, err := l.Accept()
				if err != nil {
					return
				}
				accepts.Add(1)
				cn.Close()
			}
		}()
		victims = append(victims, multiaddr.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port)))
	}
	var off atomic.Value
	off.Store(peer.ID(""))
	k := newLocAtkKad(t, nil, func(req *pb.Message) *pb.Message {
		resp := pb.NewMessage(req.GetType(), req.GetKey(), 0)
		if p := off.Load().(peer.ID); p != "" && req.GetType() == pb.Message_FIND_NODE && peer.ID(req.GetKey()) == p {
			resp.CloserPeers = pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: p, Addrs: victims}})
		}
		return resp
	})
	k.join(t, ctx, c)
	o := locAtkIDNear(t, k.ID(), locAtkIDs(ws)...)
	off.Store(o)
	t0 := time.Now()
	got := c.locate(ctx, []peer.ID{o}, 1)
	took := time.Since(t0)
	addrs := 0
	if len(got) == 1 {
		addrs = len(got[0].Addrs)
	}
	t.Logf("forged FIND_NODE answer for a switched-off anchor: located %d entries with %d addresses in %v; missed noted: %v; dials reaching the forged addresses so far: %d",
		len(got), addrs, took, c.jobs.locator.recent(o, time.Now()), accepts.Load())
	c.Trust(o)
	for range 5 {
		c.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte("hi"), Replicas: 2})
	}
	t.Logf("after 5 submits trusting it: %d connections reached the forged addresses; FIND_NODE for it at the stranger: %d", accepts.Load(), k.found(o))
	if took > locateTimeout+time.Second {
		t.Errorf("locate took %v", took)
	}
	if len(got) != 0 {
		t.Errorf("located %v at addresses that do not reach it", got)
	}
	if !c.jobs.locator.recent(o, time.Now()) {
		t.Error("the forged anchor's miss was not noted")
	}
}

// TestLocateAttackCancelled: a submit cancelled while its locate waits on a stalled lookup
// returns at once; the attempt runs on to its own end (locateTimeout), shared by the other
// locates, and leaves no goroutines: held.
func TestLocateAttackCancelled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, c := openGrid(t, ctx, 3, echoRunner)
	var target atomic.Value
	target.Store(peer.ID(""))
	k := newLocAtkKad(t, nil, func(req *pb.Message) *pb.Message {
		if peer.ID(req.GetKey()) == target.Load().(peer.ID) {
			return nil
		}
		return pb.NewMessage(req.GetType(), req.GetKey(), 0)
	})
	k.join(t, ctx, c)
	off := locAtkIDNear(t, k.ID(), locAtkIDs(ws)...)
	target.Store(off)
	g0 := runtime.NumGoroutine()
	for range 8 {
		sctx, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
		t0 := time.Now()
		c.locate(sctx, []peer.ID{off}, 1)
		took := time.Since(t0)
		scancel()
		if took > time.Second {
			t.Errorf("a locate whose context ended at 200 ms took %v", took)
		}
	}
	time.Sleep(locateTimeout + 500*time.Millisecond)
	if g := runtime.NumGoroutine(); g > g0+10 {
		t.Errorf("goroutines %d -> %d after 8 cancelled locates", g0, g)
	}
}

// TestLocateAttackMissEvictionCost: 100,000 misses of distinct IDs (a caller's churn) cost
// the cache little and it stays bounded: held.
func TestLocateAttackMissEvictionCost(t *testing.T) {
	var l locator
	t0 := time.Now()
	now := time.Now()
	for i := range 100000 {
		l.miss(peer.ID(fmt.Sprint(i)), now.Add(time.Duration(i)))
	}
	took := time.Since(t0)
	t.Logf("100,000 misses: %v, %d kept", took, len(l.missed))
	if took > 5*time.Second || len(l.missed) > missedPeersMax {
		t.Errorf("100,000 misses took %v, %d kept", took, len(l.missed))
	}
}
