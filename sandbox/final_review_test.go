//go:build linux && amd64

package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A final review of the last changes. Its findings were fixed before landing, and its tests
// stay as regression tests (each comment says what it found): RLIMIT_NPROC is set only in
// the initial user namespace (a container's root daemon died of it); no shared pids cgroup
// (a few fork-bombing jobs blocked every start); POSIX message queues are off in the jobs'
// IPC namespace too; the output-limit kill is sent before the pipe closes; the wall timer
// starts with the process, as WallTime does.

// spread.c: a job past the stub forks 40 children that each touch 8 MiB and wait: 320 MiB
// in all, every process small.
const finalSpreadC = `
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
int main(void) {
	int made = 0;
	for (int i = 0; i < 40; i++) {
		pid_t p = fork();
		if (p == 0) {
			size_t n = 8u << 20;
			char *b = malloc(n);
			if (b) for (size_t j = 0; j < n; j += 4096) b[j] = 1;
			sleep(5);
			_exit(0);
		}
		if (p > 0) made++;
	}
	printf("forked: %d\n", made);
	fflush(stdout);
	while (wait(0) > 0) {}
	return 0;
}
`

// TestFinalHeldOOMSparesDaemon: the job cgroup (cgroup v1 memory) holds the launcher's
// thread, a task of the daemon whose RSS is the whole daemon's. Held: when the jobs together
// pass memory.limit_in_bytes (40 processes of 8 MiB past a 256 MiB cgroup, the "daemon"
// holding 400 MiB), the memcg OOM killer kills job processes only: it scans the cgroup's
// processes (thread-group leaders), and the launcher thread is not one. Anonymous memory
// is charged to mm->owner's cgroup, so the daemon's own memory is not charged there either.
// The daemon runs in a child process, which must survive.
func TestFinalHeldOOMSparesDaemon(t *testing.T) {
	requireRoot(t)
	if os.Getenv("FINAL_OOM_CHILD") == "1" {
		ballast := make([]byte, 400<<20)
		for i := range ballast {
			if i%4096 == 0 {
				ballast[i] = 1
			}
		}
		bin := buildC(t, "final/spread", []byte(finalSpreadC), true)
		r := &Runner{JobsMemory: 256 << 20}
		if !r.Isolation().Cgroup {
			t.Fatalf("no job cgroup (needs root and cgroup v1's memory controller): %v", r.Isolation())
		}
		res := runNoStub(t, r, bin, "", 20*time.Second)
		t.Logf("job: %s (%s) %q", res.Status, res.Reason, res.Output)
		println("DAEMON-SURVIVED", ballast[4096])
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFinalHeldOOMSparesDaemon$", "-test.v")
	cmd.Env = append(os.Environ(), "FINAL_OOM_CHILD=1")
	outb, err := cmd.CombinedOutput()
	t.Logf("child: %v\n%s", err, outb)
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("the daemon process was killed by %v while a job used more than JobsMemory: the memcg OOM killer chose the daemon (its launcher thread is in the job cgroup)", ws.Signal())
	}
	if !strings.Contains(string(outb), "DAEMON-SURVIVED") {
		t.Fatalf("child did not finish: %v", err)
	}
}

// TestFinalHeldHostIPCLimits: the jobs' IPC namespace limits are the launcher thread's
// namespace's, not the host's.
func TestFinalHeldHostIPCLimits(t *testing.T) {
	requireRoot(t)
	read := func() string {
		b, _ := exec.Command("cat", "/proc/sys/kernel/shmmni", "/proc/sys/kernel/msgmni", "/proc/sys/kernel/sem").Output()
		return string(b)
	}
	before := read()
	got, _ := bypass(t, "shm 1380011593 1\n", 20*time.Second)
	if got["touched"] != "" {
		t.Errorf("job made shm: %v", got)
	}
	self, _ := os.ReadFile("/proc/sys/kernel/shmmni")
	if after := read(); after != before || strings.TrimSpace(string(self)) == "0" {
		t.Errorf("host IPC limits changed: before %q after %q self %q", before, after, self)
	}
	t.Logf("host limits: %q", before)
}

