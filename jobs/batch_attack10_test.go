package jobs

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/gridnode/gridnode/cids"

	gp "github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// TestAttack10BatchStallHoldsChunk: a job sent alone to a worker that admits it and sits
// on it is settled by a spare replica about 2×(first answer)+5 s after the others answer
// (dispatch's spare timer). In a batch, runChunk waits for every picked worker's whole
// batch before it settles any job of the chunk, so one such worker holds each job of the
// chunk for FetchTimeout + Σ(wall + ReplyTimeout): over six minutes for the first job
// here, and hours for a full chunk under the default wall limit.
func TestAttack10BatchStallHoldsChunk(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	cheat := g.hosts[0]
	held := make(chan struct{})
	var once sync.Once
	cheat.SetStreamHandler(gp.BatchID, func(s network.Stream) {
		var req gp.BatchRequest
		if gp.ReadMsg(s, &req, gp.MaxBatchRequest) != nil {
			s.Reset()
			return
		}
		gp.WriteMsg(s, &gp.JobAdmit{})
		once.Do(func() { close(held) })
		var b [1]byte
		s.Read(b[:]) // until the submitter gives up
		s.Reset()
	})
	g.placeFirst(cheat.ID())
	inputs := inputsOf(4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	done := make([]bool, len(inputs))
	all := make(chan struct{})
	go func() {
		defer close(all)
		g.sub.SubmitBatch(ctx, Request{Binary: testBinary, Replicas: 2, Limits: sandbox.Limits{Wall: time.Second}}, inputs, func(i int, rep *Report, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil && !bytes.Equal(rep.Output, bytes.ToUpper(inputs[i])) {
				t.Errorf("job %d: output %q", i, rep.Output)
			}
			done[i] = true
		})
	}()
	recv(t, held, "the cheat to admit a batch")
	// The honest replicas answer in milliseconds; a job sent alone would have its spare
	// replica sent 5 s later and be settled soon after.
	const bound = 20 * time.Second
	select {
	case <-all:
	case <-time.After(bound):
		mu.Lock()
		n := 0
		for _, d := range done {
			if d {
				n++
			}
		}
		mu.Unlock()
		t.Errorf("%d of %d jobs settled %v after a worker sat on its batch (a job sent alone: about 5 s)", n, len(inputs), bound)
		cancel()
		<-all
	}
}

// TestAttack10BatchVanishAndRefuse: one worker answers two jobs of its batch (valid
// receipts) and then resets the stream as a SIGKILLed worker would; another refuses every
// batch BUSY; another answers a result for an index twice. Every job is still reported
// exactly once (batchRun checks), with the right output.
func TestAttack10BatchVanishAndRefuse(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper},
		WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	seal := func(s network.Stream, req *gp.BatchRequest, i int) *gp.BatchResult {
		h := g.hosts[0]
		for _, hh := range g.hosts {
			if hh.ID() == s.Conn().LocalPeer() {
				h = hh
			}
		}
		jobCID, _ := cidsCast(req.JobCid)
		in := req.Items[i].Input
		out := bytes.ToUpper(in)
		res := sealedResult(t, &gp.Receipt{JobCID: jobCID, InputCID: cidsSum(in), OutputCID: cidsSum(out),
			StderrCID: cidsSum(nil), Status: "exited", Worker: h.ID(), Nonce: req.Items[i].Nonce}, h.Peerstore().PrivKey(h.ID()))
		res.Index, res.Output = uint32(i), out
		return res
	}
	vanish, busy, twice := g.hosts[0], g.hosts[1], g.hosts[2]
	vanish.SetStreamHandler(gp.BatchID, func(s network.Stream) {
		var req gp.BatchRequest
		if gp.ReadMsg(s, &req, gp.MaxBatchRequest) != nil {
			s.Reset()
			return
		}
		gp.WriteMsg(s, &gp.JobAdmit{})
		for i := range min(2, len(req.Items)) {
			gp.WriteMsg(s, seal(s, &req, i))
		}
		s.Reset()
	})
	busy.SetStreamHandler(gp.BatchID, func(s network.Stream) {
		var req gp.BatchRequest
		gp.ReadMsg(s, &req, gp.MaxBatchRequest)
		gp.WriteMsg(s, &gp.JobAdmit{Code: gp.Code_BUSY, Message: "busy"})
		s.Close()
	})
	twice.SetStreamHandler(gp.BatchID, func(s network.Stream) {
		var req gp.BatchRequest
		if gp.ReadMsg(s, &req, gp.MaxBatchRequest) != nil {
			s.Reset()
			return
		}
		gp.WriteMsg(s, &gp.JobAdmit{})
		gp.WriteMsg(s, seal(s, &req, 0))
		gp.WriteMsg(s, seal(s, &req, 0)) // index 0 again
		s.Close()
	})
	g.placeFirst(vanish.ID(), busy.ID(), twice.ID())
	inputs := inputsOf(70) // two chunks
	reps, errs := batchRun(t, g, Request{Binary: testBinary, Replicas: 3}, inputs)
	for i, rep := range reps {
		if errs[i] != nil || !bytes.Equal(rep.Output, bytes.ToUpper(inputs[i])) {
			t.Fatalf("job %d: %v, output %q", i, errs[i], rep.Output)
		}
	}
}

