package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/sandbox"
)

// result is how one run of the built gridnode ended.
type result struct {
	stdout, stderr string
	code           int
}

// gridnode runs the built binary in dir (the test's directory when "") with stdin.
func gridnode(t *testing.T, dir string, stdin io.Reader, args ...string) result {
	t.Helper()
	cmd := exec.Command(gridnodeBinary(t), args...)
	cmd.Dir = dir
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("gridnode %q: %v", args, err)
	}
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// buildTestdata builds testdata/NAME.c with `gridnode build` into a temporary directory.
func buildTestdata(t *testing.T, name string) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("testdata", name+".c"))
	if err != nil {
		t.Fatal(err)
	}
	return buildJob(t, gridnodeBinary(t), name, src)
}

// TestBuildOutputName checks that build never writes over its source or another file that
// is not an executable, and derives the output name only from a .c source.
func TestBuildOutputName(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join("testdata", "div128.c"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"notes.txt": string(src), "job.c": string(src), "readme.txt": "my notes\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // a part of it
		out    string // the file built, when code is 0
	}{
		{"source without .c", []string{"notes.txt"}, 125, "gridnode build: notes.txt does not end in .c: name the output with -o FILE", ""},
		{"-o the source", []string{"-o", "notes.txt", "notes.txt"}, 125, "refusing to overwrite notes.txt: it is the source", ""},
		{"-o the source by another name", []string{"-o", "./job.c", "job.c"}, 125, "refusing to overwrite ./job.c: it is the source", ""},
		{"-o a text file", []string{"-o", "readme.txt", "job.c"}, 125, "refusing to overwrite readme.txt: it exists and is not an executable", ""},
		{"-o a directory", []string{"-o", ".", "job.c"}, 125, "refusing to overwrite .: not a regular file", ""},
		{"derived name", []string{"job.c"}, 0, "", "job"},
		{"over its own output", []string{"job.c"}, 0, "", "job"},
		{"-o after the source", []string{"notes.txt", "-o", "notes"}, 0, "", "notes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := gridnode(t, dir, nil, append([]string{"build"}, tt.args...)...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("got exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, tt.code, tt.stderr)
			}
			for name, content := range files {
				if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != content {
					t.Errorf("%s was changed", name)
				}
			}
			if tt.out == "" {
				return
			}
			bin, err := os.ReadFile(filepath.Join(dir, tt.out))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := r.stdout, cids.Sum(bin).String()+"  "+tt.out+"\n"; got != want {
				t.Errorf("got stdout %q, want %q", got, want)
			}
		})
	}
}

