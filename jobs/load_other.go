//go:build !linux

package jobs

import (
	"fmt"

	"github.com/gridnode/gridnode/sandbox"
)

// procsRunning is Linux-only.
func procsRunning() (int, error) {
	return 0, fmt.Errorf("runnable tasks: %w", sandbox.ErrUnsupported)
}
