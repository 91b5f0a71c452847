package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/internal/proctest"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/store"
	"github.com/gridnode/gridnode/testnet"
)

// netProcess is a `gridnode testnet` process run by a test.
type netProcess struct {
	cmd  *exec.Cmd
	dir  string
	boot string
	ids  []string // node i's peer ID, from the banner
	kind []string // node i's behaviour, from the banner
	done chan struct{}

	mu     sync.Mutex
	stderr bytes.Buffer
	err    error // its exit, once done is closed
}

// startNet runs `gridnode testnet -n N --dir DIR ARGS` until the test ends and waits for its
// banner.
func startNet(t testing.TB, bin string, n int, args ...string) *netProcess {
	t.Helper()
	tn := &netProcess{dir: filepath.Join(t.TempDir(), "net"), done: make(chan struct{})}
	tn.cmd = exec.Command(bin, append([]string{"testnet", "-n", fmt.Sprint(n), "--dir", tn.dir}, args...)...)
	tn.cmd.Stderr = &lockedWriter{&tn.mu, &tn.stderr}
	stdout, err := tn.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tn.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		defer close(tn.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) >= 6 && f[0] == "node": // node I ID pid P BEHAVIOUR LOG
				tn.ids = append(tn.ids, f[2])
				tn.kind = append(tn.kind, f[5])
			case len(f) == 2 && f[0] == "bootstrap:":
				tn.boot = f[1]
				close(ready)
			}
		}
		err := tn.cmd.Wait()
		tn.mu.Lock()
		tn.err = err
		tn.mu.Unlock()
	}()
	t.Cleanup(func() {
		tn.cmd.Process.Signal(os.Interrupt)
		select {
		case <-tn.done:
		case <-time.After(20 * time.Second):
			tn.cmd.Process.Kill()
			<-tn.done
		}
		if t.Failed() {
			t.Logf("testnet stderr:\n%s", tn.Stderr())
		}
	})
	select {
	case <-ready:
	case <-tn.done:
		t.Fatalf("testnet exited before its banner: %v\n%s", tn.err, tn.Stderr())
	case <-time.After(60 * time.Second):
		t.Fatal("testnet printed no bootstrap address within 60s")
	}
	if len(tn.ids) != n {
		t.Fatalf("banner lists %d nodes, want %d", len(tn.ids), n)
	}
	return tn
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Stderr is what the testnet printed on stderr so far.
func (tn *netProcess) Stderr() string {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.stderr.String()
}

// submit returns the command line of a submit to the testnet that trusts its honest nodes,
// with args.
func (tn *netProcess) submit(args ...string) []string {
	return append(append([]string{"submit"}, tn.gridFlags()...), args...)
}

// gridFlags are the flags of a submit to the testnet: its bootstrap address, and its honest
// nodes as trusted peers.
func (tn *netProcess) gridFlags() []string {
	return []string{"--bootstrap", tn.boot, "--trust-file", filepath.Join(tn.dir, node.TrustFile)}
}

// pid is node i's current process, or 0: the testnet's child whose command line names
// node i's data dir.
func (tn *netProcess) pid(i int) int {
	data := []byte(filepath.Join(tn.dir, fmt.Sprintf("node-%d", i)) + "\x00")
	for _, pid := range proctest.ChildrenOf(tn.cmd.Process.Pid) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if st, _, ok := proctest.Stat(pid); ok && st != 'Z' && bytes.Contains(b, data) {
			return pid
		}
	}
	return 0
}

// jobProcs lists the live processes under a node's process root: its jobs. (A job's
// command line and name tell nothing: the sandbox gives every job the same initial stack,
// and its name is the number of the memfd it was executed from.)
func jobProcs(root int) []int {
	var jobs []int
	for _, pid := range descendants(root) {
		if st, _, ok := proctest.Stat(pid); ok && st != 'Z' {
			jobs = append(jobs, pid)
		}
	}
	return jobs
}