// TestFinalHeldNprocRootInUserNamespace: rootIsolation sets RLIMIT_NPROC to 64 for the
// whole process because "root (this daemon) is exempt". The kernel exempts only the init
// user namespace's root (INIT_USER) or CAP_SYS_RESOURCE/CAP_SYS_ADMIN in the init
// namespace. A daemon that is uid 0 in a user namespace (a rootless or userns-remapped
// container) passes os.Geteuid() == 0, gets the limit, and its own threads count against
// it: past 64 threads of its uid the Go runtime cannot make an OS thread and the daemon dies
// ("failed to create new OS thread"). The child here is uid 0 in a user namespace mapped to
// host uid 100000; after rootIsolation it asks for 100 locked threads. Fixed: the limit is
// set only in the initial user namespace.
func TestFinalHeldNprocRootInUserNamespace(t *testing.T) {
	if os.Getenv("FINAL_NPROC_CHILD") == "1" {
		var before, rl syscall.Rlimit
		syscall.Getrlimit(6 /* RLIMIT_NPROC */, &before)
		rootIsolation()
		syscall.Getrlimit(6 /* RLIMIT_NPROC */, &rl)
		println("rlimit-nproc", rl.Cur, "euid", os.Geteuid())
		if rl != before {
			println("CHANGED", before.Cur, "->", rl.Cur)
			return
		}
		if before.Cur <= 100 {
			// Inherited from the test process (a Runner there set it, and this machine's
			// root cannot raise it back): the limit was left alone, which is what counts.
			println("THREADS-OK (limit inherited, unchanged)")
			return
		}
		done := make(chan struct{})
		for i := 0; i < 100; i++ {
			go func() {
				runtime.LockOSThread()
				syscall.Nanosleep(&syscall.Timespec{Sec: 2}, nil)
				done <- struct{}{}
			}()
		}
		for i := 0; i < 100; i++ {
			<-done
		}
		println("THREADS-OK")
		return
	}
	requireRoot(t)
	bin := filepath.Join(os.TempDir(), "final-nproc.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(bin)
	cmd := exec.Command(bin, "-test.run=^TestFinalHeldNprocRootInUserNamespace$", "-test.v")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "FINAL_NPROC_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		Credential:  &syscall.Credential{Uid: 0, Gid: 0},
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
	}
	outb, err := cmd.CombinedOutput()
	t.Logf("child: %v\n%s", err, lastLines(string(outb), 15))
	if !strings.Contains(string(outb), "THREADS-OK") {
		t.Fatalf("a daemon that is root in a user namespace died after rootIsolation's RLIMIT_NPROC=%d when it needed 100 threads: %v", jobMaxProcs, err)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = append(l[:5], l[len(l)-n:]...)
	}
	return strings.Join(l, "\n")
}

// TestFinalHeldWallTimeExcludesQueue: the wall timer is armed before the job is handed
// to the launcher, but WallTime (since 16fbf75) runs from the launcher's cmd.Start. While
// the one launcher thread is busy with other starts, the queueing time is charged to the
// job's wall limit but left out of its WallTime: the job is killed as "still running after
// the 1s wall-clock limit" with a WallTime well under 1 s (and got that much less time).
// Here the launcher is kept busy for 700 ms by a request ahead of the job.
func TestFinalHeldWallTimeExcludesQueue(t *testing.T) {
	requireRoot(t)
	bin := testdataC(t, "review/bypass.c", true)
	iso := reviewRunner.setup()
	busy := make(chan struct{})
	go func() {
		iso.l.reqs <- startReq{exec.Command("/nonexistent-final-review"), func(time.Time, error) {
			close(busy)
			time.Sleep(700 * time.Millisecond)
		}}
	}()
	<-busy
	res := runNoStub(t, reviewRunner, bin, "spin\n", time.Second)
	t.Logf("status %s (%s), WallTime %v", res.Status, res.Reason, res.WallTime)
	if res.Status == StatusWallTimeout && res.WallTime < 900*time.Millisecond {
		t.Errorf("killed for the 1s wall limit with WallTime %v: the limit counts the launcher queue, WallTime does not", res.WallTime)
	}
}

