package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestSubmitThreeWorkers(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("hello grid"), Replicas: 3})
	if err != nil {
		t.Fatalf("%v; progress: %q", err, g.progress)
	}
	if got, want := string(rep.Output), "HELLO GRID"; got != want {
		t.Fatalf("output: got %q, want %q", got, want)
	}
	if !rep.JobCID.Equals(cids.Sum(testBinary)) || !rep.InputCID.Equals(cids.Sum([]byte("hello grid"))) || !rep.OutputCID.Equals(cids.Sum(rep.Output)) {
		t.Fatalf("report CIDs: got %s %s %s", rep.JobCID, rep.InputCID, rep.OutputCID)
	}
	if rep.Status != "exited" || rep.ExitCode != 0 {
		t.Fatalf("got status %s %d, want exited 0", rep.Status, rep.ExitCode)
	}
	if len(rep.Replicas) != 3 {
		t.Fatalf("got %d replicas, want 3: %+v", len(rep.Replicas), rep.Replicas)
	}
	seen := map[peer.ID]bool{}
	for _, r := range rep.Replicas {
		if !r.ReceiptValid || r.Err != nil || r.Verdict != rep.Verdict {
			t.Fatalf("replica %+v", r)
		}
		// Anyone can check a receipt later.
		rc, signer, err := protocol.OpenReceipt(r.Receipt)
		if err != nil || signer != r.Worker || !rc.OutputCID.Equals(rep.OutputCID) || rc.Wall != 2*time.Millisecond {
			t.Fatalf("receipt of %s: %+v, %v", r.Worker, rc, err)
		}
		seen[r.Worker] = true
	}
	for i, h := range g.hosts {
		if !seen[h.ID()] {
			t.Errorf("worker %d did not answer", i)
		}
		if !g.stores[i].Has(rep.JobCID) {
			t.Errorf("worker %d did not keep the binary", i)
		}
	}
}

func TestSubmitBusy(t *testing.T) {
	b := newBlocker()
	g := newGrid(t, WorkerConfig{Runner: b, Slots: 1}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	busy := g.hosts[0].ID()

	// Occupy the busy worker's only slot.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	occupier := newSubmitter(t, findOnly(addrInfo(g.hosts[0])))
	done := make(chan error, 1)
	go func() {
		_, err := occupier.Submit(ctx, Request{Binary: testBinary, Replicas: 1})
		done <- err
	}()
	recv(t, b.started, "the blocking job to start")

	t.Run("refused with BUSY", func(t *testing.T) {
		o, prefix, err := g.sub.queryOffer(context.Background(), addrInfo(g.hosts[0]))
		if err != nil {
			t.Fatal(err)
		}
		a := g.sub.runOne(context.Background(), &candidate{offer: o, prefix: prefix}, &job{Request: Request{Binary: testBinary},
			jobCID: cids.Sum(testBinary), inputCID: cids.Sum(nil), inline: true, arch: sandbox.ArchAMD64})
		if !a.refused || !errors.Is(a.Err, ErrRefused) || !errors.Is(a.Err, protocol.ErrBusy) {
			t.Fatalf("got %+v, want a refusal wrapping protocol.ErrBusy", a)
		}
	})
	t.Run("skipped by its offer", func(t *testing.T) {
		rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("x"), Replicas: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rep.Replicas {
			if r.Worker == busy {
				t.Fatalf("the busy worker was asked: %+v", r)
			}
		}
	})
	t.Run("moves on after a refusal", func(t *testing.T) {
		g.sub.ignoreSlots = true
		defer func() { g.sub.ignoreSlots = false }()
		g.placeFirst(busy)
		rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("x"), Replicas: 2, MaxReplicas: 2})
		if err != nil {
			t.Fatalf("%v: %+v", err, rep)
		}
		if string(rep.Output) != "X" || len(rep.Replicas) != 3 {
			t.Fatalf("got output %q, %d replicas; want \"X\", 3", rep.Output, len(rep.Replicas))
		}
		refused := 0
		for _, r := range rep.Replicas {
			if r.Worker == busy && errors.Is(r.Err, ErrRefused) && errors.Is(r.Err, protocol.ErrBusy) {
				refused++
			}
		}
		if refused != 1 {
			t.Fatalf("got replicas %+v, want one refusal by the busy worker", rep.Replicas)
		}
	})

	cancel()
	if err := recv(t, done, "the occupier to return"); !errors.Is(err, context.Canceled) {
		t.Fatalf("occupier: got %v, want context.Canceled", err)
	}
}

