package store

import (
	"testing"

	"github.com/gridnode/gridnode/protocol"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// newHost returns a TCP-only loopback host, closed at the end of the test.
func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableRelay(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func newStore(t testing.TB) *Store {
	t.Helper()
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func addrInfo(h host.Host) peer.AddrInfo { return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()} }

// serve serves st's blobs on h until the end of the test, as a node does.
func serve(t testing.TB, h host.Host, st *Store) *Server {
	sv := NewServer(st, nil)
	h.SetStreamHandler(protocol.BlobID, sv.Handle)
	t.Cleanup(func() {
		h.RemoveStreamHandler(protocol.BlobID)
		sv.Close()
	})
	return sv
}
