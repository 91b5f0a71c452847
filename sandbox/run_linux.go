//go:build linux && amd64

package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gridnode/gridnode/cids"
)

// Runner runs jobs in the sandbox. The zero value is ready to use.
type Runner struct {
	Logger *slog.Logger // nil discards
}

// Run validates and patches job.Binary, then runs it under strict seccomp within lim and
// reports how it ended. A refused binary is a Result with StatusRejected and a nil error;
// the error is for host failures and for ctx ending (the job is then killed).
func (r *Runner) Run(ctx context.Context, job Job, lim Limits) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if err := jobBinfmt.check(); err != nil {
		return Result{}, err
	}
	lim = lim.withDefaults()
	e, err := plan(job.Binary, lim)
	var rej *RejectError
	if errors.As(err, &rej) {
		return Result{Status: StatusRejected, Reason: rej.Reason, OutputCID: cids.Sum(nil)}, nil
	}
	if err != nil {
		return Result{}, err
	}
	f, err := sealedMemfd(job.Binary, e)
	if errors.As(err, &rej) {
		// The validator passed a binary whose patched image the kernel would not enter at the
		// stub: a validator gap, and so possibly an attack. Loud, and never run.
		if r.Logger != nil {
			r.Logger.Warn("refused a job whose patched image failed the check", "reason", rej.Reason)
		}
		return Result{Status: StatusRejected, Reason: rej.Reason, OutputCID: cids.Sum(nil)}, nil
	}
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	res, err := r.launch(ctx, f, job.Stdin, lim)
	if r.Logger != nil && err == nil {
		r.Logger.Debug("job ended", "status", res.Status, "exit_code", res.ExitCode, "signal", res.Signal,
			"cpu", res.CPUTime, "wall", res.WallTime, "output", len(res.Output))
	}
	return res, err
}