func TestSubmitLiarOutvoted(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: liar}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	liarID := g.hosts[0].ID()
	g.placeFirst(liarID) // make sure the liar gets a vote
	rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("truth"), Replicas: 2, Quorum: 2, MaxReplicas: 3})
	if err != nil {
		t.Fatalf("%v: %+v", err, rep)
	}
	if string(rep.Output) != "TRUTH" {
		t.Fatalf("got output %q, want TRUTH", rep.Output)
	}
	if len(rep.Replicas) != 3 {
		t.Fatalf("got %d replicas, want 3", len(rep.Replicas))
	}
	for _, r := range rep.Replicas {
		if !r.ReceiptValid {
			t.Fatalf("replica %+v: receipt invalid", r)
		}
		lied := r.Worker == liarID
		if lied != errors.Is(r.Err, ErrDisagrees) || (!lied && r.Err != nil) || lied == r.OutputCID.Equals(rep.OutputCID) {
			t.Fatalf("replica %+v (liar %v)", r, lied)
		}
	}
	if got := g.sub.Records().Get(liarID).Disagreed; got != 1 {
		t.Fatalf("liar reputation: got %d disagreements, want 1", got)
	}
}

func TestSubmitNoQuorum(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: liar}, WorkerConfig{Runner: upper})
	rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("x"), Replicas: 2})
	if !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("got %v, want ErrNoQuorum", err)
	}
	if rep == nil || len(rep.Replicas) != 2 {
		t.Fatalf("got report %+v, want 2 replicas", rep)
	}
}

func TestSubmitNoWorkers(t *testing.T) {
	tests := []struct {
		name string
		cfgs []WorkerConfig
		req  Request
	}{
		{"none found", nil, Request{Binary: testBinary}},
		{"limits too high", []WorkerConfig{{Runner: upper, Limits: sandbox.Limits{CPU: time.Second}}}, Request{Binary: testBinary, Limits: sandbox.Limits{CPU: time.Minute}, Replicas: 1}},
		{"input too large", []WorkerConfig{{Runner: upper, MaxInput: 10}}, Request{Binary: testBinary, Input: make([]byte, 11), Replicas: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGrid(t, tt.cfgs...)
			if _, err := g.sub.Submit(context.Background(), tt.req); !errors.Is(err, ErrNoWorkers) {
				t.Fatalf("got %v, want ErrNoWorkers", err)
			}
		})
	}
}

// TestSubmitBigBinary checks that a 32 MiB binary reaches a worker intact.
func TestSubmitBigBinary(t *testing.T) {
	bin := jobELF(t, 32<<20)
	got := make(chan cid.Cid, 1)
	check := RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		got <- cids.Sum(job.Binary)
		return sandbox.Result{Status: sandbox.StatusExited}, nil
	})
	g := newGrid(t, WorkerConfig{Runner: check})
	rep, err := g.sub.Submit(context.Background(), Request{Binary: bin, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if c := recv(t, got, "the run"); !c.Equals(cids.Sum(bin)) || !rep.JobCID.Equals(c) {
		t.Fatalf("worker ran %s, want %s", c, cids.Sum(bin))
	}
}

// TestSubmitterGone checks that a worker cancels a job whose submitter goes away.
func TestSubmitterGone(t *testing.T) {
	tests := []struct {
		name string
		gone func(g *grid, cancel context.CancelFunc)
	}{
		{"submit cancelled", func(g *grid, cancel context.CancelFunc) { cancel() }},
		{"host closed", func(g *grid, cancel context.CancelFunc) { g.subHost.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBlocker()
			g := newGrid(t, WorkerConfig{Runner: b})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := g.sub.Submit(ctx, Request{Binary: testBinary, Replicas: 1})
				done <- err
			}()
			recv(t, b.started, "the job to start")
			waitFor(t, "the worker to count the job", func() bool { return g.workers[0].Running() == 1 })
			tt.gone(g, cancel)
			if err := recv(t, b.cancelled, "the runner's ctx to be cancelled"); !errors.Is(err, context.Canceled) {
				t.Fatalf("runner ctx: got %v, want context.Canceled", err)
			}
			if err := recv(t, done, "Submit to return"); err == nil {
				t.Fatal("Submit: got nil error")
			}
			waitFor(t, "the worker to drop the job", func() bool { return g.workers[0].Running() == 0 })
		})
	}
}

