//go:build linux && amd64

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A launcher is one goroutine locked to its OS thread (never the main one) for the life of
// the process, and every job is forked from it. Once, it gives its thread what every job
// must inherit and the rest of the daemon must not have: no_new_privs, ADDR_NO_RANDOMIZE,
// no ambient capabilities, Landlock and, when it can, an empty capability bounding set and
// a network namespace with only a down loopback. These are per-thread attributes that
// fork copies. The Go runtime creates new threads from a template thread while a locked
// one asks, so none of this leaks into the daemon's other threads. The thread never exits:
// a job's Pdeathsig fires when the thread that forked it dies, not when the process does.
// Under Landlock the thread can open no file: whatever a start needs is opened before.
type launcher struct {
	reqs     chan startReq
	moving   chan struct{} // closed once run holds a thread that is not the main one
	userns   bool          // for jobs in a user namespace of their own
	nnp      bool          // no_new_privs set
	landlock int           // the Landlock ABI in force, 0 for none
	tid      int           // the launcher's thread
	layout   bool          // ADDR_NO_RANDOMIZE set
	netns    bool          // in the empty network namespace
	ipcns    bool          // in an IPC namespace with no System V IPC allowed
}

const addrNoRandomize = 0x0040000 // <linux/personality.h>

type startReq struct {
	cmd  *exec.Cmd
	done func(at time.Time, err error) // on the launcher's goroutine: when cmd.Start began, its error
}

// launchers are the two launchers: jobs that run in a user namespace of their own need
// Landlock to let the launcher write their uid and gid maps beneath /proc, which jobs that
// share the daemon's namespace must not be allowed.
var launchers = [2]func() *launcher{newLauncher(false), newLauncher(true)}

func newLauncher(userns bool) func() *launcher {
	return sync.OnceValue(func() *launcher {
		l := &launcher{reqs: make(chan startReq), moving: make(chan struct{}), userns: userns}
		ready := make(chan struct{})
		go l.run(ready)
		<-ready
		return l
	})
}

// theLauncher returns the launcher for jobs in a user namespace of their own, or not.
func theLauncher(userns bool) *launcher {
	if userns {
		return launchers[1]()
	}
	return launchers[0]()
}

// run is the launcher's goroutine; it closes ready once its thread is set up.
func (l *launcher) run(ready chan<- struct{}) {
	runtime.LockOSThread() // never unlocked once set up: the thread dies with the process
	if unix.Gettid() == unix.Getpid() {
		// The main thread, whose attributes /proc/self shows for the whole process (its
		// /proc/self/net included). Start again elsewhere: while this goroutine holds the
		// main thread, the new one cannot get it.
		go l.run(ready)
		<-l.moving
		runtime.UnlockOSThread()
		return
	}
	l.tid = unix.Gettid()
	close(l.moving)
	l.setup()
	close(ready)
	for req := range l.reqs {
		at := time.Now()
		req.done(at, req.cmd.Start())
	}
}

// setup runs once on the launcher's thread.
func (l *launcher) setup() {
	l.nnp = unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == nil
	// personality(0xffffffff) reads the current persona without changing it.
	if p, _, errno := unix.RawSyscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0); errno == 0 {
		_, _, errno = unix.RawSyscall(unix.SYS_PERSONALITY, p|addrNoRandomize, 0, 0)
		l.layout = errno == 0
	}
	unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	// Dropping from the bounding set needs CAP_SETPCAP (root); it leaves this thread's own
	// capabilities, which forking into a job uid and a PID namespace needs, alone.
	for c, last := 0, lastCap(); c <= last; c++ {
		if unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0) != nil {
			break
		}
	}
	l.netns = unix.Unshare(unix.CLONE_NEWNET) == nil
	// A System V IPC namespace shared by jobs, in which none can be made: a job that got
	// past the stub could otherwise leave shared memory behind (it outlives the job and its
	// PID namespace) or read a host process's segment. One for all, set up once: an IPC
	// namespace per job costs about 20 us a start (its mqueue mount).
	l.ipcns = unix.Unshare(unix.CLONE_NEWIPC) == nil && noSysVIPC()
	if l.nnp {
		l.landlock = landlock(l.userns) // last: the thread opens no file after this
	}
}

