package protocol

import (
	"bytes"
	"fmt"
	"math"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/proto"
)

// Signature domains and payload types of gridnode's signed envelopes.
const (
	ReceiptDomain = "gridnode-receipt"
	OfferDomain   = "gridnode-offer"
)

var (
	receiptCodec = []byte("/gridnode/receipt")
	offerCodec   = []byte("/gridnode/offer")
)

func init() {
	record.RegisterType(&Receipt{})
	record.RegisterType(&Offer{})
}

var (
	_ record.Record = (*Receipt)(nil)
	_ record.Record = (*Offer)(nil)
)

// Receipt is a worker's signed statement of what one run produced for one submitter.
type Receipt struct {
	JobCID    cid.Cid
	InputCID  cid.Cid
	OutputCID cid.Cid
	StderrCID cid.Cid
	Status    string
	ExitCode  int
	Signal    string
	CPU, Wall time.Duration
	Worker    peer.ID
	Nonce     []byte // the submitter's nonce from the JobRequest
}

// Domain implements record.Record.
func (r *Receipt) Domain() string { return ReceiptDomain }

// Codec implements record.Record.
func (r *Receipt) Codec() []byte { return receiptCodec }

// MarshalRecord implements record.Record.
func (r *Receipt) MarshalRecord() ([]byte, error) {
	return proto.Marshal(&ReceiptPayload{
		JobCid:    r.JobCID.Bytes(),
		InputCid:  r.InputCID.Bytes(),
		OutputCid: r.OutputCID.Bytes(),
		StderrCid: r.StderrCID.Bytes(),
		Status:    r.Status,
		ExitCode:  int32(r.ExitCode),
		Signal:    r.Signal,
		CpuUs:     ToMicros(r.CPU),
		WallUs:    ToMicros(r.Wall),
		Worker:    []byte(r.Worker),
		Nonce:     r.Nonce,
	})
}

// UnmarshalRecord implements record.Record; it checks every field's form.
func (r *Receipt) UnmarshalRecord(b []byte) error {
	var m ReceiptPayload
	if err := proto.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: receipt: %v", ErrBadEnvelope, err)
	}
	var out Receipt
	var err error
	if out.JobCID, err = cids.Cast(m.JobCid); err != nil {
		return fmt.Errorf("%w: receipt job cid: %v", ErrBadEnvelope, err)
	}
	if out.InputCID, err = cids.Cast(m.InputCid); err != nil {
		return fmt.Errorf("%w: receipt input cid: %v", ErrBadEnvelope, err)
	}
	if out.OutputCID, err = cids.Cast(m.OutputCid); err != nil {
		return fmt.Errorf("%w: receipt output cid: %v", ErrBadEnvelope, err)
	}
	if out.StderrCID, err = cids.Cast(m.StderrCid); err != nil {
		return fmt.Errorf("%w: receipt stderr cid: %v", ErrBadEnvelope, err)
	}
	if out.Worker, err = peer.IDFromBytes(m.Worker); err != nil {
		return fmt.Errorf("%w: receipt worker: %v", ErrBadEnvelope, err)
	}
	if m.Status == "" || len(m.Status) > MaxText || len(m.Signal) > MaxText || Clean(m.Status, MaxText) != m.Status || Clean(m.Signal, MaxText) != m.Signal {
		return fmt.Errorf("%w: receipt status or signal", ErrBadEnvelope)
	}
	if err := CheckNonce(m.Nonce); err != nil {
		return fmt.Errorf("%w: receipt: %v", ErrBadEnvelope, err)
	}
	out.Status, out.ExitCode, out.Signal = m.Status, int(m.ExitCode), m.Signal
	out.CPU, out.Wall = FromMicros(m.CpuUs), FromMicros(m.WallUs)
	out.Nonce = m.Nonce
	*r = out
	return nil
}

// SealReceipt signs r with key and returns the envelope's bytes.
func SealReceipt(r *Receipt, key crypto.PrivKey) ([]byte, error) {
	return seal(r, key)
}

// OpenReceipt checks a receipt's signature and that its signer is the receipt's worker,
// and returns the receipt and the signer. A receipt is a signed envelope (SealReceipt) or a
// batch receipt (SealReceipts).
func OpenReceipt(b []byte) (*Receipt, peer.ID, error) {
	if len(b) > MaxEnvelope {
		return nil, "", fmt.Errorf("open receipt: %w: %d bytes", ErrTooLarge, len(b))
	}
	if seal, payload, ok := parseBatchReceipt(b); ok {
		return openBatchReceipt(seal, payload)
	}
	r := new(Receipt)
	signer, err := open(b, r)
	if err != nil {
		return nil, "", fmt.Errorf("open receipt: %w", err)
	}
	if signer != r.Worker {
		return nil, "", fmt.Errorf("open receipt: %w: signed by %s, worker field %s", ErrBadEnvelope, signer, r.Worker)
	}
	return r, signer, nil
}

