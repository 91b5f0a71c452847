package jobs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// TestSubmitRawOutput has a worker answer with raw output (job/3.0.0) that is honest, above
// the job's output limit, cut short, or other than its receipt names: the submitter takes
// the first, refuses the second from its header before reading or allocating anything,
// and fails the others.
func TestSubmitRawOutput(t *testing.T) {
	out := []byte("the job's output")
	tests := []struct {
		name    string
		size    uint64 // output_size in the result
		sent    []byte // the raw bytes that follow it
		signed  []byte // the output the receipt names
		wantErr error  // of the replica
	}{
		{"honest", uint64(len(out)), out, out, nil},
		{"above the limit", 1 << 40, nil, out, protocol.ErrTooLarge},
		{"cut short", uint64(len(out)), out[:5], out, io.ErrUnexpectedEOF},
		{"not the receipt's", uint64(len(out)), bytes.ToUpper(out), out, ErrBadReceipt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := fakeWorker(t, nil, cids.Sum(nil))
			key := w.Peerstore().PrivKey(w.ID())
			w.SetStreamHandler(protocol.JobID, func(s network.Stream) {
				defer s.Close()
				var req protocol.JobRequest
				if protocol.ReadMsg(s, &req, protocol.MaxJobRequest) != nil || protocol.WriteMsg(s, &protocol.JobAdmit{}) != nil {
					s.Reset()
					return
				}
				jobCID, _ := cids.Cast(req.JobCid)
				inputCID, _ := cids.Cast(req.InputCid)
				receipt, err := protocol.SealReceipt(&protocol.Receipt{JobCID: jobCID, InputCID: inputCID, OutputCID: cids.Sum(tt.signed), StderrCID: cids.Sum(nil),
					Status: string(sandbox.StatusExited), Worker: w.ID(), Nonce: req.Nonce}, key)
				if err != nil {
					t.Error(err)
				}
				protocol.WriteMsgPayload(s, &protocol.JobResult{OutputSize: tt.size, Receipt: receipt}, tt.sent)
				if tt.size > uint64(len(tt.sent)) {
					s.CloseWrite() // the rest never comes
				}
			})
			sub := newSubmitter(t, findOnly(addrInfo(w)))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rep, err := sub.Submit(ctx, Request{Binary: testBinary, Replicas: 1, Limits: sandbox.Limits{MaxOutput: 1 << 20}})
			if rep == nil || len(rep.Replicas) != 1 {
				t.Fatalf("got %v, %+v; want one replica", err, rep)
			}
			r := rep.Replicas[0]
			if tt.wantErr == nil {
				if err != nil || !bytes.Equal(rep.Output, out) || cap(rep.Output) != len(out) {
					t.Fatalf("got %v, output %q (capacity %d), replica %+v; want the output in a buffer of its size", err, rep.Output, cap(rep.Output), r)
				}
				return
			}
			if !errors.Is(r.Err, tt.wantErr) || !errors.Is(err, ErrNoQuorum) || rep.Output != nil {
				t.Fatalf("got replica err %v, submit %v, output %q; want %v and no quorum", r.Err, err, rep.Output, tt.wantErr)
			}
		})
	}
}
