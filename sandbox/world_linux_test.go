//go:build linux && amd64

package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gridnode/gridnode/internal/proctest"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/sdk"
)

// The world the stub builds (testdata/stub_amd64.S), as a job observes it.
const (
	worldSP       = 0x7fffffffeef0 // rsp at entry
	worldStackTop = 0x7ffffffff000
)

// worldAuxv lists the auxv types a job gets, in order: AT_PHDR, AT_PHENT, AT_PHNUM,
// AT_PAGESZ, AT_CLKTCK, AT_ENTRY, AT_SECURE, AT_RANDOM, AT_EXECFN, AT_PLATFORM. Missing on
// purpose: AT_SYSINFO_EHDR (the vDSO), AT_HWCAP, AT_HWCAP2, AT_MINSIGSTKSZ (the host CPU),
// AT_UID, AT_EUID, AT_GID, AT_EGID (the worker's slot), AT_BASE, AT_FLAGS, AT_RSEQ_*.
var worldAuxv = []uint64{3, 4, 5, 6, 17, 9, 23, 25, 31, 15}

// TestWorldCanonical runs probe_world, which prints everything a job can observe at entry
// (registers, flags, SIMD state, the bytes below rsp, argv, envp, the whole auxv with the
// AT_RANDOM bytes and strings it points at, the initial stack page, and the vDSO's clock
// and CPU number when the auxv names a vDSO), under different host conditions, and checks
// that every run prints the same bytes and that they are the canonical world.
//
// Against the old stub (a4c189a, which kept the kernel's stack and vDSO) every run failed.
// "first": rsp 0x7fffffffee20, a return address and the entry left below it, auxv types [33 51 16 6
// 17 3 4 5 7 8 9 11 12 13 14 23 25 26 31 15 27 28] (AT_SYSINFO_EHDR, AT_MINSIGSTKSZ,
// AT_HWCAP, AT_UID...), AT_ENTRY the stub's 0x416060, AT_EXECFN "/proc/self/fd/7", fresh
// AT_RANDOM bytes and "the job read the vDSO's clock: 6b0f4744". Then each run differed
// from "first": "extra fds" at argv's address (the longer fd number moved the strings),
// "other cwd and env" and "a second later" at AT_RANDOM's bytes, "run directly" at rsp
// (0x7fff591ab330: ASLR).
func TestWorldCanonical(t *testing.T) {
	bin := hostileJob(t, "probe_world")

	// Control: natively the probe does find a vDSO, its clock and fresh AT_RANDOM bytes,
	// so their absence below means something.
	dir := t.TempDir()
	native := filepath.Join(dir, "probe_world")
	if err := os.WriteFile(native, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(native).Output()
	if err != nil {
		t.Fatalf("native probe: %v", err)
	}
	nat := parseWorld(t, out)
	if _, ok := nat.auxv[33]; !ok || nat.vdsoTime == "" || nat.random == strings.Repeat("0", 32) {
		t.Fatalf("native probe saw no vDSO, no vDSO clock or zero AT_RANDOM; it cannot detect them:\n%s", out)
	}

	// The patched image run directly: ASLR on whatever the launcher does, and an argv,
	// environment and fds that the stub must all hide.
	img, err := sandbox.Patch(bin, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	patched := filepath.Join(dir, "patched")
	if err := os.WriteFile(patched, img, 0o755); err != nil {
		t.Fatal(err)
	}
	direct := func(t *testing.T) []byte {
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer devnull.Close()
		cmd := exec.Command(patched, "--some", "arguments")
		cmd.Args[0] = "/a/much/longer/name/than/gridnode-job/so/the/strings/move"
		cmd.Env = []string{"HOME=/root", "GRIDNODE_WORLD=1"}
		cmd.ExtraFiles = []*os.File{devnull, devnull, devnull}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("patched probe run directly: %v", err)
		}
		return out
	}
	sandboxed := func(t *testing.T) []byte {
		res := runJob(t, bin, nil, sandbox.Limits{})
		if res.Status != sandbox.StatusExited || res.ExitCode != 0 {
			t.Fatalf("got %s exit %d (%s, stderr %q), want exited 0", res.Status, res.ExitCode, res.Reason, res.Stderr)
		}
		return res.Output
	}

	var first []byte
	firstAt := time.Now()
	conditions := []struct {
		name string
		run  func(t *testing.T) []byte
	}{
		{"first", sandboxed},
		{"extra fds", func(t *testing.T) []byte {
			// Non-CLOEXEC fds move the memfd's number, and so /proc/self/fd/N.
			for range 7 {
				fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { syscall.Close(fd) })
			}
			return sandboxed(t)
		}},
		{"other cwd and env", func(t *testing.T) []byte {
			t.Chdir(t.TempDir())
			t.Setenv("GRIDNODE_WORLD", strings.Repeat("x", 1000))
			return sandboxed(t)
		}},
		{"run directly", direct},
		{"a second later", func(t *testing.T) []byte {
			// The one wait here is for the wall clock itself: the vDSO's time() must have
			// moved on, or a leaked clock would print the same second twice.
			time.Sleep(time.Until(firstAt.Add(1100 * time.Millisecond)))
			return sandboxed(t)
		}},
	}
	for _, c := range conditions {
		t.Run(c.name, func(t *testing.T) {
			if first == nil && c.name != conditions[0].name {
				t.Skip("no first run to compare with")
			}
			out := c.run(t)
			if first == nil {
				first = out
				checkWorld(t, parseWorld(t, out), nat, bin)
				return
			}
			if !bytes.Equal(out, first) {
				t.Errorf("the job saw a different world than in run %q: %s", conditions[0].name, firstDiff(first, out))
			}
		})
	}
}