// descendants lists the processes under root, not root itself.
func descendants(root int) []int {
	kids := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, ok := proctest.Stat(pid); ok {
			kids[ppid] = append(kids[ppid], pid)
		}
	}
	var out []int
	for q := kids[root]; len(q) > 0; q = q[1:] {
		out = append(out, q[0])
		q = append(q, kids[q[0]]...)
	}
	return out
}

// nodeJobs returns how many job processes each of the testnet's n nodes runs.
func (tn *netProcess) nodeJobs(n int) []int {
	k := make([]int, n)
	for i := range n {
		if pid := tn.pid(i); pid > 0 {
			k[i] = len(jobProcs(pid))
		}
	}
	return k
}

func sum(xs []int) (s int) {
	for _, x := range xs {
		s += x
	}
	return s
}

// buildBehave builds testdata/behave.c.
func buildBehave(t *testing.T, bin string) string {
	t.Helper()
	return buildJob(t, bin, "behave", "testdata/behave.c")
}

// buildJob runs 'gridnode build -o DIR/name args...' in a temporary DIR and returns the job.
func buildJob(t *testing.T, bin, name string, args ...string) string {
	t.Helper()
	job := filepath.Join(t.TempDir(), name)
	if out, errOut, code := runBin(t, bin, "", append([]string{"build", "-o", job}, args...)...); code != 0 {
		t.Fatalf("gridnode build: exit %d\n%s%s", code, out, errOut)
	}
	return job
}

// TestSubmitterKilledMidJob SIGKILLs a `gridnode submit` whose job is running on two
// workers and measures how long the workers take to kill the job's process.
func TestSubmitterKilledMidJob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a testnet")
	}
	bin := gridnodeBinary(t)
	job := buildBehave(t, bin)
	tn := startNet(t, bin, 3)
	var took []time.Duration
	for run := range 3 {
		sub := exec.Command(bin, tn.submit("--replicas", "2", "--wall", "60s", job)...)
		sub.Stdin = strings.NewReader("spin")
		var stderr bytes.Buffer
		sub.Stderr = &stderr
		if err := sub.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- sub.Wait() }()
		proctest.Poll(t, 30*time.Second, "the job to run on two workers", func() bool {
			select {
			case err := <-exited:
				t.Fatalf("submit exited: %v\n%s", err, stderr.String())
			default:
			}
			return sum(tn.nodeJobs(3)) >= 2
		})
		sub.Process.Kill()
		t0 := time.Now()
		<-exited
		var left []int
		deadline := t0.Add(40 * time.Second)
		for left = tn.nodeJobs(3); sum(left) > 0 && time.Now().Before(deadline); left = tn.nodeJobs(3) {
			time.Sleep(time.Millisecond) // a polling interval
		}
		d := time.Since(t0)
		if sum(left) > 0 {
			t.Fatalf("run %d: jobs still running %v after the submitter was killed: %v", run, d, left)
		}
		took = append(took, d)
		if d > time.Second {
			t.Errorf("run %d: the workers killed the job %v after the submitter died, want within 1s", run, d.Round(time.Millisecond))
			break // each such run costs the whole delay
		}
	}
	t.Logf("job processes gone after the submitter's SIGKILL: %v", took)
}

