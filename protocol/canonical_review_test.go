package protocol

import (
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/cids"
)

// TestReviewCanonicalEveryKeyType: envelopes this codebase makes (offers, receipts
// signed alone, seals, credits), under every key type a peer may hold (a credit's
// submitter chooses its own), open through open()'s canonical check, also after the JSON
// round trip of a credit file line.
func TestReviewCanonicalEveryKeyType(t *testing.T) {
	for _, kt := range []struct {
		name string
		typ  int
		bits int
	}{{"ed25519", crypto.Ed25519, 0}, {"rsa2048", crypto.RSA, 2048}, {"secp256k1", crypto.Secp256k1, 0}, {"ecdsa", crypto.ECDSA, 0}} {
		t.Run(kt.name, func(t *testing.T) {
			key, _, err := crypto.GenerateKeyPairWithReader(kt.typ, kt.bits, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			id, err := peer.IDFromPrivateKey(key)
			if err != nil {
				t.Fatal(err)
			}
			r := testReceipt(id)
			alone, err := SealReceipt(r, key)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := r.MarshalRecord()
			seal, sealed, err := SealReceipts([][]byte{p}, key)
			if err != nil {
				t.Fatal(err)
			}
			offer, err := SealOffer(&Offer{Peer: id, Arch: "amd64", SlotsFree: 1, SlotsTotal: 2}, key)
			if err != nil {
				t.Fatal(err)
			}
			credit, err := SealCredit(&Credit{JobCID: cids.Sum([]byte("j")), InputCID: cids.Sum([]byte("i")), Worker: id, Accepted: true,
				ReceiptSHA256: ReceiptHash(sealed[0]), Submitter: id, Time: time.UnixMilli(1)}, key)
			if err != nil {
				t.Fatal(err)
			}
			var line struct{ Envelope []byte }
			j, _ := json.Marshal(struct{ Envelope []byte }{credit})
			if err := json.Unmarshal(j, &line); err != nil {
				t.Fatal(err)
			}
			for name, f := range map[string]func() error{
				"receipt alone": func() error { _, _, err := OpenReceipt(alone); return err },
				"batch receipt": func() error { _, _, err := OpenReceipt(sealed[0]); return err },
				"seal":          func() error { _, err := OpenSeal(seal); return err },
				"offer":         func() error { _, _, err := OpenOffer(offer); return err },
				"credit":        func() error { _, err := OpenCredit(credit); return err },
				"credit line":   func() error { _, err := OpenCredit(line.Envelope); return err },
			} {
				if err := f(); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
		})
	}
}
