package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/ipfs/go-cid"
)

// Probes of Store.Hold (a submit's binary and input served from the caller's memory).

func heldPattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

func scribble(b []byte) {
	for i := range b {
		b[i] ^= 0xff
	}
}

// holdCopy holds a copy of an n-byte pattern in a new store: the pattern, the CID and
// the caller's buffer (the copy) it holds.
func holdCopy(t *testing.T, n int, seed byte) (st *Store, orig []byte, c cid.Cid, b []byte, release func()) {
	st = newStore(t)
	orig = heldPattern(n, seed)
	c = cids.Sum(orig)
	b = bytes.Clone(orig)
	return st, orig, c, b, st.Hold(c, b)
}

// TestHoldAttackSecondHolderBytes: two holders of one CID with their own copies of the
// bytes (two concurrent submits of one binary, each from its own buffer). Once the first
// releases, its caller may reuse its buffer (Request: "do not change them until Submit
// returns"); the second holder's submit must still serve the right bytes.
func TestHoldAttackSecondHolderBytes(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	orig := heldPattern(1<<20, 1)
	c := cids.Sum(orig)
	first := bytes.Clone(orig)
	second := bytes.Clone(orig)
	rel1 := st.Hold(c, first)
	rel2 := st.Hold(c, second)
	defer rel2()
	rel1()
	scribble(first) // the first submit returned: its caller reuses its buffer

	got, err := st.Get(ctx, c, 0)
	if err != nil {
		t.Fatalf("Get while the second hold lasts: %v", err)
	}
	if !bytes.Equal(got, orig) {
		t.Errorf("Get while the second hold lasts: got the first holder's reused buffer (sum %s), want the blob %s", cids.Sum(got), c)
	}
	rc, _, err := st.Open(ctx, c)
	if err != nil {
		t.Fatalf("Open while the second hold lasts: %v", err)
	}
	served, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(served, orig) {
		t.Errorf("Open while the second hold lasts: served %d bytes hashing to %s, %v; want the blob %s", len(served), cids.Sum(served), err, c)
	}
}

