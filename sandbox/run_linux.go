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
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gridnode/gridnode/cids"
)

// Runner runs jobs in the sandbox. The zero value is ready to use.
//
// Beside the stub's strict seccomp, every job gets layers that hold even if it ran without
// the stub (Isolation reports them; a layer the kernel refuses is logged once and left
// out). Always: no_new_privs, no capabilities, ADDR_NO_RANDOMIZE, Landlock (no file, no
// TCP) and the three pipes as its only descriptors. A root daemon adds a uid and gid of the
// job's own from JobUIDs, a PID namespace per job (every process the job creates dies with
// it) and one shared network namespace with only a down loopback; none of these costs a
// measurable start time. A daemon that is not root instead runs each job in a user
// namespace of its own with a PID and a network namespace in it, unless NoUserNamespace.
type Runner struct {
	Logger *slog.Logger // nil discards
	// JobUIDs is the range of uids (each with the gid of the same number) that jobs run
	// as, one per running job, when the daemon is root. Zero means DefaultJobUIDs.
	JobUIDs UIDRange
	// NoUserNamespace, when the daemon is not root, runs jobs as the daemon's uid with no
	// namespaces, instead of in a user namespace each. The namespaces make every start a
	// full fork of the daemon and a new network namespace: about 0.8 ms, against 0.1 ms for
	// a plain start, on a 2-core VM. Without them a job that got past the stub shares the
	// daemon's uid and namespaces: Landlock still keeps files and TCP from it, but it can
	// ptrace the launching thread (and so take over the daemon), signal it, use UDP and
	// other non-TCP sockets, and children it moves out of its process group outlive it.
	NoUserNamespace bool
	// JobsMemory, when the daemon is root and the machine has cgroup v1's memory
	// controller, caps what all running jobs use together (a cgroup the launcher's thread
	// joins; the first Runner of a process that asks sets it), so a job that got past the
	// stub's RLIMIT_AS still cannot take the donor's memory. Zero means no cgroup.
	JobsMemory int64
	// CPUQuota, if above 0, is how many cores the running jobs may use together (0.5: half
	// of one core; 4: four), enforced by stopping and continuing them in turn on a 100 ms
	// cycle (dutycycle_linux.go), which needs no root. A job's wall limit then counts only
	// the time it was let run.
	CPUQuota float64

	images    imageCache // prepared images (imagecache_linux.go)
	cycleOnce sync.Once
	dc        *dutyCycle
	isoOnce   sync.Once
	iso       *isolation
	// noIsolation, for tests only, starts jobs as the launcher did before isolation: the
	// daemon's uid and thread, no namespaces. The escape tests' controls use it.
	noIsolation bool
	// noPIDNamespace, for tests only, runs a root daemon's jobs without PID namespaces, as
	// where the kernel refuses them, to test the process-group and uid backstop.
	noPIDNamespace bool
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
	if err := CheckSeccomp(); err != nil {
		return Result{}, err
	}
	if err := lim.Check(); err != nil {
		return Result{}, err
	}
	lim = lim.withDefaults()
	f, release, err := r.images.get(job, lim, func() (*os.File, error) {
		e, err := plan(job.Binary, lim)
		if err != nil {
			return nil, err
		}
		f, err := sealedMemfd(job.Binary, e)
		var rej *RejectError
		if errors.As(err, &rej) && r.Logger != nil {
			// The validator passed a binary whose patched image the kernel would not enter
			// at the stub: a validator gap, and so possibly an attack. Loud, and never run.
			r.Logger.Warn("refused a job whose patched image failed the check", "reason", rej.Reason)
		}
		return f, err
	})
	var rej *RejectError
	if errors.As(err, &rej) {
		return Result{Status: StatusRejected, Reason: rej.Reason, OutputCID: cids.Sum(nil)}, nil
	}
	if err != nil {
		return Result{}, err
	}
	defer release()
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

// launch starts the patched image and supervises it until it and every process it created
// are gone.
func (r *Runner) launch(ctx context.Context, img *os.File, stdin io.Reader, lim Limits) (Result, error) {
	iso := r.setup()
	if iso.User == "" {
		return Result{}, fmt.Errorf("start job: %s", iso.warning)
	}
	var uid uint32
	if iso.root {
		u, err := acquireUID(iso.uids)
		if err != nil {
			return Result{}, err
		}
		uid = u
		// Deferred, so it runs after the wait below: in a PID namespace every process of
		// the job is gone once PID 1 is reaped; without one, killUID makes it so.
		defer func() {
			if !iso.PIDNamespace {
				killUID(uid)
			}
			releaseUID(uid)
		}()
	}
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
	// Go's child moves its exec-status pipe to max(3, its files)+1 before it execs, and in
	// its first pass moves any file i whose descriptor is below i to the numbers after that
	// (forkAndExecInChild): an image whose descriptor is among those numbers (a cached one
	// may have any) would be another file by then. One above them all is none of them.
	exe := img
	if free := max(3, int(inR.Fd()), int(outW.Fd()), int(errW.Fd())) + 4; int(img.Fd()) <= free {
		fd, err := unix.FcntlInt(img.Fd(), unix.F_DUPFD_CLOEXEC, free+1)
		if err != nil {
			closeAll(inR, inW, outR, outW, errR, errW)
			return Result{}, fmt.Errorf("dup image: %w", err)
		}
		exe = os.NewFile(uintptr(fd), "gridnode-job")
		defer exe.Close()
	}
	attr := &syscall.SysProcAttr{
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true,
	}
	iso.attr(attr, uid)
	cmd := &exec.Cmd{
		Path:        fmt.Sprintf("/proc/self/fd/%d", exe.Fd()),
		Args:        []string{"gridnode-job"},
		Env:         []string{},
		Dir:         "/",
		Stdin:       inR,
		Stdout:      outW,
		Stderr:      errW,
		SysProcAttr: attr,
	}
	var (
		mu     sync.Mutex
		reason = killNone
		proc   *os.Process // once started
	)
	kill := func(why int) {
		mu.Lock()
		defer mu.Unlock()
		if reason == killNone {
			reason = why
			if proc != nil {
				proc.Kill() // pidfd-based: cannot hit a recycled PID
			}
		}
	}
	// Without a PID namespace, watch waits for the job's first process to exit, without
	// reaping it, so its PID, which is also its process group's ID, cannot be reused; it then
	// kills what is left of the group and gives the pipes a short drain and no more, since a
	// child that left the group may hold them open. In a PID namespace the kernel has killed
	// every other process by then, and the pipes reach EOF by themselves.
	var drainBy *atomic.Int64 // when watched, set by watch: the pipes are read until then
	if !iso.PIDNamespace && iso.l != nil {
		drainBy = new(atomic.Int64)
	}
	watched := make(chan struct{}) // closed by watch; the Wait below reaps only after
	watch := func(pid int) {
		defer close(watched)
		var info unix.Siginfo
		for unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil) == unix.EINTR {
		}
		unix.Kill(-pid, unix.SIGKILL)
		by := time.Now().Add(pipeDrain)
		drainBy.Store(by.UnixNano())
		outR.SetReadDeadline(by) // for as long as collect reads through the poller
		errR.SetReadDeadline(by)
	}
	// The wall limit runs from the process's start, as WallTime does: a start that waited
	// for the launcher more than a millisecond restarts the timer (below), so time spent in
	// its queue is not the job's. (Made here, not at the start, to keep that path short.)
	handed := time.Now()
	wt := newWallTimer(r.cycle(), lim.Wall, func() { kill(killWall) })
	timer := wt.t
	defer timer.Stop()
	uncycle := func() {}
	stopCtx := context.AfterFunc(ctx, func() { kill(killCtx) })
	defer stopCtx()
	go func() {
		if stdin != nil {
			io.Copy(inW, stdin)
		}
		inW.Close()
	}()
	var stderr []byte
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		stderr, _ = collect(errR, StderrLimit, nil, drainBy, nil)
	}()

	// The launcher's thread never exits, so Pdeathsig fires only when the daemon dies, and
	// a caller's LockOSThread cannot take the job down with its thread. Handing the job over
	// is the last thing before blocking on stdout, and its reply is awaited only after: the
	// launcher then starts at once, and nothing wakes this goroutine before the job's first
	// byte. The job runs at SCHED_IDLE, so every wakeup of the daemon delays it. A failed
	// start closes the pipes, which ends the reads.
	// Times run from the process's start, as the plain-exec baseline's do: the moment the
	// launcher calls cmd.Start, not the hand-over to it (which total times include).
	started := make(chan error, 1)
	procSet := make(chan struct{}) // closed once proc is set, or the start failed
	var start time.Time
	iso.l.startAsync(cmd, func(at time.Time, err error) {
		start = at
		closeAll(inR, outW, errW)
		if err != nil {
			close(watched)
			close(procSet)
			started <- err
			return
		}
		mu.Lock()
		proc = cmd.Process
		if reason != killNone {
			proc.Kill()
		}
		mu.Unlock()
		if at.Sub(handed) > time.Millisecond {
			timer.Reset(lim.Wall)
		}
		uncycle = wt.started(proc)
		close(procSet)
		if drainBy != nil {
			go watch(proc.Pid)
		} else {
			close(watched)
		}
		started <- nil
	})
	// Read stdout here, not in another goroutine: the first byte is then seen without a
	// goroutine hand-off, which measurably cuts time-to-first-output.
	var firstByte time.Time
	// The output-limit kill must be sent before collect closes the pipe (else the job may
	// exit on EPIPE first, and replicas disagree on the signal): wait for proc.
	out, _ := collect(outR, lim.MaxOutput, func() { kill(killOutput); <-procSet }, drainBy, func() { firstByte = time.Now() })
	if err := <-started; err != nil {
		<-stderrDone
		inW.Close()
		if errors.Is(err, unix.EACCES) && memfdNoexec() {
			return Result{}, fmt.Errorf("start job: %w (vm.memfd_noexec=2 forbids executing memfds; set it to 0 or 1)", err)
		}
		return Result{}, fmt.Errorf("start job: %w", err)
	}
	<-watched
	waitErr := cmd.Wait()
	wall := time.Since(start)
	uncycle()
	<-stderrDone
	// The stdin copier may still be blocked in the caller's Read; release the pipe now
	// rather than when that Read returns.
	inW.Close()

	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		return Result{}, fmt.Errorf("wait job: %w", waitErr)
	}
	res := Result{
		Output:      out,
		OutputCID:   cids.Sum(out),
		Stderr:      stderr,
		WallTime:    wall,
		FirstOutput: firstOutput(start, firstByte),
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
		if r.dc != nil {
			res.Reason += " (of time the CPU cap let it run)"
		}
	case why == killOutput:
		res.Status, res.Reason = StatusOutputLimit, fmt.Sprintf("wrote more than the %d-byte output limit", lim.MaxOutput)
	case ws.Exited():
		res.Status, res.ExitCode = StatusExited, ws.ExitStatus()
		if res.ExitCode == StubExitCode && len(res.Output) == 0 {
			res.Reason = "exit status 125: the job failed, or the sandbox stub could not set its limits"
		}
	// As PID 1 of its namespace the job ignores SIGXCPU and dies of SIGKILL at the hard
	// limit, one second later.
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

// pipeDrain bounds how long the job's pipes are read after its first process has exited.
const pipeDrain = 100 * time.Millisecond

// A reader that sees coalesceAfter short reads in a row sleeps coalesce after each next
// one, so that a job writing a byte at a time costs the host one wakeup per coalesce, not
// one per write. A full read resets the count, so fast writers are not slowed, and jobs
// that write a few times never wait.
const (
	coalesceAfter = 8
	coalesce      = time.Millisecond
)

// collect reads f until EOF, an error or drainBy (a UnixNano time once set; nil when it
// never will be; f's read deadline is set with it), keeping at most keep bytes. More than
// keep, if stop is not nil, calls stop (before f is closed) and ends the read with over
// set; otherwise it is read and dropped. first, if
// not nil, is called at the first byte. collect closes f.
//
// It reads through Go's poller, which sees the first byte soonest, until the job has
// trickled coalesceAfter short writes. The poller keeps a descriptor registered for good,
// so every further byte would wake its thread, even while collect sleeps: collect then
// takes the pipe out of the poller and waits with poll(2), which listens only while it
// waits.
func collect(f *os.File, keep int64, stop func(), drainBy *atomic.Int64, first func()) (data []byte, over bool) {
	buf := make([]byte, 32<<10)
	short := 0
	add := func(n int) bool {
		if first != nil {
			first()
			first = nil
		}
		room := int(keep) - len(data)
		data = append(data, buf[:min(n, max(room, 0))]...)
		if n == len(buf) {
			short = 0
		} else {
			short++
		}
		if n > room && stop != nil {
			// Before the pipe closes: a job that wrote past the limit must die of the
			// kill, not of SIGPIPE (or exit on EPIPE) first.
			stop()
			return true
		}
		return false
	}
	for short < coalesceAfter {
		n, err := f.Read(buf)
		if n > 0 && add(n) {
			f.Close()
			return data, true
		}
		if err != nil {
			f.Close()
			return data, false
		}
	}
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(s uintptr) { fd, _ = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	}
	f.Close() // out of the poller; fd, non-blocking like f, stays open
	if fd < 0 {
		return data, false
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case n > 0:
			if add(n) {
				return data, true
			}
			if short >= coalesceAfter {
				time.Sleep(coalesce)
			}
			continue
		case err == nil: // EOF
			return data, false
		case err == unix.EINTR:
			continue
		case err != unix.EAGAIN:
			return data, false
		}
		// Empty: wait for data or EOF, rechecking drainBy every 100 ms if it may be set.
		timeout := -1
		if drainBy != nil {
			timeout = 100
			if d := drainBy.Load(); d != 0 {
				left := time.Until(time.Unix(0, d))
				if left <= 0 {
					return data, false
				}
				timeout = int(min(left, 100*time.Millisecond).Milliseconds()) + 1
			}
		}
		unix.Poll(fds, timeout)
	}
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

// firstOutput is the time from start to the first stdout byte, zero if there was none.
func firstOutput(start, first time.Time) time.Duration {
	if first.IsZero() {
		return 0
	}
	return first.Sub(start)
}
