package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gridnode/gridnode/cids"
	examplejobs "github.com/gridnode/gridnode/examples/jobs"
)

var gridnodeBin struct {
	once sync.Once
	path string
	err  error
}

// gridnodeBinary builds this command once per test run and returns its path.
func gridnodeBinary(t testing.TB) string {
	t.Helper()
	gridnodeBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "gridnode-bin-")
		if err != nil {
			gridnodeBin.err = err
			return
		}
		gridnodeBin.path = filepath.Join(dir, "gridnode")
		args := []string{"build", "-o", gridnodeBin.path}
		if inGitCheckout() {
			args = append(args, "-buildvcs=true") // for TestVersion, whatever GOFLAGS says
		}
		out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
		if err != nil {
			gridnodeBin.err = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if gridnodeBin.err != nil {
		t.Fatal(gridnodeBin.err)
	}
	return gridnodeBin.path
}

// inGitCheckout reports whether the tests run in a git checkout, with git.
func inGitCheckout() bool {
	return exec.Command("git", "rev-parse", "--git-dir").Run() == nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if gridnodeBin.path != "" {
		os.RemoveAll(filepath.Dir(gridnodeBin.path))
	}
	os.Exit(code)
}

// TestSandboxJSON runs `gridnode sandbox --json` as a user would and checks the report's
// keys, status spellings and exit codes.
func TestSandboxJSON(t *testing.T) {
	bin := gridnodeBinary(t)
	dir := t.TempDir()
	echo, err := examplejobs.Build(context.Background(), "echo", dir)
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\necho ESCAPED\n"), 0o755)
	input := filepath.Join(dir, "in")
	os.WriteFile(input, []byte("hello\n"), 0o644)

	tests := []struct {
		name     string
		args     []string
		status   string
		exitCode int // of gridnode
		output   string
	}{
		{"echo", []string{"--input", input, echo}, "exited", 0, "hello\n"},
		{"script", []string{script}, "rejected", 126, ""},
		{"tiny output cap", []string{"--max-output", "2", "--input", input, echo}, "output_limit", 137, "he"},
		{"memory too small", []string{"--mem", "64KiB", echo}, "rejected", 126, ""},
	}
	keys := []string{"job_cid", "status", "exit_code", "signal", "error", "cpu_ms", "wall_ms", "output_cid", "output_size"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"sandbox", "--json"}, tt.args...)...)
			var stdout bytes.Buffer
			cmd.Stdout = &stdout
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.exitCode {
				t.Errorf("exit code %d, want %d", code, tt.exitCode)
			}
			var m map[string]any
			if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
				t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout.Bytes())
			}
			for _, k := range keys {
				if _, ok := m[k]; !ok {
					t.Errorf("key %q missing from %s", k, stdout.Bytes())
				}
			}
			if m["status"] != tt.status {
				t.Errorf("status %v, want %s", m["status"], tt.status)
			}
			if tt.status != "exited" && m["error"] == "" {
				t.Error("error is empty for a job that did not exit")
			}
			if got, want := m["output_cid"], cids.Sum([]byte(tt.output)).String(); got != want {
				t.Errorf("output_cid %v, want %s", got, want)
			}
			job, _ := os.ReadFile(tt.args[len(tt.args)-1])
			if got, want := m["job_cid"], cids.Sum(job).String(); got != want {
				t.Errorf("job_cid %v, want %s", got, want)
			}
		})
	}
}

// TestSandboxPlain checks the non-JSON mode: the job's stdout is gridnode's stdout, and a
// job's non-zero exit code is passed through.
func TestSandboxPlain(t *testing.T) {
	bin := gridnodeBinary(t)
	dir := t.TempDir()
	sha, err := examplejobs.Build(context.Background(), "sha256", dir)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "sandbox", sha)
	cmd.Stdin = strings.NewReader("abc")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, args := range [][]string{{"sandbox"}, {"sandbox", "--cpu", "x", sha}, {"nosuchcommand"}} {
		err := exec.Command(bin, args...).Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 125 {
			t.Errorf("gridnode %v: got %v, want exit status 125", args, err)
		}
	}
	for _, c := range commands {
		out, err := exec.Command(bin, c.name, "--help").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Usage: gridnode "+c.name) {
			t.Errorf("gridnode %s --help: %v\n%s", c.name, err, out)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4096", 4096, true}, {"64KiB", 64 << 10, true}, {"16MiB", 16 << 20, true}, {"1GiB", 1 << 30, true},
		{"2 MiB", 2 << 20, true}, {"1GB", 1e9, true}, {"", 0, false}, {"-1", 0, false}, {"1.5MiB", 0, false},
		{"10XB", 0, false}, {"99999999999TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestBuild runs `gridnode build` on an example and on a broken source.
func TestBuild(t *testing.T) {
	bin := gridnodeBinary(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "echo")
	got, err := exec.Command(bin, "build", "--example", "echo", "-o", out).Output()
	if err != nil {
		t.Fatal(err)
	}
	job, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := cids.Sum(job).String() + "  " + out + "\n"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	bad := filepath.Join(dir, "bad.c")
	os.WriteFile(bad, []byte("int main(void) { return undeclared; }\n"), 0o644)
	msg, err := exec.Command(bin, "build", "-o", filepath.Join(dir, "bad"), bad).CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "undeclared") {
		t.Errorf("broken source: got %v, %s; want a failure quoting the compiler", err, msg)
	}
}

func TestParseUIDRange(t *testing.T) {
	for _, tt := range []struct {
		in    string
		first uint32
		count int
		ok    bool
	}{
		{"", 0, 0, true},
		{"2100000000-2100000255", 2100000000, 256, true},
		{"7-7", 7, 1, true},
		{"5-3", 0, 0, false},
		{"0-10", 0, 0, false},
		{"100", 0, 0, false},
		{"1-70000", 0, 0, false},
		{"a-b", 0, 0, false},
		{"1-4294967296", 0, 0, false},
	} {
		got, err := parseUIDRange(tt.in)
		if (err == nil) != tt.ok || got.First != tt.first || got.Count != tt.count {
			t.Errorf("parseUIDRange(%q) = %+v, %v; want {%d %d}, ok %v", tt.in, got, err, tt.first, tt.count, tt.ok)
		}
	}
}