// TestFinalHeldSharedIPCNamespaceAllowsMqueue: the jobs' shared IPC namespace zeroes
// the System V limits only. POSIX message queues belong to the IPC namespace too, and its
// fs/mqueue/queues_max is left at the default: in the namespace every job shares (before
// 586ac0c each job had its own, destroyed with it), a queue can be made, outlives the job
// and is visible to every later job. Only Landlock (where the kernel has it) stops a job's
// mq_open. The test joins the launcher's IPC namespace and makes a queue there.
func TestFinalHeldSharedIPCNamespaceAllowsMqueue(t *testing.T) {
	requireRoot(t)
	iso := reviewRunner.setup()
	if !iso.IPCNamespace {
		t.Fatalf("no jobs' IPC namespace (needs root): %v", iso.Isolation)
	}
	type res struct {
		max string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread dies with this goroutine
		fd, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/ipc", iso.l.tid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- res{"", err}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWIPC); err != nil {
			ch <- res{"", err}
			return
		}
		b, _ := os.ReadFile("/proc/sys/fs/mqueue/queues_max")
		name, _ := unix.BytePtrFromString("final-review-mq")
		q, _, errno := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(name)), unix.O_CREAT|unix.O_RDWR, 0o666, 0, 0, 0)
		if errno == 0 {
			unix.Close(int(q))
			unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(name)), 0, 0)
			ch <- res{strings.TrimSpace(string(b)), nil}
			return
		}
		ch <- res{strings.TrimSpace(string(b)), errno}
	}()
	r := <-ch
	t.Logf("jobs' namespace: queues_max %q, mq_open: %v", r.max, r.err)
	if r.err == nil {
		t.Errorf("a POSIX message queue can be made in the IPC namespace all jobs share (queues_max %s): only Landlock keeps a job past the stub from a cross-job, job-outliving queue", r.max)
	}
}

// TestFinalHeldOutputKillRace: the output-limit kill goes to proc, which the launcher's
// callback sets only after cmd.Start returns; output past a tiny limit can be read (and the
// pipe closed) before that. Counts runs whose signal is not SIGKILL.
func TestFinalHeldOutputKillRace(t *testing.T) {
	bin := testdataC(t, "hostile/flood.c", false)
	other := map[string]int{}
	for _, max := range []int64{1, 64 << 10} {
		for range 200 {
			res, err := reviewRunner.Run(context.Background(), Job{Binary: bin}, Limits{MaxOutput: max, Wall: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != StatusOutputLimit || res.Signal != "SIGKILL" {
				other[fmt.Sprintf("max %d: %s exit %d signal %q", max, res.Status, res.ExitCode, res.Signal)]++
			}
		}
	}
	if len(other) > 0 {
		t.Errorf("runs past the output limit that did not end as output_limit/SIGKILL: %v", other)
	}
}

const finalHoldC = `
#include <stdio.h>
#include <unistd.h>
int main(void) {
	int made = 0;
	for (int i = 0; i < 200; i++) {
		pid_t p = fork();
		if (p == 0) { sleep(4); _exit(0); }
		if (p > 0) made++;
	}
	printf("forked: %d\n", made);
	fflush(stdout);
	sleep(4);
	return 0;
}
`

// TestFinalHeldPidsCgroupShared: the jobs' pids cgroup allows jobMaxProcs*4 = 256
// processes for all jobs together, whatever the slots: four jobs past the stub, each at its
// uid's RLIMIT_NPROC of 64, fill it, and every other job's start then fails (the launcher's
// fork gets EAGAIN), honest ones included, on a worker with more than four slots.
func TestFinalHeldPidsCgroupShared(t *testing.T) {
	requireRoot(t)
	if !reviewRunner.Isolation().Cgroup {
		t.Fatalf("no job cgroup (needs root and cgroup v1's memory controller): %v", reviewRunner.Isolation())
	}
	bin := buildC(t, "final/hold", []byte(finalHoldC), true)
	done := make(chan Result, 4)
	for range 4 {
		go func() { done <- runNoStub(t, reviewRunner, bin, "", 20*time.Second) }()
	}
	time.Sleep(2 * time.Second)
	honest := testdataC(t, "hostile/flood.c", false)
	res, err := reviewRunner.Run(context.Background(), Job{Binary: honest}, Limits{MaxOutput: 1, Wall: 10 * time.Second})
	for range 4 {
		r := <-done
		t.Logf("hog: %s %q", r.Status, r.Output)
	}
	t.Logf("other job: %s, %v", res.Status, err)
	if err != nil {
		t.Errorf("another job could not start while four jobs held the shared pids cgroup: %v", err)
	}
}
