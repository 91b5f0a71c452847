package testnet

import (
	"context"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/internal/testelf"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/sandbox"
)

// TestDepartedWorkerCostsLittle: once a worker has left, its provider record and routing
// table entries linger on the other nodes. A submit must not wait on them: each one cost
// 5 s (the dial timeout for local addresses) before the DHT lookup stopped at the first
// quiet spell and the offers' grace was cut to 300 ms; now it costs at most about that
// (the bound here is generous for a loaded machine).
func TestDepartedWorkerCostsLittle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exit0 := jobs.RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		return sandbox.Result{Status: sandbox.StatusExited, OutputCID: cids.Sum(nil)}, nil
	})
	net, err := Start(ctx, Setup{Nodes: 5, Runner: exit0})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	net.Nodes()[4].Close()
	bin := testelf.Exit0(nil)
	for i := range 3 {
		c, err := net.NewClient(ctx) // a fresh submitter each time, as `gridnode submit` is
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if _, err := c.Submit(ctx, jobs.Request{Binary: bin}); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(t0); took > 2500*time.Millisecond {
			t.Errorf("submit %d with a departed worker in the grid took %v, want well under the 5 s dial timeout", i, took)
		} else {
			t.Logf("submit %d with a departed worker in the grid: %v", i, took.Round(time.Millisecond))
		}
	}
}