func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if n, err2 := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && err2 == nil {
		return n
	}
	return 40 // CAP_CHECKPOINT_RESTORE, the last one in Linux 6.18
}

// start runs cmd.Start on the launcher's thread and returns its error.
func (l *launcher) start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	l.startAsync(cmd, func(_ time.Time, err error) { done <- err })
	return <-done
}

// startAsync hands cmd to the launcher and returns; done gets cmd.Start's error on the
// launcher's goroutine and must not block. A nil launcher starts cmd from a fresh
// goroutine, as jobs were started before there was one.
func (l *launcher) startAsync(cmd *exec.Cmd, done func(at time.Time, err error)) {
	if l == nil {
		go func() {
			at := time.Now()
			done(at, cmd.Start())
		}()
		return
	}
	l.reqs <- startReq{cmd, done}
}

// isolation is what a Runner decided, once, about the layers of its jobs.
type isolation struct {
	Isolation
	l          *launcher
	root       bool     // jobs get uids from the pool
	cloneflags uintptr  // per job
	userns     bool     // per-job user namespace with maps
	warning    string   // said once in the log: a layer the kernel refused
	uids       UIDRange // when root
}

// jobMaxProcs bounds the processes of one job uid (RLIMIT_NPROC): a job has one; room is
// left for the threads of the non-root helpers a root daemon's tests start.
const jobMaxProcs = 64

// setup returns the layers for r's jobs, decided once per process and mode.
func (r *Runner) setup() *isolation {
	r.isoOnce.Do(func() {
		var iso isolation
		switch {
		case r.noIsolation:
			iso = isolation{Isolation: Isolation{User: userDaemon}, l: nil}
		case os.Geteuid() == 0:
			iso = *rootIsolation()
		case !r.NoUserNamespace:
			iso = *usernsIsolation()
		default:
			iso = *daemonIsolation()
		}
		iso.uids = r.JobUIDs
		if iso.uids.Count <= 0 {
			iso.uids = DefaultJobUIDs
		}
		if iso.root && r.JobsMemory > 0 {
			if err := joinJobCgroups(iso.l.tid, r.JobsMemory); err != nil {
				iso.warning = fmt.Sprintf("no memory cgroup for jobs (%v): a job's memory is bounded by the stub's RLIMIT_AS alone", err)
			}
		}
		// The launcher thread is the process's: once a Runner made it join, every root
		// Runner's jobs are in the cgroup.
		iso.Cgroup = iso.root && jobCgroupJoined()
		if r.CPUQuota > 0 {
			iso.CPUCap = "duty-cycle"
		}
		if r.noPIDNamespace && !iso.userns {
			iso.cloneflags &^= unix.CLONE_NEWPID
			iso.PIDNamespace = false
		}
		if r.Logger != nil {
			if iso.warning != "" {
				r.Logger.Warn("sandbox isolation reduced", "why", iso.warning, "isolation", iso.String())
			} else {
				r.Logger.Info("sandbox isolation", "isolation", iso.String())
			}
		}
		r.iso = &iso
	})
	return r.iso
}

// launcherIsolation is what every mode gets from the launcher's thread.
func launcherIsolation(user string) *isolation {
	l := theLauncher(user == userNamespace)
	return &isolation{l: l, Isolation: Isolation{User: user, NoNewPrivs: l.nnp, FixedLayout: l.layout,
		NetNamespace: l.netns, IPCNamespace: l.ipcns, Landlock: l.landlock}}
}

