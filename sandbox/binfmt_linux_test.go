//go:build linux && amd64

package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestBinfmtTakesOver shows the threat on the real kernel and that the check sees it. A
// child process in its own user and mount namespaces mounts its own binfmt_misc instance
// (Linux 6.7+), so the handler it registers affects nothing outside it. There, a patched
// job whose free header bytes match the handler is run by the handler's interpreter, not by
// the kernel's ELF loader, so the stub never runs: that is what the launcher did before the
// check. CheckBinfmt must name the handler, and Runner.Run must refuse jobs. With the check
// switched off, Run exited 0 with the handler's "TAKEN-OVER" as the job's output.
func TestBinfmtTakesOver(t *testing.T) {
	dir := t.TempDir()
	interp := filepath.Join(dir, "interp")
	if err := os.WriteFile(interp, []byte("#!/bin/sh\necho TAKEN-OVER\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	runTestChild(t, "TestBinfmtChild", "GRIDNODE_BINFMT_CHILD="+dir, userMountNS())
}

// userMountNS is a child's own user and mount namespaces, our uid and gid as its root: where
// it can mount its own binfmt_misc instance (Linux 6.7+), which affects nothing outside.
func userMountNS(idmaps ...syscall.SysProcIDMap) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings:                append([]syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}, idmaps...),
		GidMappings:                append([]syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}, idmaps...),
		GidMappingsEnableSetgroups: len(idmaps) > 0,
	}
}

// runTestChild runs test name of this test binary with env set and attr, and fails unless
// the child's test passed.
func runTestChild(t *testing.T, name, env string, attr *syscall.SysProcAttr) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.v")
	cmd.Env = append(os.Environ(), env)
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("child %s (needs user namespaces and Linux 6.7+ for its own binfmt_misc): %v\n%s", name, err, out)
	}
}

// TestBinfmtChild is TestBinfmtTakesOver's child; it does nothing unless started by it.
func TestBinfmtChild(t *testing.T) {
	dir := os.Getenv("GRIDNODE_BINFMT_CHILD")
	if dir == "" {
		return
	}
	if err := syscall.Mount("none", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
	if err := syscall.Mount("binfmt_misc", BinfmtDir, "binfmt_misc", 0, ""); err != nil {
		t.Fatalf("mount binfmt_misc in a user namespace: %v", err)
	}
	if err := CheckBinfmt(); err != nil {
		t.Fatalf("fresh binfmt_misc: got %v, want nil", err)
	}
	// A magic at e_shoff, which validation leaves to the job's author.
	reg := ":gridnode-test:M:40:GRIDNODE::" + filepath.Join(dir, "interp") + ":"
	if err := os.WriteFile(filepath.Join(BinfmtDir, "register"), []byte(reg), 0); err != nil {
		t.Fatalf("register handler: %v", err)
	}
	bin := genWriteExit("the stub ran the job\n", 0)
	copy(bin[40:], "GRIDNODE")
	img, err := Patch(bin, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "job")
	if err := os.WriteFile(path, img, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "TAKEN-OVER" {
		t.Fatalf("patched image under a matching handler: got %q, %v; want the handler's TAKEN-OVER", out, err)
	}

	err = CheckBinfmt()
	if !errors.Is(err, ErrBinfmt) || !strings.Contains(err.Error(), "gridnode-test") {
		t.Fatalf("CheckBinfmt: got %v, want ErrBinfmt naming gridnode-test", err)
	}
	jobBinfmt = binfmtCache{}
	res, err := (&Runner{}).Run(context.Background(), Job{Binary: bin}, Limits{})
	if !errors.Is(err, ErrBinfmt) {
		t.Fatalf("Run: got %v (%s %q %q), want ErrBinfmt", err, res.Status, res.Reason, res.Output)
	}

	// The handler still applies to a process that cannot see any binfmt_misc mount: the
	// instance belongs to the user namespace. A grandchild in its own mount namespace
	// unmounts it and must still find the handler, through its private mount. (Without that
	// mount it sees no instance and refuses jobs for not knowing; in the initial user
	// namespace, where that is not an error, it would have allowed them.)
	runTestChild(t, "TestBinfmtGrandchild", "GRIDNODE_BINFMT_GRANDCHILD=1", &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS})
}

// TestBinfmtGrandchild is TestBinfmtChild's child; it does nothing unless started by it.
func TestBinfmtGrandchild(t *testing.T) {
	if os.Getenv("GRIDNODE_BINFMT_GRANDCHILD") == "" {
		return
	}
	if err := syscall.Unmount(BinfmtDir, syscall.MNT_DETACH); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	if ms, err := binfmtMounts(); err != nil || len(ms) != 0 {
		t.Fatalf("binfmt_misc mounts still visible: %v %v", ms, err)
	}
	if err := CheckBinfmt(); !errors.Is(err, ErrBinfmt) || !strings.Contains(err.Error(), "gridnode-test") {
		t.Fatalf("CheckBinfmt with no visible mount: got %v, want ErrBinfmt naming gridnode-test", err)
	}
}
