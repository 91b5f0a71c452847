package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
)

// TestFinalHeldStoreMemoReplacedFile: a checked blob whose file is replaced (a new inode
// renamed over it) with other bytes of the same size and the same mtime is hashed again
// and refused; so is one rewritten in place (the mtime moves), and one written within the
// racy margin is not memoised.
func TestFinalHeldStoreMemoReplacedFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	good := bytes.Repeat([]byte("good"), 4096)
	c, err := s.Put(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	p := s.path(c)
	old := time.Now().Add(-time.Minute)
	os.Chtimes(p, old, old)
	for range 2 { // the first read checks and memoises, the second uses the memo
		if b, err := s.Get(ctx, c, 0); err != nil || !bytes.Equal(b, good) {
			t.Fatalf("get: %v", err)
		}
	}
	fi, _ := os.Stat(p)
	evil := bytes.Repeat([]byte("evil"), 4096)
	tmp := filepath.Join(filepath.Dir(p), "x")
	os.WriteFile(tmp, evil, 0o600)
	os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	os.Rename(tmp, p)
	if b, err := s.Get(ctx, c, 0); !errors.Is(err, cids.ErrMismatch) {
		t.Errorf("replaced file, same size and mtime: got %v, %d bytes equal to evil: %v", err, len(b), bytes.Equal(b, evil))
	}
	// In place within the racy margin: never memoised.
	if _, err := s.Put(ctx, good); err != nil {
		t.Fatal(err)
	}
	s.Get(ctx, c, 0)
	f, _ := os.OpenFile(p, os.O_WRONLY, 0)
	f.WriteAt(evil, 0)
	f.Close()
	if _, err := s.Get(ctx, c, 0); !errors.Is(err, cids.ErrMismatch) {
		t.Errorf("rewritten in place: got %v", err)
	}
}
