// Package credit issues, checks and keeps verified credit: records a submitter signs for
// each worker whose replica agreed with the verdict a quorum accepted, which the worker keeps
// in its history only if they name a job it ran, for that submitter, with the receipt it
// sealed. Unverified work earns no credit, as in BOINC.
package credit

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/history"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
)

// Bucket is the history bucket of the credit records a worker keeps.
const Bucket = "credit"

// Defaults of Options.
const (
	DefaultMaxRecords      = history.DefaultMaxJobs
	DefaultMaxPerSubmitter = DefaultMaxRecords / 4
)

// Record is one kept credit record, as the local API, `gridnode credit --export` and
// `--verify` have it. Envelope is the signed record; the other fields are what it says, for
// people and tools to read without opening it.
type Record struct {
	JobCID        string    `json:"job_cid"`
	InputCID      string    `json:"input_cid"`
	Worker        string    `json:"worker"`
	Submitter     string    `json:"submitter"`
	CPUUs         int64     `json:"cpu_us"`
	Accepted      bool      `json:"accepted"`
	ReceiptSHA256 string    `json:"receipt_sha256"` // hex
	Time          time.Time `json:"time"`           // when the submitter signed it
	Received      time.Time `json:"received,omitzero"`
	Envelope      []byte    `json:"envelope"` // base64 in JSON: the sealed credit
}

// RecordOf is the record of c, sealed as env.
func RecordOf(c *protocol.Credit, env []byte, received time.Time) Record {
	return Record{JobCID: c.JobCID.String(), InputCID: c.InputCID.String(), Worker: c.Worker.String(),
		Submitter: c.Submitter.String(), CPUUs: int64(protocol.ToMicros(c.CPU)), Accepted: c.Accepted,
		ReceiptSHA256: hex.EncodeToString(c.ReceiptSHA256), Time: time.UnixMilli(c.Time.UnixMilli()).UTC(), Received: received.UTC(), Envelope: env}
}

// Issue returns the credit an accepted report earns: one record per worker whose replica
// agreed with the accepted verdict with a valid receipt, with the CPU time of that receipt.
// A replica that disagreed, failed or was not needed earns none, and so does this
// machine's own run; a report without an accepted verdict earns nothing.
func Issue(rep *jobs.Report, submitter peer.ID, now time.Time) []*protocol.Credit {
	if rep == nil || !rep.OutputCID.Defined() {
		return nil
	}
	var out []*protocol.Credit
	for _, r := range rep.Replicas {
		if r.Err != nil || r.Local || !r.ReceiptValid || r.Verdict != rep.Verdict || r.Worker == submitter {
			continue
		}
		out = append(out, &protocol.Credit{JobCID: rep.JobCID, InputCID: rep.InputCID, Worker: r.Worker, CPU: r.CPU,
			Accepted: true, ReceiptSHA256: protocol.ReceiptHash(r.Receipt), Submitter: submitter, Time: now})
	}
	return out
}

// Options bounds a Keeper. Zero fields take the defaults.
type Options struct {
	// MaxRecords bounds the records kept, MaxPerSubmitter those of one submitter; past
	// either, the oldest (of that submitter) go.
	MaxRecords, MaxPerSubmitter int
	// MaxRan bounds the receipts remembered to check records against: the jobs the history
	// keeps (history.DefaultMaxJobs).
	MaxRan int
}

func (o *Options) defaults() {
	if o.MaxRecords <= 0 {
		o.MaxRecords = DefaultMaxRecords
	}
	if o.MaxPerSubmitter <= 0 {
		o.MaxPerSubmitter = DefaultMaxPerSubmitter
	}
	if o.MaxRan <= 0 {
		o.MaxRan = history.DefaultMaxJobs
	}
}

// ran is what a worker's own receipt says of a job it ran, to check credit against.
type ran struct {
	submitter   peer.ID
	job, input  string
	cpuMs       int64
	receiptHash string
}

type kept struct {
	seq         uint64
	submitter   string
	receiptHash string
}

// Keeper checks and keeps a worker's credit records in its history database.
type Keeper struct {
	db   *history.DB
	self peer.ID
	opts Options

	mu       sync.Mutex
	ran      map[string]ran // by receipt hash: jobs this worker ran with a result
	ranOrder []string       // oldest first
	have     map[string]bool
	order    []kept // the records kept, oldest first
	perSub   map[string]int
}

