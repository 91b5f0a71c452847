package testnet

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/internal/proctest"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/sandbox"
)

func TestBehaviourNames(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Behaviour
		ok   bool
	}{
		{"", 0, true},
		{"honest", 0, true},
		{"liar", Liar, true},
		{"liar+boaster", Liar | Boaster, true},
		{"boaster,staller", Staller | Boaster, true},
		{"liar+liar", Liar, true},
		{"thief", 0, false},
		{"liar+", Liar, true},
	} {
		got, err := ParseBehaviour(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseBehaviour(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok {
			if back, err := ParseBehaviour(got.String()); err != nil || back != got {
				t.Errorf("ParseBehaviour(%q) = %v, %v; want %v", got.String(), back, err, got)
			}
		}
	}
}

func TestForge(t *testing.T) {
	for _, tt := range []struct {
		name, in, want string
		max            int64
	}{
		{"letters swap case", "hello, grid\n", "HELLO, GRID\n", 1 << 20},
		{"no letters", "123\n", "023\n", 1 << 20},
		{"empty", "", "forged\n", 1 << 20},
		{"empty, tiny limit", "", "fo", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(Forge([]byte(tt.in), tt.max)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// fakeRunner returns out for every job.
func fakeRunner(out string) jobs.Runner {
	return jobs.RunnerFunc(func(ctx context.Context, _ sandbox.Job, _ sandbox.Limits) (sandbox.Result, error) {
		return sandbox.Result{Status: sandbox.StatusExited, Output: []byte(out), OutputCID: cids.Sum([]byte(out))}, nil
	})
}

func TestFaultyRunners(t *testing.T) {
	ctx := context.Background()
	r, err := Liar.Runner(fakeRunner("hi")).Run(ctx, sandbox.Job{}, sandbox.Limits{})
	if err != nil || string(r.Output) != "HI" || !r.OutputCID.Equals(cids.Sum([]byte("HI"))) {
		t.Errorf("liar: got %q (cid %s), %v; want \"HI\" with its CID", r.Output, r.OutputCID, err)
	}
	if got := Boaster.Runner(fakeRunner("hi")); got == nil {
		t.Error("boaster: no runner")
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := (Staller | Liar).Runner(fakeRunner("hi")).Run(sctx, sandbox.Job{}, sandbox.Limits{})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("staller returned before its context ended: %v", err)
	case <-time.After(50 * time.Millisecond): // it should still be blocked
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("staller: got %v, want context.Canceled", err)
	}
}

// TestFaultyNodes starts an honest node beside two boaster-liars and checks each behaviour
// on the wire: the boasters' offers are signed and claim BoastSlots but otherwise match an
// honest worker's; every liar's replica has a valid receipt over the same forged output.
// Then two stallers hold a job until the submitter gives up, and let it go.
func TestFaultyNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a grid")
	}
	bin := buildJob(t, "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := Start(ctx, Setup{Nodes: 3, Behaviours: map[int]Behaviour{1: Liar | Boaster, 2: Liar | Boaster}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	nodes := n.Nodes()
	if got := n.Honest(); len(got) != 1 || got[0] != nodes[0].ID() {
		t.Errorf("Honest() = %v, want node 0 alone, %s", got, nodes[0].ID())
	}

	honest, err := RealOffer(ctx, nodes[0].Host())
	if err != nil {
		t.Fatal(err)
	}
	if honest.SlotsTotal != 2 {
		t.Errorf("honest offer: %d slots, want 2", honest.SlotsTotal)
	}
	for _, i := range []int{1, 2} {
		o, err := RealOffer(ctx, nodes[i].Host())
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if o.SlotsFree != BoastSlots || o.SlotsTotal != BoastSlots {
			t.Errorf("boaster %d: %d of %d slots free, want %d", i, o.SlotsFree, o.SlotsTotal, BoastSlots)
		}
		if o.Max != honest.Max || o.MaxInput != honest.MaxInput || o.Arch != honest.Arch || o.Isolation != honest.Isolation {
			t.Errorf("boaster %d: offer %+v, want an honest worker's but for slots: %+v", i, o, honest)
		}
	}

	// A quorum of all three replicas, which the lies prevent: every replica runs.
	c, err := n.NewClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("hello, grid\n")
	rep, err := c.Submit(ctx, jobs.Request{Binary: bin, Input: want, Replicas: 3, Quorum: 3, MaxReplicas: 3, Trust: n.Honest()})
	if err == nil || rep == nil {
		t.Fatalf("submit: got %v, want no quorum", err)
	}
	if len(rep.Replicas) != 3 {
		t.Fatalf("got %d replicas, want 3: %+v", len(rep.Replicas), rep.Replicas)
	}
	for _, r := range rep.Replicas {
		wantOut := want
		if r.Worker != nodes[0].ID() {
			wantOut = Forge(want, 1<<20)
		}
		if !r.ReceiptValid || !r.OutputCID.Equals(cids.Sum(wantOut)) {
			t.Errorf("worker %s: receipt valid %v, output %s (%v); want a valid receipt over %q", r.Worker, r.ReceiptValid, r.OutputCID, r.Err, wantOut)
		}
	}

	// Stallers (trusted here, so that the submitter sends them the job) admit and hold it
	// until the submitter gives up, then let it go.
	sn, err := Start(ctx, Setup{Nodes: 2, Behaviours: map[int]Behaviour{0: Staller, 1: Staller}})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	sc, err := sn.NewClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subCtx, subCancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		trust := []peer.ID{sn.Nodes()[0].ID(), sn.Nodes()[1].ID()}
		_, err := sc.Submit(subCtx, jobs.Request{Binary: bin, Input: want, Replicas: 2, Quorum: 2, MaxReplicas: 2, Trust: trust})
		done <- err
	}()
	running := func() (k int) {
		for _, nd := range sn.Nodes() {
			k += nd.Running()
		}
		return k
	}
	proctest.Poll(t, 20*time.Second, "both stallers to admit the job", func() bool {
		select {
		case err := <-done:
			t.Fatalf("submit to stallers returned: %v", err)
		default:
		}
		return running() == 2
	})
	subCancel()
	if err := <-done; err == nil {
		t.Error("submit to stallers succeeded")
	}
	proctest.Poll(t, 5*time.Second, "the stallers to let the job go", func() bool { return running() == 0 })
}
