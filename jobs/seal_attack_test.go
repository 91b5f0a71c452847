package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// cheatKit makes the results a hostile worker (id, key) sends for a batch request req.
type cheatKit struct {
	t   testing.TB
	id  peer.ID
	key crypto.PrivKey
	req *protocol.BatchRequest
}

// payload is the receipt payload of item i with output out, the worker id's.
func (c *cheatKit) payload(i int, out []byte) []byte {
	jobCID, _ := cids.Cast(c.req.JobCid)
	p, err := (&protocol.Receipt{JobCID: jobCID, InputCID: cids.Sum(c.req.Items[i].Input), OutputCID: cids.Sum(out),
		StderrCID: cids.Sum(nil), Status: "exited", Worker: c.id, Nonce: c.req.Items[i].Nonce}).MarshalRecord()
	if err != nil {
		c.t.Error(err)
	}
	return p
}

// result is item i's result with output out and its payload, unsealed.
func (c *cheatKit) result(i int, out []byte) *protocol.BatchResult {
	return &protocol.BatchResult{Index: uint32(i), Output: out, Receipt: c.payload(i, out)}
}

// ok is item i's right result (upper), unsealed.
func (c *cheatKit) ok(i int) *protocol.BatchResult {
	return c.result(i, bytes.ToUpper(c.req.Items[i].Input))
}

// seal signs the receipts of rs with the worker's key.
func (c *cheatKit) seal(rs ...*protocol.BatchResult) []byte {
	var ps [][]byte
	for _, r := range rs {
		ps = append(ps, r.Receipt)
	}
	env, _, err := protocol.SealReceipts(ps, c.key)
	if err != nil {
		c.t.Error(err)
	}
	return env
}

func failure(i int) *protocol.BatchResult {
	return &protocol.BatchResult{Index: uint32(i), Code: protocol.Code_INTERNAL, Message: "failed"}
}

// sealFrame is a frame of seal alone, sent while item next runs.
func sealFrame(next int, seal []byte) *protocol.BatchResult {
	return &protocol.BatchResult{Index: uint32(next), Seal: seal}
}

// withSeal is r carrying seal.
func withSeal(r *protocol.BatchResult, seal []byte) *protocol.BatchResult { r.Seal = seal; return r }

// serveCheat makes h answer batch streams with what script returns for the request, after
// admitting it, then close (stall: wait for the submitter to reset instead).
func serveCheat(t testing.TB, h host.Host, stall bool, script func(c *cheatKit) []*protocol.BatchResult) {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	h.SetStreamHandler(protocol.BatchID, func(s network.Stream) {
		var req protocol.BatchRequest
		if protocol.ReadMsg(s, &req, protocol.MaxBatchRequest) != nil {
			s.Reset()
			return
		}
		protocol.WriteMsg(s, &protocol.JobAdmit{})
		for _, r := range script(&cheatKit{t: t, id: h.ID(), key: h.Peerstore().PrivKey(h.ID()), req: &req}) {
			if protocol.WriteMsg(s, r) != nil {
				s.Reset()
				return
			}
		}
		if stall { // until the test ends (the submitter half-closed: a read returns at once)
			<-stop
			s.Reset()
			return
		}
		s.Close()
	})
}

// cheatBatch runs runBatch for inputs on the grid's only worker, and returns each job's
// attempts (runBatch must tell each exactly once).
func cheatBatch(t *testing.T, g *grid, inputs [][]byte) []attempt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := g.sub.prepare(ctx, Request{Binary: testBinary, Replicas: 1, Limits: sandbox.Limits{MaxOutput: protocol.MaxBatchOutput}})
	if err != nil {
		t.Fatal(err)
	}
	cands, err := g.sub.workers(ctx, j, nil)
	if err != nil || len(cands) != 1 {
		t.Fatalf("candidates %d, %v", len(cands), err)
	}
	got := make([][]attempt, len(inputs))
	var order []int
	jobs := make([]*job, len(inputs))
	for k, in := range inputs {
		jobs[k] = j.with(in)
	}
	g.sub.runBatch(ctx, cands[0], jobs, func(k int, a attempt) {
		got[k] = append(got[k], a)
		order = append(order, k)
	})
	out := make([]attempt, len(inputs))
	for k, as := range got {
		if len(as) != 1 {
			t.Fatalf("job %d told %d times, want once (order %v)", k, len(as), order)
		}
		out[k] = as[0]
	}
	return out
}

