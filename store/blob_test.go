package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"time"

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
	serve(t, server, src)
	blob := make([]byte, 3<<20+17)
	rand.Read(blob)
	c, err := src.Put(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	if err := Fetch(ctx, client, server.ID(), c, dst, 0); err != nil {
		t.Fatal(err)
	}
	got, err := dst.Get(ctx, c, 0)
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
			err := Fetch(ctx, client, server.ID(), want, newStore(t), tt.max)
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
			err := Fetch(ctx, client, server.ID(), cids.Sum(real), st, 0)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if names := dirNames(t, st); len(names) != 0 {
				t.Fatalf("store not empty after a failed fetch: %v", names)
			}
		})
	}
}

// TestServerClose checks that closing a Server resets the blob streams it is serving,
// waits for their handlers, and refuses new requests.
func TestServerClose(t *testing.T) {
	ctx := context.Background()
	client, server := connected(t)
	st := newStore(t)
	blob := make([]byte, 32<<20) // far more than the transport buffers
	rand.Read(blob)
	c, err := st.Put(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	sv := NewServer(st, nil)
	server.SetStreamHandler(protocol.BlobID, sv.Handle)
	s, err := client.NewStream(ctx, server.ID(), protocol.BlobID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if err := protocol.WriteMsg(s, &protocol.BlobRequest{Cid: c.Bytes()}); err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.ReadBlobHeader(s, MaxBlobSize); err != nil {
		t.Fatal(err)
	}
	// The handler now blocks on flow control: the client reads no more until Close returns.
	closed := make(chan error, 1)
	go func() { closed <- sv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a blob was being served")
	}
	if n, err := io.Copy(io.Discard, s); err == nil || n >= int64(len(blob)) {
		t.Errorf("after Close: read %d of %d bytes, %v; want a reset stream", n, len(blob), err)
	}
	if err := Fetch(ctx, client, server.ID(), c, newStore(t), 0); err == nil {
		t.Error("a closed server still serves")
	}
}