// sealedMemfd returns an executable memfd holding bin with e applied (if not nil), sealed
// against any change. Writing the edits in place spares a patched copy of the binary.
func sealedMemfd(bin []byte, e *edits) (*os.File, error) {
	const flags = unix.MFD_CLOEXEC | unix.MFD_ALLOW_SEALING
	fd, err := unix.MemfdCreate("gridnode-job", flags|unix.MFD_EXEC)
	if err == unix.EINVAL { // before Linux 6.3 MFD_EXEC does not exist
		fd, err = unix.MemfdCreate("gridnode-job", flags)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "gridnode-job")
	if _, err := f.Write(bin); err != nil {
		f.Close()
		return nil, fmt.Errorf("write memfd: %w", err)
	}
	if e != nil {
		if err := e.apply(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("patch memfd: %w", err)
		}
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal memfd: %w", err)
	}
	if e != nil {
		// Check the artefact, not the plan: read the sealed bytes back as the kernel will.
		fi, err := f.Stat()
		if err == nil {
			err = checkImage(f, fi.Size(), e)
		}
		if err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// kill reasons, first one wins.
const (
	killNone = iota
	killWall
	killOutput
	killCtx
)

// launch starts the patched image and supervises it until it ends.
func (r *Runner) launch(ctx context.Context, img *os.File, stdin io.Reader, lim Limits) (Result, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return Result{}, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return Result{}, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return Result{}, err
	}
	cmd := &exec.Cmd{
		Path:   fmt.Sprintf("/proc/self/fd/%d", img.Fd()),
		Args:   []string{"gridnode-job"},
		Env:    []string{},
		Dir:    "/",
		Stdin:  inR,
		Stdout: outW,
		Stderr: errW,
		SysProcAttr: &syscall.SysProcAttr{
			Pdeathsig: syscall.SIGKILL,
			Setpgid:   true,
		},
	}
	// Pdeathsig follows the forking thread; start from a fresh, unlocked goroutine so a
	// caller's LockOSThread cannot take the job down with its thread.
	started := make(chan error, 1)
	start := time.Now()
	go func() { started <- cmd.Start() }()
	err = <-started
	closeAll(inR, outW, errW)
	if err != nil {
		closeAll(inW, outR, errR)
		if errors.Is(err, unix.EACCES) && memfdNoexec() {
			return Result{}, fmt.Errorf("start job: %w (vm.memfd_noexec=2 forbids executing memfds; set it to 0 or 1)", err)
		}
		return Result{}, fmt.Errorf("start job: %w", err)
	}

	var (
		mu     sync.Mutex
		reason = killNone
	)
	kill := func(why int) {
		mu.Lock()
		defer mu.Unlock()
		if reason == killNone {
			reason = why
			cmd.Process.Kill() // pidfd-based: cannot hit a recycled PID
		}
	}
	timer := time.AfterFunc(lim.Wall, func() { kill(killWall) })
	defer timer.Stop()
	stopCtx := context.AfterFunc(ctx, func() { kill(killCtx) })
	defer stopCtx()

	go func() {
		if stdin != nil {
			io.Copy(inW, stdin)
		}
		inW.Close()
	}()
	var stderr bytes.Buffer
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		io.Copy(&stderr, io.LimitReader(errR, StderrLimit))
		io.Copy(io.Discard, errR)
		errR.Close()
	}()
	// Read stdout here, not in another goroutine: the first byte is then seen without a
	// goroutine hand-off, which measurably cuts time-to-first-output. Stdout reaches EOF
	// when the job ends, whichever way.
	var out bytes.Buffer
	var firstOutput time.Duration
	buf := make([]byte, 32<<10)
	n, err := outR.Read(buf)
	if n > 0 {
		firstOutput = time.Since(start)
		out.Write(buf[:n])
	}
	if err == nil {
		io.Copy(&out, io.LimitReader(outR, lim.MaxOutput+1-int64(n)))
	}
	if int64(out.Len()) > lim.MaxOutput {
		kill(killOutput)
		out.Truncate(int(lim.MaxOutput))
	}
	outR.Close()
	waitErr := cmd.Wait()
	wall := time.Since(start)
	<-stderrDone
	// The stdin copier may still be blocked in the caller's Read; release the pipe now
	// rather than when that Read returns.
	inW.Close()

	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		return Result{}, fmt.Errorf("wait job: %w", waitErr)
	}
	res := Result{
		Output:      out.Bytes(),
		OutputCID:   cids.Sum(out.Bytes()),
		Stderr:      stderr.Bytes(),
		WallTime:    wall,
		FirstOutput: firstOutput,
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.CPUTime = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		res.Signal = unix.SignalName(ws.Signal())
	}
	mu.Lock()
	why := reason
	mu.Unlock()
	switch {
	case why == killCtx:
		res.Status, res.Reason = StatusCrashed, "cancelled"
		return res, fmt.Errorf("job cancelled: %w", context.Cause(ctx))
	case why == killWall:
		res.Status, res.Reason = StatusWallTimeout, fmt.Sprintf("still running after the %s wall-clock limit", lim.Wall)
	case why == killOutput:
		res.Status, res.Reason = StatusOutputLimit, fmt.Sprintf("wrote more than the %d-byte output limit", lim.MaxOutput)
	case ws.Exited():
		res.Status, res.ExitCode = StatusExited, ws.ExitStatus()
		if res.ExitCode == StubExitCode && len(res.Output) == 0 {
			res.Reason = "exit status 125: the job failed, or the sandbox stub could not set its limits"
		}
	case ws.Signal() == syscall.SIGXCPU,
		ws.Signal() == syscall.SIGKILL && res.CPUTime >= cpuLimit(lim):
		res.Status, res.Reason = StatusCPULimit, fmt.Sprintf("used up its %s of CPU time", cpuLimit(lim))
	case ws.Signal() == syscall.SIGKILL:
		res.Status, res.Reason = StatusViolation, "killed by the kernel for a system call that strict seccomp forbids"
	default:
		res.Status, res.Reason = StatusCrashed, "killed by "+res.Signal
	}
	return res, nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func memfdNoexec() bool {
	b, err := os.ReadFile("/proc/sys/vm/memfd_noexec")
	return err == nil && bytes.HasPrefix(b, []byte("2"))
}
