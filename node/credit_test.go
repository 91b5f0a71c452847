package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/credit"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// creditCPU is the CPU time creditRunner's jobs take.
const creditCPU = 1500 * time.Millisecond

// creditRunner echoes its input after a short while, with creditCPU of CPU time; liar
// returns it upper-cased at once, so that its disagreeing replica is in before the quorum.
func creditRunner(liar bool) Runner {
	return jobs.RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		in, out := echoInput(job), []byte(nil)
		if liar {
			out = bytes.ToUpper(in)
		} else {
			select {
			case <-ctx.Done():
				return sandbox.Result{}, ctx.Err()
			case <-time.After(300 * time.Millisecond):
			}
			out = in
		}
		return sandbox.Result{Status: sandbox.StatusExited, Output: out, OutputCID: cids.Sum(out), CPUTime: creditCPU}, nil
	})
}

func echoInput(job sandbox.Job) []byte {
	var b bytes.Buffer
	if job.Stdin != nil {
		b.ReadFrom(job.Stdin)
	}
	return b.Bytes()
}

// TestCredit: after an accepted submit, each worker whose replica agreed holds a valid
// record signed by the submitter for that job, with its receipt's CPU time, and the liar
// holds none; forged, misdirected, inflated and replayed records are refused and not kept,
// on the wire too; a restart keeps the credit, and the replay stays refused.
func TestCredit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	ws := make([]*Node, 3)
	open := func(i int, boot []string) *Node {
		w, err := Open(ctx, Config{DataDir: dirs[i], Loopback: true, Worker: true, Runner: creditRunner(i == 2), Slots: 2, Bootstrap: boot})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		return w
	}
	ws[0] = open(0, nil)
	boot := ws[0].AddrStrings()
	ws[1], ws[2] = open(1, boot), open(2, boot)
	for _, w := range ws {
		if err := w.WaitAnnounced(ctx); err != nil {
			t.Fatal(err)
		}
	}
	client, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Bootstrap: boot})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	client.Trust(ws[0].ID(), ws[1].ID())

	rep, err := client.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte("credit me"), Replicas: 3, Quorum: 2, MaxReplicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(rep.Output); got != "credit me" {
		t.Fatalf("got output %q, want %q", got, "credit me")
	}
	liar := slices.IndexFunc(rep.Replicas, func(r jobs.Replica) bool { return r.Worker == ws[2].ID() })
	if liar < 0 || !errors.Is(rep.Replicas[liar].Err, jobs.ErrDisagrees) {
		t.Fatalf("got replicas %+v, want the liar's to disagree", rep.Replicas)
	}
	var receipt0 []byte // worker 0's sealed receipt, for the forgeries below
	for _, r := range rep.Replicas {
		if r.Worker == ws[0].ID() {
			receipt0 = r.Receipt
		}
	}

	// Each honest worker gets one valid record; the liar none, even a while later.
	var kept0 credit.Record
	for i, w := range ws[:2] {
		var rs []credit.Record
		waitUntil(t, 30*time.Second, "worker's credit", func() bool {
			rs, err = w.Credit().Records()
			return err == nil && len(rs) > 0
		})
		if len(rs) != 1 {
			t.Fatalf("worker %d: got %d records, want 1", i, len(rs))
		}
		c, err := protocol.OpenCredit(rs[0].Envelope)
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		if c.Submitter != client.ID() || c.Worker != w.ID() || c.JobCID != rep.JobCID || c.InputCID != rep.InputCID || c.CPU != creditCPU || !c.Accepted {
			t.Errorf("worker %d: got credit %+v, want one from %s for %s, job %s, CPU %v", i, c, client.ID(), w.ID(), rep.JobCID, creditCPU)
		}
		if i == 0 {
			kept0 = rs[0]
			if !bytes.Equal(c.ReceiptSHA256, protocol.ReceiptHash(receipt0)) {
				t.Errorf("worker 0: the credit names receipt %x, want %x", c.ReceiptSHA256, protocol.ReceiptHash(receipt0))
			}
		}
	}
	if rs, _ := ws[2].Credit().Records(); len(rs) != 0 {
		t.Errorf("the liar: got %d credit records, want none", len(rs))
	}

	// Forgeries, checked by the worker's keeper and sent over the wire.
	clientKey := client.Host().Peerstore().PrivKey(client.ID())
	strangerKey, _, _ := crypto.GenerateEd25519Key(nil)
	stranger, _ := peer.IDFromPrivateKey(strangerKey)
	good := protocol.Credit{JobCID: rep.JobCID, InputCID: rep.InputCID, Worker: ws[0].ID(), CPU: creditCPU, Accepted: true,
		ReceiptSHA256: protocol.ReceiptHash(receipt0), Submitter: client.ID(), Time: time.Now()}
	seal := func(c protocol.Credit, key crypto.PrivKey) []byte {
		b, err := protocol.SealCredit(&c, key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	with := func(f func(*protocol.Credit)) protocol.Credit { c := good; f(&c); return c }
	otherJob := cids.Sum([]byte("never ran"))
	for _, tt := range []struct {
		name string
		from peer.ID
		env  []byte
		want error
	}{
		{"signed by another key", client.ID(), seal(good, strangerKey), credit.ErrReplay}, // its receipt is kept: refused before the signature is checked (credit_test.go tests forgeries of fresh ones)
		{"a stranger's own record", stranger, seal(with(func(c *protocol.Credit) { c.Submitter = stranger }), strangerKey), credit.ErrNotRun},
		{"sent by another peer", stranger, seal(with(func(c *protocol.Credit) { c.Time = time.Now().Add(time.Second) }), clientKey), credit.ErrForged},
		{"a job never run", client.ID(), seal(with(func(c *protocol.Credit) { c.JobCID = otherJob }), clientKey), credit.ErrNotRun},
		{"a receipt never sealed", client.ID(), seal(with(func(c *protocol.Credit) { c.ReceiptSHA256 = protocol.ReceiptHash([]byte("x")) }), clientKey), credit.ErrNotRun},
		{"inflated CPU", client.ID(), seal(with(func(c *protocol.Credit) { c.CPU *= 100 }), clientKey), credit.ErrNotRun},
		{"another worker", client.ID(), seal(with(func(c *protocol.Credit) { c.Worker = ws[1].ID() }), clientKey), credit.ErrNotMine},
		{"not accepted", client.ID(), seal(with(func(c *protocol.Credit) { c.Accepted = false }), clientKey), credit.ErrNotAccepted},
		{"a replay of the kept record", client.ID(), kept0.Envelope, credit.ErrReplay},
		{"a fresh signature for the same receipt", client.ID(), seal(with(func(c *protocol.Credit) { c.Time = time.Now().Add(time.Minute) }), clientKey), credit.ErrReplay},
		{"garbage", client.ID(), []byte("not an envelope"), credit.ErrForged},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ws[0].Credit().Accept(tt.from, tt.env); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
	// Over the wire, from a stranger's host and as the stored record's replay from the
	// submitter's, the worker answers BAD_REQUEST and keeps nothing more.
	sh, err := libp2p.New(libp2p.Identity(strangerKey), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	if err := sh.Connect(ctx, peer.AddrInfo{ID: ws[0].ID(), Addrs: ws[0].Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	for _, send := range []struct {
		name string
		cp   *creditPart
		c    protocol.Credit
		key  crypto.PrivKey
	}{
		{"stranger", &creditPart{h: sh, key: strangerKey, ctx: ctx}, with(func(c *protocol.Credit) { c.Submitter = stranger }), strangerKey},
		{"replay", &creditPart{h: client.Host(), key: clientKey, ctx: ctx}, good, clientKey},
	} {
		err := send.cp.deliver(ws[0].ID(), []*protocol.Credit{&send.c})
		if !errors.Is(err, protocol.ErrBadRequest) {
			t.Errorf("%s over the wire: got %v, want %v", send.name, err, protocol.ErrBadRequest)
		}
	}
	if rs, _ := ws[0].Credit().Records(); len(rs) != 1 {
		t.Errorf("after the forgeries: got %d records, want 1", len(rs))
	}

	// The API and a restart.
	srv := ws[0].APIHandler()
	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://localhost"+path, nil)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	code, body := get("/v1/credit")
	var sum credit.Summary
	if err := json.Unmarshal([]byte(body), &sum); code != http.StatusOK || err != nil || sum.CPUSeconds != creditCPU.Seconds() ||
		len(sum.BySubmitter) != 1 || sum.BySubmitter[0].Submitter != client.ID().String() || len(sum.ByDay) != 1 {
		t.Errorf("GET /v1/credit: got %d %s, want 200 with %v CPU seconds from %s", code, body, creditCPU.Seconds(), client.ID())
	}
	if code, body := get("/v1/credit/records"); code != http.StatusOK || !strings.Contains(body, kept0.ReceiptSHA256) {
		t.Errorf("GET /v1/credit/records: got %d %s, want 200 with the record", code, body)
	}
	ws[0].Close()
	ws[0] = open(0, nil)
	rs, err := ws[0].Credit().Records()
	if err != nil || len(rs) != 1 || !bytes.Equal(rs[0].Envelope, kept0.Envelope) {
		t.Fatalf("after a restart: got %d records (%v), want the one kept", len(rs), err)
	}
	if _, err := ws[0].Credit().Accept(client.ID(), kept0.Envelope); !errors.Is(err, credit.ErrReplay) {
		t.Errorf("a replay after a restart: got %v, want %v", err, credit.ErrReplay)
	}
	if _, err := ws[0].Credit().Accept(client.ID(), seal(with(func(c *protocol.Credit) { c.JobCID = otherJob }), clientKey)); !errors.Is(err, credit.ErrNotRun) {
		t.Errorf("a job never run, after a restart: got %v, want %v", err, credit.ErrNotRun)
	}
}
