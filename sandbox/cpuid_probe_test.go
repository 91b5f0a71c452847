//go:build linux && amd64

package sandbox

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// archSetCPUID is ARCH_SET_CPUID (asm/prctl.h), what the stub calls with 0.
const archSetCPUID = 0x1012

// CPUIDFaulting reports whether the kernel can make cpuid fault on this CPU, by asking it the
// way the stub does: arch_prctl(ARCH_SET_CPUID, 1) (keep cpuid enabled, so a no-op for the
// test process) is ENODEV without CPUID faulting. The test fails if /proc/cpuinfo's
// cpuid_fault flag says otherwise, so neither reading is taken on trust. Hardware decides
// this (a VM may hide the feature), so the tests check the sandbox's behaviour for the
// answer they get; docs/writing-jobs.md says what a job sees either way.
func CPUIDFaulting(t testing.TB) bool {
	t.Helper()
	_, _, errno := unix.Syscall(unix.SYS_ARCH_PRCTL, archSetCPUID, 1, 0)
	var kernel bool
	switch {
	case errno == 0:
		kernel = true
	case errors.Is(errno, unix.ENODEV):
	default:
		t.Fatalf("arch_prctl(ARCH_SET_CPUID, 1): %v", errno)
	}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatalf("read /proc/cpuinfo: %v", err)
	}
	if flag := bytes.Contains(b, []byte(" cpuid_fault")); flag != kernel {
		t.Fatalf("arch_prctl says CPUID faulting %v, /proc/cpuinfo's cpuid_fault flag says %v", kernel, flag)
	}
	if !kernel {
		t.Log("this CPU has no CPUID faulting (arch_prctl(ARCH_SET_CPUID) is ENODEV, no cpuid_fault flag): cpuid cannot be hidden here, as docs/writing-jobs.md says; the cases below expect cpuid to run")
	}
	return kernel
}

// cpuVendor is /proc/cpuinfo's vendor_id, the string cpuid(0) returns in %ebx, %edx, %ecx.
func cpuVendor(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatalf("read /proc/cpuinfo: %v", err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && string(bytes.TrimSpace(k)) == "vendor_id" {
			return string(bytes.TrimSpace(v))
		}
	}
	t.Fatal("/proc/cpuinfo has no vendor_id")
	return ""
}
