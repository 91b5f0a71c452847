package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"
	msmux "github.com/multiformats/go-multistream"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// Outcomes an abuse case can want besides a code.
const (
	wantReset        protocol.Code = -1 // the node resets the stream
	wantGone         protocol.Code = -2 // the client reset it; the node's handler must let go
	wantNotSupported protocol.Code = -3 // NewStream fails protocol negotiation
)

// Blobs the attacker serves to a worker that fetches them; anything else is NOT_FOUND.
var (
	tarpitBlob = cids.Sum([]byte("tarpit: header never sent"))
	liarBlob   = cids.Sum([]byte("liar: other bytes are sent"))
	hugeBlob   = cids.Sum([]byte("huge: header claims 1 TiB"))
)

// errNoStream marks an attacker's NewStream that failed, e.g. after its connection was
// dropped.
var errNoStream = errors.New("no stream")

// attacker is a plain libp2p host connected to a node over TCP. Its resource manager is
// unlimited, so what refuses its streams is the node.
type attacker struct {
	host.Host
	node    *Node
	fetched chan struct{} // one value each time the node asks for tarpitBlob
	quit    chan struct{} // closed by Close: the tarpit's handlers end
	once    sync.Once
}

// Close ends the tarpit's handlers and closes the host.
func (a *attacker) Close() error {
	a.once.Do(func() { close(a.quit) })
	return a.Host.Close()
}

func newAttacker(t *testing.T, ctx context.Context, n *Node) *attacker {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ResourceManager(&network.NullResourceManager{}))
	if err != nil {
		t.Fatal(err)
	}
	a := &attacker{Host: h, node: n, fetched: make(chan struct{}, 16), quit: make(chan struct{})}
	h.SetStreamHandler(protocol.BlobID, a.serveBlob)
	// TCP only: yamux opens streams at once and leaves refusing them to the resource
	// manager, where QUIC would make the 500-stream flood wait for stream credit.
	var tcp []multiaddr.Multiaddr
	for _, ma := range n.Host().Addrs() {
		if _, err := ma.ValueForProtocol(multiaddr.P_TCP); err == nil {
			tcp = append(tcp, ma)
		}
	}
	if err := h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: tcp}); err != nil {
		h.Close()
		t.Fatal(err)
	}
	// After identify, NewStream to a known protocol is lazy and to an unknown one negotiates.
	waitUntil(t, 10*time.Second, "identify of the node", func() bool {
		ps, _ := h.Peerstore().SupportsProtocols(n.ID(), protocol.JobID)
		return len(ps) == 1
	})
	return a
}

func (a *attacker) serveBlob(s network.Stream) {
	var req protocol.BlobRequest
	if protocol.ReadMsg(s, &req, protocol.MaxControlMsg) != nil {
		s.Reset()
		return
	}
	c, _ := cids.Cast(req.Cid)
	switch {
	case c.Equals(tarpitBlob):
		a.fetched <- struct{}{}
		// Never answer: the worker's fetch must end by its own deadline or cancel. (Reading
		// until EOF was no tarpit: the worker closes its write side after the request, so
		// the reset that followed failed its fetch at once, before any Close.)
		<-a.quit
		s.Reset()
		return
	case c.Equals(liarBlob):
		protocol.WriteMsg(s, &protocol.BlobResponse{Size: 5})
		s.Write([]byte("wrong"))
	case c.Equals(hugeBlob):
		protocol.WriteMsg(s, &protocol.BlobResponse{Size: 1 << 40})
	default:
		protocol.WriteMsg(s, &protocol.BlobResponse{Code: protocol.Code_NOT_FOUND})
	}
	s.Close()
}

// handlerStreams counts the node's inbound grid streams from the attacker (of protocol p
// only, unless p is empty): each is a handler still running or a refusal not yet done.
func (a *attacker) handlerStreams(p p2pproto.ID) int {
	k := 0
	for _, c := range a.node.Host().Network().ConnsToPeer(a.ID()) {
		for _, s := range c.GetStreams() {
			sp := s.Protocol()
			if s.Stat().Direction != network.DirInbound || (p != "" && sp != p) {
				continue
			}
			if sp == protocol.InfoID || sp == protocol.BlobID || sp == protocol.JobID {
				k++
			}
		}
	}
	return k
}

