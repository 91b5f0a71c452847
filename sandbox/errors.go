package sandbox

import (
	"errors"
	"fmt"
)

// ErrUnsupported is returned on platforms where jobs cannot be sandboxed (anything but
// linux/amd64 for now).
var ErrUnsupported = errors.New("sandbox: unsupported platform (linux/amd64 only)")

// ErrRejected is wrapped by every validation failure: the job is refused before it runs.
var ErrRejected = errors.New("rejected")

// RejectError says why a binary was refused. It matches ErrRejected with errors.Is.
type RejectError struct{ Reason string }

func (e *RejectError) Error() string        { return "rejected: " + e.Reason }
func (e *RejectError) Is(target error) bool { return target == ErrRejected }

func reject(format string, args ...any) error {
	return &RejectError{Reason: fmt.Sprintf(format, args...)}
}
