//go:build linux && amd64

package sandbox

import (
	"context"
	"testing"

	"github.com/gridnode/gridnode/cids"
)

// TestImageCacheKeysOnTheCID: a job whose CID is set is named in the image cache by that
// CID's digest, which is the binary's SHA-256, so the same binary with or without its CID
// is one image, and two binaries run with their own CIDs exec their own images (read back
// from the run: each exits with its own code).
func TestImageCacheKeysOnTheCID(t *testing.T) {
	a, b := genELF(asmExit(3), 0), genELF(asmExit(5), 0)
	if keyOf(Job{Binary: a, CID: cids.Sum(a)}, Limits{}) != keyOf(Job{Binary: a}, Limits{}) {
		t.Fatal("a binary with its CID and without it are two images")
	}
	if keyOf(Job{Binary: a, CID: cids.Sum(a)}, Limits{}) == keyOf(Job{Binary: b, CID: cids.Sum(b)}, Limits{}) {
		t.Fatal("two binaries are one image")
	}
	var r Runner
	for range 2 { // the second round from the cache
		for bin, want := range map[*[]byte]int{&a: 3, &b: 5} {
			res, err := r.Run(context.Background(), Job{Binary: *bin, CID: cids.Sum(*bin)}, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != StatusExited || res.ExitCode != want {
				t.Fatalf("got %s %d (%s), want exited %d", res.Status, res.ExitCode, res.Reason, want)
			}
		}
	}
	r.images.mu.Lock()
	n := len(r.images.m)
	r.images.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d images cached, want 2", n)
	}
}
