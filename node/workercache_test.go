package node

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestWorkerCache(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1000, 0)
	c := &workerCache{ttl: 2 * time.Second, now: func() time.Time { return now }}
	var calls atomic.Int32
	answer := []peer.AddrInfo{{ID: "a"}, {ID: "b"}}
	var fail error
	find := func(context.Context) ([]peer.AddrInfo, error) {
		calls.Add(1)
		if fail != nil {
			return nil, fail
		}
		return answer, nil
	}
	steps := []struct {
		name      string
		after     time.Duration
		answer    []peer.AddrInfo
		fail      error
		wantCalls int32
		wantN     int
	}{
		{"first lookup", 0, answer, nil, 1, 2},
		{"fresh: cached", time.Second, nil, nil, 1, 2},
		{"stale: looked up again", 2 * time.Second, answer[:1], nil, 2, 1},
		{"fresh again", time.Second, nil, nil, 2, 1},
		{"an empty answer", 2 * time.Second, []peer.AddrInfo{}, nil, 3, 0},
		{"is not cached", 0, answer, nil, 4, 2},
		{"a failure", 3 * time.Second, nil, errors.New("no dht"), 5, 0},
		{"is not cached either", 0, answer, nil, 6, 2},
	}
	for _, s := range steps {
		now = now.Add(s.after)
		if s.answer != nil {
			answer = s.answer
		}
		fail = s.fail
		got, err := c.get(ctx, "linux/amd64", find)
		if (err != nil) != (s.fail != nil) || len(got) != s.wantN || calls.Load() != s.wantCalls {
			t.Fatalf("%s: got %d workers, %v, %d lookups; want %d, error %v, %d lookups", s.name, len(got), err, calls.Load(), s.wantN, s.fail, s.wantCalls)
		}
	}
	if got, _ := c.get(ctx, "linux/arm64", find); calls.Load() != 7 || len(got) != 2 {
		t.Fatalf("another arch: got %d lookups and %d workers, want 7 and 2", calls.Load(), len(got))
	}
}

// TestWorkerCacheShared checks that concurrent callers share one lookup.
func TestWorkerCacheShared(t *testing.T) {
	c := &workerCache{ttl: time.Minute, now: time.Now}
	release := make(chan struct{})
	var calls atomic.Int32
	find := func(context.Context) ([]peer.AddrInfo, error) {
		calls.Add(1)
		<-release
		return []peer.AddrInfo{{ID: "a"}}, nil
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if got, err := c.get(context.Background(), "x", find); err != nil || len(got) != 1 {
				t.Errorf("got %v, %v", got, err)
			}
		})
	}
	for deadline := time.Now().Add(5 * time.Second); calls.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("got %d lookups for 8 concurrent callers, want 1", n)
	}
}
