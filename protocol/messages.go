package protocol

import (
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gridnode/gridnode/cids"
)

// Check checks the form of a received request; the worker's policy is checked elsewhere.
func (m *JobRequest) Check() error {
	if _, err := cids.Cast(m.JobCid); err != nil {
		return fmt.Errorf("%w: job cid: %v", ErrBadRequest, err)
	}
	if len(m.Input) > 0 {
		return fmt.Errorf("%w: input inside the request (send it inline after admission, or by cid)", ErrBadRequest)
	}
	if len(m.InputCid) > 0 {
		if _, err := cids.Cast(m.InputCid); err != nil {
			return fmt.Errorf("%w: input cid: %v", ErrBadRequest, err)
		}
	} else if m.InputSize > 0 || m.InputInline {
		return fmt.Errorf("%w: input of %d bytes without a cid", ErrBadRequest, m.InputSize)
	}
	if m.InputInline && m.InputSize > MaxInline {
		return fmt.Errorf("%w: inline input of %d bytes", ErrTooLarge, m.InputSize)
	}
	if len(m.Arch) > MaxText {
		return fmt.Errorf("%w: arch", ErrBadRequest)
	}
	return CheckNonce(m.Nonce)
}

// Check checks the form of a received result. A refusal (non-OK code) is well formed; its
// error is Err.
func (m *JobResult) Check() error {
	if len(m.Output) > 0 {
		return fmt.Errorf("%w: output inside the result (it follows the result raw)", ErrBadRequest)
	}
	if m.SendInput {
		if m.Code != Code_OK || m.Reason != "" || m.OutputSize > 0 || len(m.Stderr) > 0 || len(m.Receipt) > 0 {
			return fmt.Errorf("%w: input request carrying a result", ErrBadRequest)
		}
		return nil
	}
	if m.Code != Code_OK {
		if m.OutputSize > 0 {
			return fmt.Errorf("%w: refusal with output", ErrBadRequest)
		}
		if len(m.Message) > MaxReason {
			return fmt.Errorf("%w: refusal message of %d bytes", ErrTooLarge, len(m.Message))
		}
		return nil
	}
	switch {
	case len(m.Reason) > MaxReason:
		return fmt.Errorf("%w: result reason of %d bytes", ErrBadRequest, len(m.Reason))
	case m.OutputSize > MaxOutput:
		return fmt.Errorf("%w: output of %d bytes", ErrTooLarge, m.OutputSize)
	case len(m.Stderr) > MaxStderr:
		return fmt.Errorf("%w: stderr of %d bytes", ErrTooLarge, len(m.Stderr))
	case len(m.Receipt) == 0 || len(m.Receipt) > MaxEnvelope:
		return fmt.Errorf("%w: receipt of %d bytes", ErrBadRequest, len(m.Receipt))
	}
	return nil
}

// Err returns the remote's coded error, or nil for OK.
func (m *JobResult) Err() error { return FromCode(m.GetCode(), m.GetMessage()) }

// Err returns the remote's coded error, or nil for OK.
func (m *JobAdmit) Err() error { return FromCode(m.GetCode(), m.GetMessage()) }

// Err returns the remote's coded error, or nil for OK.
func (m *InfoResponse) Err() error { return FromCode(m.GetCode(), m.GetMessage()) }

// ReadBlobHeader reads the BlobResponse that starts a blob reply and returns how many raw
// bytes follow it, or the remote's coded error. A size above max fails with ErrTooLarge.
func ReadBlobHeader(r io.Reader, max int64) (int64, error) {
	var m BlobResponse
	if err := ReadMsg(r, &m, MaxControlMsg); err != nil {
		return 0, fmt.Errorf("read blob header: %w", err)
	}
	if err := FromCode(m.Code, m.Message); err != nil {
		return 0, err
	}
	if max < 0 || m.Size > uint64(max) {
		return 0, fmt.Errorf("%w: blob of %d bytes, limit %d", ErrTooLarge, m.Size, max)
	}
	return int64(m.Size), nil
}

// Clean makes s fit a string field: valid UTF-8 (proto3 requires it) and at most n bytes,
// cut at a rune boundary.
func Clean(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	// Text from peers reaches terminals: no control characters (escape sequences, carriage
	// returns, new lines that fake a line of our own), each shown as a space.
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
