package protocol

import (
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/record"
	recordpb "github.com/libp2p/go-libp2p/core/record/pb"
	"google.golang.org/protobuf/proto"

	"github.com/gridnode/gridnode/cids"
)

// CreditID is the stream protocol on which a submitter gives a worker its credit records.
const CreditID p2pproto.ID = "/gridnode/credit/1.0.0"

// Bounds of the credit protocol: one CreditDelivery (an envelope and its tag) each way
// within CreditTimeout.
const (
	MaxCreditMsg  = MaxEnvelope + 16
	CreditTimeout = 10 * time.Second
)

// CreditDomain is the signature domain of credit envelopes.
const CreditDomain = "gridnode-credit"

var creditCodec = []byte("/gridnode/credit")

func init() { record.RegisterType(&Credit{}) }

var _ record.Record = (*Credit)(nil)

// Credit is a submitter's signed statement that a worker's replica of a job agreed with
// the verdict a quorum accepted: the worker earned the CPU time its receipt states. It is
// bound to that one receipt (ReceiptSHA256), so it cannot be presented for another job.
type Credit struct {
	JobCID, InputCID cid.Cid
	Worker           peer.ID
	CPU              time.Duration // from the worker's receipt
	Accepted         bool
	ReceiptSHA256    []byte // ReceiptHash of the sealed receipt the worker sent
	Submitter        peer.ID
	Time             time.Time
}

// ReceiptHash is the hash that binds a credit to a sealed receipt: SHA-256 of its bytes.
func ReceiptHash(sealed []byte) []byte {
	h := sha256.Sum256(sealed)
	return h[:]
}

// Domain implements record.Record.
func (c *Credit) Domain() string { return CreditDomain }

// Codec implements record.Record.
func (c *Credit) Codec() []byte { return creditCodec }

// MarshalRecord implements record.Record.
func (c *Credit) MarshalRecord() ([]byte, error) {
	return proto.Marshal(&CreditPayload{
		JobCid:        c.JobCID.Bytes(),
		InputCid:      c.InputCID.Bytes(),
		Worker:        []byte(c.Worker),
		CpuUs:         ToMicros(c.CPU),
		Accepted:      c.Accepted,
		ReceiptSha256: c.ReceiptSHA256,
		Submitter:     []byte(c.Submitter),
		TimeUnixMs:    c.Time.UnixMilli(),
	})
}

// UnmarshalRecord implements record.Record; it checks every field's form.
func (c *Credit) UnmarshalRecord(b []byte) error {
	var m CreditPayload
	if err := proto.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: credit: %v", ErrBadEnvelope, err)
	}
	var out Credit
	var err error
	if out.JobCID, err = cids.Cast(m.JobCid); err != nil {
		return fmt.Errorf("%w: credit job cid: %v", ErrBadEnvelope, err)
	}
	if out.InputCID, err = cids.Cast(m.InputCid); err != nil {
		return fmt.Errorf("%w: credit input cid: %v", ErrBadEnvelope, err)
	}
	if out.Worker, err = peer.IDFromBytes(m.Worker); err != nil {
		return fmt.Errorf("%w: credit worker: %v", ErrBadEnvelope, err)
	}
	if out.Submitter, err = peer.IDFromBytes(m.Submitter); err != nil {
		return fmt.Errorf("%w: credit submitter: %v", ErrBadEnvelope, err)
	}
	if len(m.ReceiptSha256) != sha256.Size {
		return fmt.Errorf("%w: credit receipt hash of %d bytes", ErrBadEnvelope, len(m.ReceiptSha256))
	}
	out.CPU, out.Accepted, out.ReceiptSHA256 = FromMicros(m.CpuUs), m.Accepted, m.ReceiptSha256
	out.Time = time.UnixMilli(m.TimeUnixMs)
	*c = out
	return nil
}

// PeekCredit returns the credit in envelope b without checking its signature, so that a
// record that could never be kept is refused before paying for a verification; only
// OpenCredit's answer is to be believed.
func PeekCredit(b []byte) (*Credit, error) {
	if len(b) > MaxEnvelope {
		return nil, fmt.Errorf("%w: envelope of %d bytes", ErrTooLarge, len(b))
	}
	var e recordpb.Envelope
	if err := proto.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEnvelope, err)
	}
	c := new(Credit)
	if err := c.UnmarshalRecord(e.GetPayload()); err != nil {
		return nil, err
	}
	return c, nil
}

// SealCredit signs c with key, the submitter's, and returns the envelope's bytes.
func SealCredit(c *Credit, key crypto.PrivKey) ([]byte, error) {
	return seal(c, key)
}

// OpenCredit checks a credit envelope's signature and that its signer is the credit's
// submitter, and returns the credit.
func OpenCredit(b []byte) (*Credit, error) {
	c := new(Credit)
	signer, err := open(b, c)
	if err != nil {
		return nil, fmt.Errorf("open credit: %w", err)
	}
	if signer != c.Submitter {
		return nil, fmt.Errorf("open credit: %w: signed by %s, submitter field %s", ErrBadEnvelope, signer, c.Submitter)
	}
	return c, nil
}

// Check checks a CreditDelivery's size.
func (m *CreditDelivery) Check() error {
	if len(m.Credit) == 0 || len(m.Credit) > MaxEnvelope {
		return fmt.Errorf("%w: credit envelope of %d bytes", ErrBadRequest, len(m.Credit))
	}
	return nil
}

// Err is the ack's error, nil for OK.
func (m *CreditAck) Err() error { return FromCode(m.GetCode(), m.GetMessage()) }
