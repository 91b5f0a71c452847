package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/testnet"
)

// TestnetCommand runs a local grid of `gridnode run` processes.
type TestnetCommand struct{}

const (
	// testnetStopTimeout is how long a node gets to exit after SIGTERM before SIGKILL.
	testnetStopTimeout = 10 * time.Second
	// restartDelay is how long a dead node stays down before --restart starts it again.
	restartDelay = time.Second
	// A node that dies within quickDeath of starting, maxQuickDeaths times in a row, is in a
	// crash loop and is not restarted again.
	quickDeath     = 10 * time.Second
	maxQuickDeaths = 3
)

// Run executes the command.
func (c *TestnetCommand) Run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == faultyNodeArg {
		return runFaultyNode(ctx, args[1:])
	}
	if len(args) > 0 && args[0] == nodeArg {
		return runTestnetNode(ctx, args[1:], 0)
	}
	fs := flag.NewFlagSet("gridnode testnet", flag.ContinueOnError)
	n := fs.Int("n", 5, "number of nodes")
	dir := fs.String("dir", "", "keep the nodes' data and logs in `DIR` (default a temporary directory, removed on exit unless a node died)")
	basePort := fs.Int("base-port", 0, "node i listens on TCP port `P`+i (default: free ports)")
	slots := fs.Int("slots", 2, "job slots per node")
	restart := fs.Bool("restart", false, "restart a node that dies, after 1s, with its identity and stored binaries")
	liars := fs.Int("liars", 0, "`K` nodes return wrong outputs (all the same wrong output) with valid signed receipts")
	stallers := fs.Int("stallers", 0, "`K` nodes admit jobs and never answer")
	boasters := fs.Int("boasters", 0, "`K` nodes sign offers claiming 2^30 free slots (liars first, then stallers, then honest ones)")
	logf := addLogFlags(fs, slog.LevelInfo) // the nodes' logs
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode testnet [flags]

