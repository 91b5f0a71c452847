package credit

import "errors"

// Why a credit record is refused. Each wraps, on the wire, protocol.ErrBadRequest.
var (
	// ErrForged: the envelope's signature or signer does not check out, or it came from
	// another peer than the submitter who signed it.
	ErrForged = errors.New("forged credit record")
	// ErrNotMine: the record names another worker.
	ErrNotMine = errors.New("credit record for another worker")
	// ErrNotRun: the record names no job this worker ran for that submitter (job, input,
	// receipt or CPU time differ from the receipt it sealed), or one without a result.
	ErrNotRun = errors.New("credit record for a job this worker did not run")
	// ErrReplay: a record for that receipt is kept already.
	ErrReplay = errors.New("credit record already kept")
	// ErrNotAccepted: the record does not say the replica was accepted.
	ErrNotAccepted = errors.New("credit record of an unaccepted replica")
)
