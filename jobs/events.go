package jobs

import (
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/protocol"
)

// Events receives what a worker and a submitter did, for the node's history and metrics.
// Nil fields are skipped. They are called synchronously from the job's goroutine, so they
// must be quick (append to a queue, bump a counter).
type Events struct {
	// Job is called once for every job a worker admitted, when it ends in any way.
	Job func(JobEvent)
	// Refused is called for every request a worker refused before admitting it.
	Refused func(from peer.ID, code protocol.Code)
	// Submitted is called when a submit ends, with its report (nil if it never got one)
	// and its error.
	Submitted func(rep *Report, err error)
	// Released is called when a worker's job or a submit no longer holds its payload
	// buffers, with their size in bytes (binary, input and outputs): the node's memory
	// policy (node/memory.go) then returns the freed heap to the OS.
	Released func(payload int64)
}

// JobEvent is one job a worker admitted.
type JobEvent struct {
	From             peer.ID // the submitter
	JobCID, InputCID cid.Cid
	Start, End       time.Time // admission and answer
	// Verdict is what the worker's receipt says; zero when it sent none (Err is set).
	Verdict
	CPU, Wall time.Duration
	Receipt   []byte // sealed, as sent
	Err       error  // why no result was sent: a refusal after admission, a failure, cancellation
}

// jobEvent tells Events.Job how an admitted job ended: res is the result execute made, err
// why there is none (or the context's error when the job was cancelled).
func (w *Worker) jobEvent(sp *spec, start time.Time, res *protocol.JobResult, err error) {
	if w.cfg.Events.Job == nil {
		return
	}
	ev := JobEvent{From: sp.from, JobCID: sp.jobCID, InputCID: sp.inputCID, Start: start, End: time.Now(), Err: err}
	if err == nil && res != nil {
		ev.Verdict, ev.CPU, ev.Wall, ev.Receipt = sp.verdict, sp.cpu, sp.wall, res.Receipt
	}
	w.cfg.Events.Job(ev)
}

// JoinEvents returns Events that call each of es in turn (history, metrics, ...).
func JoinEvents(es ...Events) Events {
	var out Events
	for _, e := range es {
		if f := e.Job; f != nil {
			prev := out.Job
			out.Job = func(ev JobEvent) {
				if prev != nil {
					prev(ev)
				}
				f(ev)
			}
		}
		if f := e.Refused; f != nil {
			prev := out.Refused
			out.Refused = func(p peer.ID, c protocol.Code) {
				if prev != nil {
					prev(p, c)
				}
				f(p, c)
			}
		}
		if f := e.Released; f != nil {
			prev := out.Released
			out.Released = func(n int64) {
				if prev != nil {
					prev(n)
				}
				f(n)
			}
		}
		if f := e.Submitted; f != nil {
			prev := out.Submitted
			out.Submitted = func(rep *Report, err error) {
				if prev != nil {
					prev(rep, err)
				}
				f(rep, err)
			}
		}
	}
	return out
}
