// Package history keeps what a node did (jobs it ran, jobs it submitted, and records other
// parts of the node file with it, such as credit) in a bbolt database in the data dir that
// survives restarts and crashes and never grows past its retention bound.
package history

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/gridnode/gridnode/jobs"
)

// File is the database's name in the data dir.
const File = "history.db"

// SchemaVersion is the version of the records' JSON (Job, Totals), which is also the
// local API's: a change that breaks readers bumps it.
const SchemaVersion = 1

// Defaults of Options.
const (
	DefaultMaxJobs     = 10000
	DefaultMaxBytes    = 64 << 20
	DefaultLockTimeout = time.Second
	DefaultQueueLen    = 1024
	DefaultQueueBytes  = 32 << 20
)

// Options configures Open. The zero value is the defaults above.
type Options struct {
	// MaxJobs and MaxBytes bound the jobs kept (run and submitted together): once either
	// is passed, the oldest go, with their outputs. MaxBytes counts the records and the
	// outputs; the file itself stays near it, since bbolt reuses freed pages. An output
	// larger than MaxBytes/8 is not kept (the job's output_kept is false).
	MaxJobs  int
	MaxBytes int64
	// LockTimeout is how long Open waits for another process's lock on the file before
	// failing with ErrLocked.
	LockTimeout time.Duration
	// QueueLen and QueueBytes bound the writes waiting for the writer goroutine; past
	// either, the oldest waiting write is dropped and counted (Dropped).
	QueueLen   int
	QueueBytes int64
	Logger     *slog.Logger
}

