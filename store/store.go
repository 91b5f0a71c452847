package store

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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

// tmpPrefix starts the names of partial writes; Open removes those a crash left.
const tmpPrefix = ".tmp-"

// Every file costs at least a filesystem block and an inode: the quota charges each blob
// its size rounded up to blockSize (an empty blob one block), and the store keeps at most
// one file per bytesPerFile of quota (but at least minFiles). Without them 2000 tiny
// binaries of 219 bytes were counted as 438,000 bytes and took 8,192,000 on disk.
const (
	blockSize    = 4 << 10
	bytesPerFile = 64 << 10
	minFiles     = 64
)

// charge is what a blob of size bytes counts against the quota.
func charge(size int64) int64 { return max(blockSize, (size+blockSize-1)&^(blockSize-1)) }

// Store holds content-addressed blobs on disk, one file per blob under dir/blobs, named by
// CID. A read re-checks the hash unless this Store already checked that very file (same
// device and inode, size and mtime, the mtime at least racyMargin older than the check)
// since it was opened: a file rewritten or replaced (truncated, copied over, written in
// place) is hashed again, and a file that no longer matches is deleted and reported as
// cids.ErrMismatch. What was checked is kept in memory only, so after a restart (a crash
// that tore a file) every file is re-checked on its first read. A local writer that puts
// the old mtime back on a same-size file rewritten in place is not noticed: it runs as the
// daemon's user, which owns the 0700 directory. The blobs' total charge (see
// charge) and their number stay under a quota: writing a new blob first evicts the least
// recently used blobs no job is using; only a job's own use of a blob (Get, PutBinary)
// makes it recently used, not serving it to other peers. It is safe for concurrent use by
// one process (the quota is kept in memory: a data dir belongs to one node).
type Store struct {
	dir string

	// Quota bounds the bytes of blobs kept, each counted in whole blocks; 0 means
	// DefaultQuota. It also bounds the number of blobs, to one per 64 KiB (at least 64).
	// Set it before use.
	Quota int64

	// Provide, if set before the store is used, is called with the CID of every blob that
	// PutBinary stores, new or already there: job binaries that passed validation (the node
	// provides them on the DHT). Put and PutReader do not call it.
	Provide func(c cid.Cid)

	mu            sync.Mutex
	closed        bool
	blobs         map[cid.Cid]*entry
	lru           *list.List // of *entry, the most recently used at the front
	used          int64      // charge of the blobs in blobs
	reserved      int64      // charge of writes in progress
	reservedFiles int        // writes in progress
	pins          map[cid.Cid]int
	held          map[cid.Cid][]*hold // the live holds of each held blob (Hold)
}

// hold is one caller's hold of a blob (Hold): its bytes, read only under mu, so that
// release can wait out a copy under way and no read touches b once release returns.
type hold struct {
	mu sync.RWMutex
	b  []byte // nil once released
}

// entry is what the store knows of one blob.
type entry struct {
	c       cid.Cid
	size    int64
	elem    *list.Element // in Store.lru
	checked fs.FileInfo   // the file as it was when its hash last matched; nil if never
	mtime   time.Time     // the file's, as last known
}

// mtimeGrain is how stale a used blob's mtime, which gives the LRU order across restarts,
// may get: setting it makes the next read re-check the hash, so it is not set on every use.
const mtimeGrain = time.Hour

