package node

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/internal/testelf"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// echoRunner answers every job with its input.
var echoRunner = jobs.RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
	var in []byte
	if job.Stdin != nil {
		in, _ = io.ReadAll(job.Stdin)
	}
	return sandbox.Result{Status: sandbox.StatusExited, Output: in, OutputCID: cids.Sum(in)}, nil
})

// fakeELF is enough of an ELF header for the submitter; fake runners never parse it.
var fakeELF = testelf.Exit0(nil) // valid, as the submitter checks; the fake runners ignore it

// openGrid opens a bootstrap worker, more workers and a client, all closed by t.Cleanup.
func openGrid(t *testing.T, ctx context.Context, workers int, r Runner) (ws []*Node, client *Node) {
	t.Helper()
	return openGridConfig(t, ctx, workers, Config{Runner: r})
}

// openGridConfig is openGrid with every node opened from cfg: ephemeral on loopback, the
// workers with its runner and 2 slots, the client without a runner.
func openGridConfig(t *testing.T, ctx context.Context, workers int, cfg Config) (ws []*Node, client *Node) {
	t.Helper()
	cfg.Ephemeral, cfg.Loopback = true, true
	for i := range workers {
		wc := cfg
		wc.Worker, wc.Slots = true, 2
		w, err := Open(ctx, wc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		if i == 0 {
			cfg.Bootstrap = w.AddrStrings()
		}
		ws = append(ws, w)
	}
	for _, w := range ws {
		if err := w.WaitAnnounced(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Runner = nil
	client, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	trustWorkers(append(ws, client), ws)
	return ws, client
}

// trustWorkers makes every node in submitters trust the workers ws, as an owner trusts
// their own machines: these tests are not about trust (jobs' trust tests are).
func trustWorkers(submitters, ws []*Node) {
	for _, n := range submitters {
		for _, w := range ws {
			n.Trust(w.ID())
		}
	}
}

func TestSubmitAndCloseWithoutLeaks(t *testing.T) {
	defer goleak.VerifyNone(t, ignoreLauncher)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Run("grid", func(t *testing.T) {
		_, c := openGrid(t, ctx, 3, echoRunner)
		rep, err := c.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte("ping"), Replicas: 2})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(rep.Output); got != "ping" {
			t.Errorf("got output %q, want %q", got, "ping")
		}
		for _, r := range rep.Replicas {
			if r.Worker == c.ID() {
				t.Error("the client ran its own job")
			}
		}
	})
}

// TestCloseCancelsJobs checks that closing a worker node kills its running jobs and that the
// submitter hears they were cancelled.
func TestCloseCancelsJobs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	started := make(chan struct{}, 4)
	block := jobs.RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		started <- struct{}{}
		<-ctx.Done()
		return sandbox.Result{Status: sandbox.StatusCrashed, Signal: "SIGKILL", Reason: "killed"}, ctx.Err()
	})
	ws, c := openGrid(t, ctx, 2, block)
	type result struct {
		rep *jobs.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := c.Submit(ctx, jobs.Request{Binary: fakeELF, Replicas: 2, MaxReplicas: 2})
		done <- result{rep, err}
	}()
	for range 2 {
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatal("jobs never started")
		}
	}
	for _, w := range ws {
		if w.Running() != 1 {
			t.Errorf("worker %s: got %d running jobs, want 1", w.ID(), w.Running())
		}
	}
	for _, w := range ws {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	}
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("submit did not return after the workers closed")
	}
	if r.err == nil {
		t.Fatal("got nil error, want no quorum")
	}
	if r.rep == nil || len(r.rep.Replicas) == 0 {
		t.Fatalf("got no replicas in the report (err %v)", r.err)
	}
	for _, rp := range r.rep.Replicas {
		if !errors.Is(rp.Err, protocol.ErrCancelled) {
			t.Errorf("replica %s: got status %q error %v, want the worker's CANCELLED", rp.Worker, rp.Status, rp.Err)
		}
	}
}

func TestAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _ := openGrid(t, ctx, 3, echoRunner)
	srv := httptest.NewServer(ws[0].APIHandler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	rep, err := SubmitAPI(ctx, addr, jobs.Request{Binary: fakeELF, Input: []byte("via api"), Replicas: 2})
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := string(rep.Output); got != "via api" {
		t.Errorf("got output %q, want %q", got, "via api")
	}
	if rep.OutputCID != cids.Sum([]byte("via api")).String() {
		t.Errorf("got output CID %s, want %s", rep.OutputCID, cids.Sum([]byte("via api")))
	}
	if len(rep.Replicas) < 2 || !rep.Replicas[0].ReceiptValid {
		t.Errorf("got replicas %+v, want 2 with valid receipts", rep.Replicas)
	}
	// A submit that fails is still answered with a report that carries the error.
	for _, tt := range []struct {
		name string
		req  jobs.Request
		kind string
		want error
	}{
		{"empty job", jobs.Request{}, "failed", nil},
		{"a script", jobs.Request{Binary: []byte("#!/bin/sh\n")}, "rejected", jobs.ErrRejected},
		{"contradictory counts", jobs.Request{Binary: fakeELF, Replicas: 2, Quorum: 3}, "failed", nil},
	} {
		rep, err := SubmitAPI(ctx, addr, tt.req)
		if err != nil {
			t.Errorf("%s: %v, want a report", tt.name, err)
			continue
		}
		if rep.Err() == nil || rep.ErrorKind != tt.kind || (tt.want != nil && !errors.Is(rep.Err(), tt.want)) {
			t.Errorf("%s: got a report with error %q (kind %q), want kind %q", tt.name, rep.Error, rep.ErrorKind, tt.kind)
		}
	}
	for _, a := range []string{"0.0.0.0:0", "192.168.1.1:0", "example.com:80", "nonsense"} {
		if ln, err := ListenAPI(a); err == nil {
			ln.Close()
			t.Errorf("ListenAPI(%q): got nil error", a)
		}
	}
	ln, err := ListenAPI("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}