func (o *Options) defaults() {
	if o.MaxJobs <= 0 {
		o.MaxJobs = DefaultMaxJobs
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.QueueLen <= 0 {
		o.QueueLen = DefaultQueueLen
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Kinds of Job.
const (
	KindRan       = "ran"       // this node ran it as a worker
	KindSubmitted = "submitted" // this node submitted it
)

// Job is one job in the history, as the local API and `gridnode jobs --json` show it.
type Job struct {
	ID        uint64    `json:"id"` // assigned in order; a later job has a larger one
	Kind      string    `json:"kind"`
	Start     time.Time `json:"start,omitzero"` // admission (ran only)
	End       time.Time `json:"end"`
	JobCID    string    `json:"job_cid"`
	InputCID  string    `json:"input_cid"`
	Submitter string    `json:"submitter,omitempty"` // ran: who asked
	// The verdict: of this worker's receipt (ran) or the one a quorum accepted
	// (submitted); empty when there is none.
	OutputCID string `json:"output_cid"`
	StderrCID string `json:"stderr_cid"`
	Status    string `json:"status"`
	ExitCode  int    `json:"exit_code"`
	Signal    string `json:"signal"`
	CPUMs     int64  `json:"cpu_ms"`            // ran: the receipt's CPU time
	WallMs    int64  `json:"wall_ms"`           // ran: the receipt's wall time
	Receipt   []byte `json:"receipt,omitempty"` // ran: the sealed receipt sent, base64
	// Error is why there is no result (ran) or no accepted verdict (submitted).
	Error     string `json:"error,omitempty"`
	ErrorKind string `json:"error_kind,omitempty"` // submitted: as in submit --json
	// Submitted only: whether a quorum accepted a verdict, the reason in words, the
	// accepted stderr, every replica, and the output's size and whether it is kept
	// (Output).
	Accepted   bool               `json:"accepted"`
	Reason     string             `json:"reason,omitempty"`
	Stderr     []byte             `json:"stderr,omitempty"` // base64: the bytes stderr_cid names
	Replicas   []jobs.ReplicaJSON `json:"replicas,omitempty"`
	OutputSize int                `json:"output_size"`
	OutputKept bool               `json:"output_kept"`
}

// Totals are counted over the database's whole life, retention notwithstanding.
type Totals struct {
	Ran       int64     `json:"jobs_run"`       // jobs this worker admitted
	RanOK     int64     `json:"jobs_run_ok"`    // of which it sent a result
	CPUMs     int64     `json:"cpu_ms_donated"` // the CPU time of those results' receipts
	Submitted int64     `json:"jobs_submitted"`
	Accepted  int64     `json:"jobs_accepted"`  // submitted jobs a quorum accepted
	Since     time.Time `json:"since,omitzero"` // the first record
}

// Buckets of the database; others are the generic accessor's (Put, Get, ...).
var (
	bucketJobs    = []byte("jobs")    // id -> Job JSON
	bucketOutputs = []byte("outputs") // id -> output bytes
	bucketMeta    = []byte("meta")
	keyVersion    = []byte("version")
	keyTotals     = []byte("totals")
	keyUsage      = []byte("usage") // usage JSON: what retention counts
)

type usage struct {
	Jobs  int   `json:"jobs"`
	Bytes int64 `json:"bytes"`
}

// DB is an open history database. Its Put methods queue the write and return at once;
// one goroutine commits queued writes in batches, and Close commits what is left.
type DB struct {
	db   *bolt.DB
	opts Options

	mu      sync.Mutex
	cond    *sync.Cond // queue emptied or writer idle
	queue   []item
	qbytes  int64
	busy    bool   // the writer holds a batch
	seq     uint64 // of the last write queued
	written uint64 // seq of the last write committed (or failed)
	closed  bool
	dropped uint64
	werr    error // the last failed batch's error
	kick    chan struct{}
	done    chan struct{}
}

type item struct {
	seq    uint64
	job    Job
	output []byte
}

func (it *item) size() int64 {
	return int64(len(it.output) + len(it.job.Stderr) + len(it.job.Receipt) + 512)
}

// Open opens (creating it if needed) the database at path. When another process holds it
// (a daemon), it fails with ErrLocked after opts.LockTimeout.
func Open(path string, opts Options) (*DB, error) {
	opts.defaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	bdb, err := openChecked(path, opts)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("history %s: %w", path, ErrLocked)
	}
	if errors.Is(err, errDamaged) {
		// A damaged file (bbolt panics on corrupt pages: the daemon died at every start)
		// is moved aside, and the history starts afresh. Other errors (permissions, a
		// directory in the way) are the owner's to fix: they are returned.
		aside := fmt.Sprintf("%s.damaged-%d", path, time.Now().Unix())
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("history %s: %w (and moving it aside: %v)", path, err, rerr)
		}
		if opts.Logger != nil {
			opts.Logger.Warn("history damaged: moved aside, starting afresh", "file", aside, "err", err)
		}
		bdb, err = openChecked(path, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("history %s: %w", path, err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketJobs, bucketOutputs, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyVersion); v != nil {
			if got, _ := strconv.Atoi(string(v)); got != SchemaVersion {
				return fmt.Errorf("%w: schema version %s, this gridnode reads %d", ErrVersion, v, SchemaVersion)
			}
			return nil
		}
		return meta.Put(keyVersion, []byte(strconv.Itoa(SchemaVersion)))
	})
	if err != nil {
		bdb.Close()
		return nil, fmt.Errorf("history %s: %w", path, err)
	}
	h := &DB{db: bdb, opts: opts, kick: make(chan struct{}, 1), done: make(chan struct{})}
	h.cond = sync.NewCond(&h.mu)
	go h.writer()
	return h, nil
}

// Close commits the queued writes and closes the database.
func (h *DB) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.mu.Unlock()
	close(h.kick)
	<-h.done
	h.mu.Lock()
	werr := h.werr
	h.mu.Unlock()
	return errors.Join(werr, h.db.Close())
}

