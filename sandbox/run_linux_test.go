//go:build linux && amd64

package sandbox

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gridnode/gridnode/cids"
)

// These tests use the synthetic jobs of elfgen_test.go; hostile_test.go runs real C jobs.
func TestRunSynthetic(t *testing.T) {
	tests := []struct {
		name   string
		bin    []byte
		lim    Limits
		status Status
		code   int
		out    string
	}{
		{"write and exit", genWriteExit("hello\n", 0), Limits{}, StatusExited, 0, "hello\n"},
		{"exit code", genWriteExit("x", 42), Limits{}, StatusExited, 42, "x"},
		{"getpid", genSyscall(39), Limits{}, StatusViolation, 0, ""},
		{"exit_group", genSyscall(231), Limits{}, StatusViolation, 0, ""},
		{"spin", genLoop(1 << 62), Limits{CPU: time.Second}, StatusCPULimit, 0, ""},
		{"output cap", genWriteExit("0123456789", 0), Limits{MaxOutput: 4}, StatusOutputLimit, 0, "0123"},
		{"bss over limit", genELF(asmExit(0), 1<<30), Limits{}, StatusRejected, 0, ""},
	}
	var r Runner
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := r.Run(context.Background(), Job{Binary: tt.bin}, tt.lim)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tt.status || res.ExitCode != tt.code {
				t.Fatalf("got %s/%d (%s), want %s/%d", res.Status, res.ExitCode, res.Reason, tt.status, tt.code)
			}
			if string(res.Output) != tt.out {
				t.Errorf("output %q, want %q", res.Output, tt.out)
			}
			if !res.OutputCID.Equals(cids.Sum(res.Output)) {
				t.Errorf("output CID %s does not match the output", res.OutputCID)
			}
			if strings.Contains(string(res.Output), "ESCAPED") {
				t.Error("the job ran past its forbidden system call")
			}
		})
	}
}

// startSignal is a stdin that reports the launcher's first read, which comes only after
// the job has started, and then blocks until closed.
type startSignal struct {
	started chan struct{}
	block   chan struct{}
}

func (s *startSignal) Read(p []byte) (int, error) {
	close(s.started)
	<-s.block
	return 0, io.EOF
}

func TestRunCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	in := &startSignal{started: make(chan struct{}), block: make(chan struct{})}
	defer close(in.block)
	done := make(chan error, 1)
	go func() {
		_, err := (&Runner{}).Run(ctx, Job{Binary: genLoop(1 << 62), Stdin: in}, Limits{})
		done <- err
	}()
	<-in.started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

// TestHostCPUTrickle: a job that writes a byte per write(2) must not cost the host more CPU
// than it uses itself. With the old read loop (a read per wakeup, through Go's poller)
// 2,000,000 bytes cost the host 1.57 s of CPU for 0.78 s of job CPU; reading in batches,
// first through the poller, then with poll(2) outside it, 19 ms for 0.34 s.
func TestHostCPUTrickle(t *testing.T) {
	bin := testdataC(t, "escape/trickle.c", false)
	const n = 2000000
	var r Runner
	r.Run(context.Background(), Job{Binary: bin, Stdin: strings.NewReader("1")}, Limits{}) // set-up costs out of the way
	before := selfCPU(t)
	res, err := r.Run(context.Background(), Job{Binary: bin, Stdin: strings.NewReader(strconv.Itoa(n))}, Limits{})
	host := selfCPU(t) - before
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusExited || len(res.Output) != n {
		t.Fatalf("got %s (%s) with %d bytes, want exited with %d", res.Status, res.Reason, len(res.Output), n)
	}
	t.Logf("host CPU %s, job CPU %s (ratio %.2f)", host, res.CPUTime, float64(host)/float64(res.CPUTime))
	if host > res.CPUTime {
		t.Errorf("got host CPU %s for job CPU %s, want at most the job's", host, res.CPUTime)
	}
}

// selfCPU is this process's user + system time so far, all threads, children excluded.
func selfCPU(t *testing.T) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
