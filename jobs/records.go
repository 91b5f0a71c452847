package jobs

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sys/unix"

	"github.com/gridnode/gridnode/internal/atomicfile"
)

// Record is what a submitter has seen of one worker in its own jobs. Only outcomes the
// submitter could judge count: a replica agrees or disagrees with a result a quorum
// accepted, or fails or times out; refusals count nothing.
type Record struct {
	Agreed    int `json:"agreed"`
	Disagreed int `json:"disagreed"`
	Failed    int `json:"failed"`
	TimedOut  int `json:"timed_out"`
	// Contradicted counts adaptive checks where a quorum's worth of other replicas agreed
	// on another verdict and nothing anchored the outcome: not a proven lie, but enough
	// to stop trusting the record.
	Contradicted int       `json:"contradicted,omitempty"`
	FirstSeen    time.Time `json:"first_seen"`
	LastSeen     time.Time `json:"last_seen"`
}

// Established is the record a worker needs before its replica may anchor a quorum: this
// many agreements with accepted results, and never a disagreement. Peer IDs are free, so
// a stranger's agreement proves nothing; a worker gets a record only by agreeing with
// quorums that something else anchored (a trusted peer, a local run, an established
// worker).
const Established = 3

// established reports whether r is an established record.
func (r Record) established() bool {
	return r.Agreed >= Established && r.Disagreed == 0 && r.Contradicted == 0
}

// weight is how likely placement picks a worker with record r, against 1 for a stranger:
// more for agreement (capped, so that no record buys every job), almost never after a
// disagreement.
func (r Record) weight() float64 {
	if r.Disagreed > 0 || r.Contradicted > 0 {
		return 0.01
	}
	return 1 + float64(min(r.Agreed, 20))/4 - float64(min(r.Failed+r.TimedOut, 8))/10
}

// maxRecords bounds a records file: past it, strangers with nothing to their name go
// first, then the rest by when they were last seen; established records and
// disagreements go last (bound). maxRecordsFile bounds the file read (a record is about
// 200 bytes).
const (
	maxRecords     = 10000
	maxRecordsFile = 16 << 20
)

// saveLockWait bounds how long Save waits for another process's save.
const saveLockWait = 5 * time.Second

// Records is a submitter's record of workers by peer ID, kept in a JSON file in the data
// dir so that it survives restarts. A daemon and one-shot submits may share the file:
// Save merges what this process learnt into the file's current content under an flock,
// and writes it atomically (a temporary file renamed over it), so a crash never leaves a
// torn file and no process loses another's updates.
type Records struct {
	path string // "" keeps records in memory only

	saveMu sync.Mutex // one Save at a time
	mu     sync.Mutex
	m      map[peer.ID]Record // as last read, plus delta
	delta  map[peer.ID]Record // what this process learnt since the last Save
}

// OpenRecords reads the records at path ("" for records kept in memory only). A missing
// file is an empty record; an unreadable one is an error.
func OpenRecords(path string) (*Records, error) {
	r := &Records{path: path, m: make(map[peer.ID]Record), delta: make(map[peer.ID]Record)}
	if path == "" {
		return r, nil
	}
	m, err := readRecords(path)
	if err != nil {
		return nil, err
	}
	r.m = m
	return r, nil
}

// recordsFile is the file's form: peer IDs as strings.
type recordsFile struct {
	Version int               `json:"version"`
	Workers map[string]Record `json:"workers"`
}

func readRecords(path string) (map[peer.ID]Record, error) {
	m := make(map[peer.ID]Record)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("worker records: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecordsFile+1))
	if err != nil {
		return nil, fmt.Errorf("worker records: %w", err)
	}
	if len(b) > maxRecordsFile {
		return nil, fmt.Errorf("worker records %s: over %d bytes (move it away to start afresh)", path, maxRecordsFile)
	}
	var rf recordsFile
	if err := json.Unmarshal(b, &rf); err != nil {
		return nil, fmt.Errorf("worker records %s: %w (move it away to start afresh)", path, err)
	}
	for s, rec := range rf.Workers {
		if id, err := peer.Decode(s); err == nil {
			m[id] = rec
		}
	}
	return m, nil
}

// Get returns p's record; a stranger's is zero.
func (r *Records) Get(p peer.ID) Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[p]
}

// establishedPeers returns the workers with an established record.
func (r *Records) establishedPeers() []peer.ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ps []peer.ID
	for p, rec := range r.m {
		if rec.established() {
			ps = append(ps, p)
		}
	}
	return ps
}

