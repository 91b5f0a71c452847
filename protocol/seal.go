package protocol

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/encoding/protowire"
)

// Receipt seals. A worker running a batch signs its jobs' receipts together, once every few
// jobs, instead of once each: two ed25519 operations a job (the worker's signature and the
// submitter's check) were a fifth of a tiny job's whole cost on the grid. A seal is a
// signed list of the SHA-256 of each receipt's payload (Receipt.MarshalRecord); a job's
// receipt is then the seal and its own payload (a batch receipt), which stands alone as a
// signed envelope does: OpenReceipt takes either form, and what it returns is the same.
//
// The two forms cannot be taken for each other: a batch receipt's fields (15 and 16) are
// not an envelope's (1, 2, 3 and 5), the seal's signature is over its own domain, and
// either form must be exactly as the worker encoded it, so a receipt has one byte string
// (credit names receipts by their hash).
const (
	ReceiptSealDomain = "gridnode-receipt-seal"
	// MaxSealed is the most receipts one seal covers.
	MaxSealed = 64
)

var receiptSealCodec = []byte("/gridnode/receipt-seal")

func init() { record.RegisterType(&ReceiptSeal{}) }

var _ record.Record = (*ReceiptSeal)(nil)

// ReceiptSeal is a worker's one signature over several receipts: the SHA-256 of each one's
// payload, in the order the jobs ran.
type ReceiptSeal struct {
	Worker peer.ID
	Leaves [][sha256.Size]byte
}

// Domain implements record.Record.
func (s *ReceiptSeal) Domain() string { return ReceiptSealDomain }

// Codec implements record.Record.
func (s *ReceiptSeal) Codec() []byte { return receiptSealCodec }

// MarshalRecord implements record.Record: field 1 the worker, then field 2 once per leaf.
func (s *ReceiptSeal) MarshalRecord() ([]byte, error) {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte(s.Worker))
	for _, l := range s.Leaves {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, l[:])
	}
	return b, nil
}

// UnmarshalRecord implements record.Record. It takes only what MarshalRecord makes: the
// worker, then 1 to MaxSealed leaves of 32 bytes, nothing else.
func (s *ReceiptSeal) UnmarshalRecord(b []byte) error {
	var out ReceiptSeal
	for field := 0; len(b) > 0; field++ {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType || (field == 0) != (num == 1) || (field > 0 && num != 2) {
			return fmt.Errorf("%w: receipt seal: unexpected field", ErrBadEnvelope)
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return fmt.Errorf("%w: receipt seal: truncated", ErrBadEnvelope)
		}
		b = b[n:]
		if field == 0 {
			id, err := peer.IDFromBytes(v)
			if err != nil {
				return fmt.Errorf("%w: receipt seal worker: %v", ErrBadEnvelope, err)
			}
			out.Worker = id
			continue
		}
		if len(v) != sha256.Size || len(out.Leaves) == MaxSealed {
			return fmt.Errorf("%w: receipt seal: a leaf of %d bytes or more than %d leaves", ErrBadEnvelope, len(v), MaxSealed)
		}
		out.Leaves = append(out.Leaves, [sha256.Size]byte(v))
	}
	if out.Worker == "" || len(out.Leaves) == 0 {
		return fmt.Errorf("%w: receipt seal without a worker or a leaf", ErrBadEnvelope)
	}
	*s = out
	return nil
}

// SealReceipts signs the payloads of several receipts of key's peer (each the
// MarshalRecord of a Receipt whose Worker is that peer) with one seal, and returns the seal
// envelope and each payload's batch receipt.
func SealReceipts(payloads [][]byte, key crypto.PrivKey) (env []byte, receipts [][]byte, err error) {
	if len(payloads) == 0 || len(payloads) > MaxSealed {
		return nil, nil, fmt.Errorf("seal %d receipts: want 1 to %d", len(payloads), MaxSealed)
	}
	if key == nil {
		return nil, nil, fmt.Errorf("seal receipts: no private key")
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("seal receipts: %w", err)
	}
	s := &ReceiptSeal{Worker: id}
	for _, p := range payloads {
		s.Leaves = append(s.Leaves, sha256.Sum256(p))
	}
	if env, err = seal(s, key); err != nil {
		return nil, nil, err
	}
	for _, p := range payloads {
		receipts = append(receipts, BatchReceipt(env, p))
	}
	return env, receipts, nil
}

