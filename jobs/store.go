package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/ipfs/go-cid"
)

// copyBuffer is the chunk size for streaming blobs: larger than io.Copy's 32 KiB, which
// costs throughput on fast links.
const copyBuffer = 256 << 10

// MaxBlobSize bounds every blob the store accepts or returns.
const MaxBlobSize = 256 << 20

// DefaultQuota is the most a store keeps on disk unless configured otherwise.
const DefaultQuota = 2 << 30

// tmpPrefix starts the names of partial writes; OpenStore removes those a crash left.
const tmpPrefix = ".tmp-"

// Store holds content-addressed blobs on disk, one file per blob under dir/blobs, named by
// CID. Every read re-checks the hash: a file that no longer matches is deleted and reported
// as cids.ErrMismatch. The blobs' total size stays under a quota: writing a new blob first
// evicts the least recently used blobs no job is using. It is safe for concurrent use by one
// process (the quota is kept in memory: a data dir belongs to one node).
type Store struct {
	dir string

	// Quota bounds the bytes of blobs kept; 0 means DefaultQuota. Set it before use.
	Quota int64

	// Provide, if set before the store is used, is called with the CID of every blob that
	// PutBinary stores, new or already there: job binaries that passed validation (the node
	// provides them on the DHT). Put and PutReader do not call it.
	Provide func(c cid.Cid)

	mu       sync.Mutex
	blobs    map[cid.Cid]*entry
	used     int64 // bytes of the blobs in blobs
	reserved int64 // bytes of writes in progress
	pins     map[cid.Cid]int
}

// entry is what the store knows of one blob for its quota.
type entry struct {
	size int64
	last time.Time // last use, for LRU eviction; the file's mtime across restarts
}

// OpenStore opens (creating it if needed) the store in dir. It removes partial writes left
// by a crash and evicts blobs down to DefaultQuota; a store with another Quota applies it
// on its next write.
func OpenStore(dir string) (*Store, error) {
	d := filepath.Join(dir, "blobs")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{dir: d, blobs: make(map[cid.Cid]*entry), pins: make(map[cid.Cid]int)}
	ents, err := os.ReadDir(d)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			os.Remove(filepath.Join(d, name))
			continue
		}
		c, err := cid.Decode(name)
		if err != nil || cids.Check(c) != nil || c.String() != name || !e.Type().IsRegular() {
			continue // not a blob: never served, not counted
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		s.blobs[c] = &entry{size: fi.Size(), last: fi.ModTime()}
		s.used += fi.Size()
	}
	s.mu.Lock()
	s.evict(0)
	s.mu.Unlock()
	return s, nil
}

func (s *Store) path(c cid.Cid) string { return filepath.Join(s.dir, c.String()) }

func (s *Store) quota() int64 {
	if s.Quota > 0 {
		return s.Quota
	}
	return DefaultQuota
}

// Used returns the bytes of blobs the store holds.
func (s *Store) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// pin keeps blob c (held now or stored later) from eviction until the returned func is
// called; counted, since several jobs may use one blob.
func (s *Store) pin(c cid.Cid) (unpin func()) {
	s.mu.Lock()
	s.pins[c]++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.pins[c]--; s.pins[c] <= 0 {
				delete(s.pins, c)
			}
		})
	}
}

// evict removes least recently used unpinned blobs until need more bytes fit under the
// quota, and reports whether they do. Preconditions: s.mu is held.
func (s *Store) evict(need int64) bool {
	q := s.quota()
	for s.used+s.reserved+need > q {
		var victim cid.Cid
		var oldest *entry
		for c, e := range s.blobs {
			if s.pins[c] == 0 && (oldest == nil || e.last.Before(oldest.last)) {
				victim, oldest = c, e
			}
		}
		if oldest == nil {
			return false
		}
		os.Remove(s.path(victim))
		s.forget(victim)
	}
	return true
}

// forget drops c from the accounting. Preconditions: s.mu is held.
func (s *Store) forget(c cid.Cid) {
	if e, ok := s.blobs[c]; ok {
		s.used -= e.size
		delete(s.blobs, c)
	}
}

// remove deletes blob c's file (found corrupted).
func (s *Store) remove(c cid.Cid) {
	s.mu.Lock()
	defer s.mu.Unlock()
	os.Remove(s.path(c))
	s.forget(c)
}

// touch marks c as just used.
func (s *Store) touch(c cid.Cid) {
	now := time.Now()
	s.mu.Lock()
	e, ok := s.blobs[c]
	if ok {
		e.last = now
	}
	s.mu.Unlock()
	if ok {
		os.Chtimes(s.path(c), now, now) // LRU order across restarts; best effort
	}
}

// reserve makes room for a write of up to n bytes, evicting as needed; release returns
// the reservation.
func (s *Store) reserve(c cid.Cid, n int64) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > s.quota() {
		return nil, fmt.Errorf("put %s: %w: %d bytes, store quota %d", c, ErrTooLarge, n, s.quota())
	}
	if !s.evict(n) {
		return nil, fmt.Errorf("put %s: %w: %d bytes do not fit beside the blobs in use", c, ErrFull, n)
	}
	s.reserved += n
	return func() {
		s.mu.Lock()
		s.reserved -= n
		s.mu.Unlock()
	}, nil
}

// Put stores b and returns its CID.
func (s *Store) Put(ctx context.Context, b []byte) (cid.Cid, error) {
	c := cids.Sum(b)
	return c, s.putSum(ctx, c, b)
}

// PutBinary stores b, a job binary that passed validation and hashes to c, and calls
// Provide. Preconditions: c is cids.Sum(b).
func (s *Store) PutBinary(ctx context.Context, c cid.Cid, b []byte) error {
	if err := s.putSum(ctx, c, b); err != nil {
		return err
	}
	if s.Provide != nil {
		s.Provide(c)
	}
	return nil
}

