package protocol

import (
	"bytes"
	"encoding/binary"
	"io"
	reflect "reflect"
	"testing"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/proto"
)

func frame(t testing.TB, m proto.Message) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteMsg(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func sealedSeeds(f testing.TB) (receipt, offer []byte) {
	key, id := testKey(f, 1)
	receipt, err := SealReceipt(testReceipt(id), key)
	if err != nil {
		f.Fatal(err)
	}
	offer, err = SealOffer(testOffer(id), key)
	if err != nil {
		f.Fatal(err)
	}
	return receipt, offer
}

func FuzzReadMsg(f *testing.F) {
	f.Add(frame(f, &JobAdmit{Code: Code_BUSY, Message: "busy"}))
	f.Add(frame(f, &BlobRequest{Cid: cids.Sum(nil).Bytes()}))
	f.Add(binary.AppendUvarint(nil, 1<<40))
	f.Add([]byte{0x80, 0x80, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		var m JobAdmit
		err := ReadMsg(bytes.NewReader(data), &m, MaxControlMsg)
		if err != nil {
			return
		}
		// What decodes must encode and decode again to the same message.
		var m2 JobAdmit
		if err := ReadMsg(bytes.NewReader(frame(t, &m)), &m2, MaxControlMsg); err != nil {
			t.Fatalf("re-read: %v", err)
		}
		if !proto.Equal(&m, &m2) {
			t.Fatalf("got %v, want %v", &m2, &m)
		}
	})
}

func FuzzJobRequest(f *testing.F) {
	f.Add(frame(f, &JobRequest{JobCid: cids.Sum([]byte("job")).Bytes(), InputCid: cids.Sum([]byte("in")).Bytes(), InputSize: 2, InputInline: true, Nonce: testNonce(), Limits: &Limits{CpuMs: 1000, Memory: 1 << 20}, Arch: sandbox.ArchAMD64}))
	f.Add(frame(f, &JobRequest{JobCid: cids.Sum([]byte("job")).Bytes(), InputCid: cids.Sum(nil).Bytes(), InputSize: 7, Nonce: testNonce()}))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m JobRequest
		if err := ReadMsg(bytes.NewReader(data), &m, MaxJobRequest); err != nil {
			return
		}
		if err := m.Check(); err != nil {
			return
		}
		// What was accepted survives a round trip unchanged and is accepted again.
		var again JobRequest
		if err := ReadMsg(bytes.NewReader(frame(t, &m)), &again, MaxJobRequest); err != nil {
			t.Fatalf("re-read an accepted request: %v", err)
		}
		if !proto.Equal(&m, &again) || again.Check() != nil {
			t.Fatalf("round trip changed an accepted request: %v -> %v", &m, &again)
		}
	})
}

func FuzzJobResult(f *testing.F) {
	receipt, _ := sealedSeeds(f)
	f.Add(frame(f, &JobResult{OutputSize: 6, Stderr: []byte("stderr"), Receipt: receipt}))
	f.Add(frame(f, &JobResult{Code: Code_CANCELLED, Message: "worker shutting down"}))
	f.Add(frame(f, &JobResult{SendInput: true}))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m JobResult
		if err := ReadMsg(bytes.NewReader(data), &m, MaxJobResult); err != nil {
			return
		}
		if err := m.Check(); err != nil {
			return
		}
		if err := m.Err(); err != nil {
			return
		}
		if r, _, err := OpenReceipt(m.Receipt); err == nil {
			recordRoundTrip(t, r)
		}
	})
}

// FuzzOpenReceipt: hostile bytes, seeded with a receipt, an offer and batch receipts and
// seals, never panic OpenReceipt, and what it opens names its signer and round-trips.
func FuzzOpenReceipt(f *testing.F) {
	receipt, offer := sealedSeeds(f)
	f.Add(receipt)
	f.Add(offer)
	for _, b := range batchReceiptSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, signer, err := OpenReceipt(data)
		if err != nil {
			return
		}
		if signer != r.Worker {
			t.Fatalf("signer %s, worker %s", signer, r.Worker)
		}
		recordRoundTrip(t, r)
	})
}

func FuzzOpenOffer(f *testing.F) {
	receipt, offer := sealedSeeds(f)
	f.Add(offer)
	f.Add(receipt)
	f.Fuzz(func(t *testing.T, data []byte) {
		o, _, err := OpenOffer(data)
		if err != nil {
			return
		}
		recordRoundTrip(t, o)
	})
}

// recordRoundTrip checks that an accepted record marshals and unmarshals to itself.
func recordRoundTrip[T any, P interface {
	*T
	record.Record
}](t *testing.T, v P) {
	t.Helper()
	b, err := v.MarshalRecord()
	if err != nil {
		t.Fatalf("marshal an accepted %T: %v", v, err)
	}
	var w T
	if err := P(&w).UnmarshalRecord(b); err != nil {
		t.Fatalf("unmarshal a re-marshalled %T: %v", v, err)
	}
	if !reflect.DeepEqual(*v, w) {
		t.Fatalf("round trip changed an accepted %T:\n%+v\n%+v", v, *v, w)
	}
}

func FuzzBlobResponse(f *testing.F) {
	body := []byte("blob body")
	f.Add(append(frame(f, &BlobResponse{Size: uint64(len(body))}), body...), int64(100))
	f.Add(frame(f, &BlobResponse{Code: Code_NOT_FOUND, Message: "no such blob"}), int64(100))
	f.Fuzz(func(t *testing.T, data []byte, max int64) {
		r := bytes.NewReader(data)
		size, err := ReadBlobHeader(r, max)
		if err != nil {
			return
		}
		if size < 0 || size > max {
			t.Fatalf("size %d outside [0, %d]", size, max)
		}
		v := cids.NewVerifier(cids.Sum(body))
		var got bytes.Buffer
		if _, err := io.Copy(io.MultiWriter(v, &got), io.LimitReader(r, size)); err != nil {
			t.Fatal(err)
		}
		if (v.Verify() == nil) != bytes.Equal(got.Bytes(), body) {
			t.Fatalf("verifier disagrees with bytes.Equal on %q", got.Bytes())
		}
	})
}
