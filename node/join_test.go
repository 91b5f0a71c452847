package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

func TestJoinSchedule(t *testing.T) {
	now := time.Unix(1000, 0)
	s := newJoinSchedule(time.Second, 8*time.Second)
	p, q := peer.ID("p"), peer.ID("q")
	type step struct {
		name      string
		in        bool          // in the grid at the observation
		want      int           // transition
		reset     peer.ID       // a stable connection to it
		due       []peer.ID     // due peers, tried
		notDue    []peer.ID     // peers that must not be due
		wantWait  time.Duration // the wait the first due peer's try returns
		advanceBy time.Duration
	}
	for _, st := range []step{
		{name: "alone at start", want: joinNone, due: []peer.ID{p, q}, wantWait: time.Second, advanceBy: 500 * time.Millisecond},
		{name: "before the backoff", want: joinNone, notDue: []peer.ID{p, q}, advanceBy: 500 * time.Millisecond},
		{name: "second try", want: joinNone, due: []peer.ID{p, q}, wantWait: 2 * time.Second, advanceBy: 2 * time.Second},
		{name: "third try", want: joinNone, due: []peer.ID{p, q}, wantWait: 4 * time.Second, advanceBy: 4 * time.Second},
		// A peer that was reached but did not stay (accepts and closes) keeps backing off.
		{name: "fourth try", want: joinNone, due: []peer.ID{p, q}, wantWait: 8 * time.Second, advanceBy: 8 * time.Second},
		{name: "capped", want: joinNone, due: []peer.ID{p, q}, wantWait: 8 * time.Second, advanceBy: 8 * time.Second},
		// p's connection stayed up: only p's backoff restarts, but in the grid a known
		// peer is tried only now and then, even p.
		{name: "found", in: true, want: joinFound, reset: p, due: []peer.ID{p, q}, wantWait: 8 * time.Second, advanceBy: time.Second},
		{name: "still in: q keeps its backoff", in: true, want: joinNone, notDue: []peer.ID{q}, advanceBy: 7 * time.Second},
		{name: "in: q is still tried now and then", in: true, want: joinNone, due: []peer.ID{q}, wantWait: 8 * time.Second, advanceBy: time.Second},
		{name: "lost: due at once", want: joinLost, due: []peer.ID{p, q}, wantWait: 2 * time.Second, advanceBy: time.Second},
		{name: "found again", in: true, want: joinFound, notDue: []peer.ID{p, q}},
	} {
		if got := s.observe(now, st.in); got != st.want {
			t.Fatalf("%s: transition %d, want %d", st.name, got, st.want)
		}
		if st.reset != "" {
			s.reset(st.reset)
		}
		for _, x := range st.notDue {
			if s.due(now, x) {
				t.Fatalf("%s: %s due, want not", st.name, x)
			}
		}
		for i, x := range st.due {
			if !s.due(now, x) {
				t.Fatalf("%s: %s not due, want due", st.name, x)
			}
			if got := s.tried(now, x); i == 0 && got != st.wantWait {
				t.Fatalf("%s: wait %v, want %v", st.name, got, st.wantWait)
			}
		}
		now = now.Add(st.advanceBy)
	}
}

// TestMergeRemembered: DATA/peers keeps the old peers still connected, lets new peers take
// the free places and at most half of the old ones per save, and at most perPrefix per
// network prefix.
func TestMergeRemembered(t *testing.T) {
	ai := func(id string, addr string) peer.AddrInfo {
		return peer.AddrInfo{ID: peer.ID(id), Addrs: []multiaddr.Multiaddr{multiaddr.StringCast(addr)}}
	}
	list := func(prefix string, n int, net func(i int) string) []peer.AddrInfo {
		var out []peer.AddrInfo
		for i := range n {
			out = append(out, ai(fmt.Sprintf("%s%02d", prefix, i), net(i)))
		}
		return out
	}
	spread := func(i int) string { return fmt.Sprintf("/ip4/198.51.%d.1/tcp/4011", i) }
	oneNet := func(i int) string { return fmt.Sprintf("/ip4/203.0.113.%d/tcp/4011", i+1) }
	ids := func(ps []peer.AddrInfo, prefix string) (n int) {
		for _, p := range ps {
			if strings.HasPrefix(string(p.ID), prefix) {
				n++
			}
		}
		return n
	}
	for _, tc := range []struct {
		name           string
		old, fresh     []peer.AddrInfo
		perPrefix      int
		wantOld, wantN int // old and new peers kept
	}{
		{"first save", nil, list("n", 40, spread), 2, 0, 32},
		{"full list, all new", list("o", 32, spread), list("n", 32, spread), 2, 16, 16},
		{"old still connected", list("o", 32, spread), slices.Concat(list("o", 32, spread), list("n", 32, spread)), 2, 32, 0},
		{"free places, then half the old ones", list("o", 10, spread), list("n", 32, spread), 2, 5, 27},
		{"free places enough", list("o", 10, spread), list("n", 20, spread), 2, 10, 20},
		{"one prefix", nil, list("n", 32, oneNet), 2, 0, 2},
		{"one prefix, no bound (loopback)", nil, list("n", 32, oneNet), 0, 0, 32},
		{"nothing connected", list("o", 32, spread), nil, 2, 32, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mergeRemembered(tc.old, tc.fresh, maxRemembered, tc.perPrefix)
			if o, n := ids(got, "o"), ids(got, "n"); o != tc.wantOld || n != tc.wantN {
				t.Errorf("got %d old and %d new peers, want %d and %d", o, n, tc.wantOld, tc.wantN)
			}
		})
	}
}