// PutJob queues a job this worker ran; it has jobs.Events.Job's signature.
func (h *DB) PutJob(ev jobs.JobEvent) {
	j := Job{Kind: KindRan, Start: ev.Start, End: ev.End, JobCID: cidString(ev.JobCID), InputCID: cidString(ev.InputCID),
		Submitter: ev.From.String(), OutputCID: cidString(ev.OutputCID), StderrCID: cidString(ev.StderrCID),
		Status: ev.Status, ExitCode: ev.ExitCode, Signal: ev.Signal,
		CPUMs: ev.CPU.Milliseconds(), WallMs: ev.Wall.Milliseconds(), Receipt: ev.Receipt}
	if ev.Err != nil {
		j.Error = ev.Err.Error()
	}
	h.enqueue(item{job: j})
}

// PutSubmit queues a submit this node made; it has jobs.Events.Submitted's signature.
func (h *DB) PutSubmit(rep *jobs.Report, err error) {
	r := jobs.JSON(rep, err)
	j := Job{Kind: KindSubmitted, End: time.Now(), JobCID: r.JobCID, InputCID: r.InputCID,
		OutputCID: r.OutputCID, StderrCID: r.StderrCID, Status: r.Status, ExitCode: r.ExitCode, Signal: r.Signal,
		Error: r.Error, ErrorKind: r.ErrorKind, Accepted: rep != nil && rep.OutputCID.Defined(),
		Reason: r.Reason, Stderr: r.Stderr, Replicas: r.Replicas, OutputSize: len(r.Output)}
	h.enqueue(item{job: j, output: r.Output})
}

func (h *DB) enqueue(it item) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		h.dropped++
		return
	}
	h.seq++
	it.seq = h.seq
	h.queue = append(h.queue, it)
	h.qbytes += it.size()
	for len(h.queue) > 1 && (len(h.queue) > h.opts.QueueLen || h.qbytes > h.opts.QueueBytes) {
		h.qbytes -= h.queue[0].size()
		h.queue[0] = item{}
		h.queue = h.queue[1:]
		h.dropped++
	}
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Dropped is how many writes were dropped because the queue was full (or the DB closed).
func (h *DB) Dropped() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dropped
}

// Flush waits until every write queued before it is committed, and returns the error of
// the last batch that failed, if any.
func (h *DB) Flush() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	target := h.seq
	for h.written < target && (len(h.queue) > 0 || h.busy) {
		h.cond.Wait()
	}
	return h.werr
}

func (h *DB) writer() {
	defer close(h.done)
	for {
		_, open := <-h.kick
		h.mu.Lock()
		batch := h.queue
		h.queue, h.qbytes, h.busy = nil, 0, len(batch) > 0
		h.mu.Unlock()
		if len(batch) > 0 {
			err := h.update(batch)
			if err != nil {
				h.opts.Logger.Error("history: write failed", "jobs", len(batch), "err", err)
			}
			h.mu.Lock()
			h.werr, h.busy, h.written = err, false, batch[len(batch)-1].seq
			h.cond.Broadcast()
			h.mu.Unlock()
		}
		if !open {
			h.mu.Lock()
			empty := len(h.queue) == 0
			h.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

// update writes batch in one transaction. A panic in bbolt (a damaged page Open did not
// see) is an error: Update's deferred rollback has released the database, and the daemon
// keeps running without that write.
func (h *DB) update(batch []item) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errDamaged, r)
		}
	}()
	return h.db.Update(func(tx *bolt.Tx) error { return h.write(tx, batch) })
}

