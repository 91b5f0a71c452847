package jobs

// Tests of the job contract (issue 7): the vote tally, the request's counts, validation
// before sending, REJECTED refusals with their reason, stderr in the verdict, defaults
// applied by the worker alone, architectures, and no dispatch after the submit ended.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/internal/platform"
	"github.com/gridnode/gridnode/internal/testelf"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestTally(t *testing.T) {
	a := Verdict{OutputCID: cids.Sum([]byte("a")), StderrCID: cids.Sum(nil), Status: "exited"}
	b := a
	b.OutputCID = cids.Sum([]byte("b"))
	aErr := a // the same stdout, another stderr
	aErr.StderrCID = cids.Sum([]byte("warning"))
	a3 := a // the same output, another exit code
	a3.ExitCode = 3
	tests := []struct {
		name      string
		quorum    int
		votes     []Verdict
		acceptAt  int // index of the vote that reaches the quorum; -1 for none
		best      int
		short     int
		wantFinal Verdict // accepted, when acceptAt >= 0
	}{
		{name: "no votes", quorum: 2, acceptAt: -1, best: 0, short: 2},
		{name: "one of two", quorum: 2, votes: []Verdict{a}, acceptAt: -1, best: 1, short: 1},
		{name: "two agree", quorum: 2, votes: []Verdict{a, a}, acceptAt: 1, best: 2, short: 0, wantFinal: a},
		{name: "quorum of one", quorum: 1, votes: []Verdict{b}, acceptAt: 0, best: 1, short: 0, wantFinal: b},
		{name: "a liar first", quorum: 2, votes: []Verdict{b, a, a}, acceptAt: 2, best: 2, short: 0, wantFinal: a},
		{name: "split", quorum: 2, votes: []Verdict{a, b}, acceptAt: -1, best: 1, short: 1},
		{name: "stderr differs", quorum: 2, votes: []Verdict{a, aErr}, acceptAt: -1, best: 1, short: 1},
		{name: "exit code differs", quorum: 2, votes: []Verdict{a, a3}, acceptAt: -1, best: 1, short: 1},
		{name: "votes after acceptance do not count", quorum: 2, votes: []Verdict{a, a, b, b, b}, acceptAt: 1, best: 2, short: 0, wantFinal: a},
		{name: "three of three", quorum: 3, votes: []Verdict{a, b, a, aErr, a}, acceptAt: 4, best: 3, short: 0, wantFinal: a},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTally(tt.quorum, true)
			for i, v := range tt.votes {
				// Every vote anchored and from its own prefix: the counting alone.
				if got, want := tl.add(vote{v: v, prefix: fmt.Sprint(i), anchored: true}), i == tt.acceptAt; got != want {
					t.Fatalf("add(vote %d): got %v, want %v", i, got, want)
				}
			}
			if got := tl.best(); got != tt.best {
				t.Errorf("best: got %d, want %d", got, tt.best)
			}
			if got := tl.short(); got != tt.short {
				t.Errorf("short: got %d, want %d", got, tt.short)
			}
			switch {
			case tt.acceptAt < 0 && tl.accepted != nil:
				t.Errorf("accepted %+v, want none", *tl.accepted)
			case tt.acceptAt >= 0 && (tl.accepted == nil || *tl.accepted != tt.wantFinal):
				t.Errorf("accepted %v, want %+v", tl.accepted, tt.wantFinal)
			}
		})
	}
}

