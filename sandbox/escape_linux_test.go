//go:build linux && amd64

package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gridnode/gridnode/internal/proctest"
	"github.com/gridnode/gridnode/sdk"
)

// The escape tests run testdata/escape/*.c, ordinary static glibc programs, as a job that
// got past the stub: unpatched, so with no seccomp and no limits but the wall clock,
// through the real launcher. Each runs twice: first as a control with isolation off
// (Runner.noIsolation, the launcher as it was before it), where the escape must work,
// which shows the test can see it; then with the default isolation, where it must not.

var cBuilds sync.Map // key -> func() ([]byte, error)

// buildC returns the C program src, built once per test binary under key: static against
// glibc when hosted (a program for the tests of a job that got past the stub), else an SDK
// job, which runs under the stub.
func buildC(t *testing.T, key string, src []byte, hosted bool) []byte {
	t.Helper()
	f, _ := cBuilds.LoadOrStore(key, sync.OnceValues(func() ([]byte, error) {
		dir, err := os.MkdirTemp("", "sandbox-test-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out := filepath.Join(dir, "job")
		if hosted {
			err = sdk.CompileHosted(ctx, src, out)
		} else {
			err = sdk.Compile(ctx, src, out)
		}
		if err != nil {
			return nil, err
		}
		return os.ReadFile(out)
	}))
	bin, err := f.(func() ([]byte, error))()
	if err != nil {
		t.Fatalf("build %s: %v", key, err)
	}
	return bin
}

// testdataDir is absolute: some tests run jobs from another working directory.
var testdataDir, _ = filepath.Abs("testdata")

// testdataC builds testdata/path with buildC.
func testdataC(t *testing.T, path string, hosted bool) []byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(testdataDir, path))
	if err != nil {
		t.Fatal(err)
	}
	return buildC(t, path, src, hosted)
}