// hold waits until the node runs a handler for s: the lazy handshake is flushed by a
// zero-length Read, and the node's stream carries its protocol once the resource manager
// let it through.
func (a *attacker) hold(t *testing.T, s network.Stream) {
	t.Helper()
	if _, err := s.Read(nil); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	waitUntil(t, 5*time.Second, "the node's handler for "+string(s.Protocol()), func() bool {
		return a.handlerStreams(s.Protocol()) > 0
	})
}

// info asks the node for its offer and checks it.
func (a *attacker) info(ctx context.Context) error {
	s, err := a.NewStream(ctx, a.node.ID(), protocol.InfoID)
	if err != nil {
		return fmt.Errorf("%w: %v", errNoStream, err)
	}
	defer s.Close()
	nonce := bytes.Repeat([]byte{7}, protocol.MinNonce)
	if err := protocol.WriteMsg(s, &protocol.InfoRequest{Nonce: nonce}); err != nil {
		s.Reset()
		return err
	}
	s.CloseWrite()
	var resp protocol.InfoResponse
	if err := protocol.ReadMsg(s, &resp, protocol.MaxControlMsg); err != nil {
		s.Reset()
		return err
	}
	if err := resp.Err(); err != nil {
		return err
	}
	o, signer, err := protocol.OpenOffer(resp.Offer)
	if err != nil {
		return err
	}
	if signer != a.node.ID() || !bytes.Equal(o.Nonce, nonce) {
		return errors.New("offer signed by another peer or for another nonce")
	}
	return nil
}

// readReply reads the node's answer on s: the code of an InfoResponse, a BlobResponse, or
// a JobAdmit and, once admitted, of the JobResult.
func readReply(s network.Stream) (protocol.Code, error) {
	switch s.Protocol() {
	case protocol.InfoID:
		var m protocol.InfoResponse
		err := protocol.ReadMsg(s, &m, protocol.MaxControlMsg)
		return m.Code, err
	case protocol.BlobID:
		var m protocol.BlobResponse
		err := protocol.ReadMsg(s, &m, protocol.MaxControlMsg)
		return m.Code, err
	}
	var admit protocol.JobAdmit
	if err := protocol.ReadMsg(s, &admit, protocol.MaxControlMsg); err != nil || admit.Code != protocol.Code_OK {
		return admit.Code, err
	}
	var res protocol.JobResult
	err := protocol.ReadMsg(s, &res, protocol.MaxJobResult)
	return res.Code, err
}

