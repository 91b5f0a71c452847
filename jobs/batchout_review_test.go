package jobs

import (
	"bytes"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
)

// frameStream is the worker's side of a batch stream: it keeps what is written.
type frameStream struct {
	network.Stream
	mu  sync.Mutex
	buf bytes.Buffer
	n   int // writes
}

func (s *frameStream) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return s.buf.Write(b)
}
func (s *frameStream) writes() int                      { s.mu.Lock(); defer s.mu.Unlock(); return s.n }
func (s *frameStream) SetDeadline(time.Time) error      { return nil }
func (s *frameStream) SetWriteDeadline(time.Time) error { return nil }
func (s *frameStream) Reset() error                     { return nil }

// TestReviewFlushSealsOnlySentResults: the timer's seal frame covers the results the
// submitter holds, those written before it. handleBatch used to hold a result (add) and
// write it (send) under two lock acquisitions, and a flush between them sealed a result
// not yet written: the submitter, holding one result, read a seal of two and failed both
// receipts. Now a result joins the held ones in the same locked send that writes it; here
// job 0 is written unsealed, the timer seals it while job 1 "runs", and job 1's result
// carries a seal of its own.
func TestReviewFlushSealsOnlySentResults(t *testing.T) {
	key, id := testKey(t)
	w := &Worker{key: key}
	res := func(i int) *protocol.BatchResult {
		out := []byte{byte('A' + i)}
		p, err := (&protocol.Receipt{JobCID: cids.Sum([]byte("bin")), InputCID: cids.Sum([]byte{byte(i)}), OutputCID: cids.Sum(out),
			StderrCID: cids.Sum(nil), Status: "exited", Worker: id, Nonce: bytes.Repeat([]byte{byte(i)}, 32)}).MarshalRecord()
		if err != nil {
			t.Fatal(err)
		}
		return &protocol.BatchResult{Output: out, Receipt: p}
	}
	{
		s := &frameStream{}
		o := &batchOut{w: w, s: s, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		o.send(res(0), &sealItem{}, false, 0) // job 0 ends quickly: written unsealed, the timer armed
		waitFor(t, "the timer's seal frame", func() bool { return s.writes() == 2 })
		o.send(res(1), &sealItem{}, true, 0)
		o.close(errUnsealed)

		var frames []*protocol.BatchResult
		for s.buf.Len() > 0 {
			f := new(protocol.BatchResult)
			if err := protocol.ReadMsg(&s.buf, f, protocol.MaxBatchResult); err != nil {
				t.Fatal(err)
			}
			frames = append(frames, f)
		}
		if len(frames) != 3 || len(frames[0].Seal) > 0 || !frames[1].SealOnly() || frames[1].Index != 1 || frames[2].Index != 1 {
			t.Fatalf("frames %d; want job 0's result unsealed, a seal frame at index 1, job 1's result", len(frames))
		}
		// What the submitter does: one unsealed result held, then the seal frame.
		held := 0
		for i, f := range frames {
			if f.SealOnly() || len(f.Seal) > 0 {
				seal, err := protocol.OpenSeal(f.Seal)
				if err != nil {
					t.Fatal(err)
				}
				if !f.SealOnly() {
					held++
				}
				if len(seal.Leaves) != held {
					t.Errorf("frame %d (index %d, seal only %v): a seal of %d receipts when the submitter holds %d results",
						i, f.Index, f.SealOnly(), len(seal.Leaves), held)
				}
				held = 0
				continue
			}
			held++
		}
		if held > 0 {
			t.Errorf("%d results written and never sealed", held)
		}
	}
}
