package protocol

import (
	"bytes"
	"crypto/sha256"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// withUnknownField is env with a field no libp2p envelope has (9) appended: bytes anyone
// holding env can make, without a key.
func withUnknownField(env []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(bytes.Clone(env), 9, protowire.BytesType), []byte("x"))
}

// TestSealAttackMalleableEnvelope: credit and history name a receipt by the SHA-256 of
// its bytes, so a receipt must have one byte string. parseBatchReceipt refuses another encoding
// of the outer (seal, payload) pair; the seal inside it, and a receipt signed alone, are
// libp2p envelopes, which proto.Unmarshal reads past unknown fields: before the fix anyone
// holding a receipt could make others opening to the same receipt under another hash.
// open() now takes an envelope only as env.Marshal() writes it.
func TestSealAttackMalleableEnvelope(t *testing.T) {
	key, id := testKey(t, 1)
	payloads, seal, receipts := sealTest(t, 2)
	alone, err := SealReceipt(testReceipt(id), key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		orig, variant []byte
	}{
		{"batch receipt, unknown field in its seal", receipts[0], BatchReceipt(withUnknownField(seal), payloads[0])},
		{"receipt signed alone, unknown field", alone, withUnknownField(alone)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, _, err := OpenReceipt(tc.orig)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := OpenReceipt(tc.variant)
			if err == nil {
				t.Errorf("got receipt (exit %d, want's %d) from other bytes (receipt hash %x, the worker's %x), want an error",
					got.ExitCode, want.ExitCode, ReceiptHash(tc.variant)[:8], ReceiptHash(tc.orig)[:8])
			}
		})
	}
}

// TestSealAttackDomains: a seal, a receipt signed alone, an offer and a credit, all signed
// by one key, open only as what they are: each envelope's signature is over its own domain
// and it carries its own payload type.
func TestSealAttackDomains(t *testing.T) {
	key, id := testKey(t, 1)
	payloads, seal, _ := sealTest(t, 1)
	receipt, offer := sealedSeeds(t)
	credit, err := SealCredit(&Credit{JobCID: testReceipt(id).JobCID, InputCID: testReceipt(id).InputCID, Worker: id,
		Accepted: true, ReceiptSHA256: ReceiptHash([]byte("r")), Submitter: id, Time: time.UnixMilli(1)}, key)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"receipt": receipt, "offer": offer, "credit": credit} {
		if _, err := OpenSeal(b); err == nil {
			t.Errorf("a %s envelope opened as a seal", name)
		}
		if _, _, err := OpenReceipt(BatchReceipt(b, payloads[0])); err == nil {
			t.Errorf("a %s envelope in a batch receipt's seal opened", name)
		}
	}
	if _, _, err := OpenOffer(seal); err == nil {
		t.Error("a seal opened as an offer")
	}
	if _, err := OpenCredit(seal); err == nil {
		t.Error("a seal opened as a credit")
	}
	// The seal's own payload (worker, leaves) as a receipt's payload, under the seal.
	var s ReceiptSeal
	if _, err := open(seal, &s); err != nil {
		t.Fatal(err)
	}
	raw, _ := s.MarshalRecord()
	if _, _, err := OpenReceipt(BatchReceipt(seal, raw)); err == nil {
		t.Error("the seal's payload opened as a receipt under the seal")
	}
	// A leaf that is the hash of a receipt payload, presented with an empty payload, a
	// payload of the leaf itself, or the leaf count out of range.
	if _, err := s.Open(1, payloads[0]); err == nil {
		t.Error("leaf 1 of a one-leaf seal opened")
	}
	if _, err := s.Open(-1, payloads[0]); err == nil {
		t.Error("leaf -1 opened")
	}
	leaf := sha256.Sum256(payloads[0])
	if _, _, err := OpenReceipt(BatchReceipt(seal, leaf[:])); err == nil {
		t.Error("a leaf opened as its payload")
	}
}

// batchReceiptSeeds are FuzzOpenReceipt's batch receipts and seals: three receipts under
// one seal, the seal alone, and a batch receipt missing either half.
func batchReceiptSeeds(f *testing.F) [][]byte {
	key, id := testKey(f, 1)
	var payloads [][]byte
	for i := range 3 {
		r := testReceipt(id)
		r.ExitCode = i
		p, _ := r.MarshalRecord()
		payloads = append(payloads, p)
	}
	seal, receipts, err := SealReceipts(payloads, key)
	if err != nil {
		f.Fatal(err)
	}
	return append(receipts, seal, BatchReceipt(seal, nil), BatchReceipt(nil, payloads[0]))
}

// FuzzSealAttackSealRecord: a seal's payload decoder never panics, and what it takes
// re-encodes to a payload it takes again as the same seal.
func FuzzSealAttackSealRecord(f *testing.F) {
	_, id := testKey(f, 1)
	leaf := sha256.Sum256(nil)
	good, _ := (&ReceiptSeal{Worker: id, Leaves: [][sha256.Size]byte{leaf, leaf}}).MarshalRecord()
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add([]byte{0x0a, 0x80, 0x80, 0x80, 0x80, 0x10})
	f.Fuzz(func(t *testing.T, data []byte) {
		var s ReceiptSeal
		if s.UnmarshalRecord(data) != nil {
			return
		}
		if len(s.Leaves) == 0 || len(s.Leaves) > MaxSealed || s.Worker == "" {
			t.Fatalf("took a seal of %d leaves, worker %q", len(s.Leaves), s.Worker)
		}
		b, err := s.MarshalRecord()
		if err != nil {
			t.Fatal(err)
		}
		var s2 ReceiptSeal
		if err := s2.UnmarshalRecord(b); err != nil || s2.Worker != s.Worker || len(s2.Leaves) != len(s.Leaves) {
			t.Fatalf("re-encoded seal: %+v, %v", s2, err)
		}
	})
}