func testPeerAddr(t *testing.T, port int) string {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("/ip4/192.0.2.%d/tcp/4011/p2p/%s", port%250+1, id)
}

func TestPeerFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, PeersFile)
	var peers []peer.AddrInfo
	for i := range 3 {
		ai, err := peer.AddrInfoFromString(testPeerAddr(t, i))
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, *ai)
	}
	if err := writePeerFile(path, peers); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode %#o, want 0600", got)
	}
	got, bad, err := readPeerFile(path, 100)
	if err != nil || len(bad) > 0 {
		t.Fatalf("read back: %v, bad %q", err, bad)
	}
	if len(got) != len(peers) {
		t.Fatalf("read back %d peers, want %d", len(got), len(peers))
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("data dir holds %d files after the atomic write, want 1 (no temporary left)", len(ents))
	}

	t.Run("bad lines and comments", func(t *testing.T) {
		good := testPeerAddr(t, 7)
		body := "# a comment\n\n" + good + "  # trailing comment\nnot an address\n/ip4/1.2.3.4/tcp/1\n"
		p := filepath.Join(t.TempDir(), BootstrapFile)
		os.WriteFile(p, []byte(body), 0o600)
		got, bad, err := readPeerFile(p, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || len(bad) != 2 {
			t.Errorf("got %d peers and bad lines %q, want 1 peer and 2 bad lines", len(got), bad)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		var b strings.Builder
		for i := range 100 {
			b.WriteString(testPeerAddr(t, i) + "\n")
		}
		p := filepath.Join(t.TempDir(), BootstrapFile)
		os.WriteFile(p, []byte(b.String()), 0o600)
		got, _, err := readPeerFile(p, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 10 {
			t.Errorf("got %d peers, want the first 10", len(got))
		}
		// A huge file is read up to maxPeersFileSize.
		huge := strings.Repeat("#"+strings.Repeat("x", 1000)+"\n", 2*maxPeersFileSize/1000)
		os.WriteFile(p, []byte(huge+testPeerAddr(t, 1)+"\n"), 0o600)
		got, _, err = readPeerFile(p, 10)
		if err != nil || len(got) != 0 {
			t.Errorf("got %d peers (err %v) from past the size bound, want none", len(got), err)
		}
	})
}

func FuzzReadPeerFile(f *testing.F) {
	f.Add([]byte("# comment\n/ip4/1.2.3.4/tcp/4011/p2p/12D3KooWBUhfh2S3KLaazBsNy1RvSWS4SPJnuNA21LkaUa3wkaoS\n"))
	f.Add([]byte("/ip4/1.2.3.4/tcp/4011\n\n\x00\xff"))
	f.Add([]byte("/dns4/example/tcp/1/p2p/12D3KooWBUhfh2S3KLaazBsNy1RvSWS4SPJnuNA21LkaUa3wkaoS/p2p-circuit"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "peers")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		peers, _, err := readPeerFile(p, 8)
		if err != nil {
			return
		}
		if len(peers) > 8 {
			t.Fatalf("got %d peers, want at most 8", len(peers))
		}
		for _, ai := range peers {
			if ai.ID == "" {
				t.Fatal("a peer without an ID")
			}
		}
	})
}

// logs records a node's log messages for tests to wait on.
type logs struct {
	mu   sync.Mutex
	msgs []string
	more chan struct{}
}

func newLogs() *logs { return &logs{more: make(chan struct{})} }

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.msgs = append(l.msgs, b.String())
	close(l.more)
	l.more = make(chan struct{})
	l.mu.Unlock()
	return nil
}
func (l *logs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logs) WithGroup(string) slog.Handler      { return l }