func cidsSum(b []byte) cid.Cid { return cids.Sum(b) }

func cidsCast(b []byte) (cid.Cid, error) { return cids.Cast(b) }

// TestAttack10BatchHeadersSybils: batchPending (8) unjudged batch requests over all peers,
// and a ninth is reset, not the oldest (as enter does for job headers). Two identities
// (free) with maxPendingPerPeer (4) streams each, each stream a header that never comes,
// keep every other submitter's batch from being read, for HeaderTimeout at a time and
// again as often as they like.
func TestAttack10BatchHeadersSybils(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper})
	w := addrInfo(g.hosts[0])
	ctx := context.Background()
	for range 2 {
		h := newHost(t)
		if err := h.Connect(ctx, w); err != nil {
			t.Fatal(err)
		}
		for range maxPendingPerPeer {
			s, err := h.NewStream(ctx, w.ID, gp.BatchID)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
			s.Write([]byte{0x80, 0x80, 0x40}) // a 1 MiB message, of which nothing more comes
		}
	}
	waitFor(t, "the sybils' batch headers to be pending", func() bool {
		return g.workers[0].batchHeaders.size() == batchPending
	})
	honest := newHost(t)
	if err := honest.Connect(ctx, w); err != nil {
		t.Fatal(err)
	}
	s, err := honest.NewStream(ctx, w.ID, gp.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	gp.SetDeadline(s, 10*time.Second)
	req := &gp.BatchRequest{JobCid: cids.Sum(testBinary).Bytes(), BinarySize: uint64(len(testBinary)), Arch: g.workers[0].Arch(),
		Items: []*gp.BatchItem{{Input: []byte("a"), Nonce: bytes.Repeat([]byte{1}, 32)}}}
	var admit gp.JobAdmit
	err = gp.WriteMsg(s, req)
	if err == nil {
		err = gp.ReadMsg(s, &admit, gp.MaxControlMsg)
	}
	if err == nil {
		err = admit.Err()
	}
	if err != nil {
		t.Fatalf("an honest batch, with two strangers' %d stalled headers pending: %v", batchPending, err)
	}
}

// TestAttack10BatchReleased: the node's memory policy (node/memory.go) returns freed heap to
// the OS when a job or a submit tells Events.Released it held at least 4 MiB. A job does,
// from its handler and from Submit; a batch (a 1 MiB request, a binary of up to MaxBinary,
// up to 256 outputs of 1 MiB on the worker; 64 outputs per worker per chunk on the
// submitter) tells it nothing on either side, so the daemons keep that RSS.
func TestAttack10BatchReleased(t *testing.T) {
	var mu sync.Mutex
	worker, submitter := 0, 0
	ev := Events{Released: func(int64) { mu.Lock(); worker++; mu.Unlock() }}
	g := newGrid(t, WorkerConfig{Runner: upper, Events: ev}, WorkerConfig{Runner: upper, Events: ev})
	g.sub.cfg.Events.Released = func(int64) { mu.Lock(); submitter++; mu.Unlock() }
	_, errs := batchRun(t, g, Request{Binary: testBinary, Replicas: 2}, inputsOf(8))
	for i, err := range errs {
		if err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		w, s := worker, submitter
		mu.Unlock()
		if w > 0 && s > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a batch of 8 jobs on 2 workers: Released told %d times by the workers, %d by the submitter", w, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
