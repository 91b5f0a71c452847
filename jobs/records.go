package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sys/unix"
)

// Record is what a submitter has seen of one worker in its own jobs. Only outcomes the
// submitter could judge count: a replica agrees or disagrees with a result a quorum
// accepted, or fails or times out; refusals count nothing.
type Record struct {
	Agreed    int       `json:"agreed"`
	Disagreed int       `json:"disagreed"`
	Failed    int       `json:"failed"`
	TimedOut  int       `json:"timed_out"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// Established is the record a worker needs before its replica may anchor a quorum: this
// many agreements with accepted results, and never a disagreement. Peer IDs are free, so
// a stranger's agreement proves nothing; a worker gets a record only by agreeing with
// quorums that something else anchored (a trusted peer, a local run, an established
// worker).
const Established = 3

// established reports whether r is an established record.
func (r Record) established() bool { return r.Agreed >= Established && r.Disagreed == 0 }

// weight is how likely placement picks a worker with record r, against 1 for a stranger:
// more for agreement (capped, so that no record buys every job), almost never after a
// disagreement.
func (r Record) weight() float64 {
	if r.Disagreed > 0 {
		return 0.01
	}
	return 1 + float64(min(r.Agreed, 20))/4 - float64(min(r.Failed+r.TimedOut, 8))/10
}

// maxRecords bounds a records file: past it, the workers seen least recently are dropped.
const maxRecords = 10000

// Records is a submitter's record of workers by peer ID, kept in a JSON file in the data
// dir so that it survives restarts. A daemon and one-shot submits may share the file:
// Save merges what this process learnt into the file's current content under an flock,
// and writes it atomically (a temporary file renamed over it), so a crash never leaves a
// torn file and no process loses another's updates.
type Records struct {
	path string // "" keeps records in memory only

	mu    sync.Mutex
	m     map[peer.ID]Record // as last read, plus delta
	delta map[peer.ID]Record // what this process learnt since the last Save
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
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("worker records: %w", err)
	}
	var f recordsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("worker records %s: %w (move it away to start afresh)", path, err)
	}
	for s, rec := range f.Workers {
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

// outcome is what one replica adds to its worker's record.
type outcome int

const (
	agreed outcome = iota
	disagreed
	failed
	timedOut
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
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.delta) == 0 {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(r.path), 0o700); err != nil {
		return fmt.Errorf("worker records: %w", err)
	}
	lock, err := os.OpenFile(r.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("worker records: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("worker records: lock: %w", err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	m, err := readRecords(r.path)
	if err != nil {
		return err
	}
	for p, d := range r.delta {
		rec := m[p]
		rec.Agreed += d.Agreed
		rec.Disagreed += d.Disagreed
		rec.Failed += d.Failed
		rec.TimedOut += d.TimedOut
		if rec.FirstSeen.IsZero() || (!d.FirstSeen.IsZero() && d.FirstSeen.Before(rec.FirstSeen)) {
			rec.FirstSeen = d.FirstSeen
		}
		rec.LastSeen = maxTime(rec.LastSeen, d.LastSeen)
		m[p] = rec
	}
	bound(m, maxRecords)
	f := recordsFile{Version: 1, Workers: make(map[string]Record, len(m))}
	for p, rec := range m {
		f.Workers[p.String()] = rec
	}
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return err
	}
	if err := writeAtomic(r.path, b); err != nil {
		return fmt.Errorf("worker records: %w", err)
	}
	r.m, r.delta = m, make(map[peer.ID]Record)
	return nil
}

// bound drops the records seen least recently until m has at most n.
func bound(m map[peer.ID]Record, n int) {
	if len(m) <= n {
		return
	}
	ids := make([]peer.ID, 0, len(m))
	for p := range m {
		ids = append(ids, p)
	}
	slices.SortFunc(ids, func(a, b peer.ID) int { return m[a].LastSeen.Compare(m[b].LastSeen) })
	for _, p := range ids[:len(ids)-n] {
		delete(m, p)
	}
}

// writeAtomic writes b to path through a synced temporary file renamed over it.
func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
