package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/gridnode/gridnode/cids"
)

// TestHold: a held blob is read and served from the caller's memory, never written to the
// store's directory nor charged to its quota, and is gone once every hold of it ends.
func TestHold(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	b := bytes.Repeat([]byte("held"), 1<<18) // 1 MiB
	c := cids.Sum(b)
	release := st.Hold(c, b)
	again := st.Hold(c, b) // holds nest

	if !st.Has(c) {
		t.Fatal("Has: got false for a held blob")
	}
	got, err := st.Get(ctx, c, 0)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("Get: got %d bytes, %v; want %d bytes", len(got), err, len(b))
	}
	if _, err := st.Get(ctx, c, int64(len(b))-1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Get under a smaller limit: got %v, want ErrTooLarge", err)
	}
	// Served to another peer, over the blob protocol, from memory.
	a, p := newHost(t), newHost(t)
	serve(t, p, st)
	if err := a.Connect(ctx, addrInfo(p)); err != nil {
		t.Fatal(err)
	}
	got, err = FetchBytes(ctx, a, p.ID(), c, 0)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("fetch: got %d bytes, %v; want %d bytes", len(got), err, len(b))
	}
	if _, err := os.Stat(st.path(c)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("held blob's file: got %v, want none written", err)
	}
	if n := st.Used(); n != 0 {
		t.Fatalf("quota used: got %d bytes, want 0 for a held blob", n)
	}

	release()
	release() // a second call is no second release
	if !st.Has(c) {
		t.Fatal("Has after one of two releases: got false")
	}
	again()
	if st.Has(c) {
		t.Fatal("Has after every release: got true")
	}
	if _, err := st.Get(ctx, c, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after release: got %v, want ErrNotFound", err)
	}
	if _, err := FetchBytes(ctx, a, p.ID(), c, 0); err == nil {
		t.Fatal("fetch after release: got the blob, want a refusal")
	}
}

// TestHoldEmpty: an empty blob can be held (an empty input).
func TestHoldEmpty(t *testing.T) {
	st := newStore(t)
	c := cids.Sum(nil)
	defer st.Hold(c, nil)()
	if got, err := st.Get(context.Background(), c, 0); err != nil || len(got) != 0 {
		t.Fatalf("Get: got %d bytes, %v; want the empty blob", len(got), err)
	}
}
