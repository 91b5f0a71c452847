package natlab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The lab's address plan. Home networks use private addresses, as home routers do. The
// "internet" uses 192.0.0.64/26: part of IANA's IETF protocol assignments block
// (192.0.0.0/24), which is never routed on the internet, so no real host can be addressed,
// yet libp2p treats it as public (it lists only 192.0.0.0/26 as unroutable). It has to look
// public: libp2p punches holes only with public addresses, and AutoNAT only checks them.
// No namespace has a link to the machine's own network.
const (
	publicNet  = "192.0.0.64/26"
	publicMask = "/26"
)

// nsPrefix starts the name of every namespace a lab creates: nsPrefix + pid + "-" + name.
const nsPrefix = "gnlab-"

// NAT kinds a router can do.
type natKind int

const (
	coneNAT      natKind = iota // masquerade: port-preserving, one mapping for every destination
	symmetricNAT                // masquerade fully-random: a new random port per connection
)

// lab is one set of namespaces: the "internet" (a bridge in namespace inet), public hosts
// on it, and home routers, each with a LAN bridge and home hosts behind it.
type lab struct {
	t      *testing.T
	prefix string
	dir    string
	bin    string // the gridnode binary
}

// needTools fails the test, with what to do, when the lab cannot run here.
func needTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the NAT lab needs root (network namespaces, veth pairs, nftables); run it as root, as .ci/run does")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the NAT lab needs %q: apt-get install -y iproute2 nftables (.ci/run installs them)", tool)
		}
	}
	name := fmt.Sprintf("%sprobe-%d", nsPrefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("the NAT lab cannot create a network namespace on this machine (%v: %s); it needs root with CAP_SYS_ADMIN and a kernel with network namespaces", err, bytes.TrimSpace(out))
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "exec", name, "nft", "add table ip probe").CombinedOutput(); err != nil {
		t.Fatalf("the NAT lab cannot use nftables in a namespace (%v: %s); it needs the nf_tables and nf_nat kernel modules", err, bytes.TrimSpace(out))
	}
}

// removeStale deletes namespaces left by earlier labs whose process is gone (a test that
// was killed cannot run its cleanup).
func removeStale(t *testing.T) {
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	re := regexp.MustCompile("^" + nsPrefix + `(?:probe-)?(\d+)-?`)
	for _, e := range ents {
		m := re.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		t.Logf("removing stale namespace %s", e.Name())
		if out, err := exec.Command("ip", "netns", "pids", e.Name()).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL) // a node the killed test left running
				}
			}
		}
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// newLab starts a lab: the inet namespace and its bridge. Preconditions: needTools passed.
func newLab(t *testing.T, bin string) *lab {
	removeStale(t)
	dir := t.TempDir()
	if keep := os.Getenv("NATLAB_DIR"); keep != "" { // keep the nodes' logs and data
		dir = filepath.Join(keep, time.Now().Format("20060102-150405"))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Logf("lab logs in %s", dir)
	}
	l := &lab{t: t, prefix: fmt.Sprintf("%s%d-", nsPrefix, os.Getpid()), dir: dir, bin: bin}
	l.addNS("inet")
	l.ip("inet", "link add br0 type bridge")
	l.ip("inet", "link set br0 up")
	return l
}

func (l *lab) ns(name string) string { return l.prefix + name }