// outcome is what one replica adds to its worker's record.
type outcome int

const (
	agreed outcome = iota
	disagreed
	failed
	timedOut
	contradicted
)

// note adds one outcome for p at now.
func (r *Records) note(p peer.ID, o outcome, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range []map[peer.ID]Record{r.m, r.delta} {
		rec := m[p]
		switch o {
		case agreed:
			rec.Agreed++
		case disagreed:
			rec.Disagreed++
		case failed:
			rec.Failed++
		case timedOut:
			rec.TimedOut++
		case contradicted:
			rec.Contradicted++
		}
		if rec.FirstSeen.IsZero() {
			rec.FirstSeen = now
		}
		rec.LastSeen = now
		m[p] = rec
	}
}

// Save merges what this process learnt into the file and writes it. Without a path it
// does nothing.
func (r *Records) Save() error {
	if r.path == "" {
		return nil
	}
	// One save at a time in this process; notes go on meanwhile (r.mu is not held while
	// waiting for another process's lock).
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	r.mu.Lock()
	delta := r.delta
	r.delta = make(map[peer.ID]Record)
	r.mu.Unlock()
	if len(delta) == 0 {
		return nil
	}
	m, err := r.merge(delta)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		for p, d := range delta { // keep them for the next save
			r.delta[p] = addRecord(r.delta[p], d)
		}
		return err
	}
	for p, d := range r.delta { // learnt while saving
		m[p] = addRecord(m[p], d)
	}
	r.m = m
	return nil
}

// merge adds delta to the file under its lock and writes it; it returns what it wrote.
func (r *Records) merge(delta map[peer.ID]Record) (map[peer.ID]Record, error) {
	if err := os.MkdirAll(filepath.Dir(r.path), 0o700); err != nil {
		return nil, fmt.Errorf("worker records: %w", err)
	}
	lock, err := os.OpenFile(r.path+".lock", os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("worker records: %w", err)
	}
	defer lock.Close()
	for deadline := time.Now().Add(saveLockWait); ; {
		err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return nil, fmt.Errorf("worker records: lock %s: %w", lock.Name(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	m, err := readRecords(r.path)
	if err != nil {
		return nil, err
	}
	for p, d := range delta {
		m[p] = addRecord(m[p], d)
	}
	bound(m, maxRecords)
	f := recordsFile{Version: 1, Workers: make(map[string]Record, len(m))}
	for p, rec := range m {
		f.Workers[p.String()] = rec
	}
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return nil, err
	}
	// A crash leaves the old file or the new one; temporary files one left behind go first
	// (the caller holds the file's lock).
	atomicfile.Leftovers(r.path)
	if err := atomicfile.Write(r.path, b, 0o600, true); err != nil {
		return nil, fmt.Errorf("worker records: %w", err)
	}
	return m, nil
}

// addRecord returns rec with d's counts added and its times widened.
func addRecord(rec, d Record) Record {
	rec.Agreed += d.Agreed
	rec.Disagreed += d.Disagreed
	rec.Failed += d.Failed
	rec.TimedOut += d.TimedOut
	rec.Contradicted += d.Contradicted
	if rec.FirstSeen.IsZero() || (!d.FirstSeen.IsZero() && d.FirstSeen.Before(rec.FirstSeen)) {
		rec.FirstSeen = d.FirstSeen
	}
	rec.LastSeen = maxTime(rec.LastSeen, d.LastSeen)
	return rec
}

// keep ranks a record for bound: what a stranger's fresh identities can push out goes
// first. 0: nothing but failures; 1: some agreements; 2: established or a disagreement
// (a liar's disagreement must outlive any number of fresh identities).
func (r Record) keep() int {
	switch {
	case r.established() || r.Disagreed > 0 || r.Contradicted > 0:
		return 2
	case r.Agreed > 0:
		return 1
	}
	return 0
}

// bound drops records until m has at most n: those that matter least first (keep), and
// among equals those seen least recently.
func bound(m map[peer.ID]Record, n int) {
	if len(m) <= n {
		return
	}
	ids := make([]peer.ID, 0, len(m))
	for p := range m {
		ids = append(ids, p)
	}
	slices.SortFunc(ids, func(a, b peer.ID) int {
		return cmp.Or(cmp.Compare(m[a].keep(), m[b].keep()), m[a].LastSeen.Compare(m[b].LastSeen))
	})
	for _, p := range ids[:len(ids)-n] {
		delete(m, p)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
