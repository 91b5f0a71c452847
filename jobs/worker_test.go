package jobs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"
)

// exchange sends raw bytes on a job stream to p and returns the admission's error.
func exchange(t *testing.T, h host.Host, p peer.ID, raw []byte) error {
	t.Helper()
	s, err := h.NewStream(context.Background(), p, protocol.JobID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(raw); err != nil {
		t.Fatal(err)
	}
	var admit protocol.JobAdmit
	if err := protocol.ReadMsg(s, &admit, protocol.MaxControlMsg); err != nil {
		return err
	}
	return admit.Err()
}

func frame(t *testing.T, m *protocol.JobRequest) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := protocol.WriteMsg(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestWorkerRefuses(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper, Limits: sandbox.Limits{CPU: time.Minute}, MaxInput: 100})
	if err := g.subHost.Connect(context.Background(), addrInfo(g.hosts[0])); err != nil {
		t.Fatal(err)
	}
	ok := func() *protocol.JobRequest {
		return &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: cids.Sum(testBinary).Bytes(), BinarySize: uint64(len(testBinary)), Nonce: bytes.Repeat([]byte{1}, 16)}
	}
	tests := []struct {
		name string
		raw  func() []byte
		want error
	}{
		{"cpu above policy", func() []byte {
			m := ok()
			m.Limits = &protocol.Limits{CpuMs: 60001}
			return frame(t, m)
		}, protocol.ErrLimits},
		{"other arch", func() []byte {
			m := ok()
			m.Arch = "linux/riscv64"
			return frame(t, m)
		}, protocol.ErrArch},
		{"no arch", func() []byte {
			m := ok()
			m.Arch = ""
			return frame(t, m)
		}, protocol.ErrArch},
		{"input too large", func() []byte {
			m := ok()
			m.InputCid, m.InputSize, m.InputInline = cids.Sum(nil).Bytes(), 101, true
			return frame(t, m)
		}, protocol.ErrTooLarge},
		{"input in the header", func() []byte {
			m := ok()
			m.Input = []byte("in")
			return frame(t, m)
		}, protocol.ErrBadRequest},
		{"input by cid too large", func() []byte {
			m := ok()
			m.InputCid, m.InputSize = cids.Sum(nil).Bytes(), 101
			return frame(t, m)
		}, protocol.ErrTooLarge},
		{"binary too large", func() []byte {
			m := ok()
			m.BinarySize = 1 << 40
			return frame(t, m)
		}, protocol.ErrTooLarge},
		{"short nonce", func() []byte {
			m := ok()
			m.Nonce = []byte("short")
			return frame(t, m)
		}, protocol.ErrBadRequest},
		{"bad cid", func() []byte {
			m := ok()
			m.JobCid = []byte("not a cid")
			return frame(t, m)
		}, protocol.ErrBadRequest},
		{"oversized length prefix", func() []byte { return binary.AppendUvarint(nil, 1<<40) }, protocol.ErrTooLarge},
		{"garbage", func() []byte { return append(binary.AppendUvarint(nil, 4), 0xff, 0xff, 0xff, 0xff) }, protocol.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := exchange(t, g.subHost, g.hosts[0].ID(), tt.raw()); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if n := g.workers[0].Running(); n != 0 {
		t.Fatalf("running: got %d, want 0", n)
	}
}

func TestWorkerOffer(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper, Slots: 3, Limits: sandbox.Limits{Memory: 1 << 20}, MaxInput: 1000, Isolation: "seccomp strict\x00, own uid"})
	ai := addrInfo(g.hosts[0])
	o, _, err := g.sub.queryOffer(context.Background(), ai)
	if err != nil {
		t.Fatal(err)
	}
	d := sandbox.DefaultLimits()
	// One peer may take half the slots, rounded up: its offer shows 2 of 3 free.
	if o.Peer != ai.ID || o.Arch != sandbox.ArchAMD64 || o.SlotsFree != 2 || o.SlotsTotal != 3 || o.Isolation != "seccomp strict , own uid" /* a control character reaches no terminal */ ||
		o.Max.Memory != 1<<20 || o.Max.CPU != d.CPU || o.MaxInput != 1000 || o.Max.MaxOutput != protocol.MaxOutput {
		t.Fatalf("got offer %+v", o)
	}
	if time.Since(o.Time) > time.Minute {
		t.Fatalf("offer time %v is not now", o.Time)
	}
}