// rootIsolation: a job uid and a PID namespace, each probed once, since a container may
// forbid them.
var rootIsolation = sync.OnceValue(func() *isolation {
	iso := launcherIsolation(userJobUID)
	iso.root, iso.uids = true, DefaultJobUIDs
	iso.cloneflags = unix.CLONE_NEWPID
	if err := iso.probe(); err != nil {
		iso.cloneflags = 0
		iso.warning = fmt.Sprintf("no PID namespace for jobs (%v): a job's processes are killed by process group and uid instead", err)
		if err := iso.probe(); err != nil {
			iso.warning = fmt.Sprintf("cannot run jobs as a job uid (%v)", err)
			iso.User = "" // Run refuses
		}
	}
	iso.PIDNamespace = iso.cloneflags != 0
	// RLIMIT_NPROC counts a uid's processes; each running job has a uid of its own, and the
	// initial user namespace's root (this daemon) is exempt, so this bounds what one job
	// that got past the stub can fork (a fork bomb) without touching the daemon. Not for a
	// root of another user namespace (a container), whose own threads would count against
	// it, nor when jobs cannot run anyway. It is process-wide: non-root children the daemon
	// starts get it too.
	if iso.User != "" && initialUserNS() {
		if err := unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: jobMaxProcs, Max: jobMaxProcs}); err != nil {
			iso.warning = fmt.Sprintf("no process bound for job uids (RLIMIT_NPROC: %v)", err)
		}
	}
	return iso
})

// usernsIsolation: a user namespace per job, with a PID and a network namespace in it.
var usernsIsolation = sync.OnceValue(func() *isolation {
	iso := launcherIsolation(userNamespace)
	iso.userns = true
	iso.cloneflags = unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWIPC
	if err := iso.probe(); err != nil {
		d := *daemonIsolation()
		iso = &d
		iso.warning = fmt.Sprintf("no user namespace for jobs (%v): they share the daemon's uid and namespaces (see Runner.NoUserNamespace)", err)
		return iso
	}
	iso.PIDNamespace, iso.NetNamespace, iso.IPCNamespace = true, true, true
	return iso
})

// daemonIsolation: jobs share the daemon's uid and namespaces. The launcher's thread is in
// their Landlock domain, which therefore lets them ptrace it, and with it the daemon: the
// daemon is made non-dumpable, which the kernel requires of a ptrace target beside its uid.
// That also ends its core dumps and keeps /proc/PID files from its own user, and it makes
// Go's user-namespace maps unwritable, so a Runner of this process that wants a user
// namespace after this falls back here.
var daemonIsolation = sync.OnceValue(func() *isolation {
	iso := launcherIsolation(userDaemon)
	iso.DaemonNotDumpable = os.Geteuid() != 0 && unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0) == nil
	return iso
})

// Isolation reports the layers every job of r gets beside strict seccomp. It is decided on
// first use (of this or Run) and does not change after.
func (r *Runner) Isolation() Isolation { return r.setup().Isolation }

// probe forks as a job would, with a path that cannot be executed: ENOTDIR from execve
// means the namespaces and credentials were all granted.
func (iso *isolation) probe() error {
	null, err := os.Open(os.DevNull) // here: the launcher's thread can open no file
	if err != nil {
		return err
	}
	defer null.Close()
	cmd := &exec.Cmd{Path: "/dev/null/gridnode-probe", Env: []string{}, Stdin: null, Stdout: null, Stderr: null,
		SysProcAttr: &syscall.SysProcAttr{}}
	iso.attr(cmd.SysProcAttr, iso.uids.First)
	err = iso.l.start(cmd)
	if errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err == nil {
		cmd.Process.Kill()
		cmd.Wait()
		return errors.New("probe unexpectedly started")
	}
	return err
}

