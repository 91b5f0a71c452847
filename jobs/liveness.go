package jobs

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// A submitter that dies leaves no trace on a QUIC connection (UDP has no FIN): its workers
// noticed only at quic-go's next keep-alive, 15 s later, and ran its jobs that long for
// nobody. So while a peer has jobs running, the worker pings it (libp2p's ping protocol,
// one stream per peer however many jobs: a host accepts 2 inbound ping streams per peer)
// every livenessEvery; a ping unanswered within livenessTimeout, or the connection gone,
// cancels all its jobs, so they die within livenessEvery+livenessTimeout (0.75 s) of the
// submitter. A submitter that cannot answer a ping for 0.6 s loses its jobs: the price of
// the grid's 1 s promise. A peer that does not speak ping is not watched. A submitter
// watches its workers the same way, with submitterLivenessTimeout: it makes no such
// promise, and at 0.6 s a process paused by load (CI, under the race detector) reset both
// replicas of a healthy submit once; a killed worker's silent connection now costs it
// 2.15 s instead of 0.75.
const (
	livenessEvery            = 150 * time.Millisecond
	livenessTimeout          = 600 * time.Millisecond
	submitterLivenessTimeout = 2 * time.Second
)

// liveness watches peers with jobs in flight, one ping stream per peer; its zero value is
// ready. The worker watches its submitters; a submitter can watch its workers the same way
// (a killed worker's QUIC connection is as silent).
type liveness struct {
	timeout time.Duration // a ping unanswered this long means the peer is gone; 0: livenessTimeout
	mu      sync.Mutex
	watches map[peer.ID]*peerWatch
}

// peerWatch is the liveness check of one peer.
type peerWatch struct {
	gone map[*func()]struct{} // what to call if the peer stops answering
	stop context.CancelFunc
}

// watch calls gone if p stops answering pings, until unwatch is called. The pings run on
// h, in a goroutine counted in wg (if not nil), until the last watch of p ends or parent
// does.
func (l *liveness) watch(parent context.Context, wg *sync.WaitGroup, h host.Host, log *slog.Logger, p peer.ID, gone func()) (unwatch func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.watches == nil {
		l.watches = make(map[peer.ID]*peerWatch)
	}
	pw := l.watches[p]
	if pw == nil {
		ctx, stop := context.WithCancel(parent)
		pw = &peerWatch{gone: make(map[*func()]struct{}), stop: stop}
		l.watches[p] = pw
		run := func() {
			if pingUntilGone(ctx, h, log, p, cmp.Or(l.timeout, livenessTimeout)) {
				log.Info("peer stopped answering pings: its jobs end", "peer", p)
				l.mu.Lock()
				fs := make([]*func(), 0, len(pw.gone))
				for f := range pw.gone {
					fs = append(fs, f)
				}
				l.mu.Unlock()
				for _, f := range fs {
					(*f)()
				}
			}
		}
		if wg != nil {
			wg.Go(run)
		} else {
			go run()
		}
	}
	key := &gone
	pw.gone[key] = struct{}{}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(pw.gone, key)
		if len(pw.gone) == 0 && l.watches[p] == pw {
			delete(l.watches, p)
			pw.stop()
		}
	}
}

// pingUntilGone pings p from h until ctx ends (false) or p is gone (true).
func pingUntilGone(ctx context.Context, h host.Host, log *slog.Logger, p peer.ID, timeout time.Duration) bool {
	var s network.Stream
	defer func() {
		if s != nil {
			s.Reset()
		}
	}()
	tick := time.NewTicker(livenessEvery)
	defer tick.Stop()
	buf, echo := make([]byte, ping.PingSize), make([]byte, ping.PingSize)
	for {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
		if s == nil {
			sctx, cancel := context.WithTimeout(network.WithNoDial(ctx, "liveness"), timeout)
			var err error
			s, err = h.NewStream(sctx, p, ping.ID)
			cancel()
			switch {
			case ctx.Err() != nil:
				return false
			case err != nil && h.Network().Connectedness(p) != network.Connected:
				return true
			case err != nil:
				log.Debug("liveness: peer does not answer pings; not watched", "peer", p, "err", err)
				return false
			}
		}
		rand.Read(buf)
		s.SetDeadline(time.Now().Add(timeout))
		_, err := s.Write(buf)
		if err == nil {
			_, err = io.ReadFull(s, echo)
		}
		switch {
		case ctx.Err() != nil:
			return false
		case err == nil && bytes.Equal(buf, echo):
			continue
		case os.IsTimeout(err), errors.Is(err, os.ErrDeadlineExceeded), h.Network().Connectedness(p) != network.Connected:
			return true
		}
		// The peer reset the stream (its ping handler ends streams after 30 s) or broke
		// the protocol: a fresh stream at the next tick.
		s.Reset()
		s = nil
	}
}
