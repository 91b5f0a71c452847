package history

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/jobs"
)

// TestReview9CorruptFile: a history.db with damaged pages (a disk error, a bad copy) must
// be an error from Open or the readers, never a panic that takes the daemon down. bbolt
// panics on some corruptions; each damaged copy runs in a child so a panic is seen.
func TestReview9CorruptFile(t *testing.T) {
	if os.Getenv("REVIEW9_CORRUPT") != "" {
		h, err := Open(os.Getenv("REVIEW9_CORRUPT"), Options{LockTimeout: time.Second})
		if err != nil {
			return
		}
		h.Jobs(1000)
		h.Totals()
		h.Usage()
		h.PutJob(jobs.JobEvent{JobCID: cids.Sum([]byte("x")), InputCID: cids.Sum(nil)})
		h.Flush()
		h.Close()
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "h.db")
	h, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		h.PutJob(jobs.JobEvent{JobCID: cids.Sum(fmt.Appendf(nil, "j%d", i)), InputCID: cids.Sum(nil), Receipt: make([]byte, 300)})
	}
	h.Flush()
	h.Close()
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	panics := 0
	for off := 0; off+page <= len(good); off += page {
		for _, at := range []int{0, 8, 16, 100} { // page header fields and the first element
			bad := append([]byte(nil), good...)
			for i := range 8 {
				bad[off+at+i] ^= 0xa5
			}
			p := filepath.Join(dir, fmt.Sprintf("bad-%d-%d.db", off, at))
			os.WriteFile(p, bad, 0o600)
			cmd := testCommand(t, p)
			if out, err := cmd.CombinedOutput(); err != nil {
				panics++
				if panics == 1 {
					t.Logf("page %d, byte %d damaged: %v\n%.600s", off/page, at, err, out)
				}
			}
		}
	}
	// Fixed: Open reads the whole file where a panic is recovered, and moves a damaged one
	// aside to start afresh.
	if panics > 0 {
		t.Errorf("%d damaged copies of history.db crashed the process (bbolt panics on corrupt pages); a daemon with such a file dies at start or at its first read", panics)
	}
}

func testCommand(t *testing.T, path string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestReview9CorruptFile$")
	cmd.Env = append(os.Environ(), "REVIEW9_CORRUPT="+path)
	return cmd
}

// TestOpenKeepsAnUnreadableFile: only a damaged file is moved aside; a path Open cannot
// use for another reason (here a directory) is an error, and nothing is renamed.
func TestOpenKeepsAnUnreadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if h, err := Open(path, Options{}); err == nil {
		h.Close()
		t.Fatal("Open of a directory: got nil error")
	}
	if m, _ := filepath.Glob(path + ".damaged-*"); len(m) != 0 {
		t.Fatalf("a directory in the way was moved aside as damaged: %v", m)
	}
}
