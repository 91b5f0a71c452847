package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"testing"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

// connected returns two connected hosts.
func connected(t *testing.T) (a, b host.Host) {
	t.Helper()
	a, b = newHost(t), newHost(t)
	if err := a.Connect(context.Background(), addrInfo(b)); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestFetchBlob(t *testing.T) {
	ctx := context.Background()
	client, server := connected(t)
	src, dst := newStore(t), newStore(t)
	ServeBlobs(server, src, nil)
	blob := make([]byte, 3<<20+17)
	rand.Read(blob)
	c, err := src.Put(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	if err := FetchBlob(ctx, client, server.ID(), c, dst, 0); err != nil {
		t.Fatal(err)
	}
	got, err := dst.Get(ctx, c)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("got %d bytes, %v; want %d bytes", len(got), err, len(blob))
	}

	tests := []struct {
		name string
		max  int64
		c    func() []byte
		want error
	}{
		{"not found", 0, func() []byte { return cids.Sum([]byte("nobody has this")).Bytes() }, ErrNotFound},
		{"above max", 1 << 20, func() []byte { return c.Bytes() }, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, _ := cids.Cast(tt.c())
			err := FetchBlob(ctx, client, server.ID(), want, newStore(t), tt.max)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestFetchBlobLiar checks that a peer serving wrong bytes for a CID is caught and that
// nothing is stored.
func TestFetchBlobLiar(t *testing.T) {
	ctx := context.Background()
	real := []byte("the real binary")
	tests := []struct {
		name  string
		serve func(s network.Stream)
		want  error
	}{
		{"wrong bytes", func(s network.Stream) {
			fake := []byte("a different one")
			protocol.WriteMsg(s, &protocol.BlobResponse{Size: uint64(len(fake))})
			s.Write(fake)
		}, cids.ErrMismatch},
		{"short body", func(s network.Stream) {
			protocol.WriteMsg(s, &protocol.BlobResponse{Size: uint64(len(real))})
			s.Write(real[:4])
		}, io.ErrUnexpectedEOF},
		{"right bytes, wrong size", func(s network.Stream) {
			protocol.WriteMsg(s, &protocol.BlobResponse{Size: uint64(len(real) - 1)})
			s.Write(real)
		}, cids.ErrMismatch},
		{"garbage header", func(s network.Stream) {
			s.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		}, protocol.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := connected(t)
			server.SetStreamHandler(protocol.BlobID, func(s network.Stream) {
				var req protocol.BlobRequest
				protocol.ReadMsg(s, &req, protocol.MaxControlMsg)
				tt.serve(s)
				s.Close()
			})
			st := newStore(t)
			err := FetchBlob(ctx, client, server.ID(), cids.Sum(real), st, 0)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if names := dirNames(t, st); len(names) != 0 {
				t.Fatalf("store not empty after a failed fetch: %v", names)
			}
		})
	}
}