func TestRequestSettle(t *testing.T) {
	tests := []struct {
		name    string
		in      Request
		want    Request // the settled counts, when no error
		wantErr string  // a part of the error that says why
	}{
		{name: "defaults", in: Request{}, want: Request{Replicas: 2, Quorum: 2, MaxReplicas: 5}},
		{name: "replicas only", in: Request{Replicas: 3}, want: Request{Replicas: 3, Quorum: 3, MaxReplicas: 7}},
		{name: "lower quorum kept", in: Request{Replicas: 3, Quorum: 2}, want: Request{Replicas: 3, Quorum: 2, MaxReplicas: 7}},
		{name: "all given", in: Request{Replicas: 1, Quorum: 1, MaxReplicas: 1}, want: Request{Replicas: 1, Quorum: 1, MaxReplicas: 1}},
		{name: "max replicas above", in: Request{Replicas: 2, MaxReplicas: 9}, want: Request{Replicas: 2, Quorum: 2, MaxReplicas: 9}},
		{name: "quorum above replicas", in: Request{Replicas: 2, Quorum: 3}, wantErr: "a quorum of 3 needs at least 3 replicas, not 2"},
		{name: "quorum above the default replicas", in: Request{Quorum: 3}, wantErr: "a quorum of 3 needs at least 3 replicas, not 2"},
		{name: "max replicas below replicas", in: Request{Replicas: 3, MaxReplicas: 2}, wantErr: "max replicas 2 is below the 3 replicas"},
		{name: "max replicas below the default replicas", in: Request{MaxReplicas: 1}, wantErr: "max replicas 1 is below the 2 replicas"},
		{name: "negative replicas", in: Request{Replicas: -1}, wantErr: "cannot be negative"},
		{name: "negative quorum", in: Request{Replicas: 2, Quorum: -1}, wantErr: "cannot be negative"},
		{name: "negative max replicas", in: Request{MaxReplicas: -3}, wantErr: "cannot be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.in
			err := r.Settle()
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v (settled to %d/%d/%d), want an error saying %q", err, r.Replicas, r.Quorum, r.MaxReplicas, tt.wantErr)
				}
			case err != nil:
				t.Fatalf("got %v, want replicas %d, quorum %d, max replicas %d", err, tt.want.Replicas, tt.want.Quorum, tt.want.MaxReplicas)
			case r.Replicas != tt.want.Replicas || r.Quorum != tt.want.Quorum || r.MaxReplicas != tt.want.MaxReplicas:
				t.Fatalf("got replicas %d, quorum %d, max replicas %d; want %d, %d, %d",
					r.Replicas, r.Quorum, r.MaxReplicas, tt.want.Replicas, tt.want.Quorum, tt.want.MaxReplicas)
			}
		})
	}
}

// withMachine returns bin with its ELF e_machine set to m.
func withMachine(bin []byte, m uint16) []byte {
	b := bytes.Clone(bin)
	binary.LittleEndian.PutUint16(b[18:], m)
	return b
}

// dynamicELF returns a valid job whose PT_NOTE header (the third) is made a PT_INTERP: a
// dynamically linked executable, as far as the kernel is concerned.
func dynamicELF() []byte {
	b := testelf.Exit0(nil)
	binary.LittleEndian.PutUint32(b[64+2*56:], 3) // PT_INTERP
	return b
}

// TestSubmitValidatesLocally checks that the submitter refuses a file that is not a job
// with ErrRejected and the sandbox's reason, before it asks a worker anything.
//
// With the defence off (run once: prepare skipped ArchOf and Validate and sent every file
// as an amd64 job) every file reached both workers (10 offer and 10 job streams) and, the
// grid's fake runners accepting anything, came back with no error at all.
func TestSubmitValidatesLocally(t *testing.T) {
	tests := []struct {
		name   string
		bin    []byte
		reason string // the sandbox's
	}{
		{"not an ELF", []byte("# README\n\nThis is not a job.\n"), "not an ELF file"},
		{"a script", []byte("#!/bin/sh\necho hi\n"), "a #! script"},
		{"dynamically linked", dynamicELF(), "dynamically linked (PT_INTERP)"},
		{"for a machine no sandbox runs", withMachine(testBinary, 40), "ELF for machine 40"},
		{"for arm64, which this sandbox does not run", withMachine(testBinary, 183), "not x86-64"},
	}
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := g.sub.Submit(context.Background(), Request{Binary: tt.bin, Replicas: 2})
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("got %v, want ErrRejected saying %q", err, tt.reason)
			}
			if rep != nil {
				t.Errorf("got report %+v, want none", rep)
			}
			if kind := JSON(rep, err).ErrorKind; kind != "rejected" {
				t.Errorf("JSON error_kind: got %q, want rejected", kind)
			}
		})
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if info, job := g.opened(protocol.InfoID), g.opened(protocol.JobID); info+job != 0 || len(g.arches) != 0 {
		t.Fatalf("workers got %d offer and %d job streams, FindWorkers was asked %q; want nothing sent", info, job, g.arches)
	}
}

