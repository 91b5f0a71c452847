package sandbox

import (
	"errors"
	"strconv"
	"strings"
)

// UIDRange is a range of uids, each used with the gid of the same number. When the daemon
// is root, every running job holds one of them, alone, until it and every process it
// created are gone. The range must belong to no user or file on the machine. Daemons on
// one machine share it: each claims the uids it uses with a lock file in
// /run/gridnode-job-uids, held until it exits.
type UIDRange struct {
	First uint32
	Count int
}

// DefaultJobUIDs is the range used when Runner.JobUIDs is zero: 2100000000..2100000255,
// far above distribution users (1000+), systemd dynamic users (61184..65519) and the usual
// subordinate ranges (100000 + 65536·n), and below 2^31 for tools that read uids as signed.
var DefaultJobUIDs = UIDRange{First: 2100000000, Count: 256}

// ErrNoJobUID is returned by Run when every uid of Runner.JobUIDs is held by a running job.
var ErrNoJobUID = errors.New("sandbox: every job uid is in use")

// Isolation says which layers, beside the entry stub's strict seccomp, hold for every job
// a Runner starts: what a job that somehow ran without the stub would still face. In every
// mode the job has no capabilities after execve and no other file descriptors than its
// three pipes.
type Isolation struct {
	// User is whom jobs run as:
	//   "job-uid":    a uid and gid of their own from Runner.JobUIDs, no supplementary
	//                 groups (the daemon is root); a 0700 data dir is out of reach (its
	//                 files and its unix sockets), and so is every process of the daemon
	//                 and of other jobs.
	//   "userns":     the daemon's uid, mapped to the same non-zero uid in a user
	//                 namespace of the job's own; the kernel still sees the daemon's uid.
	//                 Landlock keeps files from the job, ptrace checks keep the daemon's
	//                 memory from it, but it can connect to unix sockets of that uid by
	//                 path: the data dir's api.sock, a desktop user's session bus.
	//   "daemon-uid": the daemon's own uid, no namespace; likewise for unix sockets, and
	//                 the job can kill the daemon (through the launcher's thread, which
	//                 shares its Landlock domain), use UDP, and leave processes behind
	//                 that it moved out of its process group.
	User string
	// NoNewPrivs: no_new_privs is set, so execve (of a setuid binary, say) never grants
	// privileges.
	NoNewPrivs bool
	// PIDNamespace: each job is PID 1 of a PID namespace of its own; every process it
	// creates dies with it, and it can name no process outside.
	PIDNamespace bool
	// NetNamespace: jobs run in a network namespace with only a down loopback.
	NetNamespace bool
	// IPCNamespace: jobs run in a System V IPC namespace of their own, in which no shared
	// memory, message queue or semaphore set can be made.
	IPCNamespace bool
	// Cgroup: jobs run in a memory cgroup that caps them together (Runner.JobsMemory).
	Cgroup bool
	// FixedLayout: jobs start with ADDR_NO_RANDOMIZE, the same memory layout every run.
	FixedLayout bool
	// Landlock is the Landlock ABI version restricting jobs, 0 for none: they can open,
	// create or execute no file by path (the data dir included, whatever the uid) and
	// bind or connect no TCP port (ABI 4+), reach no abstract unix socket and signal no
	// process outside (ABI 6+).
	Landlock int
	// DaemonNotDumpable: the daemon is not dumpable, so a job with its uid cannot ptrace it
	// (User "daemon-uid" only; the other modes need no such thing).
	DaemonNotDumpable bool
	// CPUCap is how Runner.CPUQuota is enforced: "duty-cycle" (SIGSTOP and SIGCONT on a
	// 100 ms cycle, without root), "" with no quota.
	CPUCap string
}

// String is a short, stable spelling for logs and offers: "user=job-uid nnp pidns netns
// fixed-layout landlock=7".
func (i Isolation) String() string {
	parts := []string{"user=" + i.User}
	for _, l := range []struct {
		on   bool
		name string
	}{{i.NoNewPrivs, "nnp"}, {i.PIDNamespace, "pidns"}, {i.NetNamespace, "netns"}, {i.IPCNamespace, "ipcns"}, {i.Cgroup, "cgroup"}, {i.FixedLayout, "fixed-layout"}} {
		if l.on {
			parts = append(parts, l.name)
		}
	}
	if i.Landlock > 0 {
		parts = append(parts, "landlock="+strconv.Itoa(i.Landlock))
	}
	if i.DaemonNotDumpable {
		parts = append(parts, "daemon-not-dumpable")
	}
	if i.CPUCap != "" {
		parts = append(parts, "cpu-cap="+i.CPUCap)
	}
	return strings.Join(parts, " ")
}

// Isolation.User values.
const (
	userJobUID    = "job-uid"
	userNamespace = "userns"
	userDaemon    = "daemon-uid"
)