// wait waits for a message starting with msg logged after the first from of them.
func (l *logs) wait(t *testing.T, from int, msg string) int {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		l.mu.Lock()
		for i := from; i < len(l.msgs); i++ {
			if strings.HasPrefix(l.msgs[i], msg) {
				l.mu.Unlock()
				return i + 1
			}
		}
		more := l.more
		l.mu.Unlock()
		select {
		case <-more:
		case <-deadline:
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("no %q logged within 20s; got:\n%s", msg, strings.Join(l.msgs[from:], "\n"))
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fastJoin makes the join loop's timing test-sized.
func fastJoin(t *testing.T) {
	saved := []time.Duration{joinPoll, joinMinBackoff, joinMaxBackoff, joinStable, rememberEvery}
	joinPoll, joinMinBackoff, joinMaxBackoff, joinStable, rememberEvery = 20*time.Millisecond, 20*time.Millisecond, 200*time.Millisecond, 40*time.Millisecond, 50*time.Millisecond
	t.Cleanup(func() {
		joinPoll, joinMinBackoff, joinMaxBackoff, joinStable, rememberEvery = saved[0], saved[1], saved[2], saved[3], saved[4]
	})
}

// TestRejoin: a daemon whose bootstrap peer is down keeps trying, joins when it comes up,
// says when the grid is lost and found again, and after a restart with no bootstrap peer
// rejoins through the peers it remembered.
func TestRejoin(t *testing.T) {
	fastJoin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bootDir := t.TempDir()
	port := freePort(t)
	bootCfg := Config{DataDir: bootDir, Loopback: true, Listen: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}}
	key, err := LoadIdentity(filepath.Join(bootDir, IdentityFile)) // the boot node's ID, before it runs
	if err != nil {
		t.Fatal(err)
	}
	bootID, _ := peer.IDFromPrivateKey(key)
	bootAddr := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", port, bootID)

	lg := newLogs()
	dir := t.TempDir()
	n, err := Open(ctx, Config{DataDir: dir, Loopback: true, Bootstrap: []string{bootAddr}, Logger: slog.New(lg)})
	if err != nil {
		t.Fatalf("open with the bootstrap peer down: %v, want a node that keeps trying", err)
	}
	defer n.Close()
	at := lg.wait(t, 0, "no known grid peer reachable")
	at = lg.wait(t, at, "no known grid peer reachable") // again: it retries

	boot, err := Open(ctx, bootCfg)
	if err != nil {
		t.Fatal(err)
	}
	at = lg.wait(t, at, "joined the grid")
	boot.Close()
	at = lg.wait(t, at, "lost the grid")
	if boot, err = Open(ctx, bootCfg); err != nil {
		t.Fatal(err)
	}
	at = lg.wait(t, at, "joined the grid")

	// A second daemon, joined through boot, is a peer n may remember.
	other, err := Open(ctx, Config{DataDir: t.TempDir(), Loopback: true, Bootstrap: []string{bootAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := n.Host().Connect(ctx, peer.AddrInfo{ID: other.ID(), Addrs: other.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	// Connect returns before identify has told n that other is a grid peer, and only grid
	// peers are remembered (CI once closed n first and found no peers file).
	waitUntil(t, 5*time.Second, "identify of the second daemon", func() bool { return isGridPeer(n.Host(), other.ID()) })
	n.Close()
	boot.Close()
	remembered, _, err := readPeerFile(filepath.Join(dir, PeersFile), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(remembered) != 1 || remembered[0].ID != other.ID() {
		t.Fatalf("remembered %v, want only %s (the bootstrap peer is configured, not remembered)", remembered, other.ID())
	}

	lg2 := newLogs()
	n2, err := Open(ctx, Config{DataDir: dir, Loopback: true, Logger: slog.New(lg2)})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	lg2.wait(t, 0, "joined the grid")
	if n2.Host().Network().Connectedness(other.ID()) == 0 {
		t.Errorf("rejoined, but not through the remembered peer %s", other.ID())
	}
}

// TestAlone: a daemon that knows no peer says so.
func TestAlone(t *testing.T) {
	fastJoin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lg := newLogs()
	n, err := Open(ctx, Config{DataDir: t.TempDir(), Loopback: true, Logger: slog.New(lg)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	lg.wait(t, 0, "this node knows no grid peer")
}

// TestBootstrapFile: the peers in DATA/bootstrap are joined through, like --bootstrap.
func TestBootstrapFile(t *testing.T) {
	fastJoin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	boot, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Worker: true}) // a DHT server
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	dir := t.TempDir()
	body := "# my friends' grid\n" + strings.Join(boot.AddrStrings(), "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, BootstrapFile), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := Open(ctx, Config{DataDir: dir, Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.Host().Network().Connectedness(boot.ID()) == 0 {
		t.Errorf("not connected to the peer in %s", BootstrapFile)
	}
}
