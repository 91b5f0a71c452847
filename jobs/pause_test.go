package jobs

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// TestWorkerPause checks the donor's pause: a paused worker refuses jobs BUSY "paused by
// the donor" and its signed offer says so with no free slot; a running job finishes
// unless the pause cancels it, and then its submitter gets CANCELLED; Resume admits again.
func TestWorkerPause(t *testing.T) {
	ctx := context.Background()
	b := newBlocker()
	g := newGrid(t, WorkerConfig{Runner: b, Slots: 2})
	w, ai := g.workers[0], addrInfo(g.hosts[0])
	c, _ := g.stores[0].Put(ctx, testBinary)
	req := func() *protocol.JobRequest {
		return &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c.Bytes(), BinarySize: uint64(len(testBinary)), Nonce: nonce()}
	}

	if _, _, err := g.sub.queryOffer(ctx, ai); err != nil { // connects the submitter
		t.Fatal(err)
	}
	// A job running when the pause begins: a plain pause lets it run on.
	type answer struct {
		res *protocol.JobResult
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := rawJob(t, g.subHost, ai.ID, req())
		done <- answer{res, err}
	}()
	recv(t, b.started, "the job to start")
	w.Pause(false)
	if !w.Paused() || !w.Status().Paused {
		t.Fatal("Paused: got false after Pause")
	}
	o, _, err := g.sub.queryOffer(ctx, ai)
	if err != nil {
		t.Fatal(err)
	}
	if !o.DonorPaused || o.Paused || o.SlotsFree != 0 || o.SlotsTotal != 2 {
		t.Fatalf("paused: got offer donor_paused %v, load_paused %v, slots %d of %d; want true, false, 0 of 2", o.DonorPaused, o.Paused, o.SlotsFree, o.SlotsTotal)
	}
	if _, err := rawJob(t, g.subHost, ai.ID, req()); !errors.Is(err, protocol.ErrBusy) || !strings.Contains(err.Error(), "paused by the donor") {
		t.Fatalf("paused: got %v, want BUSY: paused by the donor", err)
	}
	select {
	case a := <-done:
		t.Fatalf("a plain pause ended the running job: %v, %v", statusOf(a.res), a.err)
	default:
	}

	// Pausing with cancel ends it, and says why.
	w.Pause(true)
	recv(t, b.cancelled, "the running job to be cancelled")
	a := recv(t, done, "the cancelled job's answer")
	if !errors.Is(a.err, protocol.ErrCancelled) || !strings.Contains(a.err.Error(), "paused by the donor") {
		t.Fatalf("cancelled by the pause: got %v, %v; want CANCELLED: paused by the donor", statusOf(a.res), a.err)
	}
	waitFor(t, "the slot to be given back", func() bool { return w.Running() == 0 })

	w.Resume()
	if o, _, err = g.sub.queryOffer(ctx, ai); err != nil {
		t.Fatal(err)
	}
	if o.DonorPaused || o.SlotsFree != 1 { // one peer may hold half the slots
		t.Fatalf("resumed: got offer donor_paused %v, slots free %d; want false, 1", o.DonorPaused, o.SlotsFree)
	}
	go func() {
		res, err := rawJob(t, g.subHost, ai.ID, req())
		done <- answer{res, err}
	}()
	recv(t, b.started, "a job to start after Resume")
	w.Close()
	recv(t, done, "the job's answer at Close")
}