// cmd runs a command and fails the test with its output if it fails.
func (l *lab) cmd(name string, args ...string) {
	l.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		l.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

// ip runs `ip -n NS args` (args split on spaces).
func (l *lab) ip(ns, args string) {
	l.t.Helper()
	l.cmd("ip", append([]string{"-n", l.ns(ns)}, strings.Fields(args)...)...)
}

// inNS runs a command inside namespace ns.
func (l *lab) inNS(ns string, name string, args ...string) {
	l.t.Helper()
	l.cmd("ip", append([]string{"netns", "exec", l.ns(ns), name}, args...)...)
}

func (l *lab) addNS(name string) {
	l.t.Helper()
	l.cmd("ip", "netns", "add", l.ns(name))
	l.t.Cleanup(func() { exec.Command("ip", "netns", "del", l.ns(name)).Run() })
	l.ip(name, "link set lo up")
}

// wire connects namespace a (interface aIf) to b (bIf) with a veth pair.
func (l *lab) wire(a, aIf, b, bIf string) {
	l.t.Helper()
	l.ip(a, fmt.Sprintf("link add %s type veth peer name %s netns %s", aIf, bIf, l.ns(b)))
}

// publicHost adds a namespace on the internet with address ip.
func (l *lab) publicHost(name, ip string) {
	l.t.Helper()
	l.addNS(name)
	l.wire("inet", "v-"+name, name, "eth0")
	l.ip("inet", "link set v-"+name+" master br0 up")
	l.ip(name, "addr add "+ip+publicMask+" dev eth0")
	l.ip(name, "link set eth0 up")
}

// router adds a home router: WAN address wanIP on the internet, LAN lan.1/24 (lan is
// like "10.1.0"), NAT of the given kind, and a firewall that lets in only replies.
func (l *lab) router(name, wanIP, lan string, kind natKind) {
	l.t.Helper()
	l.addNS(name)
	l.wire("inet", "v-"+name, name, "wan")
	l.ip("inet", "link set v-"+name+" master br0 up")
	l.ip(name, "addr add "+wanIP+publicMask+" dev wan")
	l.ip(name, "link set wan up")
	l.ip(name, "link add lan type bridge")
	l.ip(name, "addr add "+lan+".1/24 dev lan")
	l.ip(name, "link set lan up")
	l.inNS(name, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	masq := "masquerade"
	if kind == symmetricNAT {
		masq = "masquerade fully-random"
	}
	rules := `
table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" ` + masq + `
	}
}
table inet filter {
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "wan" ct state established,related accept
		iifname "wan" drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wan" ct state established,related accept
		iifname "wan" drop
	}
}
`
	f := filepath.Join(l.dir, name+".nft")
	if err := os.WriteFile(f, []byte(rules), 0o600); err != nil {
		l.t.Fatal(err)
	}
	l.inNS(name, "nft", "-f", f)
}

// homeHost adds a host with address ip on router's LAN, its default route via the router.
func (l *lab) homeHost(router, name, ip string) {
	l.t.Helper()
	l.addNS(name)
	l.wire(router, "v-"+name, name, "eth0")
	l.ip(router, "link set v-"+name+" master lan up")
	l.ip(name, "addr add "+ip+"/24 dev eth0")
	l.ip(name, "link set eth0 up")
	gw := ip[:strings.LastIndex(ip, ".")] + ".1"
	l.ip(name, "route add default via "+gw)
}

// proc is a gridnode process in a namespace, its stderr kept (and written to a file) so
// that the test can wait for log lines.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // file

	mu     sync.Mutex
	lines  []string
	stdout []string
	more   chan struct{} // closed and replaced on every new line
	done   chan struct{} // closed when the process exited
	err    error
}

// start runs gridnode with args in namespace ns.
func (l *lab) start(ns string, args ...string) *proc {
	l.t.Helper()
	p := &proc{name: ns, more: make(chan struct{}), done: make(chan struct{}), log: filepath.Join(l.dir, ns+".log")}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", l.ns(ns), l.bin}, args...)...)
	// ip execs gridnode, which keeps this: a node dies with a test killed by its timeout.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	f, err := os.Create(p.log)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	var wg sync.WaitGroup
	read := func(r io.Reader, out *[]string) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			*out = append(*out, sc.Text())
			if out == &p.lines {
				fmt.Fprintln(f, sc.Text())
			}
			close(p.more)
			p.more = make(chan struct{})
			p.mu.Unlock()
		}
	}
	wg.Go(func() { read(stderr, &p.lines) })
	wg.Go(func() { read(stdout, &p.stdout) })
	go func() {
		wg.Wait()
		err := p.cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	l.t.Cleanup(func() { p.stop() })
	return p
}

// stop ends the process: SIGTERM, then SIGKILL after 10 s.
func (p *proc) stop() {
	if p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// waitFor waits until the process logged a line (stderr) or printed one (stdout, with
// fromStdout) containing every one of subs, and returns it; it fails the test after
// timeout or when the process exits first.
func (p *proc) waitFor(t *testing.T, timeout time.Duration, fromStdout bool, subs ...string) string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		p.mu.Lock()
		lines := p.lines
		if fromStdout {
			lines = p.stdout
		}
		for ; seen < len(lines); seen++ {
			if containsAll(lines[seen], subs) {
				l := lines[seen]
				p.mu.Unlock()
				return l
			}
		}
		more := p.more
		p.mu.Unlock()
		select {
		case <-more:
		case <-p.done:
			if p.has(fromStdout, subs...) != "" {
				return p.has(fromStdout, subs...)
			}
			t.Fatalf("%s exited (%v) before logging %q; its log:\n%s", p.name, p.err, subs, p.tail(40))
		case <-deadline.C:
			t.Fatalf("%s logged no %q within %v; its log:\n%s", p.name, subs, timeout, p.tail(40))
		}
	}
}

// has returns the first line so far with every one of subs, or "".
func (p *proc) has(fromStdout bool, subs ...string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := p.lines
	if fromStdout {
		lines = p.stdout
	}
	for _, l := range lines {
		if containsAll(l, subs) {
			return l
		}
	}
	return ""
}

// all returns every log line with every one of subs.
func (p *proc) all(subs ...string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, l := range p.lines {
		if containsAll(l, subs) {
			out = append(out, l)
		}
	}
	return out
}

func (p *proc) tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines[max(0, len(p.lines)-n):], "\n")
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// logValue returns the value of key in a slog text line (key=value or key="value").
func logValue(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		if s, err := strconv.QuotedPrefix(v); err == nil {
			u, _ := strconv.Unquote(s)
			return u
		}
	}
	v, _, _ = strings.Cut(v, " ")
	return v
}

// run runs a gridnode command in namespace ns to completion within timeout and returns its
// stdout, stderr and error.
func (l *lab) run(ctx context.Context, ns string, stdin io.Reader, args ...string) (stdout, stderr []byte, err error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ns(ns), l.bin}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &o, &e
	err = cmd.Run()
	os.WriteFile(filepath.Join(l.dir, ns+"-"+args[0]+".log"), e.Bytes(), 0o600)
	return o.Bytes(), e.Bytes(), err
}