// TestWorkerInputByCID checks that an input too large to go inline is fetched as a blob,
// into memory only.
func TestWorkerInputByCID(t *testing.T) {
	hash := transform(func(b []byte) []byte { return cids.Sum(b).Bytes() })
	g := newGrid(t, WorkerConfig{Runner: hash, MaxInput: 32 << 20})
	in := bytes.Repeat([]byte("a"), protocol.MaxInline+1)
	rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: in, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rep.Output, cids.Sum(in).Bytes()) {
		t.Fatalf("got %d bytes of output", len(rep.Output))
	}
	if g.stores[0].Has(cids.Sum(in)) {
		t.Fatal("the worker kept the input")
	}
	// The submitter served both from memory (store.Hold), and holds neither once done.
	if names := dirNames(t, g.subDir); len(names) != 0 {
		t.Fatalf("the submitter wrote %q to its store", names)
	}
	if g.sub.cfg.Store.Has(rep.JobCID) || g.sub.cfg.Store.Has(rep.InputCID) {
		t.Fatal("the submitter still holds the binary or the input after the submit")
	}
}

// TestWorkerClose checks that closing a worker cancels its running job, tells the
// submitter, and leaves no goroutine behind.
func TestWorkerClose(t *testing.T) {
	// Goroutines of earlier tests' hosts may still be winding down; they are not ours.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	runTestWorkerClose(t)
}

func runTestWorkerClose(t *testing.T) {
	b := newBlocker()
	g := newGrid(t, WorkerConfig{Runner: b})
	done := make(chan *Report, 1)
	go func() {
		rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Replicas: 1})
		if !errors.Is(err, ErrNoQuorum) {
			t.Errorf("Submit: got %v, want ErrNoQuorum", err)
		}
		done <- rep
	}()
	recv(t, b.started, "the job to start")
	if err := g.workers[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, b.cancelled, "the runner's ctx to be cancelled"); !errors.Is(err, context.Canceled) {
		t.Fatalf("runner ctx: got %v, want context.Canceled", err)
	}
	rep := recv(t, done, "Submit to return")
	if len(rep.Replicas) != 1 || !errors.Is(rep.Replicas[0].Err, protocol.ErrCancelled) {
		t.Fatalf("got replicas %+v, want one cancelled", rep.Replicas)
	}
	if n := g.workers[0].Running(); n != 0 {
		t.Fatalf("running after Close: got %d, want 0", n)
	}
	// A closed worker refuses new streams.
	if _, _, err := g.sub.queryOffer(context.Background(), addrInfo(g.hosts[0])); err == nil {
		t.Fatal("closed worker still answers")
	}
	for _, h := range append(g.hosts, g.subHost) {
		h.Close()
	}
}