// Open returns the Keeper of worker self, reading the receipts it sealed (the jobs it ran)
// and the records it kept from db.
func Open(db *history.DB, self peer.ID, opts Options) (*Keeper, error) {
	opts.defaults()
	k := &Keeper{db: db, self: self, opts: opts, ran: map[string]ran{}, have: map[string]bool{}, perSub: map[string]int{}}
	js, err := db.Jobs(opts.MaxRan)
	if err != nil {
		return nil, fmt.Errorf("credit: %w", err)
	}
	for _, j := range slices.Backward(js) {
		p, err := peer.Decode(j.Submitter)
		if j.Kind != history.KindRan || j.Error != "" || len(j.Receipt) == 0 || err != nil {
			continue
		}
		k.noteRan(ran{submitter: p, job: j.JobCID, input: j.InputCID, cpuMs: j.CPUMs, receiptHash: string(protocol.ReceiptHash(j.Receipt))})
	}
	err = db.ForEach(Bucket, func(key, v []byte) error {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil || len(key) != 8 {
			return fmt.Errorf("record %x: %v", key, err)
		}
		h, _ := hex.DecodeString(r.ReceiptSHA256)
		k.add(kept{seq: binary.BigEndian.Uint64(key), submitter: r.Submitter, receiptHash: string(h)})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("credit: %w", err)
	}
	if err := k.retain(""); err != nil {
		return nil, fmt.Errorf("credit: %w", err)
	}
	return k, nil
}

// NoteRan remembers a job this worker ran, by its receipt; it has jobs.Events.Job's
// signature. A job without a result (no receipt sent) earns no credit.
func (k *Keeper) NoteRan(ev jobs.JobEvent) {
	if ev.Err != nil || len(ev.Receipt) == 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.noteRan(ran{submitter: ev.From, job: ev.JobCID.String(), input: ev.InputCID.String(), cpuMs: ev.CPU.Milliseconds(),
		receiptHash: string(protocol.ReceiptHash(ev.Receipt))})
}

func (k *Keeper) noteRan(r ran) {
	if _, ok := k.ran[r.receiptHash]; !ok {
		k.ranOrder = append(k.ranOrder, r.receiptHash)
	}
	k.ran[r.receiptHash] = r
	for len(k.ranOrder) > k.opts.MaxRan {
		delete(k.ran, k.ranOrder[0])
		k.ranOrder[0] = ""
		k.ranOrder = k.ranOrder[1:]
	}
}

// Accept checks the sealed credit env that peer from sent and keeps it. It must be signed
// by its submitter, who must be from; name this worker; say the replica was accepted; and
// name the job, input, CPU time and receipt of a job this worker ran for that submitter.
// One record is kept per receipt: a replay is ErrReplay.
func (k *Keeper) Accept(from peer.ID, env []byte) (Record, error) {
	// What could never be kept is refused before the signature is checked: the sender
	// chooses its key (RSA up to 8192 bits) and may resend one envelope without end.
	c, err := protocol.PeekCredit(env)
	if err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrForged, err)
	}
	k.mu.Lock()
	err = k.check(from, c, true) // a receipt already credited never is again: no signature check for it
	k.mu.Unlock()
	if err != nil {
		return Record{}, err
	}
	if c, err = protocol.OpenCredit(env); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrForged, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.check(from, c, true); err != nil {
		return Record{}, err
	}
	rec := RecordOf(c, env, time.Now())
	v, err := json.Marshal(rec)
	if err != nil {
		return Record{}, err
	}
	seq, err := k.db.Append(Bucket, v)
	if err != nil {
		return Record{}, fmt.Errorf("keep credit: %w", err)
	}
	k.add(kept{seq: seq, submitter: rec.Submitter, receiptHash: string(c.ReceiptSHA256)})
	return rec, k.retain(rec.Submitter)
}

// check refuses c from peer from unless it names this worker, was accepted, and matches a
// receipt this worker sealed for from, and with replay, no record is kept for it yet.
// Preconditions: k.mu is held.
func (k *Keeper) check(from peer.ID, c *protocol.Credit, replay bool) error {
	switch {
	case c.Submitter != from:
		return fmt.Errorf("%w: signed by %s, sent by %s", ErrForged, c.Submitter, from)
	case c.Worker != k.self:
		return fmt.Errorf("%w: %s", ErrNotMine, c.Worker)
	case !c.Accepted:
		return ErrNotAccepted
	}
	h := string(c.ReceiptSHA256)
	r, ok := k.ran[h]
	if !ok || r.submitter != c.Submitter || r.job != c.JobCID.String() || r.input != c.InputCID.String() || r.cpuMs != c.CPU.Milliseconds() {
		return fmt.Errorf("%w: job %s, input %s, receipt %x", ErrNotRun, c.JobCID, c.InputCID, c.ReceiptSHA256)
	}
	if replay && k.have[h] {
		return fmt.Errorf("%w: receipt %x", ErrReplay, c.ReceiptSHA256)
	}
	return nil
}

func (k *Keeper) add(e kept) {
	k.order = append(k.order, e)
	k.have[e.receiptHash] = true
	k.perSub[e.submitter]++
}

// retain drops the oldest records past the bounds: of sub (every submitter when ""),
// then of all.
func (k *Keeper) retain(sub string) error {
	for s, n := range k.perSub {
		if sub != "" && s != sub {
			continue
		}
		for ; n > k.opts.MaxPerSubmitter; n-- {
			if err := k.drop(slices.IndexFunc(k.order, func(e kept) bool { return e.submitter == s })); err != nil {
				return err
			}
		}
	}
	for len(k.order) > k.opts.MaxRecords {
		if err := k.drop(0); err != nil {
			return err
		}
	}
	return nil
}

func (k *Keeper) drop(i int) error {
	e := k.order[i]
	if err := k.db.Delete(Bucket, binary.BigEndian.AppendUint64(nil, e.seq)); err != nil {
		return fmt.Errorf("drop credit: %w", err)
	}
	k.order = slices.Delete(k.order, i, i+1)
	delete(k.have, e.receiptHash)
	delete(k.ran, e.receiptHash) // a dropped record is not kept again (a submitter past its bound would cycle them)
	if k.perSub[e.submitter]--; k.perSub[e.submitter] <= 0 {
		delete(k.perSub, e.submitter)
	}
	return nil
}

// Records returns the records kept, oldest first.
func (k *Keeper) Records() ([]Record, error) {
	out := []Record{}
	err := k.db.ForEach(Bucket, func(_, v []byte) error {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("credit records: %w", err)
	}
	return out, nil
}
