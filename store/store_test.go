package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/ipfs/go-cid"
)

func TestStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	for _, b := range [][]byte{nil, []byte("hello"), bytes.Repeat([]byte("big"), 1<<20)} {
		c, err := st.Put(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if want := cids.Sum(b); !c.Equals(want) {
			t.Fatalf("got cid %s, want %s", c, want)
		}
		if !st.Has(c) {
			t.Fatalf("Has(%s): got false", c)
		}
		got, err := st.Get(ctx, c, 0)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("Get: got %d bytes, %v; want %d bytes", len(got), err, len(b))
		}
		rc, size, err := st.Open(ctx, c)
		if err != nil || size != int64(len(b)) {
			t.Fatalf("Open: got size %d, %v; want %d", size, err, len(b))
		}
		got, err = io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("Open+ReadAll: got %d bytes, %v", len(got), err)
		}
	}
}

func TestStoreNotFound(t *testing.T) {
	st := newStore(t)
	c := cids.Sum([]byte("absent"))
	if st.Has(c) {
		t.Fatal("Has: got true for an absent blob")
	}
	if _, err := st.Get(context.Background(), c, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
}

func TestStoreCorruption(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(path string) error
	}{
		{"flipped byte", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[3] ^= 1
			return os.WriteFile(p, b, 0o600)
		}},
		{"truncated", func(p string) error { return os.Truncate(p, 2) }},
		{"grown", func(p string) error {
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteString("more")
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			st := newStore(t)
			c, err := st.Put(ctx, []byte("precious data"))
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.corrupt(st.path(c)); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Get(ctx, c, 0); !errors.Is(err, cids.ErrMismatch) {
				t.Fatalf("Get: got %v, want ErrMismatch", err)
			}
			if st.Has(c) {
				t.Fatal("corrupted file was not deleted")
			}
			// Open, as used to serve a blob, detects it at the end too.
			if _, err := st.Put(ctx, []byte("precious data")); err != nil {
				t.Fatal(err)
			}
			tt.corrupt(st.path(c))
			rc, _, err := st.Open(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(rc)
			rc.Close()
			if !errors.Is(err, cids.ErrMismatch) {
				t.Fatalf("Open+ReadAll: got %v, want ErrMismatch", err)
			}
		})
	}
}