// rawJob sends a job request from h to p (keeping the write side open, as a submitter does)
// and returns the result or the refusal.
func rawJob(t *testing.T, h host.Host, p peer.ID, m *protocol.JobRequest) (*protocol.JobResult, error) {
	t.Helper()
	s, err := h.NewStream(context.Background(), p, protocol.JobID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if err := protocol.WriteMsg(s, m); err != nil {
		t.Fatal(err)
	}
	var admit protocol.JobAdmit
	if err := protocol.ReadMsg(s, &admit, protocol.MaxControlMsg); err != nil {
		return nil, err
	}
	if err := admit.Err(); err != nil {
		return nil, err
	}
	var res protocol.JobResult
	if err := protocol.ReadMsg(s, &res, protocol.MaxJobResult); err != nil {
		return nil, err
	}
	// The output follows raw; kept in the retired field for the tests' checks.
	out, err := protocol.ReadPayload(s, int64(res.OutputSize), io.Discard)
	if err != nil {
		return nil, err
	}
	res.Output = out
	return &res, res.Err()
}

// TestWorkerProviders checks that a worker falls back to providers for a binary its
// submitter does not serve, and reports FETCH_FAILED when nobody has it.
func TestWorkerProviders(t *testing.T) {
	ctx := context.Background()
	provider := newHost(t)
	pst := newStore(t)
	serveStore(t, provider, pst)
	jobCID, err := pst.Put(ctx, testBinary)
	if err != nil {
		t.Fatal(err)
	}
	var providers atomic.Pointer[[]peer.AddrInfo]
	providers.Store(&[]peer.AddrInfo{})
	g := newGrid(t, WorkerConfig{Runner: upper, Providers: func(context.Context, cid.Cid) []peer.AddrInfo { return *providers.Load() }})
	client := newHost(t) // serves no blobs
	if err := client.Connect(ctx, addrInfo(g.hosts[0])); err != nil {
		t.Fatal(err)
	}
	req := &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: jobCID.Bytes(), BinarySize: uint64(len(testBinary)), Nonce: bytes.Repeat([]byte{1}, 16)}

	if _, err := rawJob(t, client, g.hosts[0].ID(), req); !errors.Is(err, protocol.ErrFetchFailed) {
		t.Fatalf("nobody has it: got %v, want ErrFetchFailed", err)
	}
	providers.Store(&[]peer.AddrInfo{addrInfo(client), addrInfo(provider)})
	res, err := rawJob(t, client, g.hosts[0].ID(), req)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Output) != "" || !g.stores[0].Has(jobCID) {
		t.Fatalf("got output %q, binary stored %v", res.Output, g.stores[0].Has(jobCID))
	}
}

// TestWorkerAbandonBudget checks that a peer that abandons admitted jobs before they run
// (here: it resets once the worker asks for the input) is refused BUSY after abandonBurst
// of them, that another peer is not, and that jobs that run are not charged.
func TestWorkerAbandonBudget(t *testing.T) {
	ctx := context.Background()
	g := newGrid(t, WorkerConfig{Runner: echo, Slots: 2})
	wid := g.hosts[0].ID()
	c, _ := g.stores[0].Put(ctx, testBinary)
	in := []byte{1}
	req := &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c.Bytes(), BinarySize: uint64(len(testBinary)), Nonce: nonce(), InputSize: 1, InputInline: true, InputCid: cids.Sum(in).Bytes()}
	a, honest := newHost(t), newHost(t)
	for _, h := range []host.Host{a, honest} {
		if err := h.Connect(ctx, addrInfo(g.hosts[0])); err != nil {
			t.Fatal(err)
		}
	}
	run := func(h host.Host) error {
		_, err := rawJob(t, h, wid, &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c.Bytes(), BinarySize: uint64(len(testBinary)), Nonce: nonce()})
		for try := 0; protocol.CodeOf(err) == protocol.Code_BUSY && g.workers[0].Running() > 0 && try < 100; try++ {
			time.Sleep(time.Millisecond) // the slot is given back just after the reply
			_, err = rawJob(t, h, wid, &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c.Bytes(), BinarySize: uint64(len(testBinary)), Nonce: nonce()})
		}
		return err
	}
	for i := range abandonBurst + 2 {
		if err := run(honest); err != nil {
			t.Fatalf("honest job %d: %v", i, err)
		}
	}
	for i := range abandonBurst {
		waitFor(t, "a free slot", func() bool { return g.workers[0].Running() == 0 })
		if !abortAfterAsk(a, wid, req) {
			t.Fatalf("abandoned job %d was not admitted", i)
		}
	}
	waitFor(t, "the abandoned jobs to be counted", func() bool { return g.workers[0].abandons.Spent(a.ID(), time.Now()) })
	if err := run(a); protocol.CodeOf(err) != protocol.Code_BUSY {
		t.Errorf("after %d abandoned jobs: got %v, want BUSY", abandonBurst, err)
	}
	if err := run(honest); err != nil {
		t.Errorf("another peer: got %v, want a run", err)
	}
}