// world is what probe_world printed.
type world struct {
	regs     map[string]uint64
	argv     []string
	env      []string
	auxv     map[uint64]string // type -> value and what it points at
	auxOrder []uint64
	random   string // AT_RANDOM's 16 bytes in hex
	below    string
	vdsoTime string
	last     string
}

func parseWorld(t *testing.T, out []byte) world {
	t.Helper()
	w := world{regs: map[string]uint64{}, auxv: map[uint64]string{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		w.last = l
		name, val, _ := strings.Cut(l, " ")
		switch name {
		case "argv":
			_, s, _ := strings.Cut(val, " ")
			w.argv = append(w.argv, s)
		case "env":
			w.env = append(w.env, val)
		case "auxv":
			f := strings.SplitN(val, " ", 2)
			typ, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil {
				t.Fatalf("probe line %q: %v", l, err)
			}
			w.auxOrder = append(w.auxOrder, typ)
			w.auxv[typ] = strings.Join(f[1:], " ")
			if typ == 25 {
				_, w.random, _ = strings.Cut(w.auxv[typ], " ")
			}
		case "below_rsp":
			w.below = val
		case "vdso_time":
			w.vdsoTime = val
		default:
			if v, err := strconv.ParseUint(val, 16, 64); err == nil {
				w.regs[name] = v
			}
		}
	}
	if w.last != "end" {
		t.Fatalf("probe output does not end with \"end\":\n%s", out)
	}
	return w
}

// checkWorld checks one sandboxed probe's world against the canonical one; nat is the
// probe's native world, bin its binary.
func checkWorld(t *testing.T, w, nat world, bin []byte) {
	t.Helper()
	for _, r := range []string{"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"} {
		if w.regs[r] != 0 {
			t.Errorf("got %s %#x at entry, want 0", r, w.regs[r])
		}
	}
	if got := w.regs["rsp"]; got != worldSP {
		t.Errorf("got rsp %#x at entry, want %#x", got, worldSP)
	}
	for _, r := range []string{"rflags", "mxcsr", "fcw", "cs", "ss"} {
		if w.regs[r] != nat.regs[r] {
			t.Errorf("got %s %#x, want %#x as the kernel sets it natively", r, w.regs[r], nat.regs[r])
		}
	}
	if w.below != strings.Repeat("0", 128) {
		t.Errorf("got %s below rsp, want zeros", w.below)
	}
	if want := []string{`"gridnode-job"`}; !slices.Equal(w.argv, want) || len(w.env) != 0 {
		t.Errorf("got argv %q and environment %q, want %q and none", w.argv, w.env, want)
	}
	if !slices.Equal(w.auxOrder, worldAuxv) {
		t.Errorf("got auxv types %v, want %v", w.auxOrder, worldAuxv)
	}
	entry := fmt.Sprintf("%x", le.Uint64(bin[offEntry:]))
	for typ, want := range map[uint64]string{
		3:  nat.auxv[3], // AT_PHDR: the kernel's, for this ET_EXEC the same everywhere
		4:  nat.auxv[4],
		5:  nat.auxv[5],
		6:  "1000",
		9:  entry, // the job's own entry, not the stub's
		17: "64",
		23: "0",
		31: fmt.Sprintf("%x %q", worldStackTop-0x30, "gridnode-job"),
		15: fmt.Sprintf("%x %q", worldStackTop-0x23, "x86_64"),
	} {
		if got := w.auxv[typ]; got != want {
			t.Errorf("got auxv type %d = %q, want %q", typ, got, want)
		}
	}
	if w.random != strings.Repeat("0", 32) {
		t.Errorf("got AT_RANDOM bytes %s, want 16 zero bytes", w.random)
	}
	if w.vdsoTime != "" {
		t.Errorf("the job read the vDSO's clock: %s", w.vdsoTime)
	}
}

// firstDiff describes the first line where a and b differ.
func firstDiff(a, b []byte) string {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d: %q, now %q", i+1, x, y)
		}
	}
	return "no difference"
}