// TestBuildCompilerErrorNamesSource checks that the compiler's messages name the user's
// file, not a temporary copy.
func TestBuildCompilerErrorNamesSource(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bad.c"), []byte("int main(void) {\n\treturn undeclared;\n}\n"), 0o644)
	r := gridnode(t, dir, nil, "build", "bad.c")
	if r.code != 125 || !strings.Contains(r.stderr, "bad.c:2:") || !strings.Contains(r.stderr, "undeclared") {
		t.Errorf("got exit %d, stderr:\n%s\nwant 125 and the compiler's message at bad.c:2", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "job.c") || strings.Contains(r.stderr, "gridjob-") {
		t.Errorf("the message names a temporary file:\n%s", r.stderr)
	}
}

// TestBuildMem checks that build validates against --mem, with the stack scaled to it.
func TestBuildMem(t *testing.T) {
	dir := t.TempDir()
	src, _ := filepath.Abs(filepath.Join("testdata", "div128.c"))
	if r := gridnode(t, dir, nil, "build", "--mem", "4KiB", "-o", "small", src); r.code != 126 || !strings.Contains(r.stderr, "built small, but the sandbox would refuse it") {
		t.Errorf("--mem 4KiB: got exit %d, stderr %q; want 126 and a refusal", r.code, r.stderr)
	}
	if r := gridnode(t, dir, nil, "build", src, "--mem", "1MiB", "-o", "small"); r.code != 0 {
		t.Errorf("--mem 1MiB: got exit %d, stderr %q; want 0", r.code, r.stderr)
	}
}

// TestLibgccJobInSandbox runs a job that needs libgcc's 128-bit division in the sandbox.
func TestLibgccJobInSandbox(t *testing.T) {
	job := buildTestdata(t, "div128")
	r := gridnode(t, "", nil, "sandbox", job)
	// (0x0123456789abcdef<<64 | 0xfedcba9876543210) divmod 1000000007, by Python.
	if want := "81985528\n11853659987128082656\n619465712\n"; r.code != 0 || r.stdout != want {
		t.Errorf("got exit %d, stdout %q, stderr %q; want 0 and %q", r.code, r.stdout, r.stderr, want)
	}
}

// TestSandboxExitCodes runs jobs that end every way a job can and checks gridnode's exit
// status and its line on stderr.
func TestSandboxExitCodes(t *testing.T) {
	job := buildTestdata(t, "outcomes")
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\necho ESCAPED\n"), 0o755)
	tests := []struct {
		name  string
		input string
		args  []string // JOB is the job's path
		code  int
		line  string // gridnode's last line on stderr, a prefix; "" for none
	}{
		{"exit 0", "exit0", []string{"JOB"}, 0, ""},
		{"exit 3", "exit3", []string{"JOB"}, 3, ""},
		{"segfault", "segv", []string{"JOB"}, 139, "gridnode: job crashed: SIGSEGV\n"},
		{"forbidden system call", "getpid", []string{"JOB"}, 137, "gridnode: job violation: SIGKILL (killed by the kernel for a system call"},
		{"wall-clock limit", "loop", []string{"--wall", "300ms", "JOB"}, 124, "gridnode: job wall_timeout: "},
		{"output limit", "flood", []string{"JOB", "--max-output", "1KiB"}, 137, "gridnode: job output_limit: "},
		{"rejected", "", []string{script}, 126, "gridnode: job rejected: "},
		{"too little memory", "exit0", []string{"--mem", "16MiB", "JOB"}, 126, "gridnode: job rejected: "},
		{"bad flag", "", []string{"--cpu", "x", "JOB"}, 125, ""},
		{"no job", "", nil, 125, "Usage: gridnode sandbox"},
		{"two jobs", "", []string{"JOB", "JOB"}, 125, "Usage: gridnode sandbox"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"sandbox"}
			for _, a := range tt.args {
				if a == "JOB" {
					a = job
				}
				args = append(args, a)
			}
			r := gridnode(t, "", strings.NewReader(tt.input), args...)
			if r.code != tt.code {
				t.Errorf("got exit %d, want %d; stderr:\n%s", r.code, tt.code, r.stderr)
			}
			if tt.line != "" && !strings.Contains("\n"+r.stderr, "\n"+tt.line) {
				t.Errorf("got stderr %q, want a line that starts with %q", r.stderr, tt.line)
			}
		})
	}
	t.Run("cpu limit", func(t *testing.T) {
		// As PID 1 of its namespace the job ignores SIGXCPU and dies of SIGKILL a second
		// later (137); outside one, SIGXCPU kills it (152).
		r := gridnode(t, "", strings.NewReader("loop"), "sandbox", "--cpu", "1s", job)
		if (r.code != 137 && r.code != 152) || !strings.Contains(r.stderr, "gridnode: job cpu_limit: SIG") {
			t.Errorf("got exit %d, stderr %q; want 137 or 152 and the signal", r.code, r.stderr)
		}
	})
	t.Run("json", func(t *testing.T) {
		r := gridnode(t, "", strings.NewReader("segv"), "sandbox", job, "--json")
		if r.code != 139 || !strings.Contains(r.stdout, `"signal": "SIGSEGV"`) || r.stderr != "" {
			t.Errorf("got exit %d, stdout %q, stderr %q; want 139, a report and no stderr", r.code, r.stdout, r.stderr)
		}
	})
}

