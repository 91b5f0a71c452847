package node

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/dht"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// connCounter listens on 127.0.0.2 (TCP and UDP, same port) and counts every connection
// accepted and every datagram received: anything the node under test sends there.
type connCounter struct {
	tcp   net.Listener
	udp   net.PacketConn
	count atomic.Int32
}

func newConnCounter(t *testing.T) *connCounter {
	t.Helper()
	c := &connCounter{}
	var err error
	if c.tcp, err = net.Listen("tcp4", "127.0.0.2:0"); err != nil {
		t.Fatal(err)
	}
	port := c.tcp.Addr().(*net.TCPAddr).Port
	if c.udp, err = net.ListenPacket("udp4", net.JoinHostPort("127.0.0.2", strconv.Itoa(port))); err != nil {
		c.tcp.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.tcp.Close(); c.udp.Close() })
	go func() {
		for {
			conn, err := c.tcp.Accept()
			if err != nil {
				return
			}
			c.count.Add(1)
			conn.Close()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.udp.ReadFrom(buf); err != nil {
				return
			}
			c.count.Add(1)
		}
	}()
	return c
}

// addrs are the counter's addresses as multiaddrs, TCP and QUIC.
func (c *connCounter) addrs() []multiaddr.Multiaddr {
	port := strconv.Itoa(c.tcp.Addr().(*net.TCPAddr).Port)
	return []multiaddr.Multiaddr{
		multiaddr.StringCast("/ip4/127.0.0.2/tcp/" + port),
		multiaddr.StringCast("/ip4/127.0.0.2/udp/" + port + "/quic-v1"),
	}
}

