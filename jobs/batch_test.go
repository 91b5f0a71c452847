package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
)

// batchRun submits inputs as one batch and returns each job's report and error.
func batchRun(t *testing.T, g *grid, req Request, inputs [][]byte) ([]*Report, []error) {
	t.Helper()
	reps, errs := make([]*Report, len(inputs)), make([]error, len(inputs))
	var mu sync.Mutex
	seen := make([]int, len(inputs))
	err := g.sub.SubmitBatch(context.Background(), req, inputs, func(i int, rep *Report, err error) {
		mu.Lock()
		defer mu.Unlock()
		reps[i], errs[i] = rep, err
		seen[i]++
	})
	if err != nil {
		t.Fatalf("SubmitBatch: %v; progress %q", err, g.progress)
	}
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("job %d was reported %d times, want once", i, n)
		}
	}
	return reps, errs
}

func inputsOf(n int) [][]byte {
	in := make([][]byte, n)
	for i := range in {
		in[i] = fmt.Appendf(nil, "job %d", i)
	}
	return in
}

// TestSubmitBatch: every job of a batch is verified on its own, with its own output and
// receipts from two workers, on batch streams only.
func TestSubmitBatch(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper, Slots: 2}, WorkerConfig{Runner: upper, Slots: 2}, WorkerConfig{Runner: upper, Slots: 2})
	inputs := inputsOf(150) // three chunks
	reps, errs := batchRun(t, g, Request{Binary: testBinary, Replicas: 2}, inputs)
	receipts, seals := 0, map[string]bool{}
	for i, rep := range reps {
		if errs[i] != nil {
			t.Fatalf("job %d: %v", i, errs[i])
		}
		if want := bytes.ToUpper(inputs[i]); !bytes.Equal(rep.Output, want) || !rep.InputCID.Equals(cids.Sum(inputs[i])) {
			t.Fatalf("job %d: got output %q input %s, want %q %s", i, rep.Output, rep.InputCID, want, cids.Sum(inputs[i]))
		}
		// Two replicas of distinct workers counted; a worker whose queue a chunk found full
		// may have refused it BUSY, and the job was then sent alone.
		var counted []Replica
		for _, r := range rep.Replicas {
			if !errors.Is(r.Err, protocol.ErrBusy) {
				counted = append(counted, r)
			}
		}
		if len(counted) != 2 || counted[0].Worker == counted[1].Worker {
			t.Fatalf("job %d: replicas %+v, want two of distinct workers", i, rep.Replicas)
		}
		for _, r := range counted {
			rc, signer, err := protocol.OpenReceipt(r.Receipt)
			if err != nil || !r.ReceiptValid || signer != r.Worker || !rc.InputCID.Equals(rep.InputCID) || !rc.OutputCID.Equals(rep.OutputCID) {
				t.Fatalf("job %d: receipt of %s: %+v, %v", i, r.Worker, rc, err)
			}
			receipts++
			if seal, ok := sealOf(r.Receipt); ok {
				seals[string(seal)] = true
			}
		}
	}
	// The batch's receipts are signed a seal at a time: a seal ends every chunk and every
	// 16 results (or 20 ms), so well under one a receipt, whatever the machine's speed.
	if len(seals) == 0 || len(seals) > receipts/2 {
		t.Errorf("%d seals for %d receipts, want at least two receipts a seal", len(seals), receipts)
	}
	if n := g.opened(protocol.JobID); n > len(inputs)/10 {
		t.Errorf("%d job streams, want (nearly) none: the jobs ride batches", n)
	}
	// Chunks of 4, 8, 16, 32, 64 and the 26 left, on 2 workers each (and a few retries).
	if n := g.opened(protocol.BatchID); n < 12 || n > 20 {
		t.Errorf("%d batch streams, want 6 chunks × 2 replicas", n)
	}
}

