package jobs

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestHoldAttack2StalledFetchDoesNotHoldSubmit: a stranger asks the submitter for a
// submit's held input (its CID is on the wire to every worker) and stops reading, so that
// serveBlob blocks in a network write mid-blob. The submit must still return as soon as its
// quorum is in (release waits only for in-memory copies, never for a peer), and once it has
// returned and its caller reuses the buffer, the stranger gets the blob's bytes or an error,
// never the caller's new ones.
func TestHoldAttack2StalledFetchDoesNotHoldSubmit(t *testing.T) {
	if testing.Short() {
		t.Skip("24 MiB input")
	}
	hash := transform(func(b []byte) []byte { return cids.Sum(b).Bytes() })
	g := newGrid(t, WorkerConfig{Runner: hash, MaxInput: 32 << 20})
	orig := bytes.Repeat([]byte("0123456789abcdef"), (24<<20)/16) // above MaxInline: held, fetched by CID
	in := bytes.Clone(orig)
	inCID := cids.Sum(in)

	stranger := newHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := stranger.Connect(ctx, addrInfo(g.subHost)); err != nil {
		t.Fatal(err)
	}
	var s network.Stream
	var once sync.Once
	sub2, err := NewSubmitter(SubmitterConfig{
		Host:  g.subHost,
		Store: g.sub.cfg.Store,
		FindWorkers: func(ctx context.Context, arch string) ([]peer.AddrInfo, error) {
			once.Do(func() { // the input is held now
				var err error
				if s, err = stranger.NewStream(ctx, g.subHost.ID(), protocol.BlobID); err != nil {
					t.Error(err)
					return
				}
				protocol.WriteMsg(s, &protocol.BlobRequest{Cid: inCID.Bytes()})
				s.CloseWrite()
				if size, err := protocol.ReadBlobHeader(s, 32<<20); err != nil || size != int64(len(in)) {
					t.Errorf("stranger's header: %d, %v", size, err)
				}
				time.Sleep(300 * time.Millisecond) // serveBlob fills the windows and blocks in Write
			})
			return []peer.AddrInfo{addrInfo(g.hosts[0])}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	sub2.Trust(g.hosts[0].ID())
	done := make(chan error, 1)
	t0 := time.Now()
	go func() {
		_, err := sub2.Submit(ctx, Request{Binary: testBinary, Input: in, Replicas: 1})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the submit has not returned after %v: its release waits on a stranger's stalled blob read", time.Since(t0))
	}
	if s == nil {
		t.Fatal("the stranger's stream did not open")
	}
	defer s.Reset()
	for i := range in {
		in[i] ^= 0xff // the submit returned: its caller reuses the buffer
	}
	s.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(s)
	t.Logf("stranger read %d bytes after the submit returned, then %v", len(got), err)
	if !bytes.HasPrefix(orig, got) {
		t.Errorf("the stranger was served bytes that are not the blob's: the caller's buffer after the submit returned")
	}
}
