package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gridnode/gridnode/jobs"
)

// TestCreditBatch: a batch earns each agreeing worker a record per job, all of them
// delivered (several on a stream) and kept.
func TestCreditBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ws, client := creditGrid(t, ctx, 2)
	const n = 300 // more than one stream's worth of records per worker
	inputs := make([][]byte, n)
	for i := range inputs {
		inputs[i] = fmt.Appendf(nil, "credit %d", i)
	}
	var mu sync.Mutex
	var failed []error
	err := client.SubmitBatch(ctx, jobs.Request{Binary: fakeELF, Replicas: 2}, inputs, func(i int, rep *jobs.Report, err error) {
		if err != nil {
			mu.Lock()
			failed = append(failed, err)
			mu.Unlock()
		}
	})
	if err != nil || len(failed) > 0 {
		t.Fatalf("batch: %v, %d jobs failed: %v", err, len(failed), errors.Join(failed[:min(len(failed), 3)]...))
	}
	for i, w := range ws {
		waitUntil(t, 60*time.Second, fmt.Sprintf("worker %d's %d credit records", i, n), func() bool {
			rs, err := w.Credit().Records()
			return err == nil && len(rs) == n
		})
	}
}

// creditGrid starts two workers with a history (so they keep credit) that echo their
// input, with slots each, and an ephemeral client trusting both.
func creditGrid(t *testing.T, ctx context.Context, slots int) (ws []*Node, client *Node) {
	t.Helper()
	var boot []string
	for i := range 2 {
		w, err := Open(ctx, Config{DataDir: t.TempDir(), Loopback: true, Worker: true, Runner: echoRunner, Slots: slots, Bootstrap: boot})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		if i == 0 {
			boot = w.AddrStrings()
		}
		ws = append(ws, w)
	}
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
	return ws, client
}
