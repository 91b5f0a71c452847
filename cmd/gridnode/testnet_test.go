package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	examplejobs "github.com/gridnode/gridnode/examples/jobs"
	"github.com/gridnode/gridnode/internal/proctest"
	"github.com/gridnode/gridnode/jobs"
)

// procsMentioning lists the processes whose command line contains s.
func procsMentioning(s string) []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func TestTestnetAndSubmit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts processes")
	}
	tmp := t.TempDir()
	bin := gridnodeBinary(t)
	job, err := examplejobs.Build(context.Background(), "echo", tmp)
	if err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(tmp, "input")
	want := "hello, grid\n"
	if err := os.WriteFile(input, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}

	netDir := filepath.Join(tmp, "net")
	tn := exec.Command(bin, "testnet", "-n", "3", "--dir", netDir)
	tn.Stderr = os.Stderr
	stdout, err := tn.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tn.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	bootc := make(chan string, 1)
	var printed bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			printed.WriteString(sc.Text() + "\n")
			if a, ok := strings.CutPrefix(sc.Text(), "bootstrap: "); ok {
				bootc <- a
			}
		}
		done <- tn.Wait()
	}()
	exited := false
	defer func() {
		if !exited {
			tn.Process.Kill()
			<-done
		}
	}()

	var boot string
	select {
	case boot = <-bootc:
	case err := <-done:
		exited = true
		t.Fatalf("testnet exited early: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("testnet printed no bootstrap address within 60s")
	}

	trusted := filepath.Join(netDir, "trusted-peers")
	submit := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"submit", "--bootstrap", boot, "--trust-file", trusted, "--timeout", "60s"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Logf("submit stderr:\n%s", stderr.String())
		}
		return string(out), err
	}
	out, err := submit("--replicas", "2", "--input", input, job)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if out != want {
		t.Errorf("got output %q, want %q", out, want)
	}

	out, err = submit("--replicas", "2", "--json", "--input", input, job)
	if err != nil {
		t.Fatalf("submit --json: %v", err)
	}
	var rep jobs.ReportJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("submit --json: %v\n%s", err, out)
	}
	if string(rep.Output) != want || rep.Status != "exited" || rep.ExitCode != 0 {
		t.Errorf("got output %q status %s exit %d, want %q exited 0", rep.Output, rep.Status, rep.ExitCode, want)
	}
	workers := map[string]bool{}
	for _, r := range rep.Replicas {
		if r.ReceiptValid && r.OutputCID == rep.OutputCID {
			workers[r.Worker] = true
		}
	}
	if len(workers) < 2 {
		t.Errorf("got %d distinct workers with valid receipts, want 2: %+v", len(workers), rep.Replicas)
	}

	// Through node 0's API socket (the default of run and of submit --api).
	cmd := exec.Command(bin, "submit", "--api", "--data", filepath.Join(netDir, "node-0"), "--timeout", "60s", "--replicas", "2", "--input", input, job)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if got, err := cmd.Output(); err != nil || string(got) != want {
		t.Errorf("submit --api: got %q, %v; want %q\n%s", got, err, want, stderr.String())
	}

	if got := len(procsMentioning(netDir)); got != 4 {
		t.Errorf("got %d processes for the testnet, want 4 (parent and 3 nodes)", got)
	}
	tn.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Errorf("testnet exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("testnet did not exit within 20s of SIGINT")
	}
	proctest.Poll(t, 10*time.Second, "the nodes to exit with the testnet", func() bool {
		return len(procsMentioning(netDir)) == 0
	})
	if !strings.Contains(printed.String(), "gridnode submit --bootstrap "+boot+" --trust-file "+trusted+" --replicas 2 JOB") {
		t.Errorf("testnet did not print the submit line:\n%s", printed.String())
	}
}

func TestAssignFaults(t *testing.T) {
	for _, tt := range []struct {
		name                      string
		n, liars, stallers, boast int
		want                      string // behaviours of nodes 0..n-1; "" for an error
	}{
		{"honest", 3, 0, 0, 0, "honest honest honest"},
		{"boaster-liars", 5, 2, 0, 2, "honest honest honest liar+boaster liar+boaster"},
		{"stallers before liars", 5, 1, 2, 0, "honest honest staller staller liar"},
		{"boasters past the liars", 5, 1, 1, 3, "honest honest boaster staller+boaster liar+boaster"},
		{"node 0 stays honest", 3, 2, 1, 0, ""},
		{"too many boasters", 3, 0, 0, 3, ""},
		{"negative", 3, -1, 0, 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := assignFaults(tt.n, tt.liars, tt.stallers, tt.boast)
			var got []string
			for _, x := range b {
				got = append(got, x.String())
			}
			if g := strings.Join(got, " "); g != tt.want || (err == nil) != (tt.want != "") {
				t.Errorf("got %q, %v; want %q", g, err, tt.want)
			}
		})
	}
}