// sameFile reports whether a and b describe the same unchanged file.
func sameFile(a, b fs.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// Open opens (creating it if needed) the store in dir. It removes partial writes left by a
// crash and evicts blobs down to DefaultQuota; a store with another Quota applies it on its
// next write. The files' mtimes give the LRU order across restarts.
func Open(dir string) (*Store, error) {
	d := filepath.Join(dir, "blobs")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{dir: d, blobs: make(map[cid.Cid]*entry), lru: list.New(), pins: make(map[cid.Cid]int), held: make(map[cid.Cid][]*hold)}
	ents, err := os.ReadDir(d)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	type found struct {
		c    cid.Cid
		size int64
		last time.Time
	}
	var kept []found
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
		kept = append(kept, found{c, fi.Size(), fi.ModTime()})
	}
	slices.SortFunc(kept, func(a, b found) int { return a.last.Compare(b.last) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range kept {
		s.add(f.c, f.size, nil, f.last)
	}
	s.evict(0, 0)
	return s, nil
}

// Close makes every later read and write fail with ErrClosed; reads and writes under way
// finish. The store holds no file open between calls, so there is nothing else to release.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *Store) path(c cid.Cid) string { return filepath.Join(s.dir, c.String()) }

func (s *Store) quota() int64 {
	if s.Quota > 0 {
		return s.Quota
	}
	return DefaultQuota
}

func (s *Store) maxFiles() int { return int(max(s.quota()/bytesPerFile, minFiles)) }

// Used returns what the store's blobs count against the quota: their sizes, each rounded
// up to whole 4 KiB blocks.
func (s *Store) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Pin keeps blob c (held now or stored later) from eviction until the returned func is
// called; counted, since several jobs may use one blob.
func (s *Store) Pin(c cid.Cid) (unpin func()) {
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

// fits reports whether need more bytes and files more files fit under the quota.
// Preconditions: s.mu is held.
func (s *Store) fits(need int64, files int) bool {
	return s.used+s.reserved+need <= s.quota() && len(s.blobs)+s.reservedFiles+files <= s.maxFiles()
}

// evict removes least recently used unpinned blobs until need more bytes and files more
// files fit under the quota, and reports whether they do. It walks the LRU list from its
// old end once: its cost is the victims and the pinned blobs it steps over, not the blobs
// kept (a scan of every blob per victim took 9.8 s to evict 19,153 tiny blobs for one 4 MiB
// binary). Preconditions: s.mu is held.
func (s *Store) evict(need int64, files int) bool {
	for el := s.lru.Back(); el != nil && !s.fits(need, files); {
		prev := el.Prev()
		if e := el.Value.(*entry); s.pins[e.c] == 0 {
			os.Remove(s.path(e.c))
			s.forget(e.c)
		}
		el = prev
	}
	return s.fits(need, files)
}

// add counts blob c of size bytes, whose file has mtime, as the most recently used,
// replacing what the store knew of c; checked is the file as checked, or nil.
// Preconditions: s.mu is held.
func (s *Store) add(c cid.Cid, size int64, checked fs.FileInfo, mtime time.Time) {
	s.forget(c)
	e := &entry{c: c, size: size, checked: checked, mtime: mtime}
	e.elem = s.lru.PushFront(e)
	s.blobs[c] = e
	s.used += charge(size)
}

// forget drops c from the accounting. Preconditions: s.mu is held.
func (s *Store) forget(c cid.Cid) {
	if e, ok := s.blobs[c]; ok {
		s.used -= charge(e.size)
		s.lru.Remove(e.elem)
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

// touch marks c as just used by a local job.
func (s *Store) touch(c cid.Cid) {
	now := time.Now()
	s.mu.Lock()
	e, ok := s.blobs[c]
	persist := ok && now.Sub(e.mtime) > mtimeGrain
	if ok {
		s.lru.MoveToFront(e.elem)
	}
	if persist {
		e.mtime = now
	}
	s.mu.Unlock()
	if persist {
		os.Chtimes(s.path(c), now, now) // best effort
	}
}

// reserve makes room for a write of up to n bytes, evicting as needed; release returns
// the reservation.
func (s *Store) reserve(c cid.Cid, n int64) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("put %s: %w", c, ErrClosed)
	}
	n = charge(n)
	if n > s.quota() {
		return nil, fmt.Errorf("put %s: %w: %d bytes, store quota %d", c, ErrTooLarge, n, s.quota())
	}
	if !s.evict(n, 1) {
		return nil, fmt.Errorf("put %s: %w: %d bytes do not fit beside the blobs in use", c, ErrFull, n)
	}
	s.reserved += n
	s.reservedFiles++
	return func() {
		s.mu.Lock()
		s.reserved -= n
		s.reservedFiles--
		s.mu.Unlock()
	}, nil
}

// Hold makes blob c, whose bytes are b, readable (Get, Open, Has) from b itself until
// release is called, without writing it: a submit's binary and input are in the
// submitter's memory already, and writing a 32 MiB binary first took about a third of a
// 48 MiB submit's wall time. A held blob is not charged to the quota and is not kept
// once released. Holds of one CID nest, each with its own bytes: reads go to a live one,
// so a caller may change b as soon as release returns, whoever else still holds c or is
// still reading it (a straggling worker's fetch then fails, it does not get changed
// bytes). Preconditions: c is cids.Sum(b), and b is not changed until release returns.
// release may be called more than once.
func (s *Store) Hold(c cid.Cid, b []byte) (release func()) {
	h := &hold{b: b}
	s.mu.Lock()
	s.held[c] = append(s.held[c], h)
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			hs := slices.DeleteFunc(s.held[c], func(x *hold) bool { return x == h })
			if len(hs) == 0 {
				delete(s.held, c)
			} else {
				s.held[c] = hs
			}
			s.mu.Unlock()
			// No new read can find h now; wait for the copies under way.
			h.mu.Lock()
			h.b = nil
			h.mu.Unlock()
		})
	}
}