Starts a local grid of N 'gridnode run' processes on 127.0.0.1, the first being the others'
bootstrap peer, waits until every worker can be found, and prints each node's peer ID,
behaviour and log, the bootstrap address and the command to submit a job. The nodes
listen on TCP only and are tuned for sharing one machine: DHT buckets of 10 peers and at
most about 24 connections each (a daemon's defaults are 20 and 128).

A node that dies (killed, crashed) is reported with its exit status and the end of its
log; the testnet keeps running and keeps that log. With --restart it starts the node again
after 1s, on the same ports and data dir (so with the same peer ID and stored binaries);
'kill -HUP' on the testnet restarts every dead node at once, with or without --restart.
A node that dies within 10s of starting 3 times in a row is left dead. The testnet exits
on Ctrl-C or SIGTERM, stopping every node, or when every node is dead.

For tests and demos, --liars, --stallers and --boasters make some nodes misbehave
(never node 0): liars are the last K nodes, stallers the K before them, and boasters
claim false capacity on liars first. A faulty node runs as 'gridnode testnet faulty-node
BEHAVIOUR RUN-FLAGS', a form for the testnet only; 'gridnode run' has no such flag. The
honest nodes' peer IDs are written to DIR/trusted-peers (and to each node's data dir, for
submits through its API), for 'gridnode submit --trust-file'.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() != 0:
		return badUsage(fs, "no arguments expected, got %q", fs.Args())
	case *n < 1:
		return badUsage(fs, "-n %d: want at least 1 node", *n)
	case *basePort < 0 || *basePort+*n > 65535:
		return badUsage(fs, "--base-port %d: ports %d to %d are not all valid", *basePort, *basePort, *basePort+*n-1)
	}
	behaviours, err := assignFaults(*n, *liars, *stallers, *boasters)
	if err != nil {
		return badUsage(fs, "%v", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	root := *dir
	temp := root == ""
	if temp {
		if root, err = os.MkdirTemp("", "gridnode-testnet-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	tn := &procNet{self: self, root: root, restart: *restart, events: make(chan nodeEvent, 2**n)}
	for i := range *n {
		port := 0
		if *basePort > 0 {
			port = *basePort + i
		}
		tn.nodes = append(tn.nodes, &netNode{
			i:         i,
			behaviour: behaviours[i],
			data:      filepath.Join(root, fmt.Sprintf("node-%d", i)),
			log:       filepath.Join(root, fmt.Sprintf("node-%d.log", i)),
			// TCP only: with QUIC beside it every pair of nodes on a loaded machine also
			// dialled and handshook the other transport (libp2p tries TCP 30 ms after QUIC
			// on a private address), for 1.6x the start-up CPU and twice the idle CPU at 50
			// nodes (QUIC keep-alives every 15s, yamux's every 30s).
			listen:  []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)},
			slots:   *slots,
			logArgs: []string{"--log-level", logf.effective().String(), "--log-format", string(logf.format)},
		})
	}
	defer func() {
		tn.stop()
		switch {
		case temp && tn.died:
			fmt.Fprintf(os.Stderr, "testnet: a node died: its data and logs are kept in %s\n", root)
		case temp:
			os.RemoveAll(root)
		}
	}()
	if err := tn.trust(); err != nil {
		return err
	}
	if err := tn.start(ctx); err != nil {
		return err
	}
	boot := tn.nodes[0].addr
	if err := waitWorkers(ctx, boot, *n); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "testnet: %d nodes on 127.0.0.1; data and logs in %s\n", *n, root)
	for _, nd := range tn.nodes {
		pid := "dead"
		if nd.proc != nil {
			pid = fmt.Sprint(nd.proc.cmd.Process.Pid)
		}
		fmt.Fprintf(&b, "  node %d  %s  pid %-7s %-13s %s\n", nd.i, nd.id, pid, nd.behaviour, nd.log)
	}
	trusted := filepath.Join(root, node.TrustFile)
	fmt.Fprintf(&b, `bootstrap: %s

Submit a job from another terminal, trusting the honest nodes (docs/TRUST.md):
  gridnode submit --bootstrap %s --trust-file %s --replicas 2 JOB
or, from the source tree:
  go run ./cmd/gridnode submit --bootstrap %s --trust-file %s --replicas 2 JOB

Ctrl-C stops the testnet.
`, boot, boot, trusted, boot, trusted)
	os.Stdout.WriteString(b.String())
	return tn.supervise(ctx)
}

// assignFaults gives n nodes their behaviours: liars are the last nodes, stallers the ones
// before them, and boasters claim false capacity on liars first, then stallers, then honest
// nodes from the end. Node 0, everyone's bootstrap peer, stays honest.
func assignFaults(n, liars, stallers, boasters int) ([]testnet.Behaviour, error) {
	switch {
	case liars < 0 || stallers < 0 || boasters < 0:
		return nil, errors.New("--liars, --stallers and --boasters must not be negative")
	case liars+stallers > n-1:
		return nil, fmt.Errorf("%d liars and %d stallers: at most %d of %d nodes (node 0 stays honest)", liars, stallers, n-1, n)
	case boasters > n-1:
		return nil, fmt.Errorf("%d boasters: at most %d of %d nodes (node 0 stays honest)", boasters, n-1, n)
	}
	b := make([]testnet.Behaviour, n)
	for i := range liars {
		b[n-1-i] |= testnet.Liar
	}
	for i := range stallers {
		b[n-1-liars-i] |= testnet.Staller
	}
	for i := range boasters {
		b[n-1-i] |= testnet.Boaster
	}
	return b, nil
}

// waitWorkers polls the grid through a throwaway client peer until it finds all n workers.
func waitWorkers(ctx context.Context, boot string, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := node.Open(ctx, node.Config{Ephemeral: true, Loopback: true, Bootstrap: []string{boot}})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.WaitWorkers(ctx, sandbox.ArchAMD64, n)
	return err
}