// TestSealAttackHostileSeals: whatever a hostile worker does with its seals (on failures,
// with nothing pending, reordered, short, long, replayed, forged, too late or over the
// caps), each job of the batch is told once, and only receipts that are a signed leaf of a
// seal of the batch's worker, in order, for that job, count as valid.
func TestSealAttackHostileSeals(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper})
	cheat := g.hosts[0]
	otherKey, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{'A'}, protocol.MaxBatchOutput)
	tests := []struct {
		name   string
		n      int
		script func(c *cheatKit) []*protocol.BatchResult
		valid  []int // the jobs whose receipt counts
	}{
		{"one seal for all", 4, func(c *cheatKit) []*protocol.BatchResult {
			r := []*protocol.BatchResult{c.ok(0), c.ok(1), c.ok(2), c.ok(3)}
			withSeal(r[3], c.seal(r...))
			return r
		}, []int{0, 1, 2, 3}},
		{"a seal on a coded failure", 4, func(c *cheatKit) []*protocol.BatchResult {
			r0, r2, r3 := c.ok(0), c.ok(2), c.ok(3)
			return []*protocol.BatchResult{r0, withSeal(failure(1), c.seal(r0)), r2, withSeal(r3, c.seal(r2, r3))}
		}, []int{0, 2, 3}},
		{"a seal on the failure that ends the batch", 2, func(c *cheatKit) []*protocol.BatchResult {
			r0 := c.ok(0)
			return []*protocol.BatchResult{r0, withSeal(failure(1), c.seal(r0))}
		}, []int{0}},
		{"a failure told before the pending result it follows", 3, func(c *cheatKit) []*protocol.BatchResult {
			r0, r2 := c.ok(0), c.ok(2)
			return []*protocol.BatchResult{r0, failure(1), withSeal(r2, c.seal(r0, r2))}
		}, []int{0, 2}},
		{"a seal with nothing pending", 3, func(c *cheatKit) []*protocol.BatchResult {
			r1, r2 := c.ok(1), c.ok(2)
			return []*protocol.BatchResult{withSeal(failure(0), c.seal(r1)), r1, withSeal(r2, c.seal(r1, r2))}
		}, []int{1, 2}},
		{"leaves reversed", 3, func(c *cheatKit) []*protocol.BatchResult {
			r := []*protocol.BatchResult{c.ok(0), c.ok(1), c.ok(2)}
			withSeal(r[2], c.seal(r[2], r[1], r[0]))
			return r
		}, []int{1}}, // job 1's leaf is still at its place
		{"a leaf more", 2, func(c *cheatKit) []*protocol.BatchResult {
			r := []*protocol.BatchResult{c.ok(0), c.ok(1)}
			withSeal(r[1], c.seal(r[0], r[1], c.result(1, []byte("other"))))
			return r
		}, nil},
		{"a leaf short", 3, func(c *cheatKit) []*protocol.BatchResult {
			r := []*protocol.BatchResult{c.ok(0), c.ok(1), c.ok(2)}
			withSeal(r[2], c.seal(r[1], r[2]))
			return r
		}, nil},
		{"a seal sent again", 3, func(c *cheatKit) []*protocol.BatchResult {
			r0, r1, r2 := c.ok(0), c.ok(1), c.ok(2)
			s0 := c.seal(r0)
			return []*protocol.BatchResult{withSeal(r0, s0), withSeal(r1, s0), withSeal(r2, c.seal(r2))}
		}, []int{0, 2}},
		{"another job's payload, sealed", 2, func(c *cheatKit) []*protocol.BatchResult {
			r0 := c.ok(0)
			r1 := &protocol.BatchResult{Index: 1, Output: r0.Output, Receipt: r0.Receipt}
			return []*protocol.BatchResult{r0, withSeal(r1, c.seal(r0, r1))}
		}, []int{0}},
		{"a seal in the worker's name, signed by another key", 2, func(c *cheatKit) []*protocol.BatchResult {
			r := []*protocol.BatchResult{c.ok(0), c.ok(1)}
			s := &protocol.ReceiptSeal{Worker: c.id}
			for _, x := range r {
				s.Leaves = append(s.Leaves, sha256.Sum256(x.Receipt))
			}
			env, err := record.Seal(s, otherKey)
			if err != nil {
				c.t.Error(err)
			}
			b, _ := env.Marshal()
			withSeal(r[1], b)
			return r
		}, nil},
		{"a seal of another worker, payloads in its name", 2, func(c *cheatKit) []*protocol.BatchResult {
			other := &cheatKit{t: c.t, key: otherKey, req: c.req}
			other.id, _ = peer.IDFromPrivateKey(otherKey)
			r := []*protocol.BatchResult{other.ok(0), other.ok(1)}
			withSeal(r[1], other.seal(r...))
			return r
		}, nil},
		{"a seal frame while the next job runs", 3, func(c *cheatKit) []*protocol.BatchResult {
			r0, r1, r2 := c.ok(0), c.ok(1), c.ok(2)
			return []*protocol.BatchResult{r0, r1, sealFrame(2, c.seal(r0, r1)), withSeal(r2, c.seal(r2))}
		}, []int{0, 1, 2}},
		{"a seal frame with nothing pending", 2, func(c *cheatKit) []*protocol.BatchResult {
			r0, r1 := c.ok(0), c.ok(1)
			return []*protocol.BatchResult{withSeal(r0, c.seal(r0)), sealFrame(1, c.seal(r1)), withSeal(r1, c.seal(r1))}
		}, []int{0}},
		{"two seal frames in a row", 3, func(c *cheatKit) []*protocol.BatchResult {
			r0, r1, r2 := c.ok(0), c.ok(1), c.ok(2)
			return []*protocol.BatchResult{r0, sealFrame(1, c.seal(r0)), sealFrame(1, c.seal(r0)), withSeal(r1, c.seal(r1)), withSeal(r2, c.seal(r2))}
		}, []int{0}},
		{"a seal frame at another index", 2, func(c *cheatKit) []*protocol.BatchResult {
			r0, r1 := c.ok(0), c.ok(1)
			return []*protocol.BatchResult{r0, sealFrame(0, c.seal(r0)), withSeal(r1, c.seal(r1))}
		}, nil},
		{"a seal frame carrying an output", 2, func(c *cheatKit) []*protocol.BatchResult {
			r0, r1 := c.ok(0), c.ok(1)
			f := sealFrame(1, c.seal(r0))
			f.Output = []byte("X")
			return []*protocol.BatchResult{r0, f, withSeal(r1, c.seal(r1))}
		}, nil},
		{"no seal at all", 2, func(c *cheatKit) []*protocol.BatchResult {
			return []*protocol.BatchResult{c.ok(0), c.ok(1)}
		}, nil},
		{"sixteen unsealed, the sixteenth sealing them", protocol.MaxUnsealed, func(c *cheatKit) []*protocol.BatchResult {
			var r []*protocol.BatchResult
			for i := range protocol.MaxUnsealed {
				r = append(r, c.ok(i))
			}
			withSeal(r[len(r)-1], c.seal(r...))
			return r
		}, seq(protocol.MaxUnsealed)},
		{"seventeen unsealed, the seventeenth sealing them", protocol.MaxUnsealed + 3, func(c *cheatKit) []*protocol.BatchResult {
			var r []*protocol.BatchResult
			for i := range protocol.MaxUnsealed + 1 {
				r = append(r, c.ok(i))
			}
			withSeal(r[len(r)-1], c.seal(r...))
			for i := protocol.MaxUnsealed + 1; i < protocol.MaxUnsealed+3; i++ {
				x := c.ok(i)
				r = append(r, withSeal(x, c.seal(x)))
			}
			return r
		}, nil},
		{"two outputs of MaxBatchOutput unsealed", 2, func(c *cheatKit) []*protocol.BatchResult {
			r := []*protocol.BatchResult{c.result(0, big), c.result(1, big)}
			withSeal(r[1], c.seal(r...))
			return r
		}, []int{0, 1}},
		{"three outputs of MaxBatchOutput unsealed", 3, func(c *cheatKit) []*protocol.BatchResult {
			r := []*protocol.BatchResult{c.result(0, big), c.result(1, big), c.result(2, big)}
			withSeal(r[2], c.seal(r...))
			return r
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serveCheat(t, cheat, false, tt.script)
			as := cheatBatch(t, g, inputsOf(tt.n))
			for k, a := range as {
				want := slices.Contains(tt.valid, k)
				if a.ReceiptValid != want || (a.Err == nil) != want {
					t.Errorf("job %d: receipt valid %v (err %v), want %v", k, a.ReceiptValid, a.Err, want)
				}
				if !want {
					continue
				}
				_, signer, err := protocol.OpenReceipt(a.Receipt)
				if err != nil || signer != cheat.ID() {
					t.Errorf("job %d: its receipt on its own: %v, signer %s", k, err, signer)
				}
			}
		})
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// TestSealAttackOversizedReceipt: a hostile worker pads its receipt payloads (unknown
// protobuf fields, which Receipt.UnmarshalRecord skips) to just under MaxEnvelope, which
// BatchResult.Check allows for an unsigned payload; with its seal the batch receipt is
// over MaxEnvelope, which OpenReceipt refuses. Before the fix runBatch's unseal counted it
// as a valid receipt (and credit named it) although it did not open on its own; unseal now
// refuses a batch receipt longer than MaxEnvelope, as OpenReceipt does.
func TestSealAttackOversizedReceipt(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper})
	cheat := g.hosts[0]
	serveCheat(t, cheat, false, func(c *cheatKit) []*protocol.BatchResult {
		r := c.ok(0)
		pad := protocol.MaxEnvelope - len(r.Receipt) - 8
		r.Receipt = protowire.AppendBytes(protowire.AppendTag(r.Receipt, 99, protowire.BytesType), bytes.Repeat([]byte{0}, pad))
		return []*protocol.BatchResult{withSeal(r, c.seal(r))}
	})
	a := cheatBatch(t, g, inputsOf(1))[0]
	_, _, err := protocol.OpenReceipt(a.Receipt)
	if a.ReceiptValid && err != nil {
		t.Errorf("a receipt of %d bytes counted as valid, but it does not open on its own: %v", len(a.Receipt), err)
	}
}