// readHeld calls f with the bytes of a live hold of c, under that hold's read lock (f
// must copy what it keeps), and reports whether c is held.
func (s *Store) readHeld(c cid.Cid, f func(b []byte)) bool {
	s.mu.Lock()
	hs := s.held[c]
	if len(hs) == 0 || s.closed {
		s.mu.Unlock()
		return false
	}
	h := hs[0]
	// h cannot be released between here and RLock: its release removes it from s.held
	// (under s.mu) before it takes h.mu.
	h.mu.RLock()
	s.mu.Unlock()
	defer h.mu.RUnlock()
	f(h.b)
	return true
}

// heldReader reads a held blob, one copy at a time from whichever hold is live.
type heldReader struct {
	st   *Store
	c    cid.Cid
	off  int64
	size int64
}

// maxHeldCopy bounds one read of a held blob: how long a release may wait for it.
const maxHeldCopy = 1 << 20

func (r *heldReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), maxHeldCopy, r.size-r.off)]
	n, sized := 0, false
	held := r.st.readHeld(r.c, func(b []byte) {
		// Holds of c have its bytes (Hold's precondition); one that does not must not
		// panic or stall the server.
		if sized = int64(len(b)) == r.size; sized {
			n = copy(p, b[r.off:])
		}
	})
	switch {
	case !held:
		return 0, fmt.Errorf("read %s: %w: released while it was read", r.c, ErrNotFound)
	case !sized:
		return 0, fmt.Errorf("read %s: %w: a hold of it has another size", r.c, cids.ErrMismatch)
	}
	r.off += int64(n)
	return n, nil
}

func (r *heldReader) Close() error { return nil }

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