// runNoStub runs bin unpatched through r's launcher: the test hook for a job that got past
// the stub. Nothing outside this package's tests can run a job this way.
func runNoStub(t *testing.T, r *Runner, bin []byte, stdin string, wall time.Duration) Result {
	t.Helper()
	fd, err := unix.MemfdCreate("escape-job", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	img := os.NewFile(uintptr(fd), "escape-job")
	defer img.Close()
	if _, err := img.Write(bin); err != nil {
		t.Fatal(err)
	}
	res, err := r.launch(context.Background(), img, strings.NewReader(stdin), Limits{Wall: wall}.withDefaults())
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	return res
}

// fields parses "key: value" lines.
func fields(out []byte) map[string]string {
	m := map[string]string{}
	for line := range strings.Lines(string(out)) {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the job-uid layers need the test to run as root; TestEscapeNonRoot covers the rest")
	}
}

// TestEscapeIdentity: the job runs as a job uid with no groups and no capabilities, with
// no_new_privs (a setuid-root binary gives it nothing), ADDR_NO_RANDOMIZE, and network and
// PID namespaces that are not the daemon's.
// With the defence off (the control) the job was uid 0 with CapEff 000001fffeffffff and
// NoNewPrivs 0. With only no_new_privs left out of the launcher, the setuid-root copy ran
// with suid-euid 0: the job became root again.
func TestEscapeIdentity(t *testing.T) {
	requireRoot(t)
	bin := testdataC(t, "escape/whoami.c", true)
	dir, err := os.MkdirTemp("", "escape-suid-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	suid := filepath.Join(dir, "whoami")
	if err := os.WriteFile(suid, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(os.Chmod(dir, 0o755), os.Chmod(suid, 0o755|os.ModeSetuid)); err != nil {
		t.Fatal(err)
	}
	self := func(ns string) string { l, _ := os.Readlink("/proc/self/ns/" + ns); return l }

	control := fields(runNoStub(t, &Runner{noIsolation: true}, bin, suid+"\n", 10*time.Second).Output)
	if control["uid"] != "0" || control["CapEff"] == "0000000000000000" || control["suid-euid"] != "0" {
		t.Fatalf("control: got %v, want uid 0 with capabilities: the probe does not see them", control)
	}

	res := runNoStub(t, &Runner{}, bin, suid+"\n", 10*time.Second)
	got := fields(res.Output)
	uid, err := strconv.ParseUint(got["uid"], 10, 32)
	if err != nil || uint32(uid) < DefaultJobUIDs.First || uid >= uint64(DefaultJobUIDs.First)+uint64(DefaultJobUIDs.Count) {
		t.Fatalf("got uid %q (output %q), want one of %v", got["uid"], res.Output, DefaultJobUIDs)
	}
	want := map[string]string{
		"euid": got["uid"], "gid": got["uid"], "egid": got["uid"], "groups": "0",
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapBnd": "0000000000000000", "CapAmb": "0000000000000000",
		"NoNewPrivs": "1",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("got %s %q, want %q", k, got[k], v)
		}
	}
	// Landlock refuses the execve; without Landlock, no_new_privs ignores the setuid bit.
	if got["suid-euid"] == "0" {
		t.Error("the setuid-root binary ran as root")
	}
	if p, err := strconv.ParseUint(got["personality"], 16, 32); err != nil || p&addrNoRandomize == 0 {
		t.Errorf("got personality %q, want ADDR_NO_RANDOMIZE (%#x) set", got["personality"], addrNoRandomize)
	}
	for _, ns := range []string{"net", "pid"} {
		if g := got["ns-"+ns]; g == "" || g == "?" || g == self(ns) {
			t.Errorf("got %s namespace %q, want one that is not the daemon's %q", ns, g, self(ns))
		}
	}
	// The daemon itself keeps none of it.
	if v := proctest.StatusField(os.Getpid(), "NoNewPrivs"); v != "0" {
		t.Errorf("daemon has NoNewPrivs %q, want 0: the launcher's attributes leaked", v)
	}
}

// TestEscapeDataDir: the job can neither read a 0600 file in a 0700 directory of the
// daemon, such as the node's identity.key, nor connect to a unix socket there, such as
// api.sock.
// With the defence off it printed "read: identity-secret" and "connect: ok".
func TestEscapeDataDir(t *testing.T) {
	requireRoot(t)
	bin := testdataC(t, "escape/readfile.c", true)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "identity.key")
	if err := os.WriteFile(secret, []byte("identity-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := runNoStub(t, &Runner{noIsolation: true}, bin, secret+"\n", 10*time.Second).Output; !bytes.Contains(out, []byte("identity-secret")) {
		t.Fatalf("control: got %q, want the secret", out)
	}
	out := runNoStub(t, &Runner{}, bin, secret+"\n", 10*time.Second).Output
	if bytes.Contains(out, []byte("identity-secret")) || !bytes.HasPrefix(out, []byte("open: ")) {
		t.Errorf("got %q, want open to fail", out)
	}

	// The data dir's unix socket (api.sock) likewise; Landlock does not cover connect(2)
	// to a path, the job uid does.
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	connect := testdataC(t, "escape/unixconnect.c", true)
	if out := runNoStub(t, &Runner{noIsolation: true}, connect, sock+"\n", 10*time.Second).Output; string(out) != "connect: ok\n" {
		t.Fatalf("control: got %q, want a connection", out)
	}
	if out := runNoStub(t, &Runner{}, connect, sock+"\n", 10*time.Second).Output; string(out) == "connect: ok\n" {
		t.Errorf("got %q, want connect to fail", out)
	}
}

// TestEscapeWorldReadable: Landlock keeps even world-readable files from the job.
// With only the job uid (Landlock off) it printed "read: public".
func TestEscapeWorldReadable(t *testing.T) {
	if landlockABI() == 0 {
		t.Fatal("this kernel has no Landlock (CONFIG_SECURITY_LANDLOCK, lsm=landlock): the layer this test checks is missing")
	}
	bin := testdataC(t, "escape/readfile.c", true)
	dir, err := os.MkdirTemp("", "escape-public-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	public := filepath.Join(dir, "public")
	if err := errors.Join(os.Chmod(dir, 0o755), os.WriteFile(public, []byte("public"), 0o644)); err != nil {
		t.Fatal(err)
	}
	if out := runNoStub(t, &Runner{noIsolation: true}, bin, public+"\n", 10*time.Second).Output; string(out) != "read: public\n" {
		t.Fatalf("control: got %q, want the file", out)
	}
	if out := runNoStub(t, &Runner{}, bin, public+"\n", 10*time.Second).Output; !bytes.HasPrefix(out, []byte("open: ")) {
		t.Errorf("got %q, want open to fail", out)
	}
}

// TestEscapeSignal: the job can neither signal nor ptrace a process of the daemon's uid,
// nor signal its parent (the daemon).
// With the defence off all three were "reached".
func TestEscapeSignal(t *testing.T) {
	requireRoot(t)
	bin := testdataC(t, "escape/signal.c", true)
	victim := exec.Command("sleep", "60")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { victim.Process.Kill(); victim.Wait() }()
	stdin := strconv.Itoa(victim.Process.Pid) + "\n"

	control := fields(runNoStub(t, &Runner{noIsolation: true}, bin, stdin, 10*time.Second).Output)
	for _, k := range []string{"kill", "ptrace", "kill-parent"} {
		if !strings.HasSuffix(control[k], "reached") {
			t.Fatalf("control: got %s %q, want reached: %v", k, control[k], control)
		}
	}
	res := runNoStub(t, &Runner{}, bin, stdin, 10*time.Second)
	got := fields(res.Output)
	for _, k := range []string{"kill", "ptrace"} {
		if !strings.HasSuffix(got[k], "refused") {
			t.Errorf("got %s %q, want refused (output %q)", k, got[k], res.Output)
		}
	}
	if got["ppid"] != "0" && !strings.HasSuffix(got["kill-parent"], "refused") {
		t.Errorf("got kill-parent %q with ppid %s, want refused", got["kill-parent"], got["ppid"])
	}
	if s := proctest.StatusField(victim.Process.Pid, "TracerPid"); s != "0" {
		t.Errorf("victim has TracerPid %q, want 0", s)
	}
}

// TestEscapeNetwork: the job cannot reach a listener on the daemon's loopback.
// With the defence off it printed "connect: ok" and the listener got "ESCAPED".
func TestEscapeNetwork(t *testing.T) {
	requireRoot(t)
	bin := testdataC(t, "escape/connect.c", true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	stdin := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "\n"

	if out := runNoStub(t, &Runner{noIsolation: true}, bin, stdin, 10*time.Second).Output; string(out) != "connect: ok\n" {
		t.Fatalf("control: got %q, want a connection", out)
	}
	(<-conns).Close()
	out := runNoStub(t, &Runner{}, bin, stdin, 10*time.Second).Output
	if !bytes.HasPrefix(out, []byte("connect: ")) || bytes.Contains(out, []byte("ok")) {
		t.Errorf("got %q, want connect to fail", out)
	}
	select {
	case c := <-conns:
		c.Close()
		t.Error("the listener got a connection from the job")
	case <-time.After(100 * time.Millisecond): // a connection would have been queued already
	}
}

// TestEscapeLeftovers: a job that forks a child that sleeps for an hour and a setsid child
// that holds stdout for 4 s, then exits, ends its run at once, and nothing of it is left.
// With the defence off Run took 4 s (past the 1 s wall limit: it waited for the setsid
// child's stdout) and the hour-long sleeper outlived the job.
func TestEscapeLeftovers(t *testing.T) {
	bin := testdataC(t, "escape/forker.c", true)
	// As a subreaper this process inherits whatever outlives the job, so leftovers show up
	// as its children, whatever uid or namespace they have.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	leftovers := func() []int {
		var pids []int
		for _, pid := range proctest.ChildrenOf(os.Getpid()) {
			if state, _, ok := proctest.Stat(pid); ok && state != 'Z' {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	kill := func(pids []int) {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if pids := leftovers(); len(pids) != 0 {
		t.Fatalf("children %v before the test", pids)
	}
	const wall = time.Second

	start := time.Now()
	runNoStub(t, &Runner{noIsolation: true}, bin, "", wall)
	elapsed := time.Since(start)
	var left []int
	proctest.Poll(t, 5*time.Second, "the control's sleeper to be reparented", func() bool {
		left = leftovers()
		return len(left) > 0
	})
	kill(left)
	if elapsed < 3*time.Second {
		t.Fatalf("control: Run returned after %s, want it held by the setsid child", elapsed)
	}

	for _, tt := range []struct {
		name string
		r    *Runner
	}{
		{"pidns", &Runner{}},
		// Where the kernel refuses PID namespaces: the process group and, for the setsid
		// child, the job uid are killed instead.
		{"backstop", &Runner{noPIDNamespace: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.r.noPIDNamespace {
				requireRoot(t)
			}
			start := time.Now()
			res := runNoStub(t, tt.r, bin, "", wall)
			elapsed := time.Since(start)
			if elapsed > wall+500*time.Millisecond {
				t.Errorf("Run returned after %s, want within the %s wall limit", elapsed, wall)
			}
			if res.Status != StatusExited {
				t.Errorf("got %s (%s), want exited", res.Status, res.Reason)
			}
			if left := leftovers(); len(left) != 0 {
				kill(left)
				t.Errorf("processes %v outlived the job", left)
			}
			uid, ok := strings.CutPrefix(strings.TrimSpace(string(res.Output)), "forked as uid ")
			if !ok {
				t.Fatalf("got output %q, want %q", res.Output, "forked as uid N")
			}
			if pids := uidProcesses(uid); len(pids) != 0 && uid != "0" {
				t.Errorf("processes %v still run as the job's uid %s", pids, uid)
			}
		})
	}
}

// uidProcesses lists the live processes running as uid.
func uidProcesses(uid string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if u, state := uidState(pid); u == uid && state != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestIsolationReport: as root every layer is on.
func TestIsolationReport(t *testing.T) {
	requireRoot(t)
	got := (&Runner{}).Isolation()
	abi := landlockABI()
	// Cgroup is on once any Runner of this test process asked for it (JobsMemory).
	want := Isolation{User: "job-uid", NoNewPrivs: true, PIDNamespace: true, NetNamespace: true, IPCNamespace: true, Cgroup: jobCgroupJoined(), FixedLayout: true, Landlock: abi}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	cg := ""
	if want.Cgroup {
		cg = " cgroup"
	}
	if s, want := got.String(), "user=job-uid nnp pidns netns ipcns"+cg+" fixed-layout"+landlockSuffix(abi); s != want {
		t.Errorf("got %q, want %q", s, want)
	}
}

// landlockABI is the kernel's Landlock ABI version, 0 for none.
func landlockABI() int {
	abi, _, errno := unix.Syscall(sysLandlockCreateRuleset, 0, 0, landlockCreateRulesetVersion)
	if errno != 0 {
		return 0
	}
	return int(abi)
}

func landlockSuffix(abi int) string {
	if abi == 0 {
		return ""
	}
	return " landlock=" + strconv.Itoa(abi)
}

// TestJobUIDPool: concurrent jobs hold distinct uids, across Runners; a full range is
// ErrNoJobUID; a released uid is handed out again.
func TestJobUIDPool(t *testing.T) {
	rg := UIDRange{First: 4000000000, Count: 2}
	a, errA := acquireUID(rg)
	b, errB := acquireUID(rg)
	if errA != nil || errB != nil || a == b {
		t.Fatalf("got %d, %d (%v, %v), want two distinct uids", a, b, errA, errB)
	}
	if _, err := acquireUID(rg); err != ErrNoJobUID {
		t.Fatalf("got %v from a full range, want ErrNoJobUID", err)
	}
	releaseUID(a)
	if c, err := acquireUID(rg); err != nil || c != a {
		t.Errorf("got %d (%v), want the released %d", c, err, a)
	}
	releaseUID(a)
	releaseUID(b)
}

// nonRootEnv holds, in TestEscapeNonRoot's helper process, the paths of the whoami and
// readfile jobs and of the secret.
const nonRootEnv = "GRIDNODE_ESCAPE_NONROOT"

// TestNonRootHelper is not a real test: TestEscapeNonRoot runs the test binary again as
// nobody with only this test selected, and it reports what the jobs see in each mode.
func TestNonRootHelper(t *testing.T) {
	paths := strings.Split(os.Getenv(nonRootEnv), ":")
	if len(paths) != 4 {
		t.Skip("helper for TestEscapeNonRoot")
	}
	whoami, err1 := os.ReadFile(paths[0])
	readfile, err2 := os.ReadFile(paths[1])
	signal, err3 := os.ReadFile(paths[3])
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Runner{{}, {NoUserNamespace: true}} {
		iso := r.setup() // the launcher's thread is the job's likeliest target
		fmt.Printf("isolation: %s\n%s%s%s--\n", r.Isolation(), runNoStub(t, r, whoami, "", 10*time.Second).Output,
			runNoStub(t, r, readfile, paths[2]+"\n", 10*time.Second).Output,
			runNoStub(t, r, signal, strconv.Itoa(iso.l.tid)+"\n", 10*time.Second).Output)
	}
}

// TestEscapeNonRoot: a daemon that is not root runs jobs in a user namespace of their own
// (with a PID and a network namespace), or, with NoUserNamespace, as its own uid; either
// way with no capabilities, no_new_privs and Landlock, which keeps its data dir from them
// although they share its uid, and the job cannot ptrace the daemon's launching thread.
// Without Landlock, the readfile job printed the daemon's secret in both modes; with the
// daemon dumpable, the NoUserNamespace job seized the launcher's thread with PTRACE_SEIZE.
func TestEscapeNonRoot(t *testing.T) {
	requireRoot(t) // to become nobody
	whoami, readfile, signal := testdataC(t, "escape/whoami.c", true), testdataC(t, "escape/readfile.c", true), testdataC(t, "escape/signal.c", true)
	dir, err := os.MkdirTemp("", "escape-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	test, data := filepath.Join(dir, "sandbox.test"), filepath.Join(dir, "data")
	secret := filepath.Join(data, "identity.key")
	if err := errors.Join(os.Chmod(dir, 0o755), os.WriteFile(test, self, 0o755),
		os.WriteFile(filepath.Join(dir, "whoami"), whoami, 0o644), os.WriteFile(filepath.Join(dir, "readfile"), readfile, 0o644),
		os.WriteFile(filepath.Join(dir, "signal"), signal, 0o644),
		os.Mkdir(data, 0o700), os.WriteFile(secret, []byte("identity-secret"), 0o600),
		os.Chown(data, nobody, nobody), os.Chown(secret, nobody, nobody)); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(test, "-test.run=^TestNonRootHelper$", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = []string{nonRootEnv + "=" + strings.Join([]string{filepath.Join(dir, "whoami"), filepath.Join(dir, "readfile"), secret, filepath.Join(dir, "signal")}, ":"), "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	modes := strings.Split(string(out), "--\n")
	if len(modes) < 2 {
		t.Fatalf("helper printed %q, want two modes", out)
	}
	nsOf := func(ns string) string { l, _ := os.Readlink("/proc/self/ns/" + ns); return l }
	ll := landlockSuffix(landlockABI())
	for i, want := range []struct {
		isolation  string
		namespaces bool
	}{
		{"user=userns nnp pidns netns ipcns fixed-layout" + ll, true},
		{"user=daemon-uid nnp fixed-layout" + ll + " daemon-not-dumpable", false},
	} {
		got := fields([]byte(modes[i]))
		if got["isolation"] != want.isolation {
			t.Errorf("mode %d: got isolation %q, want %q", i, got["isolation"], want.isolation)
		}
		for k, v := range map[string]string{
			"uid": strconv.Itoa(nobody), "euid": strconv.Itoa(nobody), "NoNewPrivs": "1",
			"CapPrm": "0000000000000000", "CapEff": "0000000000000000", "CapAmb": "0000000000000000",
		} {
			if got[k] != v {
				t.Errorf("mode %q: got %s %q, want %q", got["isolation"], k, got[k], v)
			}
		}
		for _, ns := range []string{"user", "pid", "net"} {
			if differs := got["ns-"+ns] != nsOf(ns); differs != want.namespaces {
				t.Errorf("mode %q: got %s namespace %q (the test's is %q), want a new one: %v", got["isolation"], ns, got["ns-"+ns], nsOf(ns), want.namespaces)
			}
		}
		if ll != "" && (got["read"] != "" || got["open"] == "") {
			t.Errorf("mode %q: got read %q, open %q, want open to fail", got["isolation"], got["read"], got["open"])
		}
		// With the daemon's uid, kill of the launcher's thread (in the job's own Landlock
		// domain) is allowed: a job that got past the stub can kill such a daemon.
		if !strings.HasSuffix(got["ptrace"], "refused") || (want.namespaces && !strings.HasSuffix(got["kill"], "refused")) {
			t.Errorf("mode %q: got ptrace %q, kill %q of the launcher's thread, want refused", got["isolation"], got["ptrace"], got["kill"])
		}
	}
}