// TestSealAttackStallBeforeSeal: a worker that sends every result of its batch at once but
// the last, so never the seal, and sits on the stream, does not hold the jobs: the spare timer settles
// each with the other replicas' votes (2×first answer + spareSlack), and the stalled
// results never count.
func TestSealAttackStallBeforeSeal(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	cheat := g.hosts[0]
	serveCheat(t, cheat, true, func(c *cheatKit) []*protocol.BatchResult {
		var r []*protocol.BatchResult
		for i := range min(len(c.req.Items), protocol.MaxUnsealed) - 1 { // the last result, which would seal them, never comes
			r = append(r, c.ok(i))
		}
		return r
	})
	g.placeFirst(cheat.ID())
	inputs := inputsOf(4)
	start := time.Now()
	reps, errs := batchRun(t, g, Request{Binary: testBinary, Replicas: 2}, inputs)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the batch took %v with a worker sitting on its seal", d)
	}
	for i, rep := range reps {
		if errs[i] != nil || !bytes.Equal(rep.Output, bytes.ToUpper(inputs[i])) {
			t.Fatalf("job %d: %v, output %q", i, errs[i], rep.Output)
		}
		for _, r := range rep.Replicas {
			if r.Worker == cheat.ID() && r.ReceiptValid {
				t.Errorf("job %d: the unsealed replica counted: %+v", i, r)
			}
		}
	}
}

