//go:build linux && amd64

package sandbox

import (
	"context"
	"strings"
	"testing"
)

// TestEscapeHeaderOverlap runs the escape through the real launcher: a job whose program
// header table sits at offset 16, inside the ELF header, and whose own code makes a
// forbidden call (getpid) and then prints ESCAPED. Before the fix the patcher's writes
// overwrote each other, the kernel never ran the stub, and this job exited 0 having printed
// ESCAPED (phoff 8 and 16; checked by removing the header rule in validate, the disjointness
// check in plan and checkImage). Each layer alone stops it: with only checkImage, phoff 8,
// 16, 24 and 56 were refused and 32-48 (whose edits happen to leave the kernel's fields
// intact) entered the stub and were killed for getpid; never ESCAPED.
func TestEscapeHeaderOverlap(t *testing.T) {
	for _, phoff := range []uint64{8, 16, 24, 32, 40, 48, 56} {
		bin := genOverlapELF(phoff, genSyscall(39)[pageSize:])
		res, err := (&Runner{}).Run(context.Background(), Job{Binary: bin}, Limits{})
		if err != nil {
			t.Fatalf("phoff %d: %v", phoff, err)
		}
		if res.Status != StatusRejected || strings.Contains(string(res.Output), "ESCAPED") {
			t.Fatalf("phoff %d: got %s %q (output %q), want rejected", phoff, res.Status, res.Reason, res.Output)
		}
	}
}
