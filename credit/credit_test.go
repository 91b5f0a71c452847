package credit

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/history"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
)

func newKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id
}

// TestIssue: only replicas that agreed with the accepted verdict, with a valid receipt,
// earn credit, with their receipt's CPU time; nothing without an accepted verdict.
func TestIssue(t *testing.T) {
	_, sub := newKey(t)
	_, a := newKey(t)
	_, b := newKey(t)
	_, c := newKey(t)
	_, d := newKey(t)
	v := jobs.Verdict{OutputCID: cids.Sum([]byte("out")), StderrCID: cids.Sum(nil), Status: "exited"}
	other := v
	other.OutputCID = cids.Sum([]byte("OUT"))
	rep := &jobs.Report{JobCID: cids.Sum([]byte("job")), InputCID: cids.Sum([]byte("in")), Verdict: v, Replicas: []jobs.Replica{
		{Worker: a, Verdict: v, ReceiptValid: true, Receipt: []byte("ra"), CPU: time.Second},
		{Worker: b, Verdict: other, ReceiptValid: true, Receipt: []byte("rb"), CPU: time.Second, Err: jobs.ErrDisagrees},
		{Worker: c, Verdict: v, ReceiptValid: true, Receipt: []byte("rc"), CPU: 2 * time.Second},
		{Worker: d, Err: jobs.ErrNotNeeded},
		{Verdict: v, Local: true, ReceiptValid: true},
	}}
	cs := Issue(rep, sub, time.Now())
	if len(cs) != 2 || cs[0].Worker != a || cs[1].Worker != c || cs[1].CPU != 2*time.Second ||
		!bytes.Equal(cs[0].ReceiptSHA256, protocol.ReceiptHash([]byte("ra"))) || cs[0].Submitter != sub || !cs[0].Accepted {
		t.Errorf("got %+v, want credit for %s and %s", cs, a, c)
	}
	if cs := Issue(&jobs.Report{Replicas: rep.Replicas}, sub, time.Now()); len(cs) != 0 {
		t.Errorf("without an accepted verdict: got %d records, want none", len(cs))
	}
}

// TestKeeperBounds: past MaxPerSubmitter the submitter's oldest go, past MaxRecords the
// oldest of all, and a reopened Keeper applies the same bounds.
func TestKeeperBounds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	db, err := history.Open(path, history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	_, self := newKey(t)
	k, err := Open(db, self, Options{MaxRecords: 3, MaxPerSubmitter: 2})
	if err != nil {
		t.Fatal(err)
	}
	keyA, subA := newKey(t)
	keyB, subB := newKey(t)
	give := func(key crypto.PrivKey, sub peer.ID, i int) {
		t.Helper()
		receipt := []byte{byte(i), 'r'}
		ev := jobs.JobEvent{From: sub, JobCID: cids.Sum([]byte{byte(i)}), InputCID: cids.Sum(nil), CPU: time.Duration(i) * time.Second, Receipt: receipt}
		k.NoteRan(ev)
		env, err := protocol.SealCredit(&protocol.Credit{JobCID: ev.JobCID, InputCID: ev.InputCID, Worker: self, CPU: ev.CPU, Accepted: true,
			ReceiptSHA256: protocol.ReceiptHash(receipt), Submitter: sub, Time: time.Now()}, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Accept(sub, env); err != nil {
			t.Fatal(err)
		}
	}
	cpus := func(k *Keeper) string {
		rs, err := k.Records()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, r := range rs {
			b.WriteString(time.Duration(r.CPUUs*1000).String() + " ")
		}
		return b.String()
	}
	give(keyA, subA, 1)
	give(keyA, subA, 2)
	give(keyA, subA, 3) // A's oldest (1) goes
	if got, want := cpus(k), "2s 3s "; got != want {
		t.Errorf("per submitter: got %q, want %q", got, want)
	}
	give(keyB, subB, 4)
	give(keyB, subB, 5) // over 3 in all: the oldest (2) goes
	if got, want := cpus(k), "3s 4s 5s "; got != want {
		t.Errorf("in all: got %q, want %q", got, want)
	}
	db.Close()
	if db, err = history.Open(path, history.Options{}); err != nil {
		t.Fatal(err)
	}
	k2, err := Open(db, self, Options{MaxRecords: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cpus(k2), "4s 5s "; got != want {
		t.Errorf("reopened with a smaller bound: got %q, want %q", got, want)
	}
	sum := Summarize(mustRecords(t, k2))
	if sum.Records != 2 || sum.CPUSeconds != 9 || len(sum.BySubmitter) != 1 || sum.BySubmitter[0].Submitter != subB.String() || len(sum.ByDay) != 1 {
		t.Errorf("summary: got %+v", sum)
	}
}

func mustRecords(t *testing.T, k *Keeper) []Record {
	rs, err := k.Records()
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func exportLine(t testing.TB, r Record) string {
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// TestVerify checks an export as `gridnode credit --verify` does.
func TestVerify(t *testing.T) {
	key, sub := newKey(t)
	_, worker := newKey(t)
	c := &protocol.Credit{JobCID: cids.Sum([]byte("j")), InputCID: cids.Sum(nil), Worker: worker, CPU: 1500 * time.Millisecond, Accepted: true,
		ReceiptSHA256: protocol.ReceiptHash([]byte("r")), Submitter: sub, Time: time.Now()}
	env, _ := protocol.SealCredit(c, key)
	good := RecordOf(c, env, time.Now())
	lied := good
	lied.CPUUs *= 10
	other, _ := newKey(t)
	forgedEnv, _ := protocol.SealCredit(c, other)
	forged := RecordOf(c, forgedEnv, time.Now())
	for _, tt := range []struct {
		name    string
		in      string
		worker  peer.ID
		ok      int
		wantErr error
	}{
		{"good", exportLine(t, good) + "\n", "", 1, nil},
		{"for this worker", exportLine(t, good), worker, 1, nil},
		{"for another worker", exportLine(t, good), sub, 0, ErrNotMine},
		{"a line that lies", exportLine(t, lied), "", 0, ErrForged},
		{"signed by another key", exportLine(t, forged), "", 0, ErrForged},
		{"twice", exportLine(t, good) + exportLine(t, good), "", 1, ErrReplay},
		{"not JSON", "nonsense\n", "", 0, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ok, bad := Verify(strings.NewReader(tt.in), tt.worker)
			if len(ok) != tt.ok {
				t.Errorf("got %d records that check out, want %d (%v)", len(ok), tt.ok, bad)
			}
			if tt.wantErr != nil && (len(bad) != 1 || !errors.Is(bad[0], tt.wantErr)) {
				t.Errorf("got errors %v, want %v", bad, tt.wantErr)
			}
			if tt.ok == 1 && Summarize(ok).CPUSeconds != 1.5 {
				t.Errorf("got %+v, want 1.5 CPU seconds", Summarize(ok))
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	key, sub := newKey(f)
	c := &protocol.Credit{JobCID: cids.Sum([]byte("j")), InputCID: cids.Sum(nil), Worker: sub, Accepted: true,
		ReceiptSHA256: protocol.ReceiptHash(nil), Submitter: sub, Time: time.UnixMilli(1)}
	env, _ := protocol.SealCredit(c, key)
	f.Add([]byte(exportLine(f, RecordOf(c, env, time.UnixMilli(2)))))
	f.Add([]byte("{}\n{\"envelope\":\"AAAA\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ok, _ := Verify(bytes.NewReader(data), "")
		for _, r := range ok {
			if _, err := protocol.OpenCredit(r.Envelope); err != nil {
				t.Fatalf("a record that checked out does not open: %v", err)
			}
		}
	})
}
