package main

import (
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestSubmitProgressTerminal writes a submit's progress to a pseudo-terminal: one line
// rewritten with "\r" and cleared to its end, lines that are no phase above it, and a
// newline at the end.
func TestSubmitProgressTerminal(t *testing.T) {
	ptm, pts := openPty(t)
	out := readPty(ptm)
	p := newSubmitProgress(pts, 2, 2)
	if !p.tty {
		t.Fatal("a pty is not taken for a terminal")
	}
	for _, l := range []string{
		"asking 3 candidates for offers",
		"…rb4Zn8kF: sending job bafk",
		"…qKV23Cud: refused: BUSY: all slots busy",
		"…wawTQrQM: exited 0, output bafk (1 of 2 needed)",
		"quorum: 2 agree: exited 0, output bafk",
	} {
		p.Line(l)
	}
	p.Close()
	p.Line("exited 0 in 46ms")
	pts.Close()
	got := out.wait()
	for _, want := range []string{"\r\x1b[Kgridnode: [", "verified: 2 agree\r\n", "\r\x1b[Kgridnode: …qKV23Cud: refused: BUSY: all slots busy\r\n", "gridnode: exited 0 in 46ms\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("got %q, want it to contain %q", got, want)
		}
	}
	if strings.Contains(got, "sending job") || strings.Contains(got, "quorum:") {
		t.Errorf("got %q: phase lines printed as lines", got)
	}
}

// TestSubmitProgressCLI runs `gridnode submit` on a testnet with stderr on a terminal,
// then on a pipe: a status line that ends with a newline, or plain lines; the output
// alone on stdout either way.
func TestSubmitProgressCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a testnet")
	}
	bin := gridnodeBinary(t)
	job := buildBehave(t, bin)
	grid := startTestnet(t, bin, 3)
	args := slices.Concat([]string{"submit", "--timeout", "60s", "--replicas", "2", "--data", t.TempDir()}, grid, []string{job})

	t.Run("terminal", func(t *testing.T) {
		ptm, pts := openPty(t)
		errOut := readPty(ptm)
		cmd := exec.Command(bin, args...)
		cmd.Stdin = strings.NewReader("exit 0")
		var stdout bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, pts
		err := cmd.Run()
		pts.Close()
		got := errOut.wait()
		if err != nil || stdout.String() != "out" {
			t.Fatalf("got %v, stdout %q, want exit 0 and %q\n%q", err, stdout.String(), "out", got)
		}
		for _, want := range []string{"\r\x1b[Kgridnode: [", "finding workers", "verified: 2 agree\r\n", "gridnode: exited 0 in "} {
			if !strings.Contains(got, want) {
				t.Errorf("got stderr %q, want it to contain %q", got, want)
			}
		}
		if !strings.HasSuffix(got, "\n") {
			t.Errorf("got stderr %q, want it to end with a newline", got)
		}
	})
	t.Run("pipe", func(t *testing.T) {
		stdout, stderr, code := runBin(t, bin, "exit 0", args...)
		if code != 0 || stdout != "out" {
			t.Fatalf("got exit %d, stdout %q, want 0 and %q\n%s", code, stdout, "out", stderr)
		}
		if strings.Contains(stderr, "\r") || !strings.Contains(stderr, "gridnode: asking ") || !strings.Contains(stderr, "\ngridnode: quorum: 2 agree") {
			t.Errorf("got stderr %q, want plain lines", stderr)
		}
	})
}
