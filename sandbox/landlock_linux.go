//go:build linux && amd64

package sandbox

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Landlock (Linux 5.13+) on the launcher's thread, inherited by every job: a job can open,
// create or execute no file by path, bind or connect no TCP port, and (Linux 6.12+) reach
// no abstract unix socket and signal no process outside the launcher's domain. Set once,
// with no rule but, for the user-namespace launcher, reading and writing files beneath
// /proc: Go opens a job's uid_map, gid_map and setgroups read-write from the launching
// thread. A job in its own user namespace cannot turn that on the daemon (/proc/PID/mem,
// environ and the like need ptrace access, which needs the daemon's user namespace); it
// can read what /proc shows everyone.

const (
	sysLandlockCreateRuleset = 444
	sysLandlockAddRule       = 445
	sysLandlockRestrictSelf  = 446

	landlockCreateRulesetVersion = 1 << 0
	landlockRulePathBeneath      = 1
	landlockAccessFSWriteFile    = 1 << 1
	landlockAccessFSReadFile     = 1 << 2
)

// landlockRulesetAttr is struct landlock_ruleset_attr; its size grew with the ABI.
type landlockRulesetAttr struct {
	handledFS  uint64
	handledNet uint64
	scoped     uint64
}

type landlockPathBeneathAttr struct {
	allowed  uint64
	parentFD int32
} // packed in the kernel: 12 bytes

// landlock restricts the calling thread and returns the ABI version it used, or 0 if the
// kernel has no Landlock or refused. Preconditions: no_new_privs is set.
func landlock(procWrite bool) int {
	abi, _, errno := unix.Syscall(sysLandlockCreateRuleset, 0, 0, landlockCreateRulesetVersion)
	if errno != 0 || int(abi) < 1 {
		return 0
	}
	attr := landlockRulesetAttr{handledFS: 1<<13 - 1} // ABI 1: EXECUTE .. MAKE_SYM
	size := unsafe.Offsetof(attr.handledNet)
	if abi >= 2 {
		attr.handledFS |= 1 << 13 // REFER
	}
	if abi >= 3 {
		attr.handledFS |= 1 << 14 // TRUNCATE
	}
	if abi >= 4 {
		attr.handledNet = 1<<2 - 1 // BIND_TCP, CONNECT_TCP
		size = unsafe.Offsetof(attr.scoped)
	}
	if abi >= 5 {
		attr.handledFS |= 1 << 15 // IOCTL_DEV
	}
	if abi >= 6 {
		attr.scoped = 1<<2 - 1 // ABSTRACT_UNIX_SOCKET, SIGNAL
		size = unsafe.Sizeof(attr)
	}
	fd, _, errno := unix.Syscall(sysLandlockCreateRuleset, uintptr(unsafe.Pointer(&attr)), size, 0)
	if errno != 0 {
		return 0
	}
	defer unix.Close(int(fd))
	if procWrite {
		proc, err := unix.Open("/proc", unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0
		}
		defer unix.Close(proc)
		rule := landlockPathBeneathAttr{allowed: landlockAccessFSWriteFile | landlockAccessFSReadFile, parentFD: int32(proc)}
		if _, _, errno := unix.Syscall6(sysLandlockAddRule, fd, landlockRulePathBeneath, uintptr(unsafe.Pointer(&rule)), 0, 0, 0); errno != 0 {
			return 0
		}
	}
	if _, _, errno := unix.Syscall(sysLandlockRestrictSelf, fd, 0, 0); errno != 0 {
		return 0
	}
	return int(abi)
}