// procNet is a running process testnet. Its fields are owned by the goroutine that runs
// start and then supervise; processes report to it on events.
type procNet struct {
	self    string
	root    string
	restart bool
	nodes   []*netNode
	events  chan nodeEvent
	died    bool // some node died: a temporary dir is kept
}

// netNode is one node of the testnet, across its restarts.
type netNode struct {
	i         int
	behaviour testnet.Behaviour
	data, log string
	listen    []string // its listen addresses; after the first start, with the ports it got
	slots     int
	logArgs   []string // --log-level and --log-format

	id      string    // peer ID, from its first start
	addr    string    // its TCP /p2p/ multiaddr
	proc    *nodeProc // the current process; nil while dead
	started time.Time
	quick   int  // deaths in a row within quickDeath of starting
	pending bool // a restart is scheduled
	starts  int
	givenUp bool
}

// nodeProc is one `gridnode run` (or faulty-node) process of a node.
type nodeProc struct {
	nd    *netNode
	cmd   *exec.Cmd
	id    string   // the peer ID it printed
	addrs []string // the addresses it printed
	err   error    // how it exited, once done is closed
	done  chan struct{}
}

// nodeEvent is a node process that printed its addresses (up) or exited.
type nodeEvent struct {
	p  *nodeProc
	up bool
}

// args returns the command line of nd's next process, joined through boot: `gridnode run`
// in one of the testnet's node forms (testnet_faults.go).
func (nd *netNode) args(boot string) []string {
	a := []string{"testnet", nodeArg}
	if nd.behaviour != 0 {
		a = []string{"testnet", faultyNodeArg, nd.behaviour.String()}
	}
	// --config= keeps the user's config file (for their own daemon) out of the testnet.
	a = append(append(a, "--config=", "--data", nd.data, "--slots", fmt.Sprint(nd.slots)), nd.logArgs...)
	for _, l := range nd.listen {
		a = append(a, "--listen", l)
	}
	if boot != "" {
		a = append(a, "--bootstrap", boot)
	}
	return a
}

