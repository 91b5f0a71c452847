package protocol

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/encoding/protowire"
)

// sealTest seals n receipts of worker key 1, each with its own exit code, and returns the
// payloads, the seal and the batch receipts.
func sealTest(t *testing.T, n int) (payloads [][]byte, seal []byte, receipts [][]byte) {
	t.Helper()
	key, id := testKey(t, 1)
	for i := range n {
		r := testReceipt(id)
		r.ExitCode = i
		p, err := r.MarshalRecord()
		if err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, p)
	}
	seal, receipts, err := SealReceipts(payloads, key)
	if err != nil {
		t.Fatal(err)
	}
	return payloads, seal, receipts
}

// TestBatchReceipts: each receipt of a seal opens on its own to what was sealed, signed by
// the worker, and through the seal (OpenSeal, Open) to the same.
func TestBatchReceipts(t *testing.T) {
	_, id := testKey(t, 1)
	payloads, seal, receipts := sealTest(t, 5)
	s, err := OpenSeal(seal)
	if err != nil {
		t.Fatal(err)
	}
	if s.Worker != id || len(s.Leaves) != 5 {
		t.Fatalf("seal of %s with %d leaves, want %s with 5", s.Worker, len(s.Leaves), id)
	}
	for i, rc := range receipts {
		r, signer, err := OpenReceipt(rc)
		if err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		if signer != id || r.Worker != id || r.ExitCode != i || !bytes.Equal(r.Nonce, testNonce()) {
			t.Fatalf("receipt %d: %+v signed by %s", i, r, signer)
		}
		r2, err := s.Open(i, payloads[i])
		if err != nil || r2.ExitCode != i {
			t.Fatalf("leaf %d: %+v, %v", i, r2, err)
		}
		if !bytes.Equal(rc, BatchReceipt(seal, payloads[i])) {
			t.Fatalf("receipt %d is not BatchReceipt(seal, payload): credit names receipts by their bytes", i)
		}
	}
	if _, err := s.Open(1, payloads[0]); err == nil {
		t.Fatal("payload 0 opened as leaf 1")
	}
	if _, _, err := SealReceipts(make([][]byte, MaxSealed+1), nil); err == nil {
		t.Fatal("sealed more than MaxBatch receipts")
	}
}

// TestBatchReceiptForgeries: whatever is changed in a batch receipt, or however one is
// made without the worker's key, OpenReceipt refuses it.
func TestBatchReceiptForgeries(t *testing.T) {
	key, id := testKey(t, 1)
	otherKey, _ := testKey(t, 2)
	payloads, seal, receipts := sealTest(t, 3)

	// The worker field says id, the seal is signed by another key.
	forgedSeal, _, err := SealReceipts(payloads, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	// A payload the seal does not name: another exit code.
	r := testReceipt(id)
	r.ExitCode = 99
	other, err := r.MarshalRecord()
	if err != nil {
		t.Fatal(err)
	}
	// A seal of id whose leaf names a payload of another worker.
	_, otherID := testKey(t, 2)
	theirs, err := testReceipt(otherID).MarshalRecord()
	if err != nil {
		t.Fatal(err)
	}
	mixedSeal, _, err := SealReceipts([][]byte{theirs}, key)
	if err != nil {
		t.Fatal(err)
	}
	// A receipt envelope (signed alone) put where the seal goes, and a seal put where a
	// receipt goes.
	alone, err := SealReceipt(testReceipt(id), key)
	if err != nil {
		t.Fatal(err)
	}
	// Bytes after the payload, and the payload's length as an overlong varint: the same
	// receipt under another byte string.
	trailing := append(bytes.Clone(receipts[0]), 0x0a, 0)
	overlong := protowire.AppendTag(nil, sealedSealField, protowire.BytesType)
	overlong = protowire.AppendBytes(overlong, seal)
	overlong = protowire.AppendTag(overlong, sealedPayloadField, protowire.BytesType)
	n := protowire.AppendVarint(nil, uint64(len(payloads[0])))
	n[len(n)-1] |= 0x80
	overlong = append(append(overlong, append(n, 0)...), payloads[0]...)

	tests := []struct {
		name string
		in   []byte
	}{
		{"seal signed by another key", BatchReceipt(forgedSeal, payloads[0])},
		{"payload not among the leaves", BatchReceipt(seal, other)},
		{"payload of another worker under the seal", BatchReceipt(mixedSeal, theirs)},
		{"receipt envelope as the seal", BatchReceipt(alone, payloads[0])},
		{"seal opened as a receipt", seal},
		{"bytes after the payload", trailing},
		{"overlong payload length", overlong},
		{"no payload", protowire.AppendBytes(protowire.AppendTag(nil, sealedSealField, protowire.BytesType), seal)},
		{"fields swapped", append(protowire.AppendBytes(protowire.AppendTag(nil, sealedPayloadField, protowire.BytesType), payloads[0]),
			protowire.AppendBytes(protowire.AppendTag(nil, sealedSealField, protowire.BytesType), seal)...)},
	}
	// Flip every byte in turn: nothing but an error may come out.
	for i := range receipts[1] {
		b := bytes.Clone(receipts[1])
		b[i] ^= 0x01
		tests = append(tests, struct {
			name string
			in   []byte
		}{fmt.Sprintf("tampered byte %d", i), b})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r, _, err := OpenReceipt(tt.in); err == nil {
				t.Fatalf("got receipt %+v, want an error", r)
			}
		})
	}
	if _, err := OpenSeal(alone); !errors.Is(err, ErrBadEnvelope) {
		t.Errorf("a receipt envelope opened as a seal: %v", err)
	}
}

// TestReceiptSealForm: a seal's payload holds exactly a worker and 1 to MaxSealed leaves of
// 32 bytes, in that order.
func TestReceiptSealForm(t *testing.T) {
	_, id := testKey(t, 1)
	leaf := sha256.Sum256(nil)
	field := func(b []byte, num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	good := field(field(nil, 1, []byte(id)), 2, leaf[:])
	var s ReceiptSeal
	if err := s.UnmarshalRecord(good); err != nil || s.Worker != id || len(s.Leaves) != 1 {
		t.Fatalf("good seal: %+v, %v", s, err)
	}
	many := field(nil, 1, []byte(id))
	for range MaxSealed + 1 {
		many = field(many, 2, leaf[:])
	}
	bad := map[string][]byte{
		"no leaf":          field(nil, 1, []byte(id)),
		"no worker":        field(nil, 2, leaf[:]),
		"leaf first":       field(field(nil, 2, leaf[:]), 1, []byte(id)),
		"two workers":      field(field(field(nil, 1, []byte(id)), 1, []byte(id)), 2, leaf[:]),
		"short leaf":       field(field(nil, 1, []byte(id)), 2, leaf[:31]),
		"unknown field":    field(good, 3, nil),
		"too many leaves":  many,
		"garbage worker":   field(field(nil, 1, []byte("x")), 2, leaf[:]),
		"truncated":        good[:len(good)-1],
		"varint wire type": protowire.AppendVarint(protowire.AppendTag(bytes.Clone(good), 2, protowire.VarintType), 1),
	}
	for name, b := range bad {
		var s ReceiptSeal
		if err := s.UnmarshalRecord(b); err == nil {
			t.Errorf("%s: accepted as %+v", name, s)
		}
	}
	var _ record.Record = &s
}