// holds reports whether the store's file for c exists and holds exactly b. A file this
// Store checked, unchanged since, is not read again (a batch resubmitting one 32 MiB
// binary read and compared it on every submit).
func (s *Store) holds(c cid.Cid, b []byte) bool {
	f, err := os.Open(s.path(c))
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() != int64(len(b)) {
		return false
	}
	if s.wasChecked(c, fi) {
		return true
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
// of content-addressed blobs whose first read after a restart re-checks the hash, so a file
// torn by a crash is found on its next read, deleted and fetched again. Measured on a 64 MiB fetch over
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
	// The bytes written hash to c (checked by v, or c was computed from them): the file
	// counts as checked, so serving it or using it is not hashed again. Its mtime is set
	// back past racyMargin, so that any later write to it, however soon, changes the mtime
	// the check is tied to.
	mtime := time.Now().Add(-racyMargin - time.Second)
	var fi fs.FileInfo
	if err = os.Chtimes(tmp.Name(), mtime, mtime); err == nil {
		fi, err = tmp.Stat()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("put %s: %w", c, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Rename(tmp.Name(), s.path(c)); err != nil {
		return fmt.Errorf("put %s: %w", c, err)
	}
	s.add(c, n, fi, fi.ModTime()) // it replaces any copy there was
	return nil
}

// Get returns the blob c, checking its hash (see Store), as a job's use of it. A blob
// larger than maxSize (0 means MaxBlobSize) is ErrTooLarge, unread. A file this Store
// already checked, unchanged since, is read without hashing it again: a stranger naming a
// stored 64 MiB binary in job after job made the worker read and hash it each time
// (1.2-1.8 GB/s of work for 99-byte requests). A held blob (Hold) is returned as a copy:
// a job of this node's own worker may outlive the submit that holds it.
func (s *Store) Get(ctx context.Context, c cid.Cid, maxSize int64) ([]byte, error) {
	if maxSize <= 0 || maxSize > MaxBlobSize {
		maxSize = MaxBlobSize
	}
	var held []byte
	size := int64(-1)
	if s.readHeld(c, func(b []byte) {
		if size = int64(len(b)); size <= maxSize {
			held = bytes.Clone(b)
		}
	}) {
		if size > maxSize {
			return nil, fmt.Errorf("get %s: %w: %d bytes, limit %d", c, ErrTooLarge, size, maxSize)
		}
		return held, nil
	}
	f, fi, err := s.open(ctx, c)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size = fi.Size()
	if size > maxSize {
		return nil, fmt.Errorf("get %s: %w: %d bytes, limit %d", c, ErrTooLarge, size, maxSize)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(ctxReader{ctx, f}, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: blob shrank while reading", cids.ErrMismatch)
			s.remove(c)
		}
		return nil, fmt.Errorf("get %s: %w", c, err)
	}
	if n, _ := f.Read(make([]byte, 1)); n > 0 {
		s.remove(c)
		return nil, fmt.Errorf("get %s: %w: blob grew while reading", c, cids.ErrMismatch)
	}
	after, serr := f.Stat()
	unchanged := serr == nil && sameFile(fi, after)
	if !unchanged || !s.wasChecked(c, fi) {
		v := cids.NewVerifier(c)
		v.Write(b)
		if err := v.Verify(); err != nil {
			s.remove(c)
			return nil, fmt.Errorf("get %s: %w", c, err)
		}
		if unchanged {
			s.checked(c, fi)
		}
	}
	s.touch(c)
	return b, nil
}

// wasChecked reports whether the store checked c's hash in the file fi describes, unchanged.
func (s *Store) wasChecked(c cid.Cid, fi fs.FileInfo) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.blobs[c]
	return ok && sameFile(e.checked, fi)
}

// racyMargin is how old a file's mtime must be for its identity to be trusted: a write in
// the same timestamp tick as the check (coarse on Linux, 1 s or 2 s on some filesystems)
// would leave the mtime as it was (git's "racily clean" entries).
const racyMargin = 2 * time.Second

// checked records that the file fi describes holds blob c, if its mtime is old enough to
// show a later change.
func (s *Store) checked(c cid.Cid, fi fs.FileInfo) {
	if time.Since(fi.ModTime()) < racyMargin {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.blobs[c]; ok {
		e.checked = fi
	}
}

// Has reports whether the store holds a file for c, or holds c in memory (Hold); it does
// not check the hash.
func (s *Store) Has(c cid.Cid) bool {
	if cids.Check(c) != nil {
		return false
	}
	if s.readHeld(c, func([]byte) {}) {
		return true
	}
	_, err := os.Stat(s.path(c))
	return err == nil
}

// Open returns a reader of blob c and its size, for serving it to another peer; serving
// does not make the blob recently used (a stranger's blob requests kept its own blobs and
// got an honest binary evicted). The reader checks the hash as it goes, unless this Store
// already checked that very file, unchanged since (as Get): at the end, instead of io.EOF,
// a corrupted blob yields an error wrapping cids.ErrMismatch, and its file is deleted.
// (Hashing a binary just stored, once per worker fetching it, took a third of the
// submitter's CPU while it sent a 32 MiB job to two workers.) A held blob is read from
// memory, copied out of a live hold as it goes (see Hold).
func (s *Store) Open(ctx context.Context, c cid.Cid) (io.ReadCloser, int64, error) {
	size := int64(-1)
	if s.readHeld(c, func(b []byte) { size = int64(len(b)) }) {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		return &heldReader{st: s, c: c, size: size}, size, nil
	}
	f, fi, err := s.open(ctx, c)
	if err != nil {
		return nil, 0, err
	}
	if s.wasChecked(c, fi) {
		return f, fi.Size(), nil
	}
	return &checkedFile{f: f, fi: fi, c: c, st: s, v: cids.NewVerifier(c)}, fi.Size(), nil
}

// open opens blob c's file and stats it.
func (s *Store) open(ctx context.Context, c cid.Cid) (*os.File, fs.FileInfo, error) {
	if err := cids.Check(c); err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", c, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, nil, fmt.Errorf("open %s: %w", c, ErrClosed)
	}
	f, err := os.Open(s.path(c))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("open %s: %w", c, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", c, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open %s: %w", c, err)
	}
	if fi.Size() > MaxBlobSize {
		f.Close()
		s.remove(c)
		return nil, nil, fmt.Errorf("open %s: %w: %d bytes on disk", c, cids.ErrMismatch, fi.Size())
	}
	return f, fi, nil
}

// checkedFile hashes what is read and checks the hash at EOF.
type checkedFile struct {
	f  *os.File
	fi fs.FileInfo // f when opened
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
		if after, serr := r.f.Stat(); serr == nil && sameFile(r.fi, after) {
			r.st.checked(r.c, r.fi)
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