// write adds a batch in one transaction, updates the totals, and applies retention.
func (h *DB) write(tx *bolt.Tx, batch []item) error {
	jb, ob, meta := tx.Bucket(bucketJobs), tx.Bucket(bucketOutputs), tx.Bucket(bucketMeta)
	var tot Totals
	var use usage
	if err := getJSON(meta, keyTotals, &tot); err != nil {
		return err
	}
	if err := getJSON(meta, keyUsage, &use); err != nil {
		return err
	}
	for _, it := range batch {
		id, err := jb.NextSequence()
		if err != nil {
			return err
		}
		j := it.job
		j.ID = id
		if int64(len(it.output)) <= h.opts.MaxBytes/8 {
			j.OutputKept = true
			if len(it.output) > 0 {
				if err := ob.Put(key(id), it.output); err != nil {
					return err
				}
			}
			use.Bytes += int64(len(it.output))
		}
		v, err := json.Marshal(j)
		if err != nil {
			return err
		}
		if err := jb.Put(key(id), v); err != nil {
			return err
		}
		use.Jobs++
		use.Bytes += int64(len(v))
		if tot.Since.IsZero() {
			tot.Since = j.End
		}
		switch j.Kind {
		case KindRan:
			tot.Ran++
			if j.Error == "" {
				tot.RanOK++
				tot.CPUMs += j.CPUMs
			}
		case KindSubmitted:
			tot.Submitted++
			if j.Accepted {
				tot.Accepted++
			}
		}
	}
	// Retention: the oldest go first.
	c := jb.Cursor()
	for k, v := c.First(); k != nil && (use.Jobs > h.opts.MaxJobs || use.Bytes > h.opts.MaxBytes); k, v = c.First() {
		use.Jobs--
		use.Bytes -= int64(len(v)) + int64(len(ob.Get(k)))
		if err := ob.Delete(k); err != nil {
			return err
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	if err := putJSON(meta, keyTotals, tot); err != nil {
		return err
	}
	return putJSON(meta, keyUsage, use)
}

// Jobs returns the newest limit jobs (all with limit <= 0), newest first.
func (h *DB) Jobs(limit int) ([]Job, error) {
	out := []Job{}
	err := h.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketJobs).Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var j Job
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("job %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	return out, nil
}

// Job returns the job named by ref: its decimal ID, or a job CID (the newest job with it).
// A job not (or no longer) kept is ErrNotFound.
func (h *DB) Job(ref string) (Job, error) {
	var j Job
	err := h.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		if id, err := strconv.ParseUint(ref, 10, 64); err == nil {
			v := b.Get(key(id))
			if v == nil {
				return ErrNotFound
			}
			return json.Unmarshal(v, &j)
		}
		if ref == "" {
			return ErrNotFound
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var cand Job
			if err := json.Unmarshal(v, &cand); err != nil {
				return err
			}
			if cand.JobCID == ref {
				j = cand
				return nil
			}
		}
		return ErrNotFound
	})
	if err != nil {
		return Job{}, fmt.Errorf("job %s: %w", ref, err)
	}
	return j, nil
}

// Output returns the output kept for job id: the accepted output of a submitted job.
// A job without a kept output is ErrNotFound.
func (h *DB) Output(id uint64) ([]byte, error) {
	var out []byte
	err := h.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketJobs).Get(key(id)) == nil {
			return ErrNotFound
		}
		out = append([]byte{}, tx.Bucket(bucketOutputs).Get(key(id))...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("output of job %d: %w", id, err)
	}
	return out, nil
}

// Totals returns the all-time counts.
func (h *DB) Totals() (Totals, error) {
	var t Totals
	err := h.db.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bucketMeta), keyTotals, &t) })
	return t, err
}

// Usage returns what retention counts: jobs kept and their bytes (records and outputs).
func (h *DB) Usage() (jobsKept int, bytes int64, err error) {
	var u usage
	err = h.db.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bucketMeta), keyUsage, &u) })
	return u.Jobs, u.Bytes, err
}

// The generic accessor: other parts of the node (credit records) keep their own buckets
// here, by name, with synchronous, committed writes. Their retention is their own. The
// history's own buckets are not reachable (ErrReserved).

// Put stores value under key in bucket, creating the bucket.
func (h *DB) Put(bucket string, key, value []byte) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	return h.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		return b.Put(key, value)
	})
}

// Append stores value in bucket under the bucket's next sequence number (8 bytes, big
// endian, so keys sort in the order they were appended) and returns the number.
func (h *DB) Append(bucket string, value []byte) (uint64, error) {
	if err := checkBucket(bucket); err != nil {
		return 0, err
	}
	var seq uint64
	err := h.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		if seq, err = b.NextSequence(); err != nil {
			return err
		}
		return b.Put(key(seq), value)
	})
	return seq, err
}