// Offer is a worker's signed, live statement of what it accepts now.
type Offer struct {
	Peer       peer.ID
	Arch       string
	SlotsFree  int
	SlotsTotal int
	Max        sandbox.Limits // the most a job may ask for
	MaxInput   int64
	Time       time.Time
	Nonce      []byte // the asker's nonce from the InfoRequest
	Isolation  string // the sandbox's isolation layers, for people to read
	// MaxLoad is the donor's --max-load (0: none) and Load the machine's non-grid load now
	// (jobs.WorkerConfig.MaxLoad defines it), both rounded to thousandths on the wire;
	// Paused says the worker refuses jobs (BUSY) because Load is above MaxLoad.
	MaxLoad, Load float64
	Paused        bool
	// DonorPaused says the worker refuses jobs (BUSY) because its donor paused it.
	DonorPaused bool
	// OffHours says the worker refuses jobs (BUSY) because it is outside its donor's hours;
	// NextWindow is when the next one opens (zero: not said).
	OffHours   bool
	NextWindow time.Time
	// CPUShare is the donor's --cpu-share in percent (0: none); WallStretch how many times
	// its wall limit a job may take on this worker because of it (0 or 1: none), to
	// thousandths on the wire.
	CPUShare    int
	WallStretch float64
}

// Domain implements record.Record.
func (o *Offer) Domain() string { return OfferDomain }

// Codec implements record.Record.
func (o *Offer) Codec() []byte { return offerCodec }

// MarshalRecord implements record.Record.
func (o *Offer) MarshalRecord() ([]byte, error) {
	return proto.Marshal(&OfferPayload{
		PeerId:           []byte(o.Peer),
		Arch:             o.Arch,
		SlotsFree:        uint32(max(o.SlotsFree, 0)),
		SlotsTotal:       uint32(max(o.SlotsTotal, 0)),
		Max:              WireLimits(o.Max),
		MaxInput:         uint64(max(o.MaxInput, 0)),
		TimeUnixMs:       o.Time.UnixMilli(),
		Nonce:            o.Nonce,
		Isolation:        o.Isolation,
		MaxLoadMilli:     milli(o.MaxLoad),
		LoadMilli:        milli(o.Load),
		LoadPaused:       o.Paused,
		DonorPaused:      o.DonorPaused,
		OffHours:         o.OffHours,
		NextWindowUnixMs: unixMilli(o.NextWindow),
		CpuSharePct:      uint32(min(max(o.CPUShare, 0), 100)),
		WallStretchMilli: milli(o.WallStretch),
	})
}

// UnmarshalRecord implements record.Record; it checks every field's form.
func (o *Offer) UnmarshalRecord(b []byte) error {
	var m OfferPayload
	if err := proto.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: offer: %v", ErrBadEnvelope, err)
	}
	id, err := peer.IDFromBytes(m.PeerId)
	if err != nil {
		return fmt.Errorf("%w: offer peer: %v", ErrBadEnvelope, err)
	}
	if m.Arch == "" || len(m.Arch) > MaxText || Clean(m.Arch, MaxText) != m.Arch || m.SlotsFree > m.SlotsTotal {
		return fmt.Errorf("%w: offer arch or slots", ErrBadEnvelope)
	}
	if len(m.Nonce) > MaxNonce {
		return fmt.Errorf("%w: offer nonce of %d bytes", ErrBadEnvelope, len(m.Nonce))
	}
	if len(m.Isolation) > MaxIsolation {
		return fmt.Errorf("%w: offer isolation of %d bytes", ErrBadEnvelope, len(m.Isolation))
	}
	if m.LoadPaused && m.MaxLoadMilli == 0 {
		return fmt.Errorf("%w: offer paused by load with no max load", ErrBadEnvelope)
	}
	if m.CpuSharePct > 100 || (!m.OffHours && m.NextWindowUnixMs != 0) {
		return fmt.Errorf("%w: offer cpu share or next window", ErrBadEnvelope)
	}
	var next time.Time
	if m.NextWindowUnixMs != 0 {
		next = time.UnixMilli(m.NextWindowUnixMs)
	}
	*o = Offer{
		Peer:       id,
		Arch:       m.Arch,
		SlotsFree:  int(m.SlotsFree),
		SlotsTotal: int(m.SlotsTotal),
		Max:        m.GetMax().Sandbox(),
		MaxInput:   SatInt64(m.MaxInput),
		Time:       time.UnixMilli(m.TimeUnixMs),
		Nonce:      m.Nonce,
		Isolation:  Clean(m.Isolation, MaxIsolation),
		MaxLoad:    float64(m.MaxLoadMilli) / 1000,
		Load:       float64(m.LoadMilli) / 1000,
		Paused:     m.LoadPaused,

		DonorPaused: m.DonorPaused,
		OffHours:    m.OffHours,
		NextWindow:  next,
		CPUShare:    int(m.CpuSharePct),
		WallStretch: float64(m.WallStretchMilli) / 1000,
	}
	return nil
}