// OpenSeal checks a seal envelope's signature and that its signer is its worker.
func OpenSeal(b []byte) (*ReceiptSeal, error) {
	s := new(ReceiptSeal)
	signer, err := open(b, s)
	if err != nil {
		return nil, fmt.Errorf("open receipt seal: %w", err)
	}
	if signer != s.Worker {
		return nil, fmt.Errorf("open receipt seal: %w: signed by %s, worker field %s", ErrBadEnvelope, signer, s.Worker)
	}
	return s, nil
}

// Open returns the receipt whose payload is leaf i of the seal: the payload must hash to
// that leaf and name the seal's worker.
func (s *ReceiptSeal) Open(i int, payload []byte) (*Receipt, error) {
	if i < 0 || i >= len(s.Leaves) || sha256.Sum256(payload) != s.Leaves[i] {
		return nil, fmt.Errorf("open batch receipt: %w: payload is not leaf %d of the seal", ErrBadEnvelope, i)
	}
	return s.receipt(payload)
}

// receipt is the receipt of payload, one of the seal's leaves.
func (s *ReceiptSeal) receipt(payload []byte) (*Receipt, error) {
	r := new(Receipt)
	if err := r.UnmarshalRecord(payload); err != nil {
		return nil, fmt.Errorf("open batch receipt: %w", err)
	}
	if r.Worker != s.Worker {
		return nil, fmt.Errorf("open batch receipt: %w: sealed by %s, worker field %s", ErrBadEnvelope, s.Worker, r.Worker)
	}
	return r, nil
}

// Fields of a batch receipt: numbers a libp2p envelope never uses.
const (
	sealedSealField    = 15
	sealedPayloadField = 16
)

// BatchReceipt is the receipt of payload under seal: field 15 the seal envelope, field 16
// the payload.
func BatchReceipt(seal, payload []byte) []byte {
	b := make([]byte, 0, len(seal)+len(payload)+8)
	b = protowire.AppendTag(b, sealedSealField, protowire.BytesType)
	b = protowire.AppendBytes(b, seal)
	b = protowire.AppendTag(b, sealedPayloadField, protowire.BytesType)
	return protowire.AppendBytes(b, payload)
}

// parseBatchReceipt splits a batch receipt into its seal and payload; ok is false for anything
// BatchReceipt would not have made (an envelope among them).
func parseBatchReceipt(b []byte) (seal, payload []byte, ok bool) {
	whole := b
	next := func(want protowire.Number) []byte {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != want || typ != protowire.BytesType {
			return nil
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return nil
		}
		b = b[n+m:]
		return v
	}
	if seal = next(sealedSealField); seal == nil {
		return nil, nil, false
	}
	if payload = next(sealedPayloadField); payload == nil || len(b) != 0 {
		return nil, nil, false
	}
	return seal, payload, bytes.Equal(BatchReceipt(seal, payload), whole) // no overlong varint
}

// openBatchReceipt opens a batch receipt: its seal's signature, and its payload among the
// seal's leaves.
func openBatchReceipt(seal, payload []byte) (*Receipt, peer.ID, error) {
	s, err := OpenSeal(seal)
	if err != nil {
		return nil, "", err
	}
	h := sha256.Sum256(payload)
	for _, l := range s.Leaves {
		if l == h {
			r, err := s.receipt(payload)
			if err != nil {
				return nil, "", err
			}
			return r, s.Worker, nil
		}
	}
	return nil, "", fmt.Errorf("open batch receipt: %w: payload is none of the seal's leaves", ErrBadEnvelope)
}