// TestSubmitBatchLiar: a liar's batch votes disagree with each job's quorum; every job is
// settled by a replica sent alone, and the liar is recorded once per job.
func TestSubmitBatchLiar(t *testing.T) {
	// Slots enough for the batch's two chunks on the liar, so that it votes on every job.
	g := newGrid(t, WorkerConfig{Runner: liar, Slots: 4}, WorkerConfig{Runner: upper, Slots: 4}, WorkerConfig{Runner: upper, Slots: 4})
	liarID := g.hosts[0].ID()
	g.placeFirst(liarID)
	inputs := inputsOf(10)
	reps, errs := batchRun(t, g, Request{Binary: testBinary, Replicas: 2, Quorum: 2, MaxReplicas: 3}, inputs)
	for i, rep := range reps {
		if errs[i] != nil {
			t.Fatalf("job %d: %v", i, errs[i])
		}
		if want := bytes.ToUpper(inputs[i]); !bytes.Equal(rep.Output, want) {
			t.Fatalf("job %d: got output %q, want %q", i, rep.Output, want)
		}
		lied, agreed := 0, 0
		for _, r := range rep.Replicas {
			switch {
			case r.Worker == liarID:
				lied++
				if !errors.Is(r.Err, ErrDisagrees) {
					t.Fatalf("job %d: the liar's replica %+v, want ErrDisagrees", i, r)
				}
			case r.Err == nil:
				agreed++
			case !errors.Is(r.Err, protocol.ErrBusy): // the honest pair's slots are contended
				t.Fatalf("job %d: replica %+v", i, r)
			}
		}
		if lied != 1 || agreed != 2 {
			t.Fatalf("job %d: replicas %+v, want the liar's and two honest", i, rep.Replicas)
		}
	}
	if got := g.sub.Records().Get(liarID).Disagreed; got != len(inputs) {
		t.Fatalf("liar: got %d disagreements, want %d", got, len(inputs))
	}
	if n := g.opened(protocol.JobID); n < len(inputs) {
		t.Fatalf("%d job streams, want one per job (and the refusals of busy workers) to replace the liar's vote", n)
	}
}

// TestSubmitBatchWithoutProtocol: a worker that does not serve batches gets the jobs one
// by one.
func TestSubmitBatchWithoutProtocol(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	for _, h := range g.hosts {
		h.RemoveStreamHandler(protocol.BatchID)
	}
	inputs := inputsOf(5)
	reps, errs := batchRun(t, g, Request{Binary: testBinary, Replicas: 2}, inputs)
	for i, rep := range reps {
		if errs[i] != nil || !bytes.Equal(rep.Output, bytes.ToUpper(inputs[i])) {
			t.Fatalf("job %d: %v, %+v", i, errs[i], rep)
		}
	}
	if n := g.opened(protocol.JobID); n < 2*len(inputs) {
		t.Fatalf("%d job streams, want %d (and the refusals of busy workers)", n, 2*len(inputs))
	}
}

// TestSubmitBatchSwappedReceipts: a worker that answers each job of a batch with a valid
// receipt of another job of it (its own signature, another input) is caught by each
// job's receipt check; the jobs are verified by others.
func TestSubmitBatchSwappedReceipts(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	cheat := g.hosts[0]
	key := cheat.Peerstore().PrivKey(cheat.ID())
	cheat.SetStreamHandler(protocol.BatchID, func(s network.Stream) {
		defer s.Close()
		var req protocol.BatchRequest
		if protocol.ReadMsg(s, &req, protocol.MaxBatchRequest) != nil {
			s.Reset()
			return
		}
		protocol.WriteMsg(s, &protocol.JobAdmit{})
		jobCID, _ := cids.Cast(req.JobCid)
		for i := range req.Items {
			other := req.Items[(i+1)%len(req.Items)].Input // the next job's
			out := bytes.ToUpper(other)
			res := sealedResult(t, &protocol.Receipt{JobCID: jobCID, InputCID: cids.Sum(other), OutputCID: cids.Sum(out),
				StderrCID: cids.Sum(nil), Status: "exited", Worker: cheat.ID(), Nonce: req.Items[i].Nonce}, key)
			res.Index, res.Output = uint32(i), out
			protocol.WriteMsg(s, res)
		}
	})
	g.placeFirst(cheat.ID())
	inputs := inputsOf(4)
	reps, errs := batchRun(t, g, Request{Binary: testBinary, Replicas: 2}, inputs)
	for i, rep := range reps {
		if errs[i] != nil || !bytes.Equal(rep.Output, bytes.ToUpper(inputs[i])) {
			t.Fatalf("job %d: %v, output %q", i, errs[i], rep.Output)
		}
		for _, r := range rep.Replicas {
			if r.Worker == cheat.ID() && (!errors.Is(r.Err, ErrBadReceipt) || r.ReceiptValid) {
				t.Fatalf("job %d: the cheat's replica %+v, want ErrBadReceipt", i, r)
			}
		}
	}
}