// Get returns a copy of the value under key in bucket, nil if there is none.
func (h *DB) Get(bucket string, key []byte) ([]byte, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, err
	}
	var v []byte
	err := h.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bucket)); b != nil {
			if got := b.Get(key); got != nil {
				v = append([]byte{}, got...)
			}
		}
		return nil
	})
	return v, err
}

// Delete removes key from bucket.
func (h *DB) Delete(bucket string, key []byte) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	return h.db.Update(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bucket)); b != nil {
			return b.Delete(key)
		}
		return nil
	})
}

// ForEach calls fn for every key in bucket in key order until fn returns an error, which
// it returns. k and v are valid only during the call.
func (h *DB) ForEach(bucket string, fn func(k, v []byte) error) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	return h.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bucket)); b != nil {
			return b.ForEach(fn)
		}
		return nil
	})
}

func checkBucket(name string) error {
	switch name {
	case "", string(bucketJobs), string(bucketOutputs), string(bucketMeta):
		return fmt.Errorf("bucket %q: %w", name, ErrReserved)
	}
	return nil
}

func key(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

func getJSON(b *bolt.Bucket, k []byte, v any) error {
	if raw := b.Get(k); raw != nil {
		return json.Unmarshal(raw, v)
	}
	return nil
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

func cidString(c cid.Cid) string {
	if !c.Defined() {
		return ""
	}
	return c.String()
}

// walk reads every key of b and its nested buckets, and seeks each one, so that the
// branch pages' keys (which a write reads) are read too.
func walk(b *bolt.Bucket) error {
	c := b.Cursor()
	return b.ForEach(func(k, v []byte) error {
		if sk, _ := c.Seek(k); !bytes.Equal(sk, k) {
			return fmt.Errorf("key %x not found by seeking it", k)
		}
		if v == nil {
			if sub := b.Bucket(k); sub != nil {
				return walk(sub)
			}
		}
		return nil
	})
}

// errDamaged marks a file bbolt cannot read: a recovered panic, a failed walk, or one of
// its own content errors.
var errDamaged = errors.New("damaged database")

// openChecked opens the database and reads all of it, turning bbolt's panics on a damaged
// file into an error that wraps errDamaged.
func openChecked(path string, opts Options) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("%w: %v", errDamaged, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	switch {
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrChecksum):
		return nil, fmt.Errorf("%w: %w", errDamaged, err)
	case err != nil:
		return nil, err
	}
	// Read every bucket and key here, in this goroutine, so that a page bbolt cannot read
	// panics where it is recovered (tx.Check runs in a goroutine of its own).
	err = db.View(func(tx *bolt.Tx) error {
		if err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walk(b) }); err != nil {
			return err
		}
		return checkPageIDs(path, tx, db.Info().PageSize)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %w", errDamaged, err)
	}
	return db, nil
}

// checkPageIDs checks that every page in use names itself in its header. bbolt takes a
// node's page ID from the header it read, not from where it read it: a damaged ID passed
// the walk (reads never use it) and panicked the first write that changed that page
// ("pgid above high water mark" in Commit, in the writer goroutine: the daemon died).
func checkPageIDs(path string, tx *bolt.Tx, pageSize int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := make([]byte, 8)
	for id, n := 2, int(tx.Size()/int64(pageSize)); id < n; {
		info, err := tx.Page(id)
		if err != nil {
			return err
		}
		if info == nil || info.Type == "free" {
			id++
			continue
		}
		if _, err := f.ReadAt(hdr, int64(id)*int64(pageSize)); err != nil {
			return fmt.Errorf("page %d: %w", id, err)
		}
		if got := binary.LittleEndian.Uint64(hdr); got != uint64(id) {
			return fmt.Errorf("page %d: its header says page %d", id, got)
		}
		id += 1 + info.OverflowCount
	}
	return nil
}
