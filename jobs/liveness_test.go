package jobs

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// TestLiveness watches peers that answer pings, that stop answering, that never spoke
// ping, and that disconnect: only the silent and the gone ones end their jobs, the silent
// one within livenessEvery+livenessTimeout.
func TestLiveness(t *testing.T) {
	for _, tt := range []struct {
		name  string
		peer  func(h host.Host) // makes the watched peer h behave
		leave bool              // the peer disconnects once watched
		gone  bool
	}{
		{"answers", func(host.Host) {}, false, false},
		{"silent", func(h host.Host) {
			h.SetStreamHandler(ping.ID, func(s network.Stream) { io.Copy(io.Discard, s) })
		}, false, true},
		{"no ping", func(h host.Host) { h.RemoveStreamHandler(ping.ID) }, false, false},
		{"leaves", func(host.Host) {}, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w, p := newHost(t), newHost(t)
			tt.peer(p)
			if err := w.Connect(context.Background(), peer.AddrInfo{ID: p.ID(), Addrs: p.Addrs()}); err != nil {
				t.Fatal(err)
			}
			var l liveness
			var wg sync.WaitGroup
			ctx, cancel := context.WithCancel(context.Background())
			defer func() { cancel(); wg.Wait() }()
			gone := make(chan time.Time, 2)
			t0 := time.Now()
			unwatch := l.watch(ctx, &wg, w, slog.New(slog.DiscardHandler), p.ID(), func() { gone <- time.Now() })
			unwatch2 := l.watch(ctx, &wg, w, slog.New(slog.DiscardHandler), p.ID(), func() { gone <- time.Now() })
			defer unwatch()
			defer unwatch2()
			if tt.leave {
				p.Close()
			}
			limit := livenessEvery + livenessTimeout + 250*time.Millisecond
			select {
			case at := <-gone:
				if !tt.gone {
					t.Fatalf("gone after %v, want never", at.Sub(t0))
				}
				if d := at.Sub(t0); d > limit {
					t.Errorf("gone after %v, want within %v", d, limit)
				}
				<-gone // both watches are told
			case <-time.After(2 * limit): // long enough to be sure it did not happen
				if tt.gone {
					t.Fatalf("not gone after %v", 2*limit)
				}
			}
		})
	}
}
