package jobs

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestHoldAttackConcurrentSubmitsOneBinary: two submits of one binary, each from its own
// buffer, overlap in the submitter's store (Store.Hold of one CID nests). The first one
// returns and its caller reuses its buffer, as Request allows ("do not change them until
// Submit returns"); the second submit's workers must still be served its binary.
//
// The overlap is made deterministic: the first submit is its Hold (all prepare does before
// sending), and it ends (release, then the buffer reused) in the second submitter's
// FindWorkers, after the second submit's own Hold and before any worker fetches.
func TestHoldAttackConcurrentSubmitsOneBinary(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper})
	st := g.sub.cfg.Store
	c := cids.Sum(testBinary)
	first := bytes.Clone(testBinary)
	releaseFirst := st.Hold(c, first) // submit 1 under way
	var once sync.Once
	sub2, err := NewSubmitter(SubmitterConfig{
		Host:  g.subHost,
		Store: st,
		FindWorkers: func(ctx context.Context, arch string) ([]peer.AddrInfo, error) {
			once.Do(func() {
				releaseFirst() // submit 1 returns
				for i := range first {
					first[i] ^= 0xff // and its caller reuses its buffer
				}
			})
			return []peer.AddrInfo{addrInfo(g.hosts[0])}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	sub2.Trust(g.hosts[0].ID())
	second := bytes.Clone(testBinary)
	rep, err := sub2.Submit(context.Background(), Request{Binary: second, Input: []byte("abc"), Replicas: 1})
	if err != nil {
		t.Fatalf("second submit, its binary intact: %v", err)
	}
	if !bytes.Equal(rep.Output, []byte("ABC")) {
		t.Fatalf("second submit: output %q", rep.Output)
	}
}

// TestHoldAttackNoHoldsLeft: Submit (input by CID) and SubmitBatch leave nothing held nor
// written in the submitter's store, failed or not.
func TestHoldAttackNoHoldsLeft(t *testing.T) {
	hash := transform(func(b []byte) []byte { return cids.Sum(b).Bytes() }) // output small
	g := newGrid(t, WorkerConfig{Runner: hash, MaxInput: 32 << 20, Slots: 2}, WorkerConfig{Runner: hash, MaxInput: 32 << 20, Slots: 2})
	st := g.sub.cfg.Store
	in := bytes.Repeat([]byte("a"), protocol.MaxInline+1)
	rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: in, Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	if st.Has(rep.JobCID) || st.Has(rep.InputCID) {
		t.Fatal("Submit: a hold outlived the submit")
	}
	inputs := inputsOf(20)
	_, errs := batchRun(t, g, Request{Binary: testBinary, Replicas: 2}, inputs)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("batch job %d: %v", i, err)
		}
	}
	if st.Has(cids.Sum(testBinary)) {
		t.Fatal("SubmitBatch: the binary is still held")
	}
	for _, b := range inputs {
		if st.Has(cids.Sum(b)) {
			t.Fatal("SubmitBatch: an input is held")
		}
	}
	// A submit that fails after prepare (no workers) releases too.
	bad, err := NewSubmitter(SubmitterConfig{Host: g.subHost, Store: st,
		FindWorkers: func(context.Context, string) ([]peer.AddrInfo, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Submit(context.Background(), Request{Binary: testBinary, Input: in, Replicas: 1}); err == nil {
		t.Fatal("a submit with no workers succeeded")
	}
	if st.Has(cids.Sum(testBinary)) || st.Has(cids.Sum(in)) {
		t.Fatal("failed Submit: a hold outlived it")
	}
	if names := dirNames(t, g.subDir); len(names) != 0 {
		t.Fatalf("the submitter wrote %q to its store", names)
	}
}
