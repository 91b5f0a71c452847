package protocol

import (
	"fmt"

	p2pproto "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/gridnode/gridnode/cids"
)

// BatchID is the batch protocol: many small jobs of one binary on one stream, each with its
// own receipt, signed several at a time (batch.proto). 1.0.0 signed each receipt alone.
const BatchID p2pproto.ID = "/gridnode/batch/2.0.0"

// Caps of the batch protocol. A batch is for many small jobs: the inputs ride inside the
// request and each output inside its result, so both are bounded well below the job
// protocol's raw payloads. A worker buffers at most MaxBatchRequest for a batch it has not
// yet judged, as it does MaxJobRequest for a job.
const (
	MaxBatchItems   = 256
	MaxBatchRequest = 1 << 20
	MaxBatchOutput  = 1 << 20 // the output limit of a batch's jobs: a batch asking more is refused
	MaxBatchResult  = MaxBatchOutput + MaxStderr + 2*MaxEnvelope + MaxReason + 1<<10
	// A worker seals its receipts at least every MaxUnsealed items that have one, and as
	// soon as the outputs of those awaiting a seal reach MaxBatchOutput; a submitter, which
	// holds those results until their seal comes, takes no more than MaxUnsealed of them or
	// MaxUnsealedOutput bytes of their outputs.
	MaxUnsealed       = 16
	MaxUnsealedOutput = 2 * MaxBatchOutput
)

// Check checks the form of a received batch request.
func (m *BatchRequest) Check() error {
	if _, err := cids.Cast(m.JobCid); err != nil {
		return fmt.Errorf("%w: job cid: %v", ErrBadRequest, err)
	}
	if len(m.Arch) > MaxText {
		return fmt.Errorf("%w: arch", ErrBadRequest)
	}
	switch n := len(m.Items); {
	case n == 0:
		return fmt.Errorf("%w: a batch of no jobs", ErrBadRequest)
	case n > MaxBatchItems:
		return fmt.Errorf("%w: a batch of %d jobs, at most %d", ErrTooLarge, n, MaxBatchItems)
	}
	for i, it := range m.Items {
		if err := CheckNonce(it.Nonce); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
	}
	return nil
}

// Check checks the form of a received batch result for item want. A coded failure is well
// formed; its error is Err.
func (m *BatchResult) Check(want int) error {
	if int(m.Index) != want {
		return fmt.Errorf("%w: result for item %d, expected %d", ErrBadRequest, m.Index, want)
	}
	if len(m.Seal) > MaxEnvelope {
		return fmt.Errorf("%w: seal of %d bytes", ErrTooLarge, len(m.Seal))
	}
	if m.SealOnly() {
		if m.Message != "" || m.Reason != "" || len(m.Output) > 0 || len(m.Stderr) > 0 {
			return fmt.Errorf("%w: a seal frame with a result", ErrBadRequest)
		}
		return nil
	}
	if m.Code != Code_OK {
		if len(m.Output) > 0 || len(m.Receipt) > 0 {
			return fmt.Errorf("%w: failure with a result", ErrBadRequest)
		}
		if len(m.Message) > MaxReason {
			return fmt.Errorf("%w: failure message of %d bytes", ErrTooLarge, len(m.Message))
		}
		return nil
	}
	switch {
	case len(m.Reason) > MaxReason:
		return fmt.Errorf("%w: result reason of %d bytes", ErrBadRequest, len(m.Reason))
	case len(m.Output) > MaxBatchOutput:
		return fmt.Errorf("%w: output of %d bytes", ErrTooLarge, len(m.Output))
	case len(m.Stderr) > MaxStderr:
		return fmt.Errorf("%w: stderr of %d bytes", ErrTooLarge, len(m.Stderr))
	case len(m.Receipt) == 0 || len(m.Receipt) > MaxEnvelope:
		return fmt.Errorf("%w: receipt of %d bytes", ErrBadRequest, len(m.Receipt))
	}
	return nil
}

// SealOnly reports whether m is a frame of a seal alone: no result, its index the next
// result's (a worker sealing while a job runs).
func (m *BatchResult) SealOnly() bool {
	return m.Code == Code_OK && len(m.Receipt) == 0 && len(m.Seal) > 0
}

// Err returns the remote's coded error, or nil for OK.
func (m *BatchResult) Err() error { return FromCode(m.GetCode(), m.GetMessage()) }