// TestSealAttackQuickHeldBehindSlow: job 0 takes a millisecond and job 1 blocks. Before
// the fix a seal was only made when a job ended, so an honest worker held job 0's verdict
// for as long as job 1 ran (up to its wall limit, 30 min by default), and with every
// replica alike no spare timer helped. Now the worker seals what it holds from a timer
// sealWait after the first result, in a frame of the seal alone, while job 1 runs.
func TestSealAttackQuickHeldBehindSlow(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	runner := RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		var in bytes.Buffer
		in.ReadFrom(job.Stdin)
		if in.String() == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
				return sandbox.Result{}, ctx.Err()
			}
		}
		return upper.Run(ctx, sandbox.Job{Binary: job.Binary, Stdin: bytes.NewReader(in.Bytes())}, lim)
	})
	g := newGrid(t, WorkerConfig{Runner: runner})
	reported := make(chan int, 2)
	all := make(chan error, 1)
	go func() {
		all <- g.sub.SubmitBatch(context.Background(), Request{Binary: testBinary, Replicas: 1}, [][]byte{[]byte("quick"), []byte("slow")},
			func(i int, rep *Report, err error) {
				if err != nil {
					t.Errorf("job %d: %v", i, err)
				}
				reported <- i
			})
	}()
	select {
	case i := <-reported:
		if i != 0 {
			t.Errorf("job %d reported first, want the quick job 0", i)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the quick job 0 is not reported 5 s after it ran: its verdict waits for the seal that job 1's end makes")
	}
	unblock()
	if err := <-all; err != nil {
		t.Fatal(err)
	}
}

