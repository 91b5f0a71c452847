package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gridnode/gridnode/history"
	"github.com/gridnode/gridnode/node"
)

// startTestnetDir is startTestnet returning the testnet's directory (DIR/node-I are the
// nodes' data dirs) and process too.
func startTestnetDir(t *testing.T, bin string, n int) (dir string, tn *exec.Cmd, flags []string) {
	t.Helper()
	p := startNet(t, bin, n)
	return p.dir, p.cmd, p.gridFlags()
}

// TestControlCommands runs status, peers, jobs, job, result, pause and resume against a
// node of a process testnet, as a donor would; then SIGKILLs the node, lets the testnet
// restart it, and checks that its history (in a database the kill left) is all there.
func TestControlCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a testnet")
	}
	bin := gridnodeBinary(t)
	job := buildBehave(t, bin)
	dir, tn, grid := startTestnetDir(t, bin, 3)
	data := filepath.Join(dir, "node-0")
	ctl := func(args ...string) (string, string, int) {
		t.Helper()
		return runBin(t, bin, "", slices.Concat(args[:1], []string{"--data", data}, args[1:])...)
	}
	status := func() (st node.Status, code int) {
		out, _, code := ctl("status", "--json")
		if code == 0 {
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				t.Fatalf("status --json: %v\n%s", err, out)
			}
		}
		return st, code
	}
	waitAnnounced := func() node.Status {
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, code := status()
			if code == 0 && st.Announced {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("node 0 not announced within 60s: exit %d, %+v", code, st)
			}
			time.Sleep(100 * time.Millisecond) // a poll of another process's state
		}
	}
	waitAnnounced()

	// Node 0 runs a replica of a one-shot client's job (3 replicas on 3 nodes), then
	// submits one itself through its API.
	client := t.TempDir()
	if out, errOut, code := runBin(t, bin, "exit 0", slices.Concat([]string{"submit", "--timeout", "60s", "--replicas", "3", "--data", client}, grid, []string{job})...); code != 0 || out != "out" {
		t.Fatalf("one-shot submit: exit %d, stdout %q\n%s", code, out, errOut)
	}
	if out, errOut, code := runBin(t, bin, "exit 0", "submit", "--timeout", "60s", "--api", "--data", data, job); code != 0 || out != "out" {
		t.Fatalf("submit --api: exit %d, stdout %q\n%s", code, out, errOut)
	}
	// The one-shot kept its submit in its own data dir.
	if db, err := history.Open(filepath.Join(client, node.HistoryFile), history.Options{}); err != nil {
		t.Error(err)
	} else {
		if js, _ := db.Jobs(0); len(js) != 1 || js[0].Kind != history.KindSubmitted || !js[0].Accepted {
			t.Errorf("the one-shot's history: got %+v, want its accepted submit", js)
		}
		db.Close()
	}

	out, _, code := ctl("jobs", "--json")
	var list node.JobList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Jobs) != 2 {
		t.Fatalf("jobs --json: exit %d\n%s", code, out)
	}
	sub, ran := list.Jobs[0], list.Jobs[1]
	if sub.Kind != history.KindSubmitted || !sub.Accepted || ran.Kind != history.KindRan || ran.Status != "exited" || len(ran.Receipt) == 0 {
		t.Fatalf("jobs: got %+v, want the submit, then the run", list.Jobs)
	}
	subID := strconv.FormatUint(sub.ID, 10)
	for _, tt := range []struct {
		args []string
		want []string // in stdout
	}{
		{[]string{"status"}, []string{"peer", "reachability", "loopback", "donated", "1 jobs run", "uptime"}},
		{[]string{"peers"}, []string{"PEER", "/ip4/127.0.0.1"}},
		{[]string{"jobs", "--limit", "5"}, []string{"ID", "submitted", "ran", "accepted: 2 of 2 replicas agree"}},
		{[]string{"job", subID}, []string{"Job " + subID + ", submitted", "verdict  accepted: exited 0", "Replicas (2", "receipt  valid", "counted  yes"}},
		{[]string{"job", strconv.FormatUint(ran.ID, 10)}, []string{", ran", "outcome  exited 0", "signed by this worker"}},
		{[]string{"job", sub.JobCID}, []string{"Job " + subID}},
		{[]string{"result", subID}, []string{"out"}},
		{[]string{"result", "--json", subID}, []string{`"output": "b3V0"`}},
		{[]string{"peers", "--json"}, []string{`"peer_id"`, `"latency_ms"`}},
	} {
		out, errOut, code := ctl(tt.args...)
		for _, w := range tt.want {
			if code != 0 || !strings.Contains(out, w) {
				t.Errorf("gridnode %s: exit %d, want %q in stdout:\n%s%s", strings.Join(tt.args, " "), code, w, out, errOut)
				break
			}
		}
	}
	for _, tt := range []struct {
		args []string
		want string // in stderr, with exit 125
	}{
		{[]string{"job", "999"}, "not found"},
		{[]string{"job", "not/a/job"}, "bad request"},
		{[]string{"result", strconv.FormatUint(ran.ID, 10)}, "a worker keeps no output"},
		{[]string{"jobs", "--limit", "0"}, "--limit 0"},
		{[]string{"job"}, "want one job ID"},
		{[]string{"status", "extra"}, "no arguments expected"},
	} {
		if out, errOut, code := ctl(tt.args...); code != 125 || !strings.Contains(errOut, tt.want) || out != "" {
			t.Errorf("gridnode %s: got exit %d, stdout %q, stderr %q; want 125 and %q", strings.Join(tt.args, " "), code, out, errOut, tt.want)
		}
	}
	if out, errOut, code := runBin(t, bin, "", "status", "--data", t.TempDir()); code != 125 || !strings.Contains(errOut, "no gridnode daemon running") || out != "" {
		t.Errorf("status without a daemon: got exit %d, stdout %q, stderr %q; want 125 and a clear message", code, out, errOut)
	}

	// Pause and resume.
	if out, _, code := ctl("pause"); code != 0 || !strings.Contains(out, "paused") {
		t.Errorf("pause: exit %d, %q", code, out)
	}
	if st, _ := status(); !st.Paused || !slices.ContainsFunc(st.Reasons, func(r string) bool { return strings.Contains(r, "paused") }) {
		t.Errorf("status after pause: paused %v, reasons %q", st.Paused, st.Reasons)
	}
	if out, _, code := ctl("status"); code != 0 || !strings.Contains(out, "yes, by the donor") || !strings.Contains(out, "Why jobs may not be arriving") {
		t.Errorf("status after pause: exit %d\n%s", code, out)
	}
	if out, _, code := ctl("resume", "--json"); code != 0 || !strings.Contains(out, `"paused": false`) {
		t.Errorf("resume --json: exit %d, %q", code, out)
	}

	// SIGKILL node 0 (its pid is in its data dir's lock file) and restart it.
	b, err := os.ReadFile(filepath.Join(data, node.LockFile))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // another process's death
	}
	tn.Process.Signal(syscall.SIGHUP) // restarts the dead node
	st := waitAnnounced()
	if st.JobsRun != 1 || st.History == nil || st.History.Submitted != 1 {
		t.Errorf("status after SIGKILL and restart: jobs run %d, history %+v; want 1 run, 1 submitted", st.JobsRun, st.History)
	}
	out, _, code = ctl("jobs", "--json")
	var after node.JobList
	if code != 0 || json.Unmarshal([]byte(out), &after) != nil || len(after.Jobs) != 2 || after.Jobs[0].ID != sub.ID {
		t.Errorf("jobs after SIGKILL and restart: exit %d, got %s; want the 2 jobs", code, out)
	}
}
