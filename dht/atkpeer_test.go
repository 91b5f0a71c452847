package dht

import (
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// atkNodePeer is a mocknet host with the peerstore a node's host has (NewPeerstore, its
// per-peer address cap), for the attacks that measure what reaches a node's peerstore.
// Its address is in 100::/64, which mocknet uses and nothing routes.
func atkNodePeer(t testing.TB, mn mocknet.Mocknet) host.Host {
	t.Helper()
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := NewPeerstore()
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(id)
	a := ma.StringCast(fmt.Sprintf("/ip6/100::%x:%x/tcp/4242", uint16(b[len(b)-4])<<8|uint16(b[len(b)-3]), uint16(b[len(b)-2])<<8|uint16(b[len(b)-1])))
	if err := ps.AddPrivKey(id, sk); err != nil {
		t.Fatal(err)
	}
	if err := ps.AddPubKey(id, sk.GetPublic()); err != nil {
		t.Fatal(err)
	}
	ps.AddAddr(id, a, peerstore.PermanentAddrTTL)
	h, err := mn.AddPeerWithPeerstore(id, ps)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
