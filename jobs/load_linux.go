//go:build linux

package jobs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// procsRunning returns the machine's runnable tasks from /proc/stat's procs_running,
// less one for the calling thread, which is running as it reads.
func procsRunning() (int, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseProcsRunning(b)
}

func parseProcsRunning(b []byte) (int, error) {
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("procs_running ")); ok {
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil || n < 0 {
				break
			}
			return max(n-1, 0), nil
		}
	}
	return 0, fmt.Errorf("/proc/stat: no procs_running count")
}
