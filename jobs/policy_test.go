package jobs

import (
	"context"
	"errors"
	"math"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

func TestDefaultSlots(t *testing.T) {
	if got, want := DefaultSlots(), max(1, runtime.NumCPU()/2); got != want {
		t.Fatalf("got %d, want %d", got, want)
	}
	g := newGrid(t, WorkerConfig{Runner: upper}) // Slots 0: the default
	o, _, err := g.sub.queryOffer(context.Background(), addrInfo(g.hosts[0]))
	if err != nil {
		t.Fatal(err)
	}
	if o.SlotsTotal != DefaultSlots() || o.MaxLoad != 0 || o.Paused {
		t.Fatalf("got slots %d, max load %v, paused %v; want %d, 0, false", o.SlotsTotal, o.MaxLoad, o.Paused, DefaultSlots())
	}
}

func TestLoadGateObserve(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type sample struct {
		after          time.Duration // since the previous sample
		runnable, grid int
	}
	tests := []struct {
		name    string
		max     float64
		samples []sample
		want    float64
		paused  bool
	}{
		{"first sample is the average", 1, []sample{{0, 3, 0}}, 3, true},
		{"grid jobs do not count", 1, []sample{{0, 3, 2}}, 1, false},
		{"more grid jobs than runnable tasks", 1, []sample{{0, 1, 2}}, 0, false},
		{"one busy second barely moves it", 1, []sample{{0, 0, 0}, {time.Second, 10, 0}}, 10 * (1 - math.Exp(-0.1)), false},
		{"ten busy seconds pause", 1, []sample{{0, 0, 0}, {10 * time.Second, 2, 0}}, 2 * (1 - math.Exp(-1)), true},
		{"a long quiet time forgets", 0.5, []sample{{0, 8, 0}, {time.Hour, 0, 0}}, 0, false},
		{"no max never pauses", 0, []sample{{0, 99, 0}}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &loadGate{max: tt.max}
			at := t0
			for _, s := range tt.samples {
				at = at.Add(s.after)
				g.observe(at, s.runnable, s.grid)
			}
			load, paused := g.state()
			if math.Abs(load-tt.want) > 1e-9 || paused != tt.paused {
				t.Fatalf("got load %v paused %v, want %v %v", load, paused, tt.want, tt.paused)
			}
		})
	}
}

func TestParseProcsRunning(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int
		ok   bool
	}{
		{"counts", "cpu  1 2 3\nintr 5\nprocs_running 4\nprocs_blocked 0\n", 3, true},
		{"only the reader", "procs_running 1\n", 0, true},
		{"missing", "cpu 1 2 3\nprocs_blocked 0\n", 0, false},
		{"garbage", "procs_running x\n", 0, false},
		{"negative", "procs_running -3\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcsRunning([]byte(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("got %d, %v; want %d, ok %v", got, err, tt.want, tt.ok)
			}
		})
	}
	if runtime.GOOS == "linux" {
		if n, err := procsRunning(); err != nil || n < 0 {
			t.Fatalf("this machine: got %d, %v", n, err)
		}
	}
}

// TestWorkerMaxLoad checks that a worker refuses jobs with BUSY and says so in its offer
// while its load source reports a machine busier than MaxLoad, and admits them again once
// the load is below it; and that the source is sampled while the worker runs.
func TestWorkerMaxLoad(t *testing.T) {
	ctx := context.Background()
	var runnable, samples atomic.Int64
	runnable.Store(5)
	src := func() (int, error) {
		samples.Add(1)
		return int(runnable.Load()), nil
	}
	g := newGrid(t, WorkerConfig{Runner: upper, Slots: 2, MaxLoad: 1, runnable: src})
	w, ai := g.workers[0], addrInfo(g.hosts[0])

	o, _, err := g.sub.queryOffer(ctx, ai)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Paused || o.MaxLoad != 1 || o.Load != 5 || o.SlotsFree != 0 || o.SlotsTotal != 2 {
		t.Fatalf("busy machine: got offer paused %v, max load %v, load %v, slots %d of %d; want true, 1, 5, 0 of 2", o.Paused, o.MaxLoad, o.Load, o.SlotsFree, o.SlotsTotal)
	}
	c, _ := g.stores[0].Put(ctx, testBinary)
	req := func() *protocol.JobRequest {
		return &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c.Bytes(), BinarySize: uint64(len(testBinary)), Nonce: nonce()}
	}
	_, err = rawJob(t, g.subHost, ai.ID, req())
	if !errors.Is(err, protocol.ErrBusy) || !strings.Contains(err.Error(), "the donor's machine is busy: load 5.00 above 1.00") {
		t.Fatalf("busy machine: got %v, want BUSY: the donor's machine is busy: load 5.00 above 1.00", err)
	}

	// The machine quietens down: long enough for the average to follow.
	runnable.Store(0)
	w.load.observe(time.Now().Add(time.Hour), 0, 0)
	if o, _, err = g.sub.queryOffer(ctx, ai); err != nil {
		t.Fatal(err)
	}
	if o.Paused || o.MaxLoad != 1 || o.Load != 0 || o.SlotsFree != 1 {
		t.Fatalf("quiet machine: got offer paused %v, max load %v, load %v, slots free %d; want false, 1, 0, 1", o.Paused, o.MaxLoad, o.Load, o.SlotsFree)
	}
	if res, err := rawJob(t, g.subHost, ai.ID, req()); err != nil || statusOf(res) != "exited" {
		t.Fatalf("quiet machine: got %v, %v; want a run", statusOf(res), err)
	}
	n := samples.Load()
	waitFor(t, "the load to be sampled again", func() bool { return samples.Load() > n })
}

// TestLoadGateCountsGridJobs checks that jobs inside the runner are known to the gate.
func TestLoadGateCountsGridJobs(t *testing.T) {
	b := newBlocker()
	g := newGrid(t, WorkerConfig{Runner: b, Slots: 2, MaxLoad: 1, runnable: func() (int, error) { return 0, nil }})
	go g.sub.Submit(t.Context(), Request{Binary: testBinary, Input: []byte("x"), Replicas: 1})
	recv(t, b.started, "the job to start")
	if got := g.workers[0].load.grid.Load(); got != 1 {
		t.Fatalf("grid jobs running: got %d, want 1", got)
	}
}

func TestNewWorkerMaxLoad(t *testing.T) {
	h, st := newHost(t), newStore(t)
	failing := func() (int, error) { return 0, errors.New("no /proc") }
	for _, cfg := range []WorkerConfig{
		{Host: h, Store: st, Runner: upper, MaxLoad: -1},
		{Host: h, Store: st, Runner: upper, MaxLoad: math.NaN()},
		{Host: h, Store: st, Runner: upper, MaxLoad: 1, runnable: failing},
	} {
		if _, err := NewWorker(cfg); err == nil {
			t.Errorf("max load %v: got a worker, want an error", cfg.MaxLoad)
		}
	}
	if _, err := NewWorker(WorkerConfig{Host: h, Store: st, Runner: upper, runnable: failing}); err != nil {
		t.Errorf("no max load: got %v, want no sampling", err)
	}
}