// start starts every node, node 0 first (the others need its address), and waits until
// each has printed its addresses.
func (tn *procNet) start(ctx context.Context) error {
	for _, nd := range tn.nodes {
		if err := tn.launch(nd, tn.nodes[0].addr); err != nil {
			return fmt.Errorf("start node %d: %w", nd.i, err)
		}
		if nd.i == 0 {
			if err := tn.waitUp(ctx, nd); err != nil {
				return err
			}
		}
	}
	for _, nd := range tn.nodes[1:] {
		if err := tn.waitUp(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}

// waitUp waits for nd's first start to print its addresses.
func (tn *procNet) waitUp(ctx context.Context, nd *netNode) error {
	timeout := time.After(60 * time.Second)
	for nd.addr == "" {
		select {
		case ev := <-tn.events:
			if !ev.up {
				return fmt.Errorf("node %d exited before listening: %v; see %s", ev.p.nd.i, ev.p.err, ev.p.nd.log)
			}
			tn.up(ev.p)
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			return fmt.Errorf("node %d: no address after 60s; see %s", nd.i, nd.log)
		}
	}
	return nil
}

// launch starts a process for nd, appending to its log.
func (tn *procNet) launch(nd *netNode, boot string) error {
	logf, err := os.OpenFile(nd.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child holds its own descriptor
	if nd.starts > 0 {
		fmt.Fprintf(logf, "\n--- testnet: node %d restarted at %s ---\n", nd.i, time.Now().Format(time.RFC3339))
	}
	cmd := exec.Command(tn.self, nd.args(boot)...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.SysProcAttr = childProcAttr()
	cmd.Env = testnetEnv(os.Environ())
	if err := cmd.Start(); err != nil {
		return err
	}
	nd.starts++
	nd.started = time.Now()
	p := &nodeProc{nd: nd, cmd: cmd, done: make(chan struct{})}
	nd.proc = p
	go func() {
		// The first line is the peer ID, then one address per line; the node prints them
		// at once, in one write, when it is up.
		sc := bufio.NewScanner(out)
		sent := false
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			switch {
			case p.id == "" && !strings.HasPrefix(line, "/"):
				p.id = line
			case strings.HasPrefix(line, "/"):
				p.addrs = append(p.addrs, line)
			}
			if !sent && tcpAddr(p.addrs) != "" {
				sent = true
				tn.events <- nodeEvent{p: p, up: true}
			}
		}
		io.Copy(io.Discard, out)
		p.err = cmd.Wait()
		close(p.done)
		tn.events <- nodeEvent{p: p}
	}()
	return nil
}

// testnetEnv is env for a node process: TLS without the post-quantum key exchange, which
// was a sixth of a 50-node testnet's start-up CPU (every pair of nodes handshakes) and
// protects nothing on loopback.
func testnetEnv(env []string) []string {
	godebug := "tlsmlkem=0"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "GODEBUG="); ok && v != "" {
			godebug = v + "," + godebug
		}
	}
	return append(env, "GODEBUG="+godebug) // exec keeps the last of a duplicate
}

// up records what an up process printed. A node keeps its first start's ports, so that its
// address, and node 0's bootstrap address, stay valid across restarts.
func (tn *procNet) up(p *nodeProc) {
	nd := p.nd
	same := "the same peer ID"
	if p.id != nd.id {
		same = "a NEW peer ID (its key is " + nd.id + ")"
	}
	if nd.addr == "" {
		nd.addr = tcpAddr(p.addrs)
		nd.listen = []string{stripP2P(tcpAddr(p.addrs))}
		if p.id != nd.id {
			fmt.Fprintf(os.Stderr, "testnet: node %d started with %s %s\n", nd.i, same, p.id)
		}
		return
	}
	fmt.Fprintf(os.Stderr, "testnet: node %d restarted, pid %d, %s %s\n", nd.i, p.cmd.Process.Pid, same, p.id)
}

// supervise reports nodes that die and restarts them, until ctx ends or every node is
// dead for good.
func (tn *procNet) supervise(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	restartc := make(chan *netNode, len(tn.nodes))
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "testnet: stopping")
			return nil
		case ev := <-tn.events:
			if ev.up {
				tn.up(ev.p)
				continue
			}
			tn.dead(ev.p)
			nd := ev.p.nd
			if tn.restart && !nd.givenUp && !nd.pending {
				nd.pending = true
				time.AfterFunc(restartDelay, func() { restartc <- nd })
			}
		case nd := <-restartc:
			nd.pending = false
			tn.relaunch(nd)
		case <-hup:
			for _, nd := range tn.nodes {
				if nd.proc == nil {
					nd.givenUp, nd.quick = false, 0
					tn.relaunch(nd)
				}
			}
		}
		if tn.alive() == 0 && !tn.anyPending() {
			return fmt.Errorf("testnet: all %d nodes are dead; their logs are in %s", len(tn.nodes), tn.root)
		}
	}
}

// dead reports p's exit and the end of its log.
func (tn *procNet) dead(p *nodeProc) {
	nd := p.nd
	if nd.proc != p {
		return
	}
	nd.proc = nil
	tn.died = true
	ran := time.Since(nd.started)
	if ran < quickDeath {
		nd.quick++
	} else {
		nd.quick = 0
	}
	what := "exited"
	if p.err != nil {
		what = p.err.Error() // "signal: killed", "exit status 2"
	}
	msg := fmt.Sprintf("testnet: node %d (%s, pid %d) died: %s, after %v; its log is kept: %s\n",
		nd.i, nd.id, p.cmd.Process.Pid, what, ran.Round(time.Millisecond), nd.log)
	if tail := logTail(nd.log, 5); tail != "" {
		msg += tail
	}
	switch {
	case tn.restart && nd.quick >= maxQuickDeaths:
		nd.givenUp = true
		msg += fmt.Sprintf("testnet: node %d died %d times within %v of starting: not restarting it (kill -HUP the testnet to try again)\n", nd.i, nd.quick, quickDeath)
	case tn.restart:
		msg += fmt.Sprintf("testnet: restarting node %d in %v\n", nd.i, restartDelay)
	default:
		msg += fmt.Sprintf("testnet: node %d stays dead: kill -HUP %d restarts dead nodes; --restart restarts them automatically\n", nd.i, os.Getpid())
	}
	os.Stderr.WriteString(msg)
}