func TestCheckReceipt(t *testing.T) {
	key, worker := testKey(t)
	otherKey, other := testKey(t)
	nonce := bytes.Repeat([]byte{1}, 32)
	j := &job{jobCID: cids.Sum([]byte("job")), inputCID: cids.Sum([]byte("in"))}
	output, stderr := []byte("out"), []byte("err")
	good := func() *protocol.Receipt {
		return &protocol.Receipt{JobCID: j.jobCID, InputCID: j.inputCID, OutputCID: cids.Sum(output), StderrCID: cids.Sum(stderr),
			Status: "exited", ExitCode: 3, Worker: worker, Nonce: nonce}
	}
	tests := []struct {
		name   string
		key    crypto.PrivKey
		modify func(r *protocol.Receipt)
		ok     bool
	}{
		{"good", key, func(*protocol.Receipt) {}, true},
		{"another worker's", otherKey, func(r *protocol.Receipt) { r.Worker = other }, false},
		{"signed by another key", otherKey, func(*protocol.Receipt) {}, false},
		{"replayed nonce", key, func(r *protocol.Receipt) { r.Nonce = bytes.Repeat([]byte{2}, 32) }, false},
		{"other job", key, func(r *protocol.Receipt) { r.JobCID = j.inputCID }, false},
		{"other input", key, func(r *protocol.Receipt) { r.InputCID = j.jobCID }, false},
		{"other output", key, func(r *protocol.Receipt) { r.OutputCID = j.jobCID }, false},
		{"other stderr", key, func(r *protocol.Receipt) { r.StderrCID = cids.Sum(output) }, false},
		{"no stderr cid", key, func(r *protocol.Receipt) { r.StderrCID = cid.Undef }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.modify(r)
			sealed, err := protocol.SealReceipt(r, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := checkReceipt(sealed, worker, nonce, j, cids.Sum(output), stderr)
			if (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok=%v", err, tt.ok)
			}
			// The receipt is the one source of the verdict: status and exit code included.
			if want := (Verdict{OutputCID: cids.Sum(output), StderrCID: cids.Sum(stderr), Status: "exited", ExitCode: 3}); tt.ok && verdictOf(got) != want {
				t.Fatalf("verdict: got %+v, want %+v", verdictOf(got), want)
			}
		})
	}
}

func testKey(t *testing.T) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

// TestSubmitSilentWorkers mixes 48 fake workers, real hosts that accept offer streams and
// never answer, with 3 honest workers: the submit must not wait for the fakes.
//
// Before bounded offer queries (16 at a time, 10 s each, waiting for every answer) the same
// submit took 30.0 s.
func TestSubmitSilentWorkers(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	stop := make(chan struct{})
	var cands []peer.AddrInfo
	for range 48 {
		h := newHost(t)
		h.SetStreamHandler(protocol.InfoID, func(s network.Stream) {
			<-stop
			s.Reset()
		})
		cands = append(cands, addrInfo(h))
	}
	t.Cleanup(func() { close(stop) }) // before the hosts close
	for _, h := range g.hosts {
		cands = append(cands, addrInfo(h))
	}
	sub := newSubmitter(t, findOnly(cands...))
	start := time.Now()
	rep, err := sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("x"), Replicas: 2})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("after %v: %v", took, err)
	}
	if string(rep.Output) != "X" {
		t.Fatalf("got output %q, want X", rep.Output)
	}
	// Typically 2-5 s. At worst the honest workers come last: 48/8 rounds of the 1 s reply
	// deadline, 1 s of grace and the job, about 7 s; 12 s leaves room for a loaded machine.
	t.Logf("submit took %v", took)
	if took > 12*time.Second {
		t.Fatalf("submit took %v, want under 12s", took)
	}
}
