package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
)

// TestnetCommand runs a local grid of `gridnode run` processes.
type TestnetCommand struct{}

// testnetStopTimeout is how long a node gets to exit after SIGTERM before SIGKILL.
const testnetStopTimeout = 10 * time.Second

// Run executes the command.
func (c *TestnetCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode testnet", flag.ContinueOnError)
	n := fs.Int("n", 5, "number of nodes")
	dir := fs.String("dir", "", "keep the nodes' data and logs in `DIR` (default a temporary directory, removed on exit)")
	basePort := fs.Int("base-port", 0, "node i listens on TCP and UDP port `P`+i (default: free ports)")
	slots := fs.Int("slots", 2, "job slots per node")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode testnet [flags]

Starts a local grid of N 'gridnode run' processes on 127.0.0.1, the first being the others'
bootstrap peer, waits until every worker can be found, and prints the bootstrap address
and the command to submit a job. Ctrl-C stops every node.

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
	self, err := os.Executable()
	if err != nil {
		return err
	}
	root := *dir
	if root == "" {
		if root, err = os.MkdirTemp("", "gridnode-testnet-"); err != nil {
			return err
		}
		defer os.RemoveAll(root)
	} else if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}

	procs := make([]*testnetProc, 0, *n)
	defer func() { stopProcs(procs) }()
	var boot string
	for i := range *n {
		port := 0
		if *basePort > 0 {
			port = *basePort + i
		}
		args := []string{"run",
			"--data", filepath.Join(root, fmt.Sprintf("node-%d", i)),
			"--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port),
			"--listen", fmt.Sprintf("/ip4/127.0.0.1/udp/%d/quic-v1", port),
			"--slots", fmt.Sprint(*slots),
		}
		if boot != "" {
			args = append(args, "--bootstrap", boot)
		}
		p, err := startProc(self, args, filepath.Join(root, fmt.Sprintf("node-%d.log", i)))
		if err != nil {
			return fmt.Errorf("start node %d: %w", i, err)
		}
		procs = append(procs, p)
		if i == 0 {
			// The others need its address; the rest start in parallel.
			if err := p.waitUp(ctx); err != nil {
				return fmt.Errorf("node 0: %w", err)
			}
			boot = p.addr
		}
	}
	for i, p := range procs {
		if err := p.waitUp(ctx); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
	}
	if err := waitWorkers(ctx, boot, *n); err != nil {
		return err
	}

	fmt.Printf(`testnet: %d nodes on 127.0.0.1; data and logs in %s
bootstrap: %s

Submit a job from another terminal:
  gridnode submit --bootstrap %s --replicas 2 JOB
or, from the source tree:
  go run ./cmd/gridnode submit --bootstrap %s --replicas 2 JOB

Ctrl-C stops the testnet.
`, *n, root, boot, boot, boot)

	exited := make(chan int, len(procs))
	for i, p := range procs {
		go func() { <-p.done; exited <- i }()
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "testnet: stopping")
		return nil
	case i := <-exited:
		return fmt.Errorf("node %d exited unexpectedly: %v; see %s", i, procs[i].err, procs[i].log)
	}
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

// testnetProc is one `gridnode run` child.
type testnetProc struct {
	cmd  *exec.Cmd
	log  string
	up   chan struct{} // closed once addr is known
	addr string        // its TCP /p2p/ multiaddr
	done chan struct{} // closed when it exited; then err is set
	err  error
}

func startProc(self string, args []string, logPath string) (*testnetProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(self, args...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &testnetProc{cmd: cmd, log: logPath, up: make(chan struct{}), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if p.addr == "" && strings.HasPrefix(line, "/ip4/") && strings.Contains(line, "/tcp/") {
				p.addr = line
				close(p.up)
			}
		}
		io.Copy(io.Discard, out)
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *testnetProc) waitUp(ctx context.Context) error {
	select {
	case <-p.up:
		return nil
	case <-p.done:
		return fmt.Errorf("exited before listening: %v; see %s", p.err, p.log)
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(60 * time.Second):
		return fmt.Errorf("no address after 60s; see %s", p.log)
	}
}

// stopProcs sends SIGTERM to every child, waits, and SIGKILLs those still running after
// testnetStopTimeout.
func stopProcs(procs []*testnetProc) {
	for _, p := range procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(testnetStopTimeout)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline:
			for _, q := range procs {
				q.cmd.Process.Kill()
			}
			for _, q := range procs {
				<-q.done
			}
			return
		}
	}
}