// TestWorkerRejectionReachesSubmitter checks that a worker that rejects the binary, by its
// own validator or by the sandbox's result, answers with a REJECTED refusal whose reason
// reaches the submitter: in each replica's Err, in Submit's error (ErrRejected when every
// worker rejected it) and in the JSON report.
//
// With the defence off (run once: execute answered a runner's StatusRejected as an ordinary
// result with a receipt, as before, and the REJECTED refusal carried no reason) the runner
// case reached a quorum on "rejected" with no error, and the Validate case said only
// "binary rejected". Before the fix in runOne, a REJECTED answer was a "failed: ..." error,
// not ErrRefused as Replica.Err documents.
func TestWorkerRejectionReachesSubmitter(t *testing.T) {
	const why = "this worker accepts no job on a Sunday"
	strict := func([]byte, sandbox.Limits) error { return &sandbox.RejectError{Reason: why} }
	refusing := RunnerFunc(func(context.Context, sandbox.Job, sandbox.Limits) (sandbox.Result, error) {
		return sandbox.Result{Status: sandbox.StatusRejected, Reason: why, OutputCID: cids.Sum(nil)}, nil
	})
	tests := []struct {
		name string
		cfg  WorkerConfig
	}{
		{"stricter Validate", WorkerConfig{Runner: upper, Validate: strict}},
		{"runner's rejected result", WorkerConfig{Runner: refusing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGrid(t, tt.cfg, tt.cfg)
			rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("x"), Replicas: 2})
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), why) {
				t.Fatalf("Submit: got %v, want ErrRejected saying %q", err, why)
			}
			if rep == nil || len(rep.Replicas) != 2 {
				t.Fatalf("got report %+v, want 2 replicas", rep)
			}
			for _, r := range rep.Replicas {
				if !errors.Is(r.Err, ErrRefused) || !errors.Is(r.Err, ErrRejected) || !strings.Contains(r.Err.Error(), why) || r.ReceiptValid || len(r.Receipt) > 0 {
					t.Errorf("replica of %s: got err %v, receipt %d bytes; want a REJECTED refusal (ErrRefused) saying %q and no receipt", short(r.Worker), r.Err, len(r.Receipt), why)
				}
			}
			js := JSON(rep, err)
			if js.ErrorKind != "rejected" || !errors.Is(js.Err(), ErrRejected) || len(js.Replicas) != 2 || !strings.Contains(js.Replicas[0].Error, why) {
				t.Errorf("JSON: got %+v, want error_kind rejected and the reason per replica", js)
			}
		})
	}

	t.Run("one of three rejects", func(t *testing.T) {
		g := newGrid(t, WorkerConfig{Runner: upper, Validate: strict}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
		g.placeFirst(g.hosts[0].ID())
		rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("x"), Replicas: 2})
		if err != nil || string(rep.Output) != "X" {
			t.Fatalf("got %v, %+v; want output X from the two others", err, rep)
		}
		rejected, ok := 0, 0
		for _, r := range rep.Replicas {
			switch {
			case errors.Is(r.Err, ErrRefused) && errors.Is(r.Err, ErrRejected) && strings.Contains(r.Err.Error(), why):
				rejected++
			case r.Err == nil && r.ReceiptValid:
				ok++
			default:
				t.Errorf("replica of %s: %v", short(r.Worker), r.Err)
			}
		}
		if rejected != 1 || ok != 2 {
			t.Fatalf("got %d REJECTED refusals and %d results, want 1 and 2", rejected, ok)
		}
	})
}

// stderrRunner exits 0 with its input as output and the given stderr.
func stderrRunner(stderr []byte) RunnerFunc {
	return RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		r, err := echo.Run(ctx, job, lim)
		r.Stderr = stderr
		return r, err
	})
}