// TestWorkerKilledMidJob SIGKILLs one of the workers running a job: the submit still
// succeeds, verified by two other workers, and the testnet reports the death and runs on.
func TestWorkerKilledMidJob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a testnet")
	}
	bin := gridnodeBinary(t)
	job := buildJob(t, bin, "mandelbrot", "--example", "mandelbrot")
	const n = 4
	tn := startNet(t, bin, n)
	in := "64 48 1000000" // about 1.5 s of CPU
	want, _, code := runBin(t, bin, in, "sandbox", "--wall", "60s", job)
	if code != 0 {
		t.Fatalf("gridnode sandbox: exit %d", code)
	}

	sub := exec.Command(bin, tn.submit("--replicas", "2", "--json", "--wall", "60s", "--timeout", "60s", job)...)
	sub.Stdin = strings.NewReader(in)
	var stdout, stderr bytes.Buffer
	sub.Stdout, sub.Stderr = &stdout, &stderr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sub.Wait() }()
	victim := -1
	proctest.Poll(t, 30*time.Second, "the job to run on a worker", func() bool {
		for i, k := range tn.nodeJobs(n) {
			if k > 0 {
				victim = i
				return true
			}
		}
		return false
	})
	pid := tn.pid(victim)
	syscall.Kill(pid, syscall.SIGKILL)
	killed := time.Now()
	err := <-exited
	if err != nil {
		t.Fatalf("submit after worker %d was killed: %v\n%s", victim, err, stderr.String())
	}
	// The job takes ~1.5 s; a submitter that waits for the dead worker's QUIC connection
	// to time out (30 s) instead of noticing it took 33 s.
	took := time.Since(killed)
	t.Logf("submit done %v after the worker was killed", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("submit took %v after the worker was killed, want under 10s", took.Round(time.Millisecond))
	}
	var rep jobs.ReportJSON
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("submit --json: %v\n%s", err, stdout.String())
	}
	if string(rep.Output) != want {
		t.Errorf("got %d bytes of output, want the %d bytes the local sandbox gives", len(rep.Output), len(want))
	}
	agreeing := map[string]bool{}
	for _, r := range rep.Replicas {
		if r.ReceiptValid && r.OutputCID == rep.OutputCID && r.Error == "" {
			agreeing[r.Worker] = true
		}
	}
	if len(agreeing) < 2 || agreeing[tn.ids[victim]] {
		t.Errorf("agreeing workers %v: want 2, without the killed node %d (%s)", agreeing, victim, tn.ids[victim])
	}
	for _, r := range rep.Replicas {
		t.Logf("replica %s: %s, receipt valid %v, error %q", r.Worker, r.Status, r.ReceiptValid, r.Error)
	}
	proctest.Poll(t, 10*time.Second, "the testnet to report the death", func() bool {
		return strings.Contains(tn.Stderr(), fmt.Sprintf("node %d (%s, pid %d) died: signal: killed", victim, tn.ids[victim], pid))
	})
	select {
	case <-tn.done:
		t.Fatalf("the testnet exited after one node died: %v", tn.err)
	default:
	}
	if _, err := os.Stat(filepath.Join(tn.dir, fmt.Sprintf("node-%d.log", victim))); err != nil {
		t.Errorf("the dead node's log: %v", err)
	}
}