// TestInterruptExitCodes stops `gridnode sandbox` running an endless job with SIGINT and
// SIGTERM: 128+2 and 128+15.
func TestInterruptExitCodes(t *testing.T) {
	job := buildTestdata(t, "outcomes")
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(gridnodeBinary(t), "sandbox", job)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// sandbox reads all its input first, so once 1 MiB went through the 64 KiB pipe
			// it is in the command, past main's signal handler.
			if _, err := io.WriteString(stdin, "loop "+strings.Repeat(" ", 1<<20)); err != nil {
				t.Fatal(err)
			}
			stdin.Close()
			cmd.Process.Signal(sig)
			cmd.Wait()
			if got, want := cmd.ProcessState.ExitCode(), 128+int(sig); got != want {
				t.Errorf("got exit %d (%v), want %d; stderr:\n%s", got, cmd.ProcessState, want, stderr.String())
			}
		})
	}
}

// TestSandboxInputLimit checks that sandbox takes what a worker takes: 16 MiB of input.
func TestSandboxInputLimit(t *testing.T) {
	job := buildTestdata(t, "outcomes")
	pad := func(n int) io.Reader { return strings.NewReader("exit0 " + strings.Repeat(" ", n-6)) }
	if r := gridnode(t, "", pad(jobs.DefaultMaxInput), "sandbox", job); r.code != 0 {
		t.Errorf("16 MiB of input: got exit %d, stderr %q; want 0", r.code, r.stderr)
	}
	r := gridnode(t, "", pad(jobs.DefaultMaxInput+1), "sandbox", job)
	if want := "gridnode: input over the grid's 16MiB limit: workers refuse it\n"; r.code != 125 || r.stderr != want {
		t.Errorf("16 MiB + 1 of input: got exit %d, stderr %q; want 125 and %q", r.code, r.stderr, want)
	}
}