func frameOf(t *testing.T, m proto.Message) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := protocol.WriteMsg(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// waitUntil polls cond every few milliseconds until it holds or fails the test after d.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAbuse sends malformed, oversized, truncated, abandoned and flooding streams to a
// worker node from a plain libp2p host, checks each answer, and then checks that the node
// still runs a job for a well-behaved client and has no goroutines left from the abuse.
func TestAbuse(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A worker announces only once it has another DHT server to announce to.
	ws, client := openGrid(t, ctx, 2, echoRunner)
	w := ws[0]
	// submit runs a job on both workers, so on w too.
	submit := func(in string) {
		t.Helper()
		rep, err := client.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte(in), Replicas: 2})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(rep.Output); got != in {
			t.Fatalf("got output %q, want %q", got, in)
		}
		for _, r := range rep.Replicas {
			if r.Worker == w.ID() && r.ReceiptValid && r.Err == nil {
				return
			}
		}
		t.Fatalf("got replicas %+v, want one from %s with a valid receipt", rep.Replicas, w.ID())
	}
	submit("warm up") // the client's connection and streams to the worker exist from here on
	baseline := runtime.NumGoroutine()

	a := newAttacker(t, ctx, w)
	defer a.Close()

	nonce := bytes.Repeat([]byte{1}, protocol.MinNonce)
	job := func(c []byte, modify func(*protocol.JobRequest)) []byte {
		m := &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c, Nonce: nonce}
		if modify != nil {
			modify(m)
		}
		return frameOf(t, m)
	}
	unknown := cids.Sum([]byte("a binary nobody has")).Bytes()
	goodJob := job(unknown, nil)
	goodInfo := frameOf(t, &protocol.InfoRequest{Nonce: nonce})
	goodBlob := frameOf(t, &protocol.BlobRequest{Cid: unknown})
	garbage := bytes.Repeat([]byte{0xff}, 32) // a varint that overflows 64 bits
	badBody := append([]byte{8}, bytes.Repeat([]byte{0xff}, 8)...)
	text := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n") // 'G' claims 71 bytes; 26 follow
	prefix := func(n uint64, body int) []byte {
		return append(binary.AppendUvarint(nil, n), make([]byte, body)...)
	}
	var (
		closeWrite = network.Stream.CloseWrite
		reset      = network.Stream.Reset
		keepOpen   = func(network.Stream) error { return nil }
	)
	tests := []struct {
		name  string
		proto p2pproto.ID
		send  []byte
		hold  bool                       // wait until the node's handler has the stream
		end   func(network.Stream) error // after sending; nil is closeWrite
		want  protocol.Code
		// maxAlloc, when set, bounds the bytes this process allocates during the case.
		maxAlloc uint64
	}{
		{name: "info/garbage", proto: protocol.InfoID, send: garbage, want: wantReset},
		{name: "blob/garbage", proto: protocol.BlobID, send: garbage, want: wantReset},
		{name: "job/garbage", proto: protocol.JobID, send: garbage, want: protocol.Code_BAD_REQUEST},
		{name: "info/undecodable body", proto: protocol.InfoID, send: badBody, want: wantReset},
		{name: "blob/undecodable body", proto: protocol.BlobID, send: badBody, want: wantReset},
		{name: "job/undecodable body", proto: protocol.JobID, send: badBody, want: protocol.Code_BAD_REQUEST},
		{name: "info/http", proto: protocol.InfoID, send: text, want: wantReset},
		{name: "blob/http", proto: protocol.BlobID, send: text, want: wantReset},
		{name: "job/http", proto: protocol.JobID, send: text, want: wantReset},

		{name: "info/length 1<<40", proto: protocol.InfoID, send: prefix(1<<40, 16), want: wantReset, maxAlloc: 4 << 20},
		{name: "blob/length 1<<40", proto: protocol.BlobID, send: prefix(1<<40, 16), want: wantReset, maxAlloc: 4 << 20},
		{name: "job/length 1<<40", proto: protocol.JobID, send: prefix(1<<40, 16), want: protocol.Code_TOO_LARGE, maxAlloc: 4 << 20},
		{name: "job/length 2^64-1", proto: protocol.JobID, send: prefix(1<<64-1, 0), want: protocol.Code_TOO_LARGE},
		{name: "info/length cap+1", proto: protocol.InfoID, send: prefix(protocol.MaxControlMsg+1, 16), want: wantReset},
		{name: "blob/length cap+1", proto: protocol.BlobID, send: prefix(protocol.MaxControlMsg+1, 16), want: wantReset},
		{name: "job/length cap+1", proto: protocol.JobID, send: prefix(protocol.MaxJobRequest+1, 16), want: protocol.Code_TOO_LARGE},
		// At the cap the node must read, but allocate only as the bytes arrive.
		{name: "job/length cap, body withheld", proto: protocol.JobID, send: prefix(protocol.MaxJobRequest, 1024), want: wantReset, maxAlloc: 4 << 20},

		{name: "info/unknown version", proto: "/gridnode/info/1.0.1", want: wantNotSupported},
		{name: "blob/unknown version", proto: "/gridnode/blob/2.0.0", want: wantNotSupported},
		{name: "job/unknown version", proto: "/gridnode/job/9.9.9", want: wantNotSupported},
		{name: "job/no version", proto: "/gridnode/job", want: wantNotSupported},

		{name: "blob/unknown cid", proto: protocol.BlobID, send: goodBlob, want: protocol.Code_NOT_FOUND},
		{name: "blob/malformed cid", proto: protocol.BlobID, send: frameOf(t, &protocol.BlobRequest{Cid: []byte("not a cid")}), want: protocol.Code_BAD_REQUEST},
		{name: "blob/empty request", proto: protocol.BlobID, send: frameOf(t, &protocol.BlobRequest{}), want: protocol.Code_BAD_REQUEST},
		{name: "info/long nonce", proto: protocol.InfoID, send: frameOf(t, &protocol.InfoRequest{Nonce: make([]byte, protocol.MaxNonce+1)}), want: protocol.Code_BAD_REQUEST},
		{name: "job/binary nobody has", proto: protocol.JobID, send: goodJob, end: keepOpen, want: protocol.Code_FETCH_FAILED},
		{name: "job/binary served with wrong bytes", proto: protocol.JobID, send: job(liarBlob.Bytes(), nil), end: keepOpen, want: protocol.Code_FETCH_FAILED},
		{name: "job/binary header claims 1 TiB", proto: protocol.JobID, send: job(hugeBlob.Bytes(), nil), end: keepOpen, want: protocol.Code_TOO_LARGE},
		{name: "job/short nonce", proto: protocol.JobID, send: job(unknown, func(m *protocol.JobRequest) { m.Nonce = m.Nonce[:8] }), want: protocol.Code_BAD_REQUEST},
		{name: "job/other arch", proto: protocol.JobID, send: job(unknown, func(m *protocol.JobRequest) { m.Arch = "linux/riscv64" }), want: protocol.Code_ARCH},
		{name: "job/limits above policy", proto: protocol.JobID, send: job(unknown, func(m *protocol.JobRequest) { m.Limits = &protocol.Limits{CpuMs: 1 << 50} }), want: protocol.Code_LIMITS},
		{name: "job/binary size 1 TiB", proto: protocol.JobID, send: job(unknown, func(m *protocol.JobRequest) { m.BinarySize = 1 << 40 }), want: protocol.Code_TOO_LARGE},

		{name: "info/never written, closed", proto: protocol.InfoID, hold: true, want: wantReset},
		{name: "blob/never written, closed", proto: protocol.BlobID, hold: true, want: wantReset},
		{name: "job/never written, closed", proto: protocol.JobID, hold: true, want: wantReset},
		{name: "info/never written, reset", proto: protocol.InfoID, hold: true, end: reset, want: wantGone},
		{name: "blob/never written, reset", proto: protocol.BlobID, hold: true, end: reset, want: wantGone},
		{name: "job/never written, reset", proto: protocol.JobID, hold: true, end: reset, want: wantGone},

		{name: "info/half a frame, closed", proto: protocol.InfoID, send: goodInfo[:len(goodInfo)/2], hold: true, want: wantReset},
		{name: "blob/half a frame, closed", proto: protocol.BlobID, send: goodBlob[:len(goodBlob)/2], hold: true, want: wantReset},
		{name: "job/half a frame, closed", proto: protocol.JobID, send: goodJob[:len(goodJob)/2], hold: true, want: wantReset},
		{name: "info/half a frame, reset", proto: protocol.InfoID, send: goodInfo[:len(goodInfo)/2], hold: true, end: reset, want: wantGone},
		{name: "blob/half a frame, reset", proto: protocol.BlobID, send: goodBlob[:len(goodBlob)/2], hold: true, end: reset, want: wantGone},
		{name: "job/half a frame, reset", proto: protocol.JobID, send: goodJob[:len(goodJob)/2], hold: true, end: reset, want: wantGone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before runtime.MemStats
			if tt.maxAlloc > 0 {
				runtime.ReadMemStats(&before)
			}
			s, err := a.NewStream(ctx, w.ID(), tt.proto)
			if tt.want == wantNotSupported {
				if !errors.Is(err, msmux.ErrNotSupported[p2pproto.ID]{}) {
					t.Fatalf("NewStream(%s): got %v, want protocols not supported", tt.proto, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
			s.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := s.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.hold {
				a.hold(t, s)
			}
			end := tt.end
			if end == nil {
				end = closeWrite
			}
			if err := end(s); err != nil {
				t.Fatal(err)
			}
			switch code, err := readReply(s); {
			case tt.want == wantGone:
			case tt.want == wantReset:
				if !errors.Is(err, network.ErrReset) {
					t.Fatalf("got code %v, err %v; want a reset", code, err)
				}
			case err != nil || code != tt.want:
				t.Fatalf("got code %v, err %v; want %v", code, err, tt.want)
			default:
				// A coded answer is the last thing on the stream.
				if n, err := io.Copy(io.Discard, s); n != 0 || err != nil {
					t.Fatalf("after the answer: got %d bytes, err %v; want a clean EOF", n, err)
				}
			}
			if tt.maxAlloc > 0 {
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				if got := after.TotalAlloc - before.TotalAlloc; got > tt.maxAlloc {
					t.Errorf("allocated %d bytes, want at most %d", got, tt.maxAlloc)
				}
			}
			waitUntil(t, 5*time.Second, "the node's handler to let go of the stream", func() bool { return a.handlerStreams("") == 0 })
			if n := w.Running(); n != 0 {
				t.Errorf("got %d running jobs, want 0", n)
			}
		})
	}

	// A submitter that does not serve its binary holds a slot until it goes away.
	t.Run("job/binary fetch hangs, submitter leaves", func(t *testing.T) {
		s, err := a.NewStream(ctx, w.ID(), protocol.JobID)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Reset()
		s.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := s.Write(job(tarpitBlob.Bytes(), nil)); err != nil {
			t.Fatal(err)
		}
		var admit protocol.JobAdmit
		if err := protocol.ReadMsg(s, &admit, protocol.MaxControlMsg); err != nil || admit.Code != protocol.Code_OK {
			t.Fatalf("admit: got code %v, err %v; want OK", admit.Code, err)
		}
		select {
		case <-a.fetched:
		case <-ctx.Done():
			t.Fatal("the worker never asked for the binary")
		}
		if n := w.Running(); n != 1 {
			t.Errorf("got %d running jobs, want 1", n)
		}
		s.CloseWrite()
		// The worker sees the submitter leave (a reset), or, when its fetch from that same
		// submitter fails first, says so; either way the job ends below.
		if code, err := readReply(s); !errors.Is(err, network.ErrReset) && code != protocol.Code_FETCH_FAILED {
			t.Fatalf("got code %v, err %v; want a reset or FETCH_FAILED", code, err)
		}
		waitUntil(t, 5*time.Second, "the job to end", func() bool { return w.Running() == 0 && a.handlerStreams("") == 0 })
	})

	// One peer opens 500 streams at once: half ask for an offer, half send half a job
	// request and wait. The resource manager resets streams above the per-peer limits, and
	// when too many streams are open at once yamux fails to reserve their receive windows
	// (256 KiB each) from the connection's memory limit and drops the whole connection.
	// Either way, every stream must end in an answer, a failure, or a handler that holds it.
	t.Run("500 concurrent streams", func(t *testing.T) {
		const n = 500
		var (
			answered, reset, noStream, pending atomic.Int32
			dropped                            atomic.Int32
			released                           atomic.Bool
			mu                                 sync.Mutex
			opened                             []network.Stream // job streams, reset at the end
			other                              []error
			wg                                 sync.WaitGroup
		)
		notifee := &network.NotifyBundle{DisconnectedF: func(network.Network, network.Conn) { dropped.Add(1) }}
		a.Network().Notify(notifee)
		defer a.Network().StopNotify(notifee)
		tally := func(err error) {
			switch {
			case err == nil:
				answered.Add(1)
			case errors.Is(err, errNoStream):
				noStream.Add(1)
			case errors.Is(err, network.ErrReset):
				reset.Add(1)
			default:
				mu.Lock()
				other = append(other, err)
				mu.Unlock()
			}
		}
		pending.Store(n)
		for i := range n {
			wg.Go(func() {
				defer pending.Add(-1)
				if i%2 == 0 {
					tally(a.info(ctx))
					return
				}
				s, err := a.NewStream(ctx, w.ID(), protocol.JobID)
				if err != nil {
					tally(fmt.Errorf("%w: %v", errNoStream, err))
					return
				}
				mu.Lock()
				opened = append(opened, s)
				mu.Unlock()
				if _, err := s.Write(goodJob[:len(goodJob)/2]); err != nil {
					tally(err)
					return
				}
				// Returns when the node refuses the stream, or when the test resets it.
				_, err = s.Read(make([]byte, 1))
				if !released.Load() {
					tally(err)
				}
			})
		}
		var held int
		waitUntil(t, 15*time.Second, "every stream answered, refused or held by a handler", func() bool {
			held = a.handlerStreams(protocol.JobID)
			return int(pending.Load()) == held
		})
		mu.Lock()
		lost := len(other)
		mu.Unlock()
		t.Logf("%d streams: %d answered, %d reset, %d failed otherwise, %d not opened, %d held by job handlers; %d connection(s) dropped",
			n, answered.Load(), reset.Load(), lost, noStream.Load(), held, dropped.Load())
		// node/limits.go: at most 32 job streams per peer.
		if held > 32 {
			t.Errorf("got %d job streams held by handlers, want at most 32", held)
		}
		released.Store(true)
		mu.Lock()
		for _, s := range opened {
			s.Reset()
		}
		mu.Unlock()
		wg.Wait()
		// A dropped connection fails streams in flight with whatever the session saw
		// (EOF, ECONNRESET); without a drop, every failure must be a reset.
		if dropped.Load() == 0 {
			for _, err := range other {
				t.Errorf("got %v, want an answer or a reset", err)
			}
		}
		if got := int(answered.Load()+reset.Load()+noStream.Load()) + len(other) + held; got != n {
			t.Errorf("got %d streams accounted for, want %d", got, n)
		}
		waitUntil(t, 10*time.Second, "the node's handlers to let go of the streams", func() bool { return a.handlerStreams("") == 0 })
		if err := a.info(ctx); err != nil {
			t.Fatalf("info after the flood: %v", err)
		}
	})

	// The attacker's connection and its goroutines go first; then the node must be back to
	// where it was before the abuse.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	submit("after the abuse")
	// kad-dht keeps a stream (and a goroutine) per peer it talks to: the lookup of the
	// submit after the abuse may reach a peer the warm-up's did not (a slack of 4, against
	// hundreds of streams flooded: a leak per stream is far above it).
	baseline += 4
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			var b bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("got %d goroutines, want at most the %d before the abuse:\n%s", runtime.NumGoroutine(), baseline, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAbuseCloseLeavesNoGoroutines closes a worker node while an attacker holds streams on
// every protocol and a job whose binary fetch never ends: Close must not wait for them and
// must leave nothing running.
func TestAbuseCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, ignoreLauncher)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Worker: true, Runner: echoRunner, Slots: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	a := newAttacker(t, ctx, w)
	defer a.Close()

	for _, p := range []p2pproto.ID{protocol.InfoID, protocol.BlobID, protocol.JobID} {
		s, err := a.NewStream(ctx, w.ID(), p)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Reset()
		a.hold(t, s)
	}
	s, err := a.NewStream(ctx, w.ID(), protocol.JobID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	req := frameOf(t, &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: tarpitBlob.Bytes(), Nonce: bytes.Repeat([]byte{2}, protocol.MinNonce)})
	if _, err := s.Write(req); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.fetched:
	case <-ctx.Done():
		t.Fatal("the worker never asked for the binary")
	}

	// The submitter reads its reply while the node closes, and leaves once it has it.
	type reply struct {
		code protocol.Code
		err  error
	}
	replied := make(chan reply, 1)
	go func() {
		code, err := readReply(s)
		s.Reset()
		replied <- reply{code, err}
	}()
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waits closeGrace for the cancelled reply to leave; seconds mean it waited for
	// a stream's timeout (5 s and more).
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v, want well under the streams' timeouts", d)
	}
	if r := <-replied; r.err != nil || r.code != protocol.Code_CANCELLED {
		t.Errorf("running job: got code %v, err %v; want CANCELLED", r.code, r.err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}