// TestHostileDial has a stranger announce, in provider records and in identify, addresses
// of a listener that counts connections, then makes the node look for it twice: as a worker
// fetching a binary only the stranger provides, and as a submitter finding workers. The node
// runs on loopback but with ReachPublic, the reach of a donor's node on the internet, so it
// must not dial 127.0.0.2 at all.
//
// With the defence off (run once: no gater, no DHT address filter, the code before this
// test) the counter saw 11 connections and datagrams during the binary fetch (TCP, and QUIC
// Initial packets resent until the 5 s dial timeout), and the offer query failed with "dial
// backoff" for those addresses. With the DHT filter on and only the gater off it was the
// same: the provider record lost its addresses, but identify had put the same ones in the
// peerstore.
func TestHostileDial(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var progress []string
	n, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Worker: true, Runner: echoRunner, Slots: 2,
		Reach: ReachPublic, Progress: func(msg string) { mu.Lock(); progress = append(progress, msg); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	counter := newConnCounter(t)
	binary := cids.Sum([]byte("a binary only the stranger provides"))

	// The stranger: a grid DHT server whose every announced address is the counter's.
	sh, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.AddrsFactory(func([]multiaddr.Multiaddr) []multiaddr.Multiaddr { return counter.addrs() }))
	if err != nil {
		t.Fatal(err)
	}
	sd, err := dht.New(ctx, sh, dht.Config{Mode: dht.ModeServer, Bootstrap: []peer.AddrInfo{{ID: n.ID(), Addrs: n.Host().Addrs()}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sd.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := sd.Provide(ctx, binary); err != nil {
		t.Fatal(err)
	}
	if err := sd.Announce(ctx, dht.WorkerNamespace(sandbox.ArchAMD64)); err != nil {
		t.Fatal(err)
	}
	stranger := sh.ID()
	waitUntil(t, 10*time.Second, "the node to hold the stranger's provider records", func() bool {
		ws, _ := n.FindWorkers(ctx, sandbox.ArchAMD64)
		return len(ws) == 1 && ws[0].ID == stranger
	})
	sd.Close()
	sh.Close()
	waitUntil(t, 10*time.Second, "the stranger to be gone", func() bool {
		return n.Host().Network().Connectedness(stranger) != network.Connected
	})

	t.Run("worker fetching a binary", func(t *testing.T) {
		a := newAttacker(t, ctx, n) // serves NOT_FOUND for the binary: the worker must ask providers
		defer a.Close()
		s, err := a.NewStream(ctx, n.ID(), protocol.JobID)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Reset()
		req := &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: binary.Bytes(), Nonce: bytes.Repeat([]byte{1}, protocol.MinNonce)}
		if err := protocol.WriteMsg(s, req); err != nil {
			t.Fatal(err)
		}
		if code, err := readReply(s); err != nil || code != protocol.Code_FETCH_FAILED {
			t.Fatalf("got code %v, err %v; want FETCH_FAILED", code, err)
		}
		if got := counter.count.Load(); got != 0 {
			t.Fatalf("the worker connected %d times to the stranger's chosen addresses, want 0", got)
		}
	})
	t.Run("submitter finding workers", func(t *testing.T) {
		_, err := n.Submit(ctx, jobs.Request{Binary: fakeELF, Replicas: 1})
		if !errors.Is(err, jobs.ErrNoWorkers) {
			t.Fatalf("got %v, want ErrNoWorkers", err)
		}
		mu.Lock()
		p := strings.Join(progress, "\n")
		mu.Unlock()
		if !strings.Contains(p, "gater disallows") { // the dial was asked for, and refused
			t.Errorf("got progress %q, want a dial refused by the gater", p)
		}
		if got := counter.count.Load(); got != 0 {
			t.Fatalf("the submitter connected %d times to the stranger's chosen addresses, want 0", got)
		}
	})
}

func TestReachOf(t *testing.T) {
	tests := []struct {
		addr string
		want Reach
	}{
		{"/ip4/8.8.8.8/tcp/1", ReachPublic},
		{"/ip6/2606:4700::1/udp/1/quic-v1", ReachPublic},
		{"/dns4/example.com/tcp/1", ReachPublic},
		{"/ip4/8.8.8.8/tcp/1/p2p/12D3KooWGzBvhMPUQcBCVJqEhPdeZHpm2EwQEfhY1ZBT3SDgmt4Y/p2p-circuit", ReachPublic},
		{"/ip4/192.168.1.1/tcp/80", ReachLAN},
		{"/ip4/10.0.0.1/tcp/80", ReachLAN},
		{"/ip4/172.16.0.1/tcp/80", ReachLAN},
		{"/ip4/100.64.0.1/tcp/80", ReachLAN},
		{"/ip4/169.254.169.254/tcp/80", ReachLAN},
		{"/ip6/fd00::2/tcp/80", ReachLAN},
		{"/ip6zone/eth0/ip6/fe80::1/tcp/80", ReachLAN},
		{"/ip4/127.0.0.2/tcp/1", ReachLoopback},
		{"/ip6/::1/tcp/1", ReachLoopback},
		{"/ip6/::ffff:127.0.0.1/tcp/1", ReachLoopback},
		{"/ip6/::ffff:10.1.2.3/tcp/1", ReachLAN},
		{"/dns4/localhost/tcp/1", ReachLoopback},
		{"/ip4/0.0.0.0/tcp/1", reachNever},
		{"/ip6/::/tcp/1", reachNever},
		{"/ip4/224.0.0.1/udp/1", reachNever},
		{"/ip4/255.255.255.255/udp/1", reachNever},
		{"/ip4/192.0.2.1/tcp/1", reachNever},
		{"/ip4/240.0.0.1/tcp/1", reachNever},
		{"/ip6/2001:db8::1/tcp/1", reachNever},
		{"/ip6/ff02::1/udp/1", reachNever},
	}
	for _, tt := range tests {
		if got := reachOf(multiaddr.StringCast(tt.addr)); got != tt.want {
			t.Errorf("reachOf(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	derive := []struct {
		name   string
		listen []string
		boot   []string
		loop   bool
		want   Reach
	}{
		{"default listen", nil, nil, false, ReachPublic},
		{"unspecified listen, public bootstrap", []string{"/ip4/0.0.0.0/tcp/4011"}, []string{"/ip4/8.8.8.8/tcp/4011"}, false, ReachPublic},
		{"LAN bootstrap", nil, []string{"/ip4/192.168.1.5/tcp/4011"}, false, ReachLAN},
		{"LAN listen", []string{"/ip4/10.0.0.5/tcp/4011"}, nil, false, ReachLAN},
		{"loopback", nil, nil, true, ReachLoopback},
	}
	for _, tt := range derive {
		t.Run(tt.name, func(t *testing.T) {
			var boot []peer.AddrInfo
			for _, b := range tt.boot {
				boot = append(boot, peer.AddrInfo{Addrs: []multiaddr.Multiaddr{multiaddr.StringCast(b)}})
			}
			got, err := autoReach(Config{Listen: tt.listen, Loopback: tt.loop}, boot)
			if err != nil || got != tt.want {
				t.Errorf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// TestHostileStreams has several identities each open 32 streams of one protocol and hold
// the ones the node accepts without writing a byte; then an honest peer must still be served.
// The identity counts are the fewest that filled a protocol's total with the old per-peer
// limits (info 16, blob 8, job 32 per peer; totals 256, 64, 256).
//
// With the old limits (run once) the honest peer was refused every time: job: 9 identities
// held all 256 streams (32 each until the total's cap) and the client's submit failed with
// no quorum, its job stream to the worker "refused: stream reset (remote)"; info: 17
// identities held all 256 and the submit heard only the other worker ("1 worker answered");
// blob: 9 identities held all 64 and the honest fetch got "stream reset by remote".
func TestHostileStreams(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ws, client := openGrid(t, ctx, 2, echoRunner)
	w := ws[0]
	submit := func() error {
		rep, err := client.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte("honest"), Replicas: 2, MaxReplicas: 2})
		if err != nil {
			return err
		}
		for _, r := range rep.Replicas {
			if r.Worker == w.ID() && r.ReceiptValid && r.Err == nil {
				return nil
			}
		}
		return errors.New("no valid replica from the worker under attack")
	}
	if err := submit(); err != nil { // and w now holds the binary, for the blob case
		t.Fatal(err)
	}
	fetch := func() error {
		a := newAttacker(t, ctx, w)
		defer a.Close()
		s, err := a.NewStream(ctx, w.ID(), protocol.BlobID)
		if err != nil {
			return err
		}
		defer s.Reset()
		if err := protocol.WriteMsg(s, &protocol.BlobRequest{Cid: cids.Sum(fakeELF).Bytes()}); err != nil {
			return err
		}
		s.CloseWrite()
		var resp protocol.BlobResponse
		if err := protocol.ReadMsg(s, &resp, protocol.MaxControlMsg); err != nil {
			return err
		}
		if resp.Code != protocol.Code_OK || resp.Size != uint64(len(fakeELF)) {
			return errors.New("blob response " + resp.Code.String())
		}
		return nil
	}
	tests := []struct {
		proto      p2pproto.ID
		identities int
		honest     func() error
	}{
		{protocol.JobID, 9, submit},
		{protocol.InfoID, 17, submit},
		{protocol.BlobID, 9, fetch},
	}
	for _, tt := range tests {
		t.Run(string(tt.proto), func(t *testing.T) {
			const perIdentity = 32
			var (
				wg, opening sync.WaitGroup
				attempts    atomic.Int32
				ended       atomic.Int32 // refused, or released by the node's handler
			)
			hostile := make([]*attacker, tt.identities)
			for i := range hostile {
				hostile[i] = newAttacker(t, ctx, w)
			}
			defer func() {
				for _, a := range hostile {
					a.Close()
				}
				wg.Wait()
			}()
			for _, a := range hostile {
				opening.Go(func() {
					for range perIdentity {
						s, err := a.NewStream(ctx, w.ID(), tt.proto)
						if err != nil {
							return // the node dropped the connection
						}
						attempts.Add(1)
						if _, err := s.Read(nil); err != nil { // flush the lazy handshake
							ended.Add(1)
							continue
						}
						wg.Go(func() {
							s.Read(make([]byte, 1)) // until the node resets it
							ended.Add(1)
						})
					}
				})
			}
			held := func() (total, most int) {
				for _, a := range hostile {
					k := a.handlerStreams(tt.proto)
					total, most = total+k, max(most, k)
				}
				return total, most
			}
			opening.Wait()
			waitUntil(t, 30*time.Second, "every hostile stream held or refused", func() bool {
				h, _ := held()
				return int(ended.Load())+h == int(attempts.Load())
			})
			// A stream the handler refuses (past its 4 unjudged per peer) is reset at once but
			// leaves the connection's list a moment later: what counts is what stays held.
			deadline := time.Now().Add(2 * time.Second)
			for _, most := held(); most > perPeerStreams && time.Now().Before(deadline); _, most = held() {
				time.Sleep(10 * time.Millisecond) // a polling interval
			}
			total, most := held()
			t.Logf("%d identities x %d streams: the node holds %d (at most %d for one identity)", tt.identities, perIdentity, total, most)
			if most > perPeerStreams {
				t.Errorf("one identity holds %d streams, want at most %d", most, perPeerStreams)
			}
			if err := tt.honest(); err != nil {
				t.Fatalf("honest peer while %d hostile streams are held: %v", total, err)
			}
		})
	}
}
