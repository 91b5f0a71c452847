package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSubmitBatchTerminal runs a batch with stderr on a terminal: one status line with the
// bar and the counts, rewritten in place, no line per job that succeeded, a failed job's
// line above it, and the summary after it.
func TestSubmitBatchTerminal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a testnet")
	}
	bin := gridnodeBinary(t)
	behave := buildBehave(t, bin)
	tn := startNet(t, bin, 3)
	files := map[string]string{"bad": "exit 4"}
	for i := range 12 {
		files[fmt.Sprintf("ok-%02d", i)] = "exit 0"
	}
	inputs := writeInputs(t, files)
	ptm, pts := openPty(t)
	r := readPty(ptm)
	cmd := exec.Command(bin, "submit", "--data", filepath.Join(tn.dir, "node-0"), "--inputs", inputs, "--outputs", t.TempDir(), behave)
	cmd.Stderr = pts
	cmd.Env = append(cmd.Environ(), "TERM=xterm")
	err := cmd.Run()
	pts.Close()
	out := r.wait()
	if code := cmd.ProcessState.ExitCode(); code != 4 {
		t.Errorf("got exit %d (%v), want 4", code, err)
	}
	for _, s := range []string{"\r\x1b[Kgridnode: [", "[####################] 13/13: 12 ok, 1 failed, 0 done before, 0 running", "gridnode: bad: exited 4\r\n",
		"gridnode: 13 inputs: 13 accepted (12 exited 0, 1 exited 4), 0 failed, 0 done before; 13 jobs in "} {
		if !strings.Contains(out, s) {
			t.Errorf("the terminal lacks %q:\n%q", s, out)
		}
	}
	if strings.Contains(out, "ok-00: exited 0") {
		t.Errorf("a line for a job that succeeded:\n%q", out)
	}
}