// TestTestnetRestartsNode kills a worker of a --restart testnet that holds a job's binary:
// it comes back with its peer ID and serves the binary from its store; and a testnet
// whose every node died exits, saying so, and keeps its logs.
func TestTestnetRestartsNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a testnet")
	}
	bin := gridnodeBinary(t)
	echo := buildJob(t, bin, "echo", "--example", "echo")
	binary, err := os.ReadFile(echo)
	if err != nil {
		t.Fatal(err)
	}
	jobCID := cids.Sum(binary)
	const n, victim = 3, 2
	tn := startNet(t, bin, n, "--restart")
	submit := func() {
		t.Helper()
		out, errOut, code := runBin(t, bin, "hi\n", tn.submit("--replicas", "3", "--timeout", "60s", echo)...)
		if code != 0 || out != "hi\n" {
			t.Fatalf("submit: exit %d, output %q\n%s", code, out, errOut)
		}
	}
	submit() // on every node, so the victim stores the binary
	if _, err := os.Stat(filepath.Join(tn.dir, fmt.Sprintf("node-%d", victim), "blobs", jobCID.String())); err != nil {
		t.Fatalf("node %d did not store the binary: %v", victim, err)
	}
	old := tn.pid(victim)
	syscall.Kill(old, syscall.SIGKILL)
	restarted := fmt.Sprintf("testnet: node %d restarted, pid ", victim)
	proctest.Poll(t, 20*time.Second, "the testnet to restart the node", func() bool {
		return strings.Contains(tn.Stderr(), restarted)
	})
	errOut := tn.Stderr()
	for _, s := range []string{
		fmt.Sprintf("node %d (%s, pid %d) died: signal: killed", victim, tn.ids[victim], old),
		"the same peer ID " + tn.ids[victim],
	} {
		if !strings.Contains(errOut, s) {
			t.Errorf("testnet stderr lacks %q:\n%s", s, errOut)
		}
	}
	if pid := tn.pid(victim); pid == 0 || pid == old {
		t.Errorf("node %d: pid %d after the restart, was %d", victim, pid, old)
	}
	log, _ := os.ReadFile(filepath.Join(tn.dir, fmt.Sprintf("node-%d.log", victim)))
	if bytes.Count(log, []byte(`msg="node started"`)) != 2 || !bytes.Contains(log, []byte("restarted at")) {
		t.Errorf("node %d's log does not hold both runs:\n%s", victim, log)
	}

	// Seen from the grid: the same peer, findable, serving the binary it stored.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := node.Open(ctx, node.Config{Ephemeral: true, Loopback: true, Bootstrap: []string{tn.boot}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ws, err := c.WaitWorkers(ctx, sandbox.ArchAMD64, n)
	if err != nil {
		t.Fatalf("find the %d workers after the restart: %v", n, err)
	}
	if !slices.ContainsFunc(ws, func(w peer.AddrInfo) bool { return w.ID.String() == tn.ids[victim] }) {
		t.Errorf("the restarted node %s is not among the workers found", tn.ids[victim])
	}
	got, err := store.FetchBytes(ctx, c.Host(), mustDecodePeer(t, tn.ids[victim]), jobCID, int64(len(binary)))
	if err != nil || !bytes.Equal(got, binary) {
		t.Errorf("fetch the binary from the restarted node: %d bytes, %v", len(got), err)
	}
	submit()

	// Every node dead: the testnet exits, saying so, and keeps the logs of a temporary dir.
	t.Run("all dead", func(t *testing.T) {
		tn := exec.Command(bin, "testnet", "-n", "1")
		var errBuf bytes.Buffer
		tn.Stderr = &errBuf
		stdout, _ := tn.StdoutPipe()
		if err := tn.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() && !strings.HasPrefix(sc.Text(), "bootstrap: ") {
		}
		kids := proctest.ChildrenOf(tn.Process.Pid)
		if len(kids) != 1 {
			t.Fatalf("testnet -n 1 has %d children", len(kids))
		}
		syscall.Kill(kids[0], syscall.SIGKILL)
		err := tn.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 125 || !strings.Contains(errBuf.String(), "all 1 nodes are dead") {
			t.Errorf("got %v, want exit status 125 saying every node is dead\n%s", err, errBuf.String())
		}
		i := strings.Index(errBuf.String(), "kept in ")
		if i < 0 {
			t.Fatalf("the testnet does not say where it kept the logs:\n%s", errBuf.String())
		}
		kept := strings.Fields(errBuf.String()[i+len("kept in "):])[0]
		defer os.RemoveAll(kept)
		if _, err := os.Stat(filepath.Join(kept, "node-0.log")); err != nil {
			t.Errorf("the dead node's log: %v", err)
		}
	})
}

func mustDecodePeer(t *testing.T, s string) peer.ID {
	t.Helper()
	id, err := peer.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fdCount is how many descriptors process pid has open, besides the locks of job uids,
// which a root sandbox keeps, one per slot that ever ran a job (uids).
func fdCount(pid int) (fds, uids int) {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if strings.HasPrefix(l, "/run/gridnode-job-uids/") {
			uids++
		} else {
			fds++
		}
	}
	return fds, uids
}

