package node

import (
	"context"
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
	var ws []*Node
	var boot []string
	for i := range 2 {
		w, err := Open(ctx, Config{DataDir: t.TempDir(), Loopback: true, Worker: true, Runner: echoRunner, Slots: 2, Bootstrap: boot})
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
	const n = 300 // more than one stream's worth of records per worker
	inputs := make([][]byte, n)
	for i := range inputs {
		inputs[i] = fmt.Appendf(nil, "credit %d", i)
	}
	var mu sync.Mutex
	var failed []error
	err = client.SubmitBatch(ctx, jobs.Request{Binary: fakeELF, Replicas: 2}, inputs, func(i int, rep *jobs.Report, err error) {
		if err != nil {
			mu.Lock()
			failed = append(failed, err)
			mu.Unlock()
		}
	})
	if err != nil || len(failed) > 0 {
		t.Fatalf("batch: %v, %d jobs failed, first: %v", err, len(failed), failed[0])
	}
	for i, w := range ws {
		waitUntil(t, 60*time.Second, fmt.Sprintf("worker %d's %d credit records", i, n), func() bool {
			rs, err := w.Credit().Records()
			return err == nil && len(rs) == n
		})
	}
}
