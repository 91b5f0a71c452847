package dht

// Attack review of c7f79f2: DHT.FindPeer returns the addresses a lookup heard of a peer
// it did not reach. Passing tests are defences that held; what they log is what one
// hostile server can make FindPeer return.

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// TestFindPeerAttackForgedAddrs: one hostile server (the client's only DHT peer) answers
// FIND_NODE for an ID nobody runs with that ID at 1,000 addresses of its choosing. FindPeer
// reports it found (nil error) at addresses nobody reached: the caller (node.locate)
// then notes no miss and dials them. Held: at most maxPeerAddrs (16) addresses come back,
// and FindPeer ends at once.
func TestFindPeerAttackForgedAddrs(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	evil, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	nobody := atkID(t)
	addrs := make([][]byte, 1000)
	for i := range addrs {
		a := []byte{0x04, 198, 51, byte(i >> 8), byte(i), 0x06, 0, 0} // /ip4/198.51.x.y/tcp/4001
		binary.BigEndian.PutUint16(a[6:], 4001)
		addrs[i] = a
	}
	atk2Hostile(evil, func(req *pb.Message) *pb.Message {
		resp := pb.NewMessage(req.GetType(), req.GetKey(), 0)
		if req.GetType() == pb.Message_FIND_NODE && string(req.GetKey()) == string(nobody) {
			resp.CloserPeers = []*pb.Message_Peer{{Id: []byte(nobody), Addrs: addrs}}
		}
		return resp
	})
	d, _ := atk2Client(t, mn, evil, ModeClient)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
	defer fcancel()
	start := time.Now()
	ai, err := d.FindPeer(fctx, nobody)
	took := time.Since(start)
	t.Logf("FindPeer of an ID nobody runs, one hostile answer: err %v, %d addresses, %v", err, len(ai.Addrs), took)
	if len(ai.Addrs) > maxPeerAddrs {
		t.Errorf("FindPeer returned %d forged addresses, bound %d", len(ai.Addrs), maxPeerAddrs)
	}
	if took > 3*time.Second {
		t.Errorf("FindPeer took %v with a 2 s context", took)
	}
}

// TestFindPeerAttackStalled: the client's only DHT peer reads FIND_NODE and never answers.
// FindPeer ends with its context (node.locate's 2 s) and returns no address: held.
func TestFindPeerAttackStalled(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	evil, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	nobody := atkID(t)
	atk2Hostile(evil, func(req *pb.Message) *pb.Message {
		if string(req.GetKey()) == string(nobody) {
			return nil
		}
		return pb.NewMessage(req.GetType(), req.GetKey(), 0)
	})
	d, _ := atk2Client(t, mn, evil, ModeClient)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer fcancel()
	start := time.Now()
	ai, err := d.FindPeer(fctx, nobody)
	took := time.Since(start)
	t.Logf("FindPeer against a stalling server: err %v, %d addresses, %v", err, len(ai.Addrs), took)
	if err == nil || len(ai.Addrs) > 0 || took > 2*time.Second {
		t.Errorf("FindPeer against a stalling server: %v, %v after %v", ai, err, took)
	}
}