// TestHelpAndUsage checks --help on stdout with status 0, and a bad flag's reason and the
// usage on stderr with status 125, for every command.
func TestHelpAndUsage(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		r := gridnode(t, "", nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Commands:") || r.stderr != "" {
			t.Errorf("gridnode %s: got exit %d, stdout %q, stderr %q; want 0 and the usage on stdout", args[0], r.code, r.stdout, r.stderr)
		}
	}
	for _, args := range [][]string{{}, {"nosuchcommand"}} {
		if r := gridnode(t, "", nil, args...); r.code != 125 || r.stdout != "" || !strings.Contains(r.stderr, "Commands:") {
			t.Errorf("gridnode %q: got exit %d, stdout %q; want 125 and the usage on stderr", args, r.code, r.stdout)
		}
	}
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			usage := "Usage: gridnode " + c.name
			for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
				r := gridnode(t, "", nil, args...)
				if r.code != 0 || !strings.HasPrefix(r.stdout, usage) || r.stderr != "" {
					t.Errorf("gridnode %q: got exit %d, stdout %q, stderr %q; want 0 and the usage on stdout", args, r.code, r.stdout, r.stderr)
				}
			}
			r := gridnode(t, "", nil, c.name, "--no-such-flag")
			want := "gridnode " + c.name + ": flag provided but not defined: -no-such-flag\n"
			if r.code != 125 || !strings.HasPrefix(r.stderr, want) || !strings.Contains(r.stderr, usage) || r.stdout != "" {
				t.Errorf("bad flag: got exit %d, stdout %q, stderr %q; want 125 and %q then the usage", r.code, r.stdout, r.stderr, want)
			}
		})
	}
	for _, name := range []string{"sandbox", "submit", "demo"} {
		r := gridnode(t, "", nil, name, "--help")
		for _, code := range []string{"124", "125", "126", "128+N", "130"} {
			if !strings.Contains(r.stdout, "\n  "+code+" ") {
				t.Errorf("gridnode %s --help does not document exit status %s", name, code)
			}
		}
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // the flags' values and the arguments, or the error
	}{
		{"flags first", []string{"-o", "x", "--json", "a"}, "o=x json=true n=0 api=false: [a]"},
		{"flags after", []string{"a", "-o", "x", "b", "--json"}, "o=x json=true n=0 api=false: [a b]"},
		{"value that looks like a flag", []string{"-o", "--json", "a"}, "o=--json json=false n=0 api=false: [a]"},
		{"value with =", []string{"a", "--o=b", "-n=3"}, "o=b json=false n=3 api=false: [a]"},
		{"bool flag takes no value", []string{"--json", "a"}, "o= json=true n=0 api=false: [a]"},
		{"bool flag with =false", []string{"a", "--json=false"}, "o= json=false n=0 api=false: [a]"},
		{"bool-like Value", []string{"--api", "a"}, "o= json=false n=0 api=true: [a]"},
		{"-- ends the flags", []string{"a", "--", "-o", "--json"}, "o= json=false n=0 api=false: [a -o --json]"},
		{"- is an argument", []string{"-", "-n", "2"}, "o= json=false n=2 api=false: [-]"},
		{"value -- is a value", []string{"-o", "--", "a"}, "o=-- json=false n=0 api=false: [a]"},
		{"missing value", []string{"a", "-o"}, "error: flag needs an argument: -o"},
		{"unknown flag", []string{"a", "--x"}, "error: flag provided but not defined: -x"},
		{"bad value", []string{"a", "-n", "two"}, `error: invalid value "two" for flag -n: parse error`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("gridnode test", flag.ContinueOnError)
			o := fs.String("o", "", "")
			asJSON := fs.Bool("json", false, "")
			n := fs.Int("n", 0, "")
			var api apiFlag
			fs.Var(&api, "api", "")
			fs.Usage = func() {}
			fs.SetOutput(io.Discard)
			var got string
			if err := splitAndParse(fs, tt.args); err != nil {
				got = "error: " + err.Error()
			} else {
				got = fmt.Sprintf("o=%s json=%v n=%d api=%v: %v", *o, *asJSON, *n, api.set, fs.Args())
			}
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	interrupted, cancel := context.WithCancelCause(context.Background())
	cancel(signalCause{syscall.SIGINT})
	terminated, cancel := context.WithCancelCause(context.Background())
	cancel(signalCause{syscall.SIGTERM})
	bg := context.Background()
	job := func(status string, code int, signal string) error {
		return jobOutcome{status: status, exitCode: code, signal: signal}
	}
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want int
	}{
		{"success", bg, nil, 0},
		{"help", bg, flag.ErrHelp, 0},
		{"usage", bg, errUsage, 125},
		{"job exited 3", bg, job("exited", 3, ""), 3},
		{"job exited 125", bg, job("exited", 125, ""), 125},
		{"wall timeout", bg, job("wall_timeout", 0, "SIGKILL"), 124},
		{"rejected", bg, job("rejected", 0, ""), 126},
		{"violation", bg, job("violation", 0, "SIGKILL"), 137},
		{"output limit", bg, job("output_limit", 0, "SIGKILL"), 137},
		{"crashed", bg, job("crashed", 0, "SIGSEGV"), 139},
		{"cpu limit SIGXCPU", bg, job("cpu_limit", 0, "SIGXCPU"), 152},
		{"cpu limit SIGKILL", bg, job("cpu_limit", 0, "SIGKILL"), 137},
		{"crashed without a signal", bg, job("crashed", 0, ""), 125},
		{"submit --timeout", bg, fmt.Errorf("submit: %w", context.DeadlineExceeded), 124},
		{"no quorum", bg, fmt.Errorf("run: %w", jobs.ErrNoQuorum), 125},
		{"no workers", bg, jobs.ErrNoWorkers, 125},
		{"rejected by the grid", bg, fmt.Errorf("submit: %w", jobs.ErrRejected), 126},
		{"rejected locally", bg, fmt.Errorf("submit: %w", &sandbox.RejectError{Reason: "not an ELF file"}), 126},
		{"network", bg, errors.New("dial tcp: connection refused"), 125},
		{"reported with --json", bg, reported{fmt.Errorf("x: %w", jobs.ErrRejected)}, 126},
		{"Ctrl-C", interrupted, fmt.Errorf("job cancelled: %w", context.Canceled), 130},
		{"SIGTERM", terminated, errors.New("stopped"), 143},
		{"clean stop on SIGTERM", terminated, nil, 0},
		{"job exited although interrupted", interrupted, job("exited", 3, ""), 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.ctx, tt.err); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

// TestVersion checks that both spellings print the version and the commit of a binary
// built in this checkout.
func TestVersion(t *testing.T) {
	a, b := gridnode(t, "", nil, "--version"), gridnode(t, "", nil, "version")
	if a.code != 0 || b.code != 0 || a.stdout != b.stdout {
		t.Fatalf("got %+v and %+v, want the same line and exit 0", a, b)
	}
	m := regexp.MustCompile(`^gridnode (\S+) \(commit ([0-9a-f]{40}|unknown)(, modified)?, go1\.[0-9.]+\S*\)\n$`).FindStringSubmatch(a.stdout)
	if m == nil {
		t.Fatalf("got %q, want gridnode VERSION (commit REV[, modified], GOVERSION)", a.stdout)
	}
	if !inGitCheckout() {
		t.Skip("not in a git checkout: no commit to check")
	}
	if m[2] == "unknown" {
		t.Fatalf("got %q: go build in a git checkout embeds the commit", a.stdout)
	}
	if out, err := exec.Command("git", "cat-file", "-t", m[2]).Output(); err != nil || string(out) != "commit\n" {
		t.Errorf("git cat-file -t %s: %q, %v; want a commit", m[2], out, err)
	}
}

// TestCIDFormat checks that cid prints "CID  NAME" for one file or many, "-" for stdin.
func TestCIDFormat(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), []byte("aaa"), 0o644)
	os.WriteFile(filepath.Join(dir, "b"), []byte("bbb"), 0o644)
	line := func(content, name string) string { return cids.Sum([]byte(content)).String() + "  " + name + "\n" }
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"a"}, line("aaa", "a")},
		{[]string{"a", "b"}, line("aaa", "a") + line("bbb", "b")},
		{[]string{"-"}, line("from stdin", "-")},
		{[]string{"b", "-"}, line("bbb", "b") + line("from stdin", "-")},
	}
	for _, tt := range tests {
		r := gridnode(t, dir, strings.NewReader("from stdin"), append([]string{"cid"}, tt.args...)...)
		if r.code != 0 || r.stdout != tt.want {
			t.Errorf("cid %q: got exit %d, stdout %q, stderr %q; want %q", tt.args, r.code, r.stdout, r.stderr, tt.want)
		}
	}
	if r := gridnode(t, dir, nil, "cid", "missing"); r.code != 125 || !strings.Contains(r.stderr, "missing: no such file") {
		t.Errorf("missing file: got exit %d, stderr %q; want 125 and the reason", r.code, r.stderr)
	}
}

