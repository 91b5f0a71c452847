package jobs

import (
	"errors"

	"github.com/gridnode/gridnode/protocol"
)

var (
	// ErrNoWorkers is returned when no candidate worker offers to run the job.
	ErrNoWorkers = errors.New("no workers available")

	// ErrNoQuorum is returned when the replicas that ran did not reach the quorum.
	ErrNoQuorum = errors.New("no quorum")

	// ErrNoTrust is returned when no quorum could be anchored: no worker that can take the
	// job is trusted or has an established record, and the job is not run locally.
	ErrNoTrust = errors.New("no trusted quorum possible")

	// ErrRejected is returned when the binary is not a job the sandbox accepts: refused
	// locally before sending, or by the workers with the protocol's REJECTED code (it is
	// that code's sentinel).
	ErrRejected = protocol.ErrRejected

	// A replica's Err matches one of these (or wraps a worker's coded error, or a context
	// error when the submit ended before it answered).
	ErrRefused    = errors.New("refused")                    // not admitted; wraps the worker's coded error
	ErrBadReceipt = errors.New("bad receipt")                // not signed by the worker, or not for this job, nonce, output and stderr
	ErrDisagrees  = errors.New("disagrees with the quorum")  // a valid result other than the accepted one
	ErrNotNeeded  = errors.New("not needed: quorum reached") // answered after the quorum was reached
)
