package jobs

import (
	"crypto/rand"
	"testing"

	"github.com/gridnode/gridnode/internal/testelf"
)

// jobELF returns an ELF job that the sandbox's validator accepts: exit(0), then pad random
// bytes, which make each job distinct.
func jobELF(t testing.TB, pad int) []byte {
	t.Helper()
	b := make([]byte, pad)
	rand.Read(b)
	return testelf.Exit0(b)
}
