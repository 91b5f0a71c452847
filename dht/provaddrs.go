package dht

import (
	"slices"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	ma "github.com/multiformats/go-multiaddr"
)

// NewPeerstore is the peerstore a node's host must use: go-libp2p's, holding at most
// maxPeerAddrs unconnected addresses a peer (its default is 64; addresses of live
// connections are not counted, and a new address past the cap replaces the one that expires
// first). kad-dht puts every stored ADD_PROVIDER's addresses there for ProvideValidity, and
// every provider a lookup is told of for 2 min; the cap is what bounds a peer however many
// messages it sends, on however many streams at once: one Sybil renewing its record on 32
// streams held 64 addresses, and a hostile GET_PROVIDERS answer repeating 1,200 IDs with
// new addresses put 76,802 (helper-42). With it the provider store's maxProviderRecords
// providers hold at most maxProviderRecords × maxPeerAddrs addresses (200,000, a fifth of
// the peerstore's cap of 1,000,000: 62,500 Sybils had filled it, after which an honest
// worker's record was stored without its addresses).
func NewPeerstore() (peerstore.Peerstore, error) {
	return pstoremem.NewPeerstore(pstoremem.WithMaxAddressesPerPeer(maxPeerAddrs))
}

// maxProviderAddrs bounds the addresses kept from one ADD_PROVIDER: an honest worker has one
// or two per transport and address family.
const maxProviderAddrs = 8

// maxKeyLen is the longest key kad-dht's handlers take (handleAddProvider refuses longer).
const maxKeyLen = 80

// screen readies an ADD_PROVIDER from peer from for kad-dht's handler, which runs after it
// (the OnRequestHook in New); other messages pass untouched. It leaves no provider peers,
// so that the handler stores nothing, unless the store admits the record; it keeps only the
// sender's first entry (the handler stored every entry naming the sender: 8 copies put 64
// addresses in the peerstore for one record, 21,076 in one message cost 21,076 store
// calls), and of it at most maxProviderAddrs addresses. ok, if not nil, is the node's
// Dialable filter: the addresses kept are those the handler's own filter keeps.
func (s *providerStore) screen(req *pb.Message, from peer.ID, ok func(ma.Multiaddr) bool) {
	if req.GetType() != pb.Message_ADD_PROVIDER {
		return
	}
	i := slices.IndexFunc(req.ProviderPeers, func(p *pb.Message_Peer) bool { return peer.ID(p.GetId()) == from })
	if i < 0 || !s.admits(req.GetKey(), from) {
		req.ProviderPeers = nil // the handler then stores nothing: "no valid provider"
		return
	}
	mine := req.ProviderPeers[i]
	req.ProviderPeers = []*pb.Message_Peer{mine}
	var addrs, undialable [][]byte
	for _, b := range mine.Addrs {
		a, err := ma.NewMultiaddrBytes(b)
		switch {
		case err != nil:
		case ok == nil || ok(a):
			if len(addrs) < maxProviderAddrs {
				addrs = append(addrs, b)
			}
		case undialable == nil:
			undialable = [][]byte{b}
		}
	}
	if len(addrs) == 0 {
		// kad-dht's handler refuses a record without addresses before it filters them, and
		// stores one whose addresses its filter drops: keep that behaviour (the askers then
		// look the provider up) for a provider with only undialable ones.
		addrs = undialable
	}
	mine.Addrs = addrs
}
