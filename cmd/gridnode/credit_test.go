package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gridnode/gridnode/credit"
	"github.com/gridnode/gridnode/history"
	"github.com/gridnode/gridnode/node"
)

// TestCreditCommand: after a one-shot submit on a process testnet, `gridnode credit`
// shows node 0's verified CPU seconds (its receipt's), by submitter and by day; --export
// writes the signed records, and --verify accepts them and refuses a tampered line or
// another worker's name.
func TestCreditCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a testnet")
	}
	bin := gridnodeBinary(t)
	job := buildBehave(t, bin)
	dir, _, grid := startTestnetDir(t, bin, 3)
	data := filepath.Join(dir, "node-0")
	ctl := func(args ...string) (string, string, int) {
		t.Helper()
		return runBin(t, bin, "", slices.Concat(args[:1], []string{"--data", data}, args[1:])...)
	}
	var st node.Status
	for deadline := time.Now().Add(60 * time.Second); ; {
		out, _, code := ctl("status", "--json")
		if code == 0 && json.Unmarshal([]byte(out), &st) == nil && st.Announced {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 0 not announced within 60s: exit %d\n%s", code, out)
		}
		time.Sleep(100 * time.Millisecond) // a poll of another process's state
	}
	client := t.TempDir()
	if out, errOut, code := runBin(t, bin, "exit 0", slices.Concat([]string{"submit", "--timeout", "60s", "--replicas", "3", "--data", client}, grid, []string{job})...); code != 0 || out != "out" {
		t.Fatalf("one-shot submit: exit %d, stdout %q\n%s", code, out, errOut)
	}
	var sum credit.Summary
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, errOut, code := ctl("credit", "--json")
		if code != 0 || json.Unmarshal([]byte(out), &sum) != nil {
			t.Fatalf("credit --json: exit %d\n%s%s", code, out, errOut)
		}
		if sum.Records > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("credit --json: no record within 30s:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond) // a poll of another process's state
	}
	out, _, _ := ctl("jobs", "--json")
	var list node.JobList
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Jobs) != 1 || list.Jobs[0].Kind != history.KindRan {
		t.Fatalf("jobs --json: got %s, want the one job run", out)
	}
	ran := list.Jobs[0]
	if sum.Records != 1 || len(sum.BySubmitter) != 1 || sum.BySubmitter[0].Submitter != ran.Submitter || len(sum.ByDay) != 1 ||
		math.Abs(sum.CPUSeconds-float64(ran.CPUMs)/1000) > 0.001 || sum.BySubmitter[0].CPUSeconds != sum.CPUSeconds {
		t.Errorf("credit --json: got %+v, want 1 record from %s with the receipt's %d ms", sum, ran.Submitter, ran.CPUMs)
	}
	if out, _, code := ctl("credit"); code != 0 || !strings.Contains(out, "verified CPU") || !strings.Contains(out, ran.Submitter) {
		t.Errorf("credit: exit %d\n%s", code, out)
	}

	export := filepath.Join(t.TempDir(), "credit.jsonl")
	if _, errOut, code := ctl("credit", "--export", export); code != 0 {
		t.Fatalf("credit --export: exit %d\n%s", code, errOut)
	}
	b, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	var rec credit.Record
	if err := json.Unmarshal(b, &rec); err != nil || rec.Worker != st.PeerID || len(rec.Envelope) == 0 {
		t.Fatalf("export: got %s, want one record of %s with its envelope", b, st.PeerID)
	}
	tampered := filepath.Join(t.TempDir(), "tampered.jsonl")
	rec.CPUUs += 1e9
	line, _ := json.Marshal(rec)
	os.WriteFile(tampered, append(append(b, line...), '\n'), 0o644)
	for _, tt := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"credit", "--verify", export}, 0, "1 records check out, 0 do not", ""},
		{[]string{"credit", "--verify", export, "--worker", st.PeerID}, 0, "1 records check out", ""},
		{[]string{"credit", "--verify", export, "--worker", ran.Submitter}, 125, "0 records check out, 1 do not", "another worker"},
		{[]string{"credit", "--verify", tampered}, 125, "1 records check out, 1 do not", "line 2: forged credit record"},
	} {
		out, errOut, code := runBin(t, bin, "", tt.args...)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.errOut) {
			t.Errorf("gridnode %s: got exit %d, stdout %q, stderr %q; want %d, %q, %q", strings.Join(tt.args, " "), code, out, errOut, tt.code, tt.out, tt.errOut)
		}
	}
}
