package node

import (
	"context"
	"runtime/debug"
	"sync"
	"time"

	"github.com/gridnode/gridnode/jobs"
)

// The node's memory policy: memory bounded by the job. A job's payload (binary, input and
// output, up to 112 MiB a slot) is read into one buffer each and dropped when the job ends,
// but the Go runtime gives freed heap back to the OS only after a collection, which an
// idle daemon's few allocations never trigger: workers sat at 125-326 MB RSS after a few
// 16-32 MiB jobs with 1-3 MB live. So once a job or a submit that held at least releaseMin
// bytes is over, the node collects and returns the freed memory to the OS
// (debug.FreeOSMemory), at most once per releaseEvery: a burst of large jobs costs one
// collection per interval, and small jobs none. A GOMEMLIMIT would not help an idle
// daemon (it only acts as the heap nears it), and keeping buffers pooled would hold the
// largest job's memory for good.
const (
	releaseMin   = 4 << 20
	releaseEvery = 250 * time.Millisecond
)

// memoryEvents returns the Events through which the node's finished jobs and submits reach
// its memory policy. The goroutine that releases memory starts with the first large
// payload (a node whose Open fails never has one) and ends with the node.
func (n *Node) memoryEvents() jobs.Events {
	ctx := n.lifetime()
	kick := make(chan struct{}, 1)
	var start sync.Once
	return jobs.Events{Released: func(payload int64) {
		if payload < releaseMin {
			return
		}
		start.Do(func() { go releaseLoop(ctx, kick, releaseEvery, debug.FreeOSMemory) })
		select {
		case kick <- struct{}{}:
		default: // a release is already due
		}
	}}
}

// releaseLoop calls release after each kick, at most once per every, until ctx ends: kicks
// that come while a release waits its turn make one release.
func releaseLoop(ctx context.Context, kick <-chan struct{}, every time.Duration, release func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		release()
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}
