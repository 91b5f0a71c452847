//go:build !linux || !amd64

package sandbox

import (
	"context"
	"log/slog"
)

// Runner runs jobs in the sandbox; on this platform it only reports ErrUnsupported. Its
// fields are those of the linux/amd64 Runner, so configuration builds everywhere.
type Runner struct {
	Logger          *slog.Logger
	JobUIDs         UIDRange
	NoUserNamespace bool
	JobsMemory      int64
	CPUQuota        float64
}

// Run returns ErrUnsupported: strict-seccomp jobs need linux/amd64.
func (r *Runner) Run(ctx context.Context, job Job, lim Limits) (Result, error) {
	return Result{}, ErrUnsupported
}

// Isolation reports no layers: no job runs on this platform.
func (r *Runner) Isolation() Isolation { return Isolation{} }