// TestWorldMaps reads /proc/PID/maps of a sandboxed job blocked in read: no vDSO or vvar
// mapping is left, the stack ends at the top of user space, and the whole layout is the
// same on every run, through the Runner and with the patched image run directly (with
// ASLR, whatever the launcher does). Through the Runner (ADDR_NO_RANDOMIZE) the stub keeps
// the kernel's [stack], which then already ends at the top; run directly, the stack is
// elsewhere and the stub maps the stack limit's worth at the top instead.
//
// Against the old stub this failed: every run had [vvar], [vvar_vclock] and [vdso] and no
// stack at the fixed address; through the Runner the kernel's [stack] was
// 7ffffffde000-7ffffffff000, run directly it was at an ASLR'd address (7ffdf928b000-...)
// with the vDSO moved too (7fa28aca7000), so the layouts differed.
func TestWorldMaps(t *testing.T) {
	bin := hostileJob(t, "block")
	img, err := sandbox.Patch(bin, sandbox.Limits{Stack: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	patched := filepath.Join(t.TempDir(), "block")
	if err := os.WriteFile(patched, img, 0o755); err != nil {
		t.Fatal(err)
	}
	var layouts []string
	for _, direct := range []bool{false, true, false, true} {
		maps := blockedMaps(t, bin, patched, direct)
		var layout []string
		for l := range strings.Lines(maps) {
			if strings.Contains(l, "[vdso]") || strings.Contains(l, "[vvar") {
				t.Errorf("job still has a vDSO mapping: %s", l)
			}
			// start-end perms offset: dev, inode and name differ with the file run.
			layout = append(layout, strings.Join(strings.Fields(l)[:3], " "))
		}
		if !hasStack(maps, direct) {
			t.Errorf("no stack ending at %#x in the job's maps (direct %v):\n%s", worldStackTop, direct, maps)
		}
		layouts = append(layouts, strings.Join(layout, "\n"))
	}
	for i := 2; i < len(layouts); i++ {
		if layouts[i] != layouts[i-2] {
			t.Errorf("the job's layout differs between runs %d and %d:\n%s\n---\n%s", i-1, i+1, layouts[i-2], layouts[i])
		}
	}
}

// hasStack reports whether maps has the job's stack: the kernel's [stack] ending at the top
// through the Runner, or, run directly, the stub's 8 MiB mapping there.
func hasStack(maps string, direct bool) bool {
	for l := range strings.Lines(maps) {
		f := strings.Fields(l)
		if len(f) < 2 || f[1] != "rw-p" {
			continue
		}
		if direct && f[0] == fmt.Sprintf("%x-%x", worldStackTop-8<<20, worldStackTop) {
			return true
		}
		if !direct && strings.HasSuffix(f[0], fmt.Sprintf("-%x", worldStackTop)) && strings.Contains(l, "[stack]") {
			return true
		}
	}
	return false
}

// blockedMaps runs bin, which must block reading stdin, through the Runner (or its
// patched image directly), and returns its /proc/PID/maps once it is in strict seccomp
// mode, then lets it finish.
func blockedMaps(t *testing.T, bin []byte, patched string, direct bool) string {
	t.Helper()
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan error, 1)
	var pids func() []int
	if direct {
		cmd := exec.Command(patched)
		cmd.Stdin = pr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		pids = func() []int { return []int{cmd.Process.Pid} }
	} else {
		go func() {
			var r sandbox.Runner
			res, err := r.Run(context.Background(), sandbox.Job{Binary: bin, Stdin: pr}, sandbox.Limits{Stack: 8 << 20})
			if err == nil && (res.Status != sandbox.StatusExited || res.ExitCode != 0) {
				err = fmt.Errorf("%s exit %d (%s)", res.Status, res.ExitCode, res.Reason)
			}
			done <- err
		}()
		pids = func() []int { return descendants(os.Getpid()) }
	}
	var job int
	proctest.Poll(t, 20*time.Second, "a job in strict seccomp mode", func() bool {
		select {
		case err := <-done:
			t.Fatalf("blocked job (direct %v) ended before it blocked: %v", direct, err)
		default:
		}
		for _, pid := range pids() {
			if proctest.StatusField(pid, "Seccomp") == "1" {
				job = pid
				return true
			}
		}
		return false
	})
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", job))
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("blocked job (direct %v): got %v, want exited 0", direct, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(maps)
}

// descendants lists the processes below pid, children first.
func descendants(pid int) []int {
	var all []int
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		kids := proctest.ChildrenOf(queue[0])
		all = append(all, kids...)
		queue = append(queue, kids...)
	}
	return all
}

// TestWorldStaticPIE checks the other layout: a static PIE (ET_DYN) is mapped by the kernel
// just above the vDSO, so the stub must unmap the vDSO without touching the job's first
// pages. block, built -static-pie, must still run to the end, and no vDSO may be left.
//
// It failed against the old stub ([vvar], [vvar_vclock], [vdso] right below the image at
// 7ffff7ff8000) and against a stub that unmapped 1 MiB above the vDSO ("ended before it
// blocked: crashed exit 0 (killed by SIGSEGV)": the job's own first pages were gone).
func TestWorldStaticPIE(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Fatal("a C compiler is needed (apt-get install -y gcc)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gridjob.h"), sdk.Header, 0o644); err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, f := range sdk.Flags() {
		if f != "-fno-pie" && f != "-no-pie" && f != "-static" {
			args = append(args, f)
		}
	}
	out := filepath.Join(dir, "block")
	args = append(args, "-static-pie", "-fpie", "-I", dir, "-o", out, filepath.Join("testdata", "hostile", "block.c"))
	if b, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if typ := le.Uint16(bin[offType:]); typ != 3 {
		t.Fatalf("built ELF type %d, want ET_DYN (3)", typ)
	}
	img, err := sandbox.Patch(bin, sandbox.Limits{Stack: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	patched := filepath.Join(dir, "patched")
	if err := os.WriteFile(patched, img, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, direct := range []bool{false, true} {
		maps := blockedMaps(t, bin, patched, direct)
		if strings.Contains(maps, "[vdso]") || strings.Contains(maps, "[vvar") {
			t.Errorf("job still has a vDSO mapping (direct %v):\n%s", direct, maps)
		}
		if !hasStack(maps, direct) {
			t.Errorf("no stack ending at %#x in the job's maps (direct %v):\n%s", worldStackTop, direct, maps)
		}
	}
}