// TestSealAttackEventsMatchReceipts: the receipt a worker records for each job of a batch
// (its history, its credit keeper) is byte for byte the one the submitter reports, so the
// credit the submitter names by its hash is kept.
func TestSealAttackEventsMatchReceipts(t *testing.T) {
	var mu sync.Mutex
	events := map[peer.ID]map[string][][]byte{} // by worker, input CID: receipts
	ev := func(id *peer.ID) Events {
		return Events{Job: func(e JobEvent) {
			mu.Lock()
			defer mu.Unlock()
			if events[*id] == nil {
				events[*id] = map[string][][]byte{}
			}
			events[*id][e.InputCID.String()] = append(events[*id][e.InputCID.String()], e.Receipt)
		}}
	}
	var ids [2]peer.ID
	g := newGrid(t, WorkerConfig{Runner: upper, Slots: 2, Events: ev(&ids[0])}, WorkerConfig{Runner: upper, Slots: 2, Events: ev(&ids[1])})
	ids[0], ids[1] = g.hosts[0].ID(), g.hosts[1].ID()
	inputs := inputsOf(40)
	reps, errs := batchRun(t, g, Request{Binary: testBinary, Replicas: 2}, inputs)
	for i, rep := range reps {
		if errs[i] != nil {
			t.Fatalf("job %d: %v", i, errs[i])
		}
		for _, r := range rep.Replicas {
			if !r.ReceiptValid {
				continue
			}
			var got [][]byte
			waitFor(t, "the worker's job event", func() bool {
				mu.Lock()
				defer mu.Unlock()
				got = events[r.Worker][rep.InputCID.String()]
				return slices.ContainsFunc(got, func(b []byte) bool { return len(b) > 0 })
			})
			if !slices.ContainsFunc(got, func(b []byte) bool { return bytes.Equal(b, r.Receipt) }) {
				t.Fatalf("job %d: %s recorded receipts %x..., the submitter reports another", i, r.Worker, protocol.ReceiptHash(got[0])[:8])
			}
		}
	}
}

// TestSealAttackSubmitterGoneBeforeSeal: a submitter that takes a batch's first result
// (unsealed) and resets the stream before its seal leaves the worker's job event for it
// without a receipt: no history entry or credit for a result never signed.
func TestSealAttackSubmitterGoneBeforeSeal(t *testing.T) {
	// The worker's seal timer would sign result 0 while job 1 runs, racing the reset.
	wait := sealWait
	sealWait = time.Hour
	t.Cleanup(func() { sealWait = wait })
	var mu sync.Mutex
	got := map[string][]JobEvent{}
	runner := RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		var in bytes.Buffer
		in.ReadFrom(job.Stdin)
		if in.String() == "block" {
			<-ctx.Done()
			return sandbox.Result{}, ctx.Err()
		}
		return upper.Run(ctx, sandbox.Job{Binary: job.Binary, Stdin: bytes.NewReader(in.Bytes())}, lim)
	})
	g := newGrid(t, WorkerConfig{Runner: runner, Events: Events{Job: func(e JobEvent) {
		mu.Lock()
		defer mu.Unlock()
		got[e.InputCID.String()] = append(got[e.InputCID.String()], e)
	}}})
	h := newHost(t)
	st := newStore(t)
	if _, err := st.Put(context.Background(), testBinary); err != nil {
		t.Fatal(err)
	}
	serveStore(t, h, st)
	w := addrInfo(g.hosts[0])
	ctx := context.Background()
	if err := h.Connect(ctx, w); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctx, w.ID, protocol.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	protocol.SetDeadline(s, 10*time.Second)
	req := &protocol.BatchRequest{JobCid: cids.Sum(testBinary).Bytes(), BinarySize: uint64(len(testBinary)), Arch: g.workers[0].Arch(),
		Limits: &protocol.Limits{Output: protocol.MaxBatchOutput},
		Items: []*protocol.BatchItem{{Input: []byte("a"), Nonce: bytes.Repeat([]byte{1}, 32)},
			{Input: []byte("block"), Nonce: bytes.Repeat([]byte{2}, 32)}}}
	var admit protocol.JobAdmit
	var res protocol.BatchResult
	err = protocol.WriteMsg(s, req)
	if err == nil {
		err = protocol.ReadMsg(s, &admit, protocol.MaxControlMsg)
	}
	if err == nil {
		err = admit.Err()
	}
	if err == nil {
		err = protocol.ReadMsg(s, &res, protocol.MaxBatchResult)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Code != protocol.Code_OK || len(res.Receipt) == 0 || len(res.Seal) != 0 {
		t.Fatalf("result 0: code %v, receipt %d bytes, seal %d bytes; want an unsealed result", res.Code, len(res.Receipt), len(res.Seal))
	}
	s.Reset()
	a := cids.Sum([]byte("a")).String()
	waitFor(t, "the job events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got[a]) > 0 && len(got[cids.Sum([]byte("block")).String()]) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got[a]) != 1 || len(got[a][0].Receipt) != 0 || got[a][0].Err == nil {
		t.Fatalf("job events of the unsealed result: %+v, want one, with an error and no receipt", got[a])
	}
	if !errors.Is(got[a][0].Err, errUnsealed) && !errors.Is(got[a][0].Err, context.Canceled) {
		t.Errorf("its error: %v", got[a][0].Err)
	}
}
