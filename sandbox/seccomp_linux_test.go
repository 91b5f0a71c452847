//go:build linux && amd64

package sandbox

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestInheritedSeccompRefused: a daemon under a seccomp filter (here one that allows
// everything, as a systemd unit's SystemCallFilter would be) cannot give its jobs strict
// mode. Run must refuse with ErrInheritedSeccomp instead of reporting every job as
// "exited 125", which workers so configured would agree on. With the check off, the
// child's job ended exited 125.
func TestInheritedSeccompRefused(t *testing.T) {
	if os.Getenv("GRIDNODE_SECCOMP_CHILD") == "" {
		if err := CheckSeccomp(); err != nil {
			t.Fatalf("the test process itself: %v", err)
		}
		runTestChild(t, "TestInheritedSeccompRefused", "GRIDNODE_SECCOMP_CHILD=1", nil)
		return
	}
	// An allow-all filter on every thread of the process.
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		t.Fatalf("install a seccomp filter: %v", e)
	}
	if err := CheckSeccomp(); !errors.Is(err, ErrInheritedSeccomp) {
		t.Fatalf("CheckSeccomp under a filter: %v, want ErrInheritedSeccomp", err)
	}
	res, err := (&Runner{}).Run(context.Background(), Job{Binary: genELF(asmExit(0), 0)}, Limits{})
	if !errors.Is(err, ErrInheritedSeccomp) {
		t.Fatalf("a job under an inherited filter: %+v, %v; want ErrInheritedSeccomp", res, err)
	}
	// The check is cached for Run's sake: a filter that appears after an unfiltered answer
	// must still be seen within binfmtTTL.
	ownSeccomp.filtered, ownSeccomp.at = false, time.Now()
	for deadline := time.Now().Add(3 * binfmtTTL); !errors.Is(CheckSeccomp(), ErrInheritedSeccomp); {
		if time.Now().After(deadline) {
			t.Fatalf("a filter installed after an unfiltered answer not seen in %v", 3*binfmtTTL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