// TestSubmitStderr checks that the job's stderr comes back, bounded, is what the receipt
// signs, and is part of the verdict: replicas whose stderr differs do not agree.
//
// With the defence off (run once: verdictOf left out the stderr CID) the "differs" case
// reached a quorum with no error, and the other cases' reports had no stderr CID.
func TestSubmitStderr(t *testing.T) {
	long := bytes.Repeat([]byte("e"), protocol.MaxStderr+100)
	tests := []struct {
		name       string
		stderrs    [][]byte // one worker each
		wantErr    error
		wantStderr []byte
	}{
		{name: "returned", stderrs: [][]byte{[]byte("warning: x\n"), []byte("warning: x\n")}, wantStderr: []byte("warning: x\n")},
		{name: "none", stderrs: [][]byte{nil, nil}, wantStderr: nil},
		{name: "bounded", stderrs: [][]byte{long, long}, wantStderr: long[:protocol.MaxStderr]},
		{name: "differs", stderrs: [][]byte{[]byte("one\n"), []byte("two\n")}, wantErr: ErrNoQuorum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfgs []WorkerConfig
			for _, e := range tt.stderrs {
				cfgs = append(cfgs, WorkerConfig{Runner: stderrRunner(e)})
			}
			g := newGrid(t, cfgs...)
			rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("out"), Replicas: 2, Quorum: 2, MaxReplicas: 2})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				for _, r := range rep.Replicas {
					if !r.ReceiptValid || r.Err != nil || !r.OutputCID.Equals(cids.Sum([]byte("out"))) {
						t.Errorf("replica %+v: want a valid receipt for the same stdout", r)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rep.Stderr, tt.wantStderr) || !rep.StderrCID.Equals(cids.Sum(tt.wantStderr)) || string(rep.Output) != "out" {
				t.Fatalf("got stderr of %d bytes (%s), output %q; want %d bytes", len(rep.Stderr), rep.StderrCID, rep.Output, len(tt.wantStderr))
			}
			for _, r := range rep.Replicas {
				rc, _, err := protocol.OpenReceipt(r.Receipt)
				if err != nil || !rc.StderrCID.Equals(cids.Sum(tt.wantStderr)) {
					t.Errorf("receipt of %s: stderr %v, %v; want %s", short(r.Worker), rc, err, cids.Sum(tt.wantStderr))
				}
			}
			if got := JSON(rep, err).Stderr; !bytes.Equal(got, tt.wantStderr) {
				t.Errorf("JSON stderr: got %d bytes, want %d", len(got), len(tt.wantStderr))
			}
		})
	}
}

// fakeWorker serves offers and answers every job on a host of its own with the stderr and
// the receipt's stderr CID of its choosing; otherwise it answers as an honest worker would.
func fakeWorker(t *testing.T, stderr []byte, stderrCID cid.Cid) *countingHost {
	t.Helper()
	h := &countingHost{Host: newHost(t)}
	key := h.Peerstore().PrivKey(h.ID())
	h.SetStreamHandler(protocol.InfoID, func(s network.Stream) {
		defer s.Close()
		var req protocol.InfoRequest
		if protocol.ReadMsg(s, &req, protocol.MaxControlMsg) != nil {
			s.Reset()
			return
		}
		sealed, err := protocol.SealOffer(&protocol.Offer{Peer: h.ID(), Arch: sandbox.ArchAMD64, SlotsFree: 1, SlotsTotal: 1,
			Max: sandbox.DefaultLimits(), MaxInput: DefaultMaxInput, Time: time.Now(), Nonce: req.Nonce}, key)
		if err != nil {
			t.Error(err)
		}
		protocol.WriteMsg(s, &protocol.InfoResponse{Offer: sealed})
	})
	h.SetStreamHandler(protocol.JobID, func(s network.Stream) {
		defer s.Close()
		var req protocol.JobRequest
		if protocol.ReadMsg(s, &req, protocol.MaxJobRequest) != nil || protocol.WriteMsg(s, &protocol.JobAdmit{}) != nil {
			s.Reset()
			return
		}
		jobCID, _ := cids.Cast(req.JobCid)
		inputCID, _ := cids.Cast(req.InputCid)
		out := []byte("out")
		receipt, err := protocol.SealReceipt(&protocol.Receipt{JobCID: jobCID, InputCID: inputCID, OutputCID: cids.Sum(out), StderrCID: stderrCID,
			Status: string(sandbox.StatusExited), Worker: h.ID(), Nonce: req.Nonce}, key)
		if err != nil {
			t.Error(err)
		}
		protocol.WriteMsgPayload(s, &protocol.JobResult{OutputSize: uint64(len(out)), Stderr: stderr, Receipt: receipt}, out)
	})
	return h
}