// putSum stores b as blob c. Preconditions: c is cids.Sum(b).
func (s *Store) putSum(ctx context.Context, c cid.Cid, b []byte) error {
	if s.holds(c, b) {
		s.touch(c)
		return nil
	}
	// c was computed from b: writing needs no second hash.
	return s.write(ctx, c, bytes.NewReader(b), int64(len(b)), nil)
}

// holds reports whether the store's file for c exists and holds exactly b.
func (s *Store) holds(c cid.Cid, b []byte) bool {
	f, err := os.Open(s.path(c))
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != int64(len(b)) {
		return false
	}
	buf := make([]byte, min(copyBuffer, len(b)))
	for off := 0; off < len(b); {
		n, err := io.ReadFull(f, buf[:min(len(buf), len(b)-off)])
		if err != nil || !bytes.Equal(buf[:n], b[off:off+n]) {
			return false
		}
		off += n
	}
	return true
}

// PutReader stores the blob read from r, hashing while it writes; a blob that does not hash
// to want or is longer than maxSize (0 means MaxBlobSize) is discarded.
func (s *Store) PutReader(ctx context.Context, want cid.Cid, r io.Reader, maxSize int64) error {
	if err := cids.Check(want); err != nil {
		return fmt.Errorf("put %s: %w", want, err)
	}
	if maxSize <= 0 || maxSize > MaxBlobSize {
		maxSize = MaxBlobSize
	}
	return s.write(ctx, want, r, maxSize, cids.NewVerifier(want))
}

// write stores at most maxSize bytes from r as blob c, checking them with v unless v is nil.
// Room for maxSize bytes is made first, under the quota.
//
// It writes a temporary file and renames it into place, without fsync: the store is a cache
// of content-addressed blobs whose every read re-checks the hash, so a file torn by a crash
// is found on its next read, deleted and fetched again. Measured on a 64 MiB fetch over
// loopback, fsync cost about a third of the transfer time.
func (s *Store) write(ctx context.Context, c cid.Cid, r io.Reader, maxSize int64, v *cids.Verifier) (err error) {
	release, err := s.reserve(c, maxSize)
	if err != nil {
		return err
	}
	defer release()
	tmp, err := os.CreateTemp(s.dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("put %s: %w", c, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var w io.Writer = tmp
	if v != nil {
		w = io.MultiWriter(tmp, v)
	}
	n, err := io.CopyBuffer(w, ctxReader{ctx, io.LimitReader(r, maxSize+1)}, make([]byte, copyBuffer))
	if err != nil {
		return fmt.Errorf("put %s: %w", c, err)
	}
	if n > maxSize {
		return fmt.Errorf("put %s: %w: more than %d bytes", c, ErrTooLarge, maxSize)
	}
	if v != nil {
		if err := v.Verify(); err != nil {
			return fmt.Errorf("put %s: %w", c, err)
		}
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("put %s: %w", c, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Rename(tmp.Name(), s.path(c)); err != nil {
		return fmt.Errorf("put %s: %w", c, err)
	}
	s.forget(c) // a copy it replaced
	s.blobs[c] = &entry{size: n, last: time.Now()}
	s.used += n
	return nil
}

// Get returns the blob c, checking its hash.
func (s *Store) Get(ctx context.Context, c cid.Cid) ([]byte, error) {
	return s.get(ctx, c, MaxBlobSize)
}

// get is Get for a blob of at most maxSize bytes; a larger one is ErrTooLarge, unread.
func (s *Store) get(ctx context.Context, c cid.Cid, maxSize int64) ([]byte, error) {
	rc, size, err := s.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > maxSize {
		return nil, fmt.Errorf("get %s: %w: %d bytes, limit %d", c, ErrTooLarge, size, maxSize)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("get %s: %w", c, err)
	}
	// Reading to EOF makes the reader check the hash.
	if _, err := rc.Read(make([]byte, 1)); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("%w: blob grew while reading", cids.ErrMismatch)
		}
		return nil, fmt.Errorf("get %s: %w", c, err)
	}
	return b, nil
}

// Has reports whether the store holds a file for c; it does not check the hash.
func (s *Store) Has(c cid.Cid) bool {
	if cids.Check(c) != nil {
		return false
	}
	_, err := os.Stat(s.path(c))
	return err == nil
}

// Open returns a reader of blob c and its size, for serving it. The reader checks the hash
// as it goes: at the end, instead of io.EOF, a corrupted blob yields an error wrapping
// cids.ErrMismatch, and its file is deleted.
func (s *Store) Open(ctx context.Context, c cid.Cid) (io.ReadCloser, int64, error) {
	if err := cids.Check(c); err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", c, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	p := s.path(c)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("open %s: %w", c, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", c, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open %s: %w", c, err)
	}
	if fi.Size() > MaxBlobSize {
		f.Close()
		s.remove(c)
		return nil, 0, fmt.Errorf("open %s: %w: %d bytes on disk", c, cids.ErrMismatch, fi.Size())
	}
	s.touch(c)
	return &checkedFile{f: f, c: c, st: s, v: cids.NewVerifier(c)}, fi.Size(), nil
}

// checkedFile hashes what is read and checks the hash at EOF.
type checkedFile struct {
	f  *os.File
	c  cid.Cid
	st *Store
	v  *cids.Verifier
}

func (r *checkedFile) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	r.v.Write(p[:n])
	if err == io.EOF {
		if verr := r.v.Verify(); verr != nil {
			r.st.remove(r.c)
			return n, verr
		}
	}
	return n, err
}

func (r *checkedFile) Close() error { return r.f.Close() }

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
