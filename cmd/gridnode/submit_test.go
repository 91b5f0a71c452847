package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
)

// startTestnet runs `gridnode testnet -n N` until the test ends and returns the flags of a
// submit to it: its bootstrap address, and its honest nodes as trusted peers.
func startTestnet(t *testing.T, bin string, n int) []string {
	t.Helper()
	_, _, flags := startTestnetDir(t, bin, n)
	return flags
}

// run runs the built binary with stdin and returns stdout, stderr and the exit code.
func runBin(t *testing.T, bin, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// TestSubmitTellsTheTruth runs `gridnode submit` against a 3-node testnet as a user would
// and checks what it prints and how it exits: the job's own exit code and stderr come
// through, signals give 128+N and are named, a file that is not a job is refused before
// it is sent, counts that contradict each other are an error that says why, --json prints
// one object with the error and every replica on failures too, and small memory limits
// work (the stack default fits them).
func TestSubmitTellsTheTruth(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a testnet")
	}
	bin := gridnodeBinary(t)
	dir := t.TempDir()
	job := filepath.Join(dir, "behave")
	if out, errOut, code := runBin(t, bin, "", "build", "-o", job, "testdata/behave.c"); code != 0 {
		t.Fatalf("gridnode build: exit %d\n%s%s", code, out, errOut)
	}
	readme := filepath.Join(dir, "README")
	if err := os.WriteFile(readme, []byte("not a job\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	grid := startTestnet(t, bin, 3)
	submit := func(stdin string, args ...string) (string, string, int) {
		return runBin(t, bin, stdin, slices.Concat([]string{"submit", "--timeout", "60s"}, grid, args)...)
	}

	tests := []struct {
		name, stdin string
		args        []string
		code        int
		stdout      string
		stderrHas   []string
	}{
		{"exit code passes through", "exit 7", []string{job}, 7, "out", nil},
		{"stderr after the output", "stderr", []string{job}, 3, "out", []string{"explained on stderr\n"}},
		{"crash names the signal", "segv", []string{job}, 128 + 11, "", []string{"gridnode: job crashed: SIGSEGV"}},
		{"violation is SIGKILL", "syscall", []string{job}, 128 + 9, "", []string{"gridnode: job violation"}},
		{"wall timeout", "spin", []string{"--wall", "1s", job}, 124, "", []string{"gridnode: job wall_timeout"}},
		{"small memory limit", "exit 0", []string{"--mem", "4MiB", job}, 0, "out", nil},
		{"not a job, refused before sending", "", []string{readme}, 126, "", []string{"not an ELF file"}},
		{"quorum above replicas", "exit 0", []string{"--replicas", "2", "--quorum", "3", job}, 125, "", []string{"a quorum of 3 needs at least 3 replicas"}},
		{"zero limit", "exit 0", []string{"--max-output", "0", job}, 125, "", []string{"must be positive"}},
		{"negative duration", "exit 0", []string{"--cpu", "-1s", job}, 125, "", []string{"must be positive"}},
		{"more replicas than workers", "exit 0", []string{"--replicas", "5", "--quorum", "2", job}, 0, "out", []string{"only 3 workers can take the job, fewer than the 5 replicas"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := submit(tt.stdin, tt.args...)
			if code != tt.code || out != tt.stdout {
				t.Errorf("got exit %d, stdout %q; want %d, %q\nstderr:\n%s", code, out, tt.code, tt.stdout, errOut)
			}
			for _, s := range tt.stderrHas {
				if !strings.Contains(errOut, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut)
				}
			}
			if tt.code != 0 && tt.code < 128 && strings.Contains(errOut, " 0 (") {
				t.Errorf("a progress line gives an exit code for a job that did not exit 0:\n%s", errOut)
			}
			for _, bad := range []string{"crashed 0", "violation 0", "wall_timeout 0", "rejected 0"} {
				if strings.Contains(errOut, bad) {
					t.Errorf("stderr says %q for a job that did not exit:\n%s", bad, errOut)
				}
			}
		})
	}
	if _, errOut, _ := submit("", readme); strings.Contains(errOut, "sending job") || strings.Contains(errOut, "asking") {
		t.Errorf("a file that is not a job was offered to workers:\n%s", errOut)
	}

	// --json on a failure: one object, with the error, its kind and every replica.
	out, errOut, code := submit("", "--json", readme)
	var rep jobs.ReportJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 126 || rep.ErrorKind != "rejected" || !strings.Contains(rep.Error, "not an ELF file") {
		t.Errorf("submit --json of a README: exit %d, error %q kind %q (%v)\n%s\n%s", code, rep.Error, rep.ErrorKind, err, out, errOut)
	}
	out, errOut, code = submit("stderr", "--json", job)
	rep = jobs.ReportJSON{}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 3 || string(rep.Stderr) != "explained on stderr\n" || rep.StderrCID == "" || len(rep.Replicas) < 2 {
		t.Errorf("submit --json of a job that explains itself on stderr: exit %d, stderr %q (cid %q), %d replicas (%v)\n%s\n%s", code, rep.Stderr, rep.StderrCID, len(rep.Replicas), err, out, errOut)
	}
	for _, r := range rep.Replicas {
		if r.ReceiptValid && r.StderrCID != rep.StderrCID {
			t.Errorf("replica %s: stderr %s, accepted %s", r.Worker, r.StderrCID, rep.StderrCID)
		}
	}
}

// submittedBy counts the submits in the history of the daemon of data dir data.
func submittedBy(t *testing.T, bin, data string) int {
	t.Helper()
	out, errOut, code := runBin(t, bin, "", "jobs", "--data", data, "--json", "--limit", "10000")
	var list node.JobList
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil {
		t.Fatalf("jobs --json: exit %d (%v)\n%s%s", code, err, out, errOut)
	}
	n := 0
	for _, j := range list.Jobs {
		if j.Kind == "submitted" {
			n++
		}
	}
	return n
}

// TestSubmitDaemonFirst checks where `gridnode submit` goes without --api: through the
// data dir's daemon when it answers (with --bootstrap only when the daemon is in that
// grid, saying so), joining
// the grid itself with --no-daemon, past a socket nobody listens on or a daemon that does
// not answer (with a note, within the probe's 2s), through the data dir's remembered
// peers, and nowhere, with what to do, when the data dir has neither.
func TestSubmitDaemonFirst(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a testnet")
	}
	bin := gridnodeBinary(t)
	job := buildBehave(t, bin)
	tn := startNet(t, bin, 3)
	daemon := filepath.Join(tn.dir, "node-0")
	trustFile := filepath.Join(tn.dir, node.TrustFile)
	trusted, err := os.ReadFile(trustFile)
	if err != nil {
		t.Fatal(err)
	}
	// remembering is a data dir whose daemon is gone: its socket is left, and its peers
	// file and trust are a daemon's.
	remembering := func(t *testing.T) string {
		d := filepath.Join(t.TempDir(), "d")
		os.MkdirAll(d, 0o700)
		os.WriteFile(filepath.Join(d, node.PeersFile), []byte(tn.boot+"\n"), 0o600)
		os.WriteFile(filepath.Join(d, node.TrustFile), trusted, 0o600)
		os.WriteFile(filepath.Join(d, node.APITokenFile), []byte("0123456789abcdef\n"), 0o600)
		return d
	}
	submit := func(args ...string) (string, string, int) {
		t.Helper()
		return runBin(t, bin, "exit 0", slices.Concat([]string{"submit", "--timeout", "60s"}, args, []string{job})...)
	}
	check := func(t *testing.T, args []string, wantVia bool, has ...string) {
		t.Helper()
		before := submittedBy(t, bin, daemon)
		out, errOut, code := submit(args...)
		if code != 0 || out != "out" {
			t.Fatalf("submit %q: got exit %d, stdout %q; want 0, \"out\"\nstderr:\n%s", args, code, out, errOut)
		}
		if via := strings.Contains(errOut, "submitting through "+filepath.Join(daemon, node.APISocket)); via != wantVia {
			t.Errorf("submit %q: through the daemon %v, want %v\nstderr:\n%s", args, via, wantVia, errOut)
		}
		for _, s := range has {
			if !strings.Contains(errOut, s) {
				t.Errorf("submit %q: stderr lacks %q:\n%s", args, s, errOut)
			}
		}
		// The daemon's history is the proof of who submitted.
		if got, want := submittedBy(t, bin, daemon)-before, map[bool]int{true: 1}[wantVia]; got != want {
			t.Errorf("submit %q: the daemon recorded %d submits, want %d", args, got, want)
		}
	}
	t.Run("daemon", func(t *testing.T) { check(t, []string{"--data", daemon}, true) })
	t.Run("daemon over bootstrap", func(t *testing.T) {
		check(t, []string{"--data", daemon, "--bootstrap", tn.boot}, true, "a daemon on "+daemon+" is in the grid of --bootstrap: submitting through it")
		// A peer the daemon is connected to (by its ID: the address is never dialled).
		check(t, []string{"--data", daemon, "--bootstrap", "/ip4/127.0.0.1/tcp/9/p2p/" + tn.ids[1]}, true, "is in the grid of --bootstrap")
	})
	t.Run("daemon of another grid", func(t *testing.T) {
		// Port 9 (discard) on loopback: nothing listens, the join fails at once.
		other := "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWLRPJAA5o6xqYqKTBg6DZJTe8WtPWgEQY3J1zRP8A2tSj"
		before := submittedBy(t, bin, daemon)
		_, errOut, code := submit("--data", daemon, "--bootstrap", other)
		if want := "is not connected to the --bootstrap peers: joining the grid through them from here"; code != 125 || !strings.Contains(errOut, want) {
			t.Errorf("got exit %d, stderr %q; want 125 and %q", code, errOut, want)
		}
		if got := submittedBy(t, bin, daemon) - before; got != 0 {
			t.Errorf("the daemon of another grid ran %d submits", got)
		}
	})
	t.Run("no-daemon", func(t *testing.T) {
		check(t, []string{"--data", daemon, "--no-daemon", "--bootstrap", tn.boot, "--trust-file", trustFile}, false)
	})
	t.Run("stale socket", func(t *testing.T) {
		d := remembering(t)
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(d, node.APISocket), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close() // the socket file stays, as after a crash
		check(t, []string{"--data", d}, false, "no daemon listens on "+filepath.Join(d, node.APISocket))
	})
	t.Run("hung daemon", func(t *testing.T) {
		d := remembering(t)
		ln, err := net.Listen("unix", filepath.Join(d, node.APISocket))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() { // accepts and never answers
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		start := time.Now()
		check(t, []string{"--data", d}, false, "did not answer within 2s: joining the grid from here")
		if took := time.Since(start); took > 30*time.Second {
			t.Errorf("took %v past a daemon that does not answer", took)
		}
	})
	t.Run("nothing to join", func(t *testing.T) {
		d := t.TempDir()
		for _, asJSON := range []bool{false, true} {
			args := []string{"--data", d}
			if asJSON {
				args = append(args, "--json")
			}
			out, errOut, code := submit(args...)
			msg := errOut
			if asJSON {
				var rep jobs.ReportJSON
				if err := json.Unmarshal([]byte(out), &rep); err != nil {
					t.Errorf("--json: stdout %q is not one object: %v", out, err)
				}
				msg = rep.Error
			}
			for _, s := range []string{"no daemon runs on " + d, "gridnode run --data " + d, "--bootstrap ADDR"} {
				if code != 125 || !strings.Contains(msg, s) {
					t.Errorf("json %v: got exit %d, message %q; want 125 and %q", asJSON, code, msg, s)
				}
			}
		}
	})
}