// TestSubmitStderrReceipt checks that a receipt must sign the stderr that came with it.
//
// With the defence off (run once: checkReceipt did not compare the stderr CID) the
// replicas whose receipts named other stderr were accepted, with the unsigned stderr.
func TestSubmitStderrReceipt(t *testing.T) {
	stderr := []byte("the job's own words\n")
	tests := []struct {
		name      string
		stderrCID cid.Cid
		wantErr   error // of the replica
	}{
		{"signed", cids.Sum(stderr), nil},
		{"stderr of other bytes", cids.Sum([]byte("something else\n")), ErrBadReceipt},
		{"stderr of no bytes", cids.Sum(nil), ErrBadReceipt},
		{"no stderr cid", cid.Undef, ErrBadReceipt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := fakeWorker(t, stderr, tt.stderrCID)
			sub := newSubmitter(t, findOnly(addrInfo(w)))
			rep, err := sub.Submit(context.Background(), Request{Binary: testBinary, Replicas: 1})
			if rep == nil || len(rep.Replicas) != 1 {
				t.Fatalf("got %v, %+v; want one replica", err, rep)
			}
			r := rep.Replicas[0]
			if tt.wantErr == nil {
				if err != nil || !bytes.Equal(rep.Stderr, stderr) || !r.ReceiptValid {
					t.Fatalf("got %v, stderr %q, replica %+v; want the signed stderr accepted", err, rep.Stderr, r)
				}
				return
			}
			if !errors.Is(r.Err, tt.wantErr) || r.ReceiptValid || !errors.Is(err, ErrNoQuorum) || rep.Stderr != nil {
				t.Fatalf("got replica err %v (receipt valid %v), submit %v, stderr %q; want %v and no quorum", r.Err, r.ReceiptValid, err, rep.Stderr, tt.wantErr)
			}
		})
	}
}

// TestWorkerFillsLimits checks that unset limits reach the runner as the worker's defaults
// (the one layer that fills them), and set ones as the submitter gave them; a small memory
// limit gets a stack that fits in it.
//
// With the defence off (run once: prepare filled the request's unset limits from
// sandbox.DefaultLimits, as the submitter did before) the 8 MiB worker's offer no longer fit
// a request that set nothing, nor the 1-minute worker's ("no workers available: 0 of 1
// candidate can take the job").
func TestWorkerFillsLimits(t *testing.T) {
	d := sandbox.DefaultLimits()
	tests := []struct {
		name    string
		worker  sandbox.Limits
		request sandbox.Limits
		want    sandbox.Limits // what the runner sees
	}{
		{"nothing set", sandbox.Limits{}, sandbox.Limits{}, d},
		{"memory 8 MiB on both sides", sandbox.Limits{Memory: 8 << 20}, sandbox.Limits{Memory: 8 << 20},
			sandbox.Limits{CPU: d.CPU, Wall: d.Wall, Memory: 8 << 20, Stack: 2 << 20, MaxOutput: d.MaxOutput, MaxBinary: d.MaxBinary}},
		{"memory 8 MiB at the worker only", sandbox.Limits{Memory: 8 << 20}, sandbox.Limits{},
			sandbox.Limits{CPU: d.CPU, Wall: d.Wall, Memory: 8 << 20, Stack: 2 << 20, MaxOutput: d.MaxOutput, MaxBinary: d.MaxBinary}},
		{"memory 4 MiB asked of a default worker", sandbox.Limits{}, sandbox.Limits{Memory: 4 << 20},
			sandbox.Limits{CPU: d.CPU, Wall: d.Wall, Memory: 4 << 20, Stack: 1 << 20, MaxOutput: d.MaxOutput, MaxBinary: d.MaxBinary}},
		{"worker's cpu maximum", sandbox.Limits{CPU: time.Minute}, sandbox.Limits{},
			sandbox.Limits{CPU: time.Minute, Wall: d.Wall, Memory: d.Memory, Stack: d.Stack, MaxOutput: d.MaxOutput, MaxBinary: d.MaxBinary}},
		{"set limits kept", sandbox.Limits{}, sandbox.Limits{CPU: time.Second, Stack: 1 << 20, MaxOutput: 10},
			sandbox.Limits{CPU: time.Second, Wall: d.Wall, Memory: d.Memory, Stack: 1 << 20, MaxOutput: 10, MaxBinary: d.MaxBinary}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan sandbox.Limits, 1)
			seen := RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
				got <- lim
				return echo.Run(ctx, job, lim)
			})
			g := newGrid(t, WorkerConfig{Runner: seen, Limits: tt.worker})
			if _, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Limits: tt.request, Replicas: 1}); err != nil {
				t.Fatal(err)
			}
			if lim := recv(t, got, "the run"); lim != tt.want {
				t.Fatalf("runner got %+v, want %+v", lim, tt.want)
			}
		})
	}
}