// TestWorkerBatchRefusals: requests a worker must refuse before running anything.
func TestWorkerBatchRefusals(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper})
	h := newHost(t)
	w := addrInfo(g.hosts[0])
	if err := h.Connect(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	item := func(in string) *protocol.BatchItem {
		return &protocol.BatchItem{Input: []byte(in), Nonce: bytes.Repeat([]byte{1}, 32)}
	}
	base := func() *protocol.BatchRequest {
		return &protocol.BatchRequest{JobCid: cids.Sum(testBinary).Bytes(), BinarySize: uint64(len(testBinary)), Arch: g.workers[0].Arch(), Items: []*protocol.BatchItem{item("a")}}
	}
	many := base()
	for range protocol.MaxBatchItems {
		many.Items = append(many.Items, item("b"))
	}
	bigOut := base()
	bigOut.Limits = &protocol.Limits{Output: protocol.MaxBatchOutput + 1}
	none := base()
	none.Items = nil
	badNonce := base()
	badNonce.Items[0].Nonce = []byte{1}
	for _, tc := range []struct {
		name string
		req  *protocol.BatchRequest
		want error
	}{
		{"too many jobs", many, protocol.ErrTooLarge},
		{"output limit above a batch's", bigOut, protocol.ErrLimits},
		{"no jobs", none, protocol.ErrBadRequest},
		{"short nonce", badNonce, protocol.ErrBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := h.NewStream(context.Background(), w.ID, protocol.BatchID)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
			protocol.SetDeadline(s, 10*time.Second)
			if err := protocol.WriteMsg(s, tc.req); err != nil {
				t.Fatal(err)
			}
			var admit protocol.JobAdmit
			if err := protocol.ReadMsg(s, &admit, protocol.MaxControlMsg); err != nil {
				t.Fatal(err)
			}
			if err := admit.Err(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if g.workers[0].Running() != 0 {
		t.Fatal("a refused batch holds a slot")
	}
}

// TestWorkerSlotQueue: a job that finds every slot busy waits for one instead of being
// refused at once; the queue holds at most Slots jobs, and a peer waits for at most its
// share.
func TestWorkerSlotQueue(t *testing.T) {
	b := newBlocker()
	g := newGrid(t, WorkerConfig{Runner: b, Slots: 1})
	w := g.workers[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, c, d := peer.ID("a"), peer.ID("c"), peer.ID("d")
	if err := w.take(ctx, a); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	start := time.Now()
	go func() { got <- w.take(ctx, c) }()
	waitFor(t, "c to queue", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.nqueued == 1
	})
	// The queue is full: d is refused at once.
	if err := w.take(ctx, d); !errors.Is(err, protocol.ErrBusy) {
		t.Fatalf("d: got %v, want BUSY", err)
	}
	w.give(a)
	if err := recv(t, got, "c to get the freed slot"); err != nil {
		t.Fatalf("c: got %v after %v, want the slot", err, time.Since(start))
	}
	if w.Running() != 1 {
		t.Fatalf("running %d, want 1", w.Running())
	}
	// Nobody frees the slot: the wait ends BUSY after slotQueueWait.
	start = time.Now()
	err := w.take(ctx, d)
	if !errors.Is(err, protocol.ErrBusy) || time.Since(start) < slotQueueWait {
		t.Fatalf("d: got %v after %v, want BUSY after %v", err, time.Since(start), slotQueueWait)
	}
	w.give(c)
}

func TestChunkSizer(t *testing.T) {
	var c chunkSizer
	steps := []struct {
		n    int
		took time.Duration
		want int // the size after
	}{
		{4, 4 * time.Millisecond, 8},
		{8, 8 * time.Millisecond, 16},
		{16, 16 * time.Millisecond, 32},
		{32, 32 * time.Millisecond, 64},
		{64, 64 * time.Millisecond, 64}, // at most batchChunk
		{64, 64 * 50 * time.Millisecond, 64},
		{64, 64 * time.Second, 32}, // slow jobs: smaller chunks
		{32, 32 * time.Second, 16},
		{1, time.Hour, 8},
	}
	if got := c.size(); got != chunkFirst {
		t.Fatalf("first: got %d, want %d", got, chunkFirst)
	}
	for i, s := range steps {
		c.ran(s.n, s.took)
		if got := c.size(); got != s.want {
			t.Fatalf("step %d: got %d, want %d", i, got, s.want)
		}
	}
	for range 10 {
		c.ran(1, time.Hour)
	}
	if got := c.size(); got != 1 {
		t.Fatalf("after slow jobs: got %d, want 1", got)
	}
}

// sealedResult is a batch result whose receipt is r, sealed alone with key. It may be
// called from a stream handler.
func sealedResult(t testing.TB, r *protocol.Receipt, key crypto.PrivKey) *protocol.BatchResult {
	payload, err := r.MarshalRecord()
	if err != nil {
		t.Error(err)
	}
	seal, _, err := protocol.SealReceipts([][]byte{payload}, key)
	if err != nil {
		t.Error(err)
	}
	return &protocol.BatchResult{Receipt: payload, Seal: seal}
}

// sealOf returns the seal of a batch receipt (protocol.BatchReceipt: field 15 the seal),
// or false for a receipt signed alone.
func sealOf(receipt []byte) ([]byte, bool) {
	num, typ, n := protowire.ConsumeTag(receipt)
	if n < 0 || num != 15 || typ != protowire.BytesType {
		return nil, false
	}
	seal, m := protowire.ConsumeBytes(receipt[n:])
	return seal, m > 0
}
