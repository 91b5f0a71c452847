package node

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestReleaseLoop checks the memory policy's pacing: a kick releases at once, kicks during
// the interval that follows make one more release at its end, and nothing runs unkicked.
func TestReleaseLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kick := make(chan struct{}, 1)
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		releaseLoop(ctx, kick, 200*time.Millisecond, func() { n.Add(1) })
	}()
	kick <- struct{}{}
	waitUntil(t, 5*time.Second, "the first release", func() bool { return n.Load() == 1 })
	for range 3 { // while the first release's interval runs: coalesced into one
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	waitUntil(t, 5*time.Second, "the coalesced release", func() bool { return n.Load() >= 2 })
	time.Sleep(400 * time.Millisecond) // nothing is expected: there is no event to poll for
	if got := n.Load(); got != 2 {
		t.Errorf("got %d releases for 4 kicks in one interval, want 2", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("releaseLoop did not end with its context")
	}
}