// attr sets the per-job credentials and namespaces on a. Preconditions: uid is from the pool
// when iso.root.
func (iso *isolation) attr(a *syscall.SysProcAttr, uid uint32) {
	a.Cloneflags = iso.cloneflags
	switch {
	case iso.root:
		a.Credential = &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}
	case iso.userns:
		// The same uid inside: not 0, so execve leaves the job no capabilities in the
		// namespace either. setgroups stays denied.
		u, g := os.Getuid(), os.Getgid()
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: u, HostID: u, Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: g, HostID: g, Size: 1}}
	}
}

// jobUIDs records which uids running jobs hold, across every Runner of the process, so two
// Runners with overlapping ranges never share one; and which uids the process has claimed
// from other processes (gridnode testnet runs several root daemons on one machine).
var jobUIDs struct {
	sync.Mutex
	held    map[uint32]bool
	claimed map[uint32]*os.File // a lock on uidLockDir/uid (or nil), kept for the life of the process
}

// uidLockDir holds one lock file per job uid in use by some process on the machine.
const uidLockDir = "/run/gridnode-job-uids"

// acquireUID returns a uid of rg that no running job holds.
func acquireUID(rg UIDRange) (uint32, error) {
	jobUIDs.Lock()
	defer jobUIDs.Unlock()
	if jobUIDs.held == nil {
		jobUIDs.held, jobUIDs.claimed = map[uint32]bool{}, map[uint32]*os.File{}
	}
	for i := range rg.Count {
		u := rg.First + uint32(i)
		if jobUIDs.held[u] {
			continue
		}
		if _, ok := jobUIDs.claimed[u]; !ok {
			f, err := claimUID(u)
			if err == unix.EWOULDBLOCK {
				continue // another process's
			}
			jobUIDs.claimed[u] = f // nil if there is nowhere to lock: this process alone then
		}
		jobUIDs.held[u] = true
		return u, nil
	}
	return 0, ErrNoJobUID
}

// claimUID takes uid from other processes with an flock that the kernel drops when this
// process ends.
func claimUID(uid uint32) (*os.File, error) {
	if err := os.MkdirAll(uidLockDir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(fmt.Sprintf("%s/%d", uidLockDir, uid), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// releaseUID returns uid to the pool. Preconditions: no process runs as uid.
func releaseUID(uid uint32) {
	jobUIDs.Lock()
	defer jobUIDs.Unlock()
	delete(jobUIDs.held, uid)
}

// killUID kills every process running as uid and returns once none is left: the backstop
// when there is no PID namespace, for children that left the job's process group. pidfds
// keep a recycled PID from being hit.
func killUID(uid uint32) {
	want := strconv.FormatUint(uint64(uid), 10)
	for range 100 {
		found := false
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			fd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				continue
			}
			if uid, state := uidState(pid); uid == want && state != "Z" {
				found = true
				unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			}
			unix.Close(fd)
		}
		if !found {
			return
		}
		runtime.Gosched()
	}
}

// uidState returns the real uid and the state letter of pid from /proc/pid/status.
func uidState(pid int) (uid, state string) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "", ""
	}
	s := string(b)
	if _, rest, ok := strings.Cut(s, "\nState:\t"); ok && rest != "" {
		state = rest[:1]
	}
	if _, rest, ok := strings.Cut(s, "\nUid:\t"); ok {
		uid, _, _ = strings.Cut(rest, "\t")
	}
	return uid, state
}

// noSysVIPC sets this thread's IPC namespace's limits so that no shared memory segment,
// message queue (System V or POSIX) or semaphore set can be made in it. Preconditions: the calling goroutine is
// locked to the thread, which is the namespace's only user so far.
func noSysVIPC() bool {
	for _, w := range [][2]string{
		{"/proc/sys/kernel/shmmni", "0"},
		{"/proc/sys/kernel/msgmni", "0"},
		{"/proc/sys/kernel/sem", "0 0 0 0"},
		{"/proc/sys/fs/mqueue/queues_max", "0"}, // POSIX queues live in the IPC namespace too
	} {
		if os.WriteFile(w[0], []byte(w[1]), 0) != nil {
			return false
		}
	}
	return true
}