// TestManyJobsOnProcesses submits 200 jobs at once, from 10 client peers, to a 5-node
// process testnet with 2 slots each: all are accepted with valid receipts; no worker is
// ever seen running more job processes than its slots (the process table, sampled); and
// once the clients are gone every node has the descriptors it had before.
func TestManyJobsOnProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a testnet and runs 400 jobs")
	}
	const nodes, slots, clients, total = 5, 2, 10, 200
	bin := gridnodeBinary(t)
	echo := buildJob(t, bin, "echo", "--example", "echo")
	binary, err := os.ReadFile(echo)
	if err != nil {
		t.Fatal(err)
	}
	tn := startNet(t, bin, nodes, "--slots", fmt.Sprint(slots))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var trust []peer.ID
	for _, id := range tn.ids {
		trust = append(trust, mustDecodePeer(t, id))
	}
	pids := make([]int, nodes)
	for i := range pids {
		if pids[i] = tn.pid(i); pids[i] == 0 {
			t.Fatalf("node %d has no process", i)
		}
	}
	newClient := func() *node.Node {
		c, err := node.Open(ctx, node.Config{Ephemeral: true, Loopback: true, Bootstrap: []string{tn.boot}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitWorkers(ctx, sandbox.ArchAMD64, nodes); err != nil {
			t.Fatal(err)
		}
		return c
	}
	submit := func(c *node.Node, i int) error {
		in := fmt.Appendf(nil, "job %d\n", i)
		rep, err := c.Submit(ctx, jobs.Request{Binary: binary, Input: in, Replicas: 2, Quorum: 2, Trust: trust})
		switch {
		case err != nil:
			return err
		case string(rep.Output) != string(in):
			return fmt.Errorf("output %q, want %q", rep.Output, in)
		}
		agree := 0
		for _, r := range rep.Replicas {
			if r.ReceiptValid && r.OutputCID.Equals(cids.Sum(in)) {
				agree++
			}
		}
		if agree < 2 {
			return fmt.Errorf("%d valid agreeing receipts, want 2", agree)
		}
		return nil
	}
	// Warm up every worker (connections between workers, the binary stored), then take
	// the baseline.
	warm := []*node.Node{newClient(), newClient()}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if err := submit(warm[i%2], -1-i); err != nil {
				t.Errorf("warm-up job: %v", err)
			}
		})
	}
	wg.Wait()
	for _, c := range warm {
		c.Close()
	}
	if t.Failed() {
		t.FailNow()
	}
	fds := make([]int, nodes)
	for i, pid := range pids {
		fds[i], _ = fdCount(pid)
	}

	cs := make([]*node.Node, clients)
	for k := range cs {
		cs[k] = newClient()
	}
	// Sample the process table while the jobs run.
	most := make([]int, nodes)
	stop := make(chan struct{})
	sampled := make(chan int)
	go func() {
		samples := 0
		defer func() { sampled <- samples }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i, pid := range pids {
				most[i] = max(most[i], len(jobProcs(pid)))
			}
			samples++
		}
	}()
	t0 := time.Now()
	errs := make([]error, total)
	for i := range total {
		wg.Go(func() { errs[i] = submit(cs[i%clients], i) })
	}
	wg.Wait()
	took := time.Since(t0)
	close(stop)
	samples := <-sampled
	failed := 0
	for i, err := range errs {
		if err != nil {
			if failed++; failed <= 5 {
				t.Errorf("job %d: %v", i, err)
			}
		}
	}
	t.Logf("%d jobs (R=2) on %d worker processes of %d slots from %d clients: %v, %d failed; most job processes seen at once per node (%d samples): %v",
		total, nodes, slots, clients, took.Round(time.Millisecond), failed, samples, most)
	for i, m := range most {
		if m > slots {
			t.Errorf("node %d ran %d job processes at once, more than its %d slots", i, m, slots)
		}
	}

	for _, c := range cs {
		c.Close()
	}
	now, uids := make([]int, nodes), make([]int, nodes)
	settled := func() bool {
		ok := true
		for i, pid := range pids {
			now[i], uids[i] = fdCount(pid)
			ok = ok && now[i] <= fds[i]
		}
		return ok
	}
	for deadline := time.Now().Add(20 * time.Second); !settled() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // a polling interval
	}
	if !settled() {
		for i, pid := range pids {
			links := map[string]int{}
			ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			for _, e := range ents {
				l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
				links[strings.SplitN(l, ":", 2)[0]]++
			}
			t.Logf("node %d: descriptors by kind: %v", i, links)
		}
		t.Errorf("descriptors per node: %v before, %v 20s after the clients left", fds, now)
	}
	t.Logf("descriptors per node: %v before, %v after, and %v job uid locks", fds, now, uids)
	// A uid is claimed for the process's life once a job used it, and a cancelled job's
	// uid is still held while its process is reaped as the next job starts in the slot:
	// at most twice the slots, never a leak per job.
	for i, u := range uids {
		if u > 2*slots {
			t.Errorf("node %d holds %d job uid locks, more than twice its %d slots", i, u, slots)
		}
	}
}

