//go:build !linux || !amd64

package sandbox

import (
	"context"
	"log/slog"
)

// Runner runs jobs in the sandbox; on this platform it only reports ErrUnsupported.
type Runner struct {
	Logger *slog.Logger
}

// Run returns ErrUnsupported: strict-seccomp jobs need linux/amd64.
func (r *Runner) Run(ctx context.Context, job Job, lim Limits) (Result, error) {
	return Result{}, ErrUnsupported
}
