package protocol

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/cids"
)

// FuzzReview9PeekCredit: PeekCredit reads strangers' bytes before any signature check; it
// never panics, and whatever OpenCredit accepts it reads the same.
func FuzzReview9PeekCredit(f *testing.F) {
	k, _, _ := crypto.GenerateEd25519Key(nil)
	id, _ := peer.IDFromPrivateKey(k)
	env, err := SealCredit(&Credit{JobCID: cids.Sum([]byte("j")), InputCID: cids.Sum(nil), Worker: id, CPU: time.Second, Accepted: true,
		ReceiptSHA256: ReceiptHash([]byte("r")), Submitter: id, Time: time.UnixMilli(1)}, k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(env)
	f.Add([]byte{})
	f.Add(env[:len(env)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		p, perr := PeekCredit(b)
		c, err := OpenCredit(b)
		if err != nil {
			return
		}
		if perr != nil || p.JobCID != c.JobCID || p.Worker != c.Worker || p.Submitter != c.Submitter || p.CPU != c.CPU || string(p.ReceiptSHA256) != string(c.ReceiptSHA256) {
			t.Errorf("peek got %+v, %v; open got %+v", p, perr, c)
		}
	})
}