func TestStorePutReaderRejects(t *testing.T) {
	ctx := context.Background()
	data := []byte("the real bytes")
	tests := []struct {
		name string
		in   []byte
		max  int64
		want error
	}{
		{"wrong bytes", []byte("other bytes"), 100, cids.ErrMismatch},
		{"truncated", data[:5], 100, cids.ErrMismatch},
		{"above max", data, 5, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore(t)
			err := st.PutReader(ctx, cids.Sum(data), bytes.NewReader(tt.in), tt.max)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if names := dirNames(t, st); len(names) != 0 {
				t.Fatalf("store dir not empty after a failed put: %v", names)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		st := newStore(t)
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := st.PutReader(ctx, cids.Sum(data), bytes.NewReader(data), 100); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

func TestStoreConcurrentPut(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	data := bytes.Repeat([]byte("concurrent"), 100000)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := st.PutReader(ctx, cids.Sum(data), bytes.NewReader(data), 0); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := st.Get(ctx, cids.Sum(data), 0)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	if names := dirNames(t, st); len(names) != 1 || strings.HasPrefix(names[0], ".tmp") {
		t.Fatalf("got files %v, want just the blob", names)
	}
}

func dirNames(t *testing.T, st *Store) []string {
	t.Helper()
	ents, err := os.ReadDir(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, filepath.Base(e.Name()))
	}
	return names
}

// TestPutRepairsTornFile checks that Put rewrites a stored copy of the right size whose
// bytes are wrong, as a crash without fsync can leave behind.
func TestPutRepairsTornFile(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	blob := []byte("a blob that a crash tore")
	c, err := st.Put(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st.path(c), make([]byte, len(blob)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, blob); err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(ctx, c, 0)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("got %q, %v; want %q", got, err, blob)
	}
}

// TestStoreQuota fills a store with a 12 KiB quota with 4 KiB blobs: the least recently used
// unpinned ones go first, a blob above the quota is refused, and so is one that fits only by
// evicting pinned blobs. Only a local use (Get) makes a blob recently used, not serving it.
func TestStoreQuota(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	st.Quota = 12 << 10
	blob := func(i byte) []byte { return bytes.Repeat([]byte{i}, 4<<10) }
	var cs []cid.Cid
	for i := range byte(3) {
		c, err := st.Put(ctx, blob(i))
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	if _, err := st.Get(ctx, cs[0], 0); err != nil { // now 1 is the least recently used
		t.Fatal(err)
	}
	rc, _, err := st.Open(ctx, cs[1]) // serving it does not change that
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	c3, err := st.Put(ctx, blob(3))
	if err != nil {
		t.Fatal(err)
	}
	for c, want := range map[cid.Cid]bool{cs[0]: true, cs[1]: false, cs[2]: true, c3: true} {
		if got := st.Has(c); got != want {
			t.Errorf("Has(%s): got %v, want %v", c, got, want)
		}
	}
	if got := st.Used(); got != 12<<10 {
		t.Errorf("used: got %d, want %d", got, 12<<10)
	}
	if _, err := st.Put(ctx, make([]byte, 12<<10+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("blob above the quota: got %v, want ErrTooLarge", err)
	}
	unpin := []func(){st.Pin(cs[0]), st.Pin(cs[2]), st.Pin(c3)}
	if _, err := st.Put(ctx, blob(4)); !errors.Is(err, ErrFull) {
		t.Errorf("all blobs pinned: got %v, want ErrFull", err)
	}
	unpin[0]()
	if _, err := st.Put(ctx, blob(4)); err != nil || st.Has(cs[0]) {
		t.Errorf("after unpinning one: got %v, evicted %v; want it evicted", err, !st.Has(cs[0]))
	}
}

// TestStoreQuotaCharges checks what a blob counts against the quota: its size in whole
// 4 KiB blocks (an empty blob one block), and at most one file per 64 KiB of quota (at
// least 64 files).
func TestStoreQuotaCharges(t *testing.T) {
	for _, tt := range []struct {
		size, want int64
	}{{0, 4096}, {1, 4096}, {219, 4096}, {4096, 4096}, {4097, 8192}, {1 << 20, 1 << 20}} {
		if got := charge(tt.size); got != tt.want {
			t.Errorf("charge(%d): got %d, want %d", tt.size, got, tt.want)
		}
	}
	ctx := context.Background()
	st := newStore(t)
	st.Quota = 128 * bytesPerFile // 128 files of 1 byte, though 2048 blocks would fit
	var first cid.Cid
	for i := range 200 {
		c, err := st.Put(ctx, []byte{byte(i), byte(i >> 8)})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = c
		}
	}
	if names := dirNames(t, st); len(names) != 128 || st.Used() != 128*blockSize {
		t.Errorf("got %d files, Used %d; want 128 files, %d", len(names), st.Used(), 128*blockSize)
	}
	if st.Has(first) {
		t.Error("the least recently used blob was kept")
	}
}

// TestStoreSkipsRehash checks that a file the store hashed on a read, unchanged since, is
// marked checked (later reads skip the hash), and that one replaced by a file of the same
// size and mtime is hashed again: its corrupted bytes are found and the file deleted.
// (TestStoreCorruption: files changed in place, just after they were written.)
func TestStoreSkipsRehash(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	blob := []byte("a blob read by many jobs")
	c, err := st.Put(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour) // a write this recent could leave the mtime unchanged
	if err := os.Chtimes(st.path(c), old, old); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(st.path(c))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.Get(ctx, c, 0); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("Get: got %q, %v", got, err)
	}
	if !st.wasChecked(c, fi) {
		t.Fatal("a blob read and hashed is not marked checked")
	}
	// The same size and even the same mtime, but a new inode: as a copy put in its place.
	torn := st.path(c) + ".new"
	if err := os.WriteFile(torn, make([]byte, len(blob)), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(torn, fi.ModTime(), fi.ModTime())
	if err := os.Rename(torn, st.path(c)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, c, 0); !errors.Is(err, cids.ErrMismatch) {
		t.Fatalf("replaced file: got %v, want ErrMismatch", err)
	}
	if st.Has(c) {
		t.Error("the corrupted file was kept")
	}
}

// TestStoreRemovesPartialWrites checks that Open removes the temporary files a crash
// leaves behind mid-write, and counts the blobs it keeps.
//
// With the defence off (run once: no cleanup in Open) both 4 MiB partial writes stayed:
// "got files [.tmp-123 .tmp-456 bafk…]".
func TestStoreRemovesPartialWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Put(ctx, []byte("kept"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{tmpPrefix + "123", tmpPrefix + "456"} {
		if err := os.WriteFile(filepath.Join(st.dir, name), make([]byte, 4<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, st); len(names) != 1 || names[0] != c.String() {
		t.Errorf("after reopening: got files %v, want just %s", names, c)
	}
	if got := st.Used(); got != blockSize {
		t.Errorf("used: got %d, want %d (4 bytes in one block)", got, blockSize)
	}
}

// TestStoreClose checks that a closed store neither reads nor writes.
func TestStoreClose(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	c, err := st.Put(ctx, []byte("kept"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, c, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Get: got %v, want ErrClosed", err)
	}
	if _, _, err := st.Open(ctx, c); !errors.Is(err, ErrClosed) {
		t.Errorf("Open: got %v, want ErrClosed", err)
	}
	if _, err := st.Put(ctx, []byte("new")); !errors.Is(err, ErrClosed) {
		t.Errorf("Put: got %v, want ErrClosed", err)
	}
}

// TestStoreFreshBlobChecked: a blob the store just wrote counts as checked, so it is served
// and read without hashing it again; a write to its file right after, even of the same
// size within the racy margin, moves the mtime it was checked at and is caught by Open and
// by Get.
func TestStoreFreshBlobChecked(t *testing.T) {
	ctx := context.Background()
	good := bytes.Repeat([]byte("good"), 1<<16)
	evil := bytes.Repeat([]byte("evil"), 1<<16)
	for _, read := range []string{"open", "get"} {
		t.Run(read, func(t *testing.T) {
			st := newStore(t)
			c, err := st.Put(ctx, good)
			if err != nil {
				t.Fatal(err)
			}
			if rc, _, err := st.Open(ctx, c); err != nil {
				t.Fatal(err)
			} else if _, isFile := rc.(*os.File); !isFile {
				t.Errorf("a blob the store wrote is served through %T, want its file unhashed", rc)
				rc.Close()
			} else {
				rc.Close()
			}
			f, err := os.OpenFile(st.path(c), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(evil, 0)
			f.Close()
			if read == "get" {
				if _, err := st.Get(ctx, c, 0); !errors.Is(err, cids.ErrMismatch) {
					t.Fatalf("Get after an in-place write: got %v, want ErrMismatch", err)
				}
				return
			}
			rc, _, err := st.Open(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(rc)
			rc.Close()
			if !errors.Is(err, cids.ErrMismatch) {
				t.Fatalf("Open after an in-place write: got %v, want ErrMismatch", err)
			}
		})
	}
}
