package jobs

import (
	"context"
	"errors"

	"github.com/ipfs/go-cid"
)

// ReportJSON is a submit's report as JSON: what `gridnode submit --json` prints and what
// the daemon's API answers. Its keys are a stable interface, documented in submit --help;
// errors are strings here, with a kind to act on.
type ReportJSON struct {
	JobCID    string        `json:"job_cid"`
	InputCID  string        `json:"input_cid"`
	OutputCID string        `json:"output_cid"` // the accepted verdict's; "" without a quorum
	StderrCID string        `json:"stderr_cid"`
	Status    string        `json:"status"`
	ExitCode  int           `json:"exit_code"`
	Signal    string        `json:"signal"`
	Reason    string        `json:"reason"`
	Error     string        `json:"error,omitempty"`
	ErrorKind string        `json:"error_kind,omitempty"` // see errorKinds
	Output    []byte        `json:"output"`               // base64
	Stderr    []byte        `json:"stderr"`               // base64: the bytes stderr_cid names
	Replicas  []ReplicaJSON `json:"replicas"`
}

// ReplicaJSON is one replica in a ReportJSON.
type ReplicaJSON struct {
	Worker       string `json:"worker"`
	Status       string `json:"status"`
	ExitCode     int    `json:"exit_code"`
	Signal       string `json:"signal"`
	OutputCID    string `json:"output_cid"`
	StderrCID    string `json:"stderr_cid"`
	ReceiptValid bool   `json:"receipt_valid"`
	Receipt      []byte `json:"receipt"` // the sealed receipt, base64
	Error        string `json:"error"`   // why it does not count; "" when it does
	Anchor       string `json:"anchor"`  // trusted, established, local, or "" for a stranger
	Prefix       string `json:"prefix"`  // network prefix of the connection that carried the job
	Local        bool   `json:"local"`   // this machine's own run (--verify-local)
	CPUMs        int64  `json:"cpu_ms"`
	WallMs       int64  `json:"wall_ms"`
}

// errorKinds are the values of error_kind, each with the error it stands for.
var errorKinds = []struct {
	kind string
	err  error
}{
	{"rejected", ErrRejected},
	{"no_workers", ErrNoWorkers},
	{"no_quorum", ErrNoQuorum},
	{"no_trust", ErrNoTrust},
	{"timeout", context.DeadlineExceeded},
	{"cancelled", context.Canceled},
}

// JSON returns rep (which may be nil) and the error Submit returned as a ReportJSON.
func JSON(rep *Report, err error) *ReportJSON {
	out := &ReportJSON{Replicas: []ReplicaJSON{}}
	if rep != nil {
		out.JobCID, out.InputCID = cidString(rep.JobCID), cidString(rep.InputCID)
		out.OutputCID, out.StderrCID = cidString(rep.OutputCID), cidString(rep.StderrCID)
		out.Status, out.ExitCode, out.Signal, out.Reason = rep.Status, rep.ExitCode, rep.Signal, rep.Reason
		out.Output, out.Stderr = rep.Output, rep.Stderr
		for _, r := range rep.Replicas {
			rj := ReplicaJSON{
				Worker: r.Worker.String(), Status: r.Status, ExitCode: r.ExitCode, Signal: r.Signal,
				OutputCID: cidString(r.OutputCID), StderrCID: cidString(r.StderrCID),
				ReceiptValid: r.ReceiptValid, Receipt: r.Receipt,
				Anchor: r.Anchor, Prefix: r.Prefix, Local: r.Local,
				CPUMs: r.CPU.Milliseconds(), WallMs: r.Wall.Milliseconds(),
			}
			if r.Err != nil {
				rj.Error = r.Err.Error()
			}
			out.Replicas = append(out.Replicas, rj)
		}
	}
	if err != nil {
		out.Error, out.ErrorKind = err.Error(), "failed"
		for _, k := range errorKinds {
			if errors.Is(err, k.err) {
				out.ErrorKind = k.kind
				break
			}
		}
	}
	return out
}

// Err returns the report's error, nil if it has none; it matches the sentinel of its
// error_kind with errors.Is (ErrRejected, ErrNoQuorum, context.DeadlineExceeded, ...).
func (r *ReportJSON) Err() error {
	if r.Error == "" {
		return nil
	}
	for _, k := range errorKinds {
		if k.kind == r.ErrorKind {
			return &kindError{msg: r.Error, kind: k.err}
		}
	}
	return errors.New(r.Error)
}

type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func cidString(c cid.Cid) string {
	if !c.Defined() {
		return ""
	}
	return c.String()
}
