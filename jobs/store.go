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

	"github.com/gridnode/gridnode/cids"
	"github.com/ipfs/go-cid"
)

// copyBuffer is the chunk size for streaming blobs: larger than io.Copy's 32 KiB, which
// costs throughput on fast links.
const copyBuffer = 256 << 10

// MaxBlobSize bounds every blob the store accepts or returns.
const MaxBlobSize = 256 << 20

// Store holds content-addressed blobs on disk, one file per blob under dir/blobs, named by
// CID. Every read re-checks the hash: a file that no longer matches is deleted and reported
// as cids.ErrMismatch. It is safe for concurrent use, also by several processes.
type Store struct {
	dir string

	// Added, if set before the store is used, is called with the CID of every blob that
	// Put or PutReader stores, new or already there (the node provides them on the DHT).
	Added func(c cid.Cid)
}

// OpenStore opens (creating it if needed) the store in dir.
func OpenStore(dir string) (*Store, error) {
	d := filepath.Join(dir, "blobs")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return &Store{dir: d}, nil
}

func (s *Store) path(c cid.Cid) string { return filepath.Join(s.dir, c.String()) }

// Put stores b and returns its CID.
func (s *Store) Put(ctx context.Context, b []byte) (cid.Cid, error) {
	c := cids.Sum(b)
	if !s.holds(c, b) {
		// c was just computed from b: writing needs no second hash.
		if err := s.write(ctx, c, bytes.NewReader(b), int64(len(b)), nil); err != nil {
			return cid.Undef, err
		}
	}
	s.added(c)
	return c, nil
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
	if err := s.write(ctx, want, r, maxSize, cids.NewVerifier(want)); err != nil {
		return err
	}
	s.added(want)
	return nil
}

// write stores at most maxSize bytes from r as blob c, checking them with v unless v is nil.
//
// It writes a temporary file and renames it into place, without fsync: the store is a cache
// of content-addressed blobs whose every read re-checks the hash, so a file torn by a crash
// is found on its next read, deleted and fetched again. Measured on a 64 MiB fetch over
// loopback, fsync cost about a third of the transfer time.
func (s *Store) write(ctx context.Context, c cid.Cid, r io.Reader, maxSize int64, v *cids.Verifier) (err error) {
	tmp, err := os.CreateTemp(s.dir, ".tmp-*")
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
	if err := os.Rename(tmp.Name(), s.path(c)); err != nil {
		return fmt.Errorf("put %s: %w", c, err)
	}
	return nil
}

func (s *Store) added(c cid.Cid) {
	if s.Added != nil {
		s.Added(c)
	}
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
		os.Remove(p)
		return nil, 0, fmt.Errorf("open %s: %w: %d bytes on disk", c, cids.ErrMismatch, fi.Size())
	}
	return &checkedFile{f: f, path: p, v: cids.NewVerifier(c)}, fi.Size(), nil
}

// checkedFile hashes what is read and checks the hash at EOF.
type checkedFile struct {
	f    *os.File
	path string
	v    *cids.Verifier
}

func (r *checkedFile) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	r.v.Write(p[:n])
	if err == io.EOF {
		if verr := r.v.Verify(); verr != nil {
			os.Remove(r.path)
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
