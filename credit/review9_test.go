package credit

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/history"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
)

func review9Keeper(t *testing.T, opts Options) (*Keeper, peer.ID) {
	t.Helper()
	db, err := history.Open(filepath.Join(t.TempDir(), "h.db"), history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	_, self := newKey(t)
	k, err := Open(db, self, opts)
	if err != nil {
		t.Fatal(err)
	}
	return k, self
}

// TestReview9CreditStrangerCostsNoSignatureCheck: a stranger for whom this worker ran no
// job can open /gridnode/credit/1.0.0 streams without end (rcmgr bounds only how many are
// open at once, 2 per peer); every delivery was verified before anything cheaper was
// looked at, with a key the stranger chooses (RSA up to 8192 bits: one precomputed
// envelope, resent, cost the worker a full verification each time). A record naming no
// receipt this worker sealed for the sender must be refused before the signature is
// checked: here with a broken signature it must say ErrNotRun, not ErrForged.
func TestReview9CreditStrangerCostsNoSignatureCheck(t *testing.T) {
	k, self := review9Keeper(t, Options{})
	key, _, err := crypto.GenerateRSAKeyPair(4096, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := peer.IDFromPrivateKey(key)
	env, err := protocol.SealCredit(&protocol.Credit{JobCID: cids.Sum([]byte("j")), InputCID: cids.Sum(nil), Worker: self, CPU: time.Second,
		Accepted: true, ReceiptSHA256: protocol.ReceiptHash([]byte("never sealed")), Submitter: sub, Time: time.Now()}, key)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	start := time.Now()
	for range n {
		if _, err := k.Accept(sub, env); err == nil {
			t.Fatal("kept a record for a job never run")
		}
	}
	t.Logf("one stranger's resent RSA-4096 envelope: %v of the worker's CPU per delivery", time.Since(start)/n)
	bad := append([]byte(nil), env...)
	bad[len(bad)-1] ^= 1 // the signature is the envelope's last field
	if _, err := k.Accept(sub, bad); !errors.Is(err, ErrNotRun) {
		t.Errorf("a broken signature naming no receipt of ours: got %v, want ErrNotRun (refused before the signature check)", err)
	}
}

// TestReview9CreditReplayAfterEviction: a record dropped for the per-submitter bound was
// accepted again when resent (one per receipt only while it is kept), evicting the next
// oldest: a submitter past the bound could cycle its records through the database without
// end, two fsynced writes per delivery. A dropped record's receipt earns nothing again.
func TestReview9CreditReplayAfterEviction(t *testing.T) {
	k, self := review9Keeper(t, Options{MaxPerSubmitter: 2})
	key, sub := newKey(t)
	envs := make([][]byte, 3)
	for i := range envs {
		receipt := []byte{byte(i), 'r'}
		ev := jobs.JobEvent{From: sub, JobCID: cids.Sum([]byte{byte(i)}), InputCID: cids.Sum(nil), CPU: time.Duration(i+1) * time.Second, Receipt: receipt}
		k.NoteRan(ev)
		env, err := protocol.SealCredit(&protocol.Credit{JobCID: ev.JobCID, InputCID: ev.InputCID, Worker: self, CPU: ev.CPU, Accepted: true,
			ReceiptSHA256: protocol.ReceiptHash(receipt), Submitter: sub, Time: time.Now()}, key)
		if err != nil {
			t.Fatal(err)
		}
		envs[i] = env
		if _, err := k.Accept(sub, env); err != nil {
			t.Fatal(err)
		}
	}
	// envs[0] was dropped for the bound.
	if _, err := k.Accept(sub, envs[0]); err == nil {
		rs, _ := k.Records()
		t.Errorf("the evicted record was kept again (%d records now); want it refused", len(rs))
	}
}