// TestRunDataDirAndPortInUse starts a daemon, then a second one on its data dir and a third
// on its TCP port: both fail with the reason.
func TestRunDataDirAndPortInUse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts daemons")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "node-0")
	cmd := exec.Command(gridnodeBinary(t), "run", "--data", data, "--slots", "1",
		"--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	tcp := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, _, ok := strings.Cut(sc.Text(), "/p2p/"); ok && strings.Contains(a, "/tcp/") {
				tcp <- a
			}
		}
		close(tcp)
	}()
	var addr string
	select {
	case addr = <-tcp:
	case <-time.After(60 * time.Second):
	}
	if addr == "" {
		t.Fatalf("the daemon printed no TCP address; its log:\n%s", logs.String())
	}

	r := gridnode(t, "", nil, "run", "--data", data, "--listen", "/ip4/127.0.0.1/tcp/0")
	want := fmt.Sprintf("gridnode: data dir %s: in use by another node (pid %d)", data, cmd.Process.Pid)
	if r.code != 125 || !strings.Contains(r.stderr, want) {
		t.Errorf("same data dir: got exit %d, stderr %q; want 125 and %q", r.code, r.stderr, want)
	}
	r = gridnode(t, "", nil, "run", "--data", filepath.Join(dir, "node-1"), "--listen", addr)
	want = "gridnode: listen " + addr + ": address already in use"
	if r.code != 125 || !strings.Contains(r.stderr, want) {
		t.Errorf("same port: got exit %d, stderr %q; want 125 and %q", r.code, r.stderr, want)
	}
}