// relaunch starts a dead node again, joined through a live node (node 0 if it lives).
func (tn *procNet) relaunch(nd *netNode) {
	if nd.proc != nil {
		return
	}
	boot := ""
	for _, o := range tn.nodes {
		if o != nd && o.proc != nil && o.addr != "" {
			boot = o.addr
			break
		}
	}
	if err := tn.launch(nd, boot); err != nil {
		fmt.Fprintf(os.Stderr, "testnet: restart node %d: %v\n", nd.i, err)
		nd.givenUp = true
	}
}

func (tn *procNet) alive() int {
	k := 0
	for _, nd := range tn.nodes {
		if nd.proc != nil {
			k++
		}
	}
	return k
}

func (tn *procNet) anyPending() bool {
	for _, nd := range tn.nodes {
		if nd.pending {
			return true
		}
	}
	return false
}

// trust gives every node its identity before its first start (a node keeps the key it
// finds in its data dir), and writes the honest nodes' peer IDs to DIR/trusted-peers, for
// submitters, and to each node's data dir, for submits through its API.
func (tn *procNet) trust() error {
	var b strings.Builder
	b.WriteString("# the honest nodes of this testnet (gridnode testnet)\n")
	for _, nd := range tn.nodes {
		if err := os.MkdirAll(nd.data, 0o700); err != nil {
			return err
		}
		key, err := node.LoadIdentity(filepath.Join(nd.data, node.IdentityFile))
		if err != nil {
			return err
		}
		id, err := peer.IDFromPrivateKey(key)
		if err != nil {
			return err
		}
		nd.id = id.String()
		if nd.behaviour == 0 {
			fmt.Fprintln(&b, nd.id)
		}
	}
	for _, dir := range append([]string{tn.root}, dataDirs(tn.nodes)...) {
		if err := os.WriteFile(filepath.Join(dir, node.TrustFile), []byte(b.String()), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func dataDirs(nodes []*netNode) []string {
	var dirs []string
	for _, nd := range nodes {
		dirs = append(dirs, nd.data)
	}
	return dirs
}

// stop sends SIGTERM to every live node, waits, and SIGKILLs those still running after
// testnetStopTimeout.
func (tn *procNet) stop() {
	var live []*nodeProc
	for _, nd := range tn.nodes {
		if nd.proc != nil {
			live = append(live, nd.proc)
			nd.proc.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(testnetStopTimeout)
	for _, p := range live {
		select {
		case <-p.done:
		case <-deadline:
			for _, q := range live {
				q.cmd.Process.Kill()
			}
			for _, q := range live {
				<-q.done
			}
			return
		}
	}
}

// tcpAddr picks a node's TCP /p2p/ address from those it printed.
func tcpAddr(addrs []string) string {
	for _, a := range addrs {
		if strings.HasPrefix(a, "/ip4/") && strings.Contains(a, "/tcp/") {
			return a
		}
	}
	return ""
}

// stripP2P removes the /p2p/ID suffix of a printed address, leaving a listen address.
func stripP2P(a string) string {
	if i := strings.Index(a, "/p2p/"); i >= 0 {
		return a[:i]
	}
	return a
}

// logTail returns the last n lines of the file at path, indented, or "".
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4096
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		f.Seek(fi.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var out strings.Builder
	for _, l := range lines {
		if l != "" {
			fmt.Fprintf(&out, "    | %s\n", l)
		}
	}
	return out.String()
}