// TestTestnetFaultyNodes runs a testnet with two boaster-liars, as a demo would: the
// banner and the process table say which nodes misbehave, only the honest ones are in
// trusted-peers, neither 'gridnode --help' nor 'gridnode run --help' knows of faults, a
// liar's replica carries a valid receipt over the forged output, and submits that trust
// the honest nodes print the true output.
func TestTestnetFaultyNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a testnet")
	}
	bin := gridnodeBinary(t)
	for _, args := range [][]string{{"--help"}, {"run", "--help"}} {
		out, _ := exec.Command(bin, args...).CombinedOutput()
		for _, s := range []string{"faulty", "liar", "boast", "stall"} {
			if strings.Contains(string(out), s) {
				t.Errorf("gridnode %s mentions %q:\n%s", strings.Join(args, " "), s, out)
			}
		}
	}
	echo := buildJob(t, bin, "echo", "--example", "echo")
	const n = 5
	tn := startNet(t, bin, n, "--liars", "2", "--boasters", "2")
	want := map[string]string{"0": "honest", "1": "honest", "2": "honest", "3": "liar+boaster", "4": "liar+boaster"}
	liars := map[string]bool{}
	for i, kind := range tn.kind {
		if kind != want[fmt.Sprint(i)] {
			t.Errorf("banner: node %d is %s, want %s", i, kind, want[fmt.Sprint(i)])
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", tn.pid(i)))
		faulty := bytes.Contains(cmdline, []byte("\x00faulty-node\x00"+kind+"\x00"))
		if faulty != (kind != "honest") {
			t.Errorf("node %d (%s) runs as %q", i, kind, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
		if kind != "honest" {
			liars[tn.ids[i]] = true
		}
	}
	trusted, _ := os.ReadFile(filepath.Join(tn.dir, node.TrustFile))
	for i, id := range tn.ids {
		if bytes.Contains(trusted, []byte(id)) == liars[id] {
			t.Errorf("trusted-peers and node %d (%s, %s) disagree:\n%s", i, id, tn.kind[i], trusted)
		}
	}
	in := "hello, grid\n"
	forged := cids.Sum(testnet.Forge([]byte(in), 1<<20)).String()
	lies := 0
	for range 3 {
		out, errOut, code := runBin(t, bin, in, tn.submit("--json", "--timeout", "60s", echo)...)
		var rep jobs.ReportJSON
		if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || string(rep.Output) != in {
			t.Fatalf("submit: exit %d, output %q (%v)\n%s", code, rep.Output, err, errOut)
		}
		for _, r := range rep.Replicas {
			if liars[r.Worker] && r.Status != "" {
				lies++
				if !r.ReceiptValid || r.OutputCID != forged {
					t.Errorf("liar %s: receipt valid %v over %s, want valid over the forged %s", r.Worker, r.ReceiptValid, r.OutputCID, forged)
				}
			}
		}
	}
	t.Logf("%d replicas of 3 submits went to liars", lies)
}