// TestHoldAttackOpenOutlivesRelease: a reader Open returned during a hold (a blob being
// served to a straggling worker when Submit returns) must not read the caller's buffer
// after release: the caller is then free to change it.
func TestHoldAttackOpenOutlivesRelease(t *testing.T) {
	ctx := context.Background()
	st, orig, c, b, release := holdCopy(t, 1<<20, 2)
	rc, _, err := st.Open(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	release() // Submit returned
	scribble(b)
	rest, err := io.ReadAll(rc)
	if err == nil && !bytes.Equal(rest, orig[len(head):]) {
		t.Errorf("a reader opened during the hold read the caller's buffer after release: %d bytes, %d of them changed since, and no error",
			len(rest), diff(rest, orig[len(head):]))
	}
}

// TestHoldAttackGetOutlivesRelease: the slice Get returns for a held blob is the caller's
// own; a local job (this node's worker, the API's job_cid path) that got it keeps reading
// it after the submit returned and its caller changed it.
func TestHoldAttackGetOutlivesRelease(t *testing.T) {
	ctx := context.Background()
	st, orig, c, b, release := holdCopy(t, 64<<10, 3)
	got, err := st.Get(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	release()
	scribble(b)
	if !bytes.Equal(got, orig) {
		t.Errorf("bytes Get returned during a hold changed with the holder's buffer after release: they hash to %s, not %s (the worker passes CID %s to the runner's image cache as checked)",
			cids.Sum(got), c, c)
	}
}

// TestHoldAttackServedAfterRelease: the real path of the probe above. A stranger (or a
// straggling worker) asks the submitter for a held 64 MiB blob and reads slowly; the
// submit returns (release) and its caller reuses the buffer. serveBlob is still copying
// from it: the peer is sent changed bytes, and under -race the copy races the caller.
func TestHoldAttackServedAfterRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, orig, c, b, release := holdCopy(t, 64<<20, 4)

	a, p := newHost(t), newHost(t)
	serve(t, p, st)
	if err := a.Connect(ctx, addrInfo(p)); err != nil {
		t.Fatal(err)
	}
	s, err := a.NewStream(ctx, p.ID(), protocol.BlobID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	if err := protocol.WriteMsg(s, &protocol.BlobRequest{Cid: c.Bytes()}); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	size, err := protocol.ReadBlobHeader(s, MaxBlobSize)
	if err != nil || size != int64(len(orig)) {
		t.Fatalf("header: %d, %v", size, err)
	}
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(s, head); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the server fills the window and blocks mid-copy
	release()                          // Submit returned
	scribble(b)                        // its caller reuses the buffer
	s.SetReadDeadline(time.Now().Add(30 * time.Second))
	rest, err := io.ReadAll(s)
	if err != nil {
		t.Logf("stream ended with %v after %d more bytes (a refusal is fine)", err, len(rest))
	}
	if n := diff(rest, orig[len(head):]); n > 0 {
		t.Errorf("served after release: %d of the %d bytes sent after the hold ended were the caller's changed buffer", n, len(rest))
	}
}

func diff(a, b []byte) int {
	n := 0
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// TestHoldAttackMismatchedCID: a hold whose bytes do not hash to its CID (a violated
// precondition) is still caught by every peer that fetches it: FetchBytes and Fetch check
// the hash, and Fetch stores nothing.
func TestHoldAttackMismatchedCID(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	good := heldPattern(1<<16, 5)
	bad := heldPattern(1<<16, 6)
	c := cids.Sum(good)
	defer st.Hold(c, bad)()

	a, p := newHost(t), newHost(t)
	serve(t, p, st)
	if err := a.Connect(ctx, addrInfo(p)); err != nil {
		t.Fatal(err)
	}
	if got, err := FetchBytes(ctx, a, p.ID(), c, 0); !errors.Is(err, cids.ErrMismatch) {
		t.Errorf("FetchBytes of a mismatched hold: got %d bytes, %v; want ErrMismatch", len(got), err)
	}
	other := newStore(t)
	if err := Fetch(ctx, a, p.ID(), c, other, 0); !errors.Is(err, cids.ErrMismatch) {
		t.Errorf("Fetch of a mismatched hold: %v; want ErrMismatch", err)
	}
	if other.Has(c) || other.Used() != 0 {
		t.Error("Fetch of a mismatched hold stored something")
	}
}

// TestHoldAttackWithDiskCopy: a held blob also written to the store (Put, PutBinary,
// Fetch of it) is charged once as a file, survives the release as the file, and the file
// can be evicted under the hold while the hold still serves.
func TestHoldAttackWithDiskCopy(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	st.Quota = 64 << 10 * 64 // 64 files of 64 KiB
	b := heldPattern(64<<10, 7)
	c := cids.Sum(b)
	release := st.Hold(c, b)
	if st.Used() != 0 {
		t.Fatalf("Used with a hold only: %d", st.Used())
	}
	if _, err := st.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	if st.Used() != charge(int64(len(b))) {
		t.Fatalf("Used after Put of a held blob: %d, want %d", st.Used(), charge(int64(len(b))))
	}
	if err := st.PutBinary(ctx, c, b); err != nil {
		t.Fatal(err)
	}
	if st.Used() != charge(int64(len(b))) {
		t.Fatalf("Used after PutBinary of a held, stored blob: %d", st.Used())
	}
	// Evict the file by filling the store with other blobs; the hold still serves.
	for i := range 70 {
		if _, err := st.Put(ctx, heldPattern(64<<10, byte(100+i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := st.blobs[c]; ok {
		t.Log("the file was not evicted (LRU kept it)")
	}
	if got, err := st.Get(ctx, c, 0); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("Get under the hold after eviction: %d bytes, %v", len(got), err)
	}
	release()
	// Released: the file, if kept, is served and checked; if evicted, not found.
	got, err := st.Get(ctx, c, 0)
	switch {
	case err == nil && !bytes.Equal(got, b):
		t.Fatal("Get after release: wrong bytes")
	case err != nil && !errors.Is(err, ErrNotFound):
		t.Fatalf("Get after release: %v", err)
	}
	if st.Used() > st.Quota {
		t.Fatalf("over quota: %d > %d", st.Used(), st.Quota)
	}

	// A Fetch of a held CID into the same store writes the fetched, checked file.
	b2 := heldPattern(1<<16, 8)
	c2 := cids.Sum(b2)
	defer st.Hold(c2, b2)()
	src := newStore(t)
	if _, err := src.Put(ctx, b2); err != nil {
		t.Fatal(err)
	}
	a, p := newHost(t), newHost(t)
	serve(t, p, src)
	if err := a.Connect(ctx, addrInfo(p)); err != nil {
		t.Fatal(err)
	}
	if err := Fetch(ctx, a, p.ID(), c2, st, 0); err != nil {
		t.Fatalf("Fetch of a held CID: %v", err)
	}
	if _, ok := st.blobs[c2]; !ok {
		t.Fatal("Fetch of a held CID: no file recorded")
	}
}

// TestHoldAttackClose: after Close a held blob is neither read nor served, and release
// after Close is harmless.
func TestHoldAttackClose(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	b := heldPattern(4096, 9)
	c := cids.Sum(b)
	release := st.Hold(c, b)
	st.Close()
	if _, err := st.Get(ctx, c, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if _, _, err := st.Open(ctx, c); !errors.Is(err, ErrClosed) {
		t.Errorf("Open after Close: %v, want ErrClosed", err)
	}
	if st.Has(c) {
		t.Error("Has after Close: true for a held blob")
	}
	release()
	release()
	// A Hold after Close is not served either.
	defer st.Hold(c, b)()
	if _, err := st.Get(ctx, c, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Get of a hold taken after Close: %v", err)
	}
}

// TestHoldAttackReleaseLeak: once released, the store keeps no reference to the held
// bytes (the release func itself dropped too): they are collected.
func TestHoldAttackReleaseLeak(t *testing.T) {
	st := newStore(t)
	done := make(chan struct{})
	func() {
		b := heldPattern(8<<20, 10)
		c := cids.Sum(b)
		runtime.AddCleanup(&b[0], func(ch chan struct{}) { close(ch) }, done)
		r1 := st.Hold(c, b)
		r2 := st.Hold(c, b)
		st.Get(context.Background(), c, 0)
		r1()
		r2()
	}()
	for range 50 {
		runtime.GC()
		select {
		case <-done:
			if len(st.held) != 0 {
				t.Fatalf("held map not empty: %d", len(st.held))
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	runtime.KeepAlive(st)
	t.Fatal("the held bytes were not collected after release")
}

// TestHoldAttackConcurrent: Hold, release, Get, Open, Has, Put and Close of one CID at
// once, under -race: no race, no panic, and every read that succeeds has the right bytes.
func TestHoldAttackConcurrent(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	b := heldPattern(256<<10, 11)
	c := cids.Sum(b)
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				rel := st.Hold(c, b)
				switch (g + i) % 4 {
				case 0:
					if got, err := st.Get(ctx, c, 0); err != nil || !bytes.Equal(got, b) {
						errs <- errors.Join(errors.New("Get under a hold"), err)
					}
				case 1:
					rc, _, err := st.Open(ctx, c)
					if err != nil {
						errs <- err
						break
					}
					got, err := io.ReadAll(rc)
					rc.Close()
					if err != nil || !bytes.Equal(got, b) {
						errs <- errors.Join(errors.New("Open under a hold"), err)
					}
				case 2:
					if !st.Has(c) {
						errs <- errors.New("Has under a hold: false")
					}
				case 3:
					if i%50 == 0 {
						if _, err := st.Put(ctx, b); err != nil {
							errs <- err
						}
					}
				}
				rel()
				rel()
				// Unheld (or held by another goroutine): a read is right or not found.
				if got, err := st.Get(ctx, c, 0); err == nil && !bytes.Equal(got, b) {
					errs <- errors.New("Get: wrong bytes")
				} else if err != nil && !errors.Is(err, ErrNotFound) {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
