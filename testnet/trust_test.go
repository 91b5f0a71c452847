package testnet

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/protocol"
)

// TestFiveHonestR3Q2 (issue 8): five honest workers, R=3, Q=2: the output is accepted and
// every receipt in the report verifies (signed by its worker, for this job).
func TestFiveHonestR3Q2(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a grid")
	}
	bin := buildJob(t, "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := Start(ctx, Setup{Nodes: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c, err := n.NewClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in := []byte("five honest workers\n")
	rep, err := c.Submit(ctx, jobs.Request{Binary: bin, Input: in, Replicas: 3, Quorum: 2})
	if err != nil || !bytes.Equal(rep.Output, in) {
		t.Fatalf("submit: %v, %+v", err, rep)
	}
	valid := 0
	for _, r := range rep.Replicas {
		if len(r.Receipt) == 0 {
			continue // not needed once two agreed
		}
		rc, signer, err := protocol.OpenReceipt(r.Receipt)
		if err != nil || signer != r.Worker || !rc.JobCID.Equals(rep.JobCID) || !rc.OutputCID.Equals(r.OutputCID) {
			t.Errorf("replica %s: receipt %+v signed by %s: %v", r.Worker, rc, signer, err)
		}
		valid++
	}
	if valid < 2 {
		t.Errorf("%d verified receipts, want at least the quorum's 2: %+v", valid, rep.Replicas)
	}
}

// TestBoastingLiarsNeverForgeAQuorum (issue 8): two fresh identities that claim 2^30 free
// slots and agree on a forged output, beside three honest workers that earned records with
// this submitter (through --verify-local jobs): over many submits the forged output is never
// accepted. The submitter trusts nobody: the honest workers' records are all it has. With
// placement by claimed capacity and no anchor, the forgery won every submit.
func TestBoastingLiarsNeverForgeAQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a grid")
	}
	bin := buildJob(t, "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n, err := Start(ctx, Setup{Nodes: 5, Behaviours: map[int]Behaviour{3: Liar | Boaster, 4: Liar | Boaster}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c, err := node.Open(ctx, node.Config{Ephemeral: true, Loopback: true, Bootstrap: n.Bootstrap()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	honest := n.Honest()
	established := func() bool {
		for _, p := range honest {
			if r := c.Records().Get(p); r.Agreed < jobs.Established || r.Disagreed > 0 {
				return false
			}
		}
		return true
	}
	// Records, the way a new submitter earns them: its own runs anchor the quorums.
	for i := 0; !established(); i++ {
		if i == 30 {
			for _, p := range honest {
				t.Logf("%s: %+v", p, c.Records().Get(p))
			}
			t.Fatal("the honest workers earned no established record in 30 locally verified jobs")
		}
		in := []byte("earn a record\n")
		if rep, err := c.Submit(ctx, jobs.Request{Binary: bin, Input: in, Replicas: 3, Quorum: 2, VerifyLocal: true}); err != nil || !bytes.Equal(rep.Output, in) {
			t.Fatalf("verified submit %d: %v", i, err)
		}
	}
	for i := range 30 {
		in := []byte("the truth, please\n")
		rep, err := c.Submit(ctx, jobs.Request{Binary: bin, Input: in})
		if err == nil && !bytes.Equal(rep.Output, in) {
			t.Fatalf("submit %d accepted %q, a forgery", i, rep.Output)
		}
		if err != nil {
			t.Logf("submit %d: %v", i, err) // no quorum is safe; a forgery is not
		}
	}
}