// unixMilli is t in Unix milliseconds, 0 for the zero time.
func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// milli is x in thousandths, rounded, within [0, MaxUint32].
func milli(x float64) uint32 {
	return uint32(math.Round(min(max(x, 0), math.MaxUint32/1000) * 1000))
}

// SealOffer signs o with key and returns the envelope's bytes.
func SealOffer(o *Offer, key crypto.PrivKey) ([]byte, error) {
	return seal(o, key)
}

// OpenOffer checks an offer envelope's signature and that its signer is the offer's peer,
// and returns the offer and the signer.
func OpenOffer(b []byte) (*Offer, peer.ID, error) {
	o := new(Offer)
	signer, err := open(b, o)
	if err != nil {
		return nil, "", fmt.Errorf("open offer: %w", err)
	}
	if signer != o.Peer {
		return nil, "", fmt.Errorf("open offer: %w: signed by %s, peer field %s", ErrBadEnvelope, signer, o.Peer)
	}
	return o, signer, nil
}

func seal(r record.Record, key crypto.PrivKey) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("seal %s: no private key", r.Domain())
	}
	env, err := record.Seal(r, key)
	if err != nil {
		return nil, fmt.Errorf("seal %s: %w", r.Domain(), err)
	}
	return env.Marshal()
}

// open verifies b's signature for dest's domain, checks its payload type and unmarshals
// the payload into dest. It returns the signer.
func open(b []byte, dest record.Record) (peer.ID, error) {
	if len(b) > MaxEnvelope {
		return "", fmt.Errorf("%w: envelope of %d bytes", ErrTooLarge, len(b))
	}
	env, err := record.ConsumeTypedEnvelope(b, dest)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadEnvelope, err)
	}
	// One byte string per envelope (receipts are named by their hash): no field the
	// envelope does not have, no overlong length, as Marshal writes it.
	if canon, err := env.Marshal(); err != nil || !bytes.Equal(canon, b) {
		return "", fmt.Errorf("%w: not in its canonical form", ErrBadEnvelope)
	}
	if !bytes.Equal(env.PayloadType, dest.Codec()) {
		return "", fmt.Errorf("%w: payload type %q", ErrBadEnvelope, env.PayloadType)
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return "", fmt.Errorf("%w: signer: %v", ErrBadEnvelope, err)
	}
	return signer, nil
}

// CheckNonce reports whether n has an acceptable length.
func CheckNonce(n []byte) error {
	if len(n) < MinNonce || len(n) > MaxNonce {
		return fmt.Errorf("%w: nonce of %d bytes, want %d to %d", ErrBadRequest, len(n), MinNonce, MaxNonce)
	}
	return nil
}

// ToMillis converts d to whole milliseconds, rounding up; negative durations give 0.
func ToMillis(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Millisecond - 1) / time.Millisecond)
}

// ToMicros converts d to whole microseconds; negative durations give 0.
func ToMicros(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64(d / time.Microsecond)
}

// FromMillis converts received milliseconds to a Duration, saturating instead of overflowing.
func FromMillis(ms uint64) time.Duration {
	if ms > math.MaxInt64/uint64(time.Millisecond) {
		return math.MaxInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// FromMicros converts received microseconds to a Duration, saturating instead of overflowing.
func FromMicros(us uint64) time.Duration {
	if us > math.MaxInt64/uint64(time.Microsecond) {
		return math.MaxInt64
	}
	return time.Duration(us) * time.Microsecond
}

// SatInt64 converts a received size to int64, saturating instead of wrapping.
func SatInt64(u uint64) int64 {
	if u > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(u)
}