// TestFakePlatformSubmitter checks that a submitter on a platform the sandbox cannot serve
// (darwin/arm64, faked) looks for workers of the job's architecture and runs the job, and
// that a worker there without an explicit Arch refuses to start.
//
// With the defence off (run once: workers() asked FindWorkers for platform.Current) the
// submitter looked for darwin/arm64 workers.
func TestFakePlatformSubmitter(t *testing.T) {
	g := newGrid(t, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	old := platform.Current
	platform.Current = "darwin/arm64"
	t.Cleanup(func() { platform.Current = old })

	var mu sync.Mutex
	var asked []string
	found := g.sub.cfg.FindWorkers
	sub := newSubmitter(t, func(ctx context.Context, arch string) ([]peer.AddrInfo, error) {
		mu.Lock()
		asked = append(asked, arch)
		mu.Unlock()
		if arch != sandbox.ArchAMD64 {
			return nil, nil
		}
		return found(ctx, arch)
	})
	mu.Lock()
	asked = nil // newSubmitter asked once, to trust the workers
	mu.Unlock()
	rep, err := sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("from a mac"), Replicas: 2})
	if err != nil || string(rep.Output) != "FROM A MAC" {
		t.Fatalf("got %v, %+v; want output FROM A MAC", err, rep)
	}
	mu.Lock()
	if len(asked) != 1 || asked[0] != sandbox.ArchAMD64 {
		t.Errorf("FindWorkers asked for %q, want [%q]", asked, sandbox.ArchAMD64)
	}
	mu.Unlock()

	_, err = NewWorker(WorkerConfig{Host: newHost(t), Store: newStore(t), Runner: upper})
	if !errors.Is(err, sandbox.ErrUnsupported) {
		t.Errorf("NewWorker on %s: got %v, want sandbox.ErrUnsupported", platform.Current, err)
	}
}

// TestSubmitStopsDispatchWhenCancelled cancels a submit while its first replica runs (the
// runner cancels it, then fails, which would call for another replica): no job stream is
// opened after that.
//
// With the defence off (run once: launch did not check the parent context) the submitter
// sent 4 more replicas after the cancel (5 job streams asked for, 5 replicas); their
// streams died at once on the cancelled context, so the workers saw only the first.
func TestSubmitStopsDispatchWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	failing := RunnerFunc(func(context.Context, sandbox.Job, sandbox.Limits) (sandbox.Result, error) {
		cancel()
		return sandbox.Result{}, fmt.Errorf("the machine caught fire")
	})
	var cfgs []WorkerConfig
	for range 5 {
		cfgs = append(cfgs, WorkerConfig{Runner: failing})
	}
	g := newGrid(t, cfgs...)
	rep, err := g.sub.Submit(ctx, Request{Binary: testBinary, Replicas: 1, Quorum: 1, MaxReplicas: 5})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	sent, opened := g.subHost.(*countingHost).asked(protocol.JobID), g.opened(protocol.JobID)
	if sent != 1 || opened != 1 || len(rep.Replicas) != 1 {
		t.Fatalf("the submitter asked for %d job streams, the workers got %d, %d replicas; want 1 each", sent, opened, len(rep.Replicas))
	}
	if kind := JSON(rep, err).ErrorKind; kind != "cancelled" {
		t.Errorf("JSON error_kind: got %q, want cancelled", kind)
	}
}
