package protocol

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
)

func testCredit(t testing.TB, submitterSeed uint64) (*Credit, []byte) {
	key, sub := testKey(t, submitterSeed)
	_, worker := testKey(t, 7)
	c := &Credit{JobCID: cids.Sum([]byte("job")), InputCID: cids.Sum([]byte("in")), Worker: worker, CPU: 1234567 * time.Microsecond,
		Accepted: true, ReceiptSHA256: ReceiptHash([]byte("receipt")), Submitter: sub, Time: time.UnixMilli(1764633600000)}
	env, err := SealCredit(c, key)
	if err != nil {
		t.Fatal(err)
	}
	return c, env
}

// TestCredit reads a sealed credit back as a worker does, and refuses one whose signer is
// not its submitter and envelopes of other kinds.
func TestCredit(t *testing.T) {
	c, env := testCredit(t, 1)
	got, err := OpenCredit(env)
	if err != nil {
		t.Fatal(err)
	}
	if got.JobCID != c.JobCID || got.InputCID != c.InputCID || got.Worker != c.Worker || got.CPU != c.CPU || !got.Accepted ||
		!bytes.Equal(got.ReceiptSHA256, c.ReceiptSHA256) || got.Submitter != c.Submitter || !got.Time.Equal(c.Time) {
		t.Errorf("got %+v, want %+v", got, c)
	}
	other, _ := testKey(t, 2)
	forged, err := SealCredit(c, other) // submitter field of key 1, signed by key 2
	if err != nil {
		t.Fatal(err)
	}
	receipt, offer := sealedSeeds(t)
	for name, b := range map[string][]byte{"signed by another key": forged, "a receipt": receipt, "an offer": offer, "empty": nil} {
		if _, err := OpenCredit(b); !errors.Is(err, ErrBadEnvelope) && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: got %v, want %v", name, err, ErrBadEnvelope)
		}
	}
	short := *c
	short.ReceiptSHA256 = []byte{1, 2, 3}
	key, _ := testKey(t, 1)
	if b, err := SealCredit(&short, key); err != nil {
		t.Fatal(err)
	} else if _, err := OpenCredit(b); !errors.Is(err, ErrBadEnvelope) {
		t.Errorf("a short receipt hash: got %v, want %v", err, ErrBadEnvelope)
	}
}

func FuzzOpenCredit(f *testing.F) {
	_, env := testCredit(f, 1)
	receipt, _ := sealedSeeds(f)
	f.Add(env)
	f.Add(receipt)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := OpenCredit(data)
		if err != nil {
			return
		}
		recordRoundTrip(t, c)
	})
}
