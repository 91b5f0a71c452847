package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/jobs"
)

// The prefix test runs itself again inside a network namespace it creates, whose loopback
// interface carries addresses in several /24s that exist only there.
const prefixChildEnv = "GRIDNODE_PREFIX_TEST_CHILD"

// prefixAddrs are the namespace's addresses: two workers share 10.1.0.0/24.
var prefixAddrs = []string{"10.1.0.1", "10.1.0.2", "10.2.0.1", "10.3.0.1", "10.9.0.1"}

// TestReplicaPrefixes checks replica diversity with nodes in distinct network prefixes:
// the replicas of a job go to workers in distinct /24s where the grid has them, two
// workers in one /24 cannot form a quorum of two alone, and they can when the submit
// counts by peer (--same-prefix). It needs root, to create the namespace; without it, it
// is skipped and says why.
func TestReplicaPrefixes(t *testing.T) {
	if os.Getenv(prefixChildEnv) == "1" {
		replicaPrefixes(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace (ip netns add); run the tests as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("needs ip from Debian's iproute2 (apt-get install -y iproute2): ", err)
	}
	ns := fmt.Sprintf("gn-prefix-%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("-n", ns, "link", "set", "lo", "up")
	for _, a := range prefixAddrs {
		run("-n", ns, "addr", "add", a+"/24", "dev", "lo")
	}
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestReplicaPrefixes$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), prefixChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestReplicaPrefixes") {
		t.Fatalf("in namespace %s: %v\n%s", ns, err, out)
	}
	t.Logf("in namespace %s:\n%s", ns, out)
}

func replicaPrefixes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := func(addr string, worker bool, boot []string) *Node {
		t.Helper()
		n, err := Open(ctx, Config{Ephemeral: true, Worker: worker, Runner: echoRunner, Slots: 2, Reach: ReachLAN,
			Listen: []string{"/ip4/" + addr + "/tcp/0"}, Bootstrap: boot})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	var ws []*Node
	var boot []string
	for _, a := range prefixAddrs[:4] {
		w := open(a, true, boot)
		if boot == nil {
			boot = w.AddrStrings()
		}
		ws = append(ws, w)
	}
	for _, w := range ws {
		if err := w.WaitAnnounced(ctx); err != nil {
			t.Fatal(err)
		}
	}
	client := open(prefixAddrs[4], false, boot)
	trustWorkers([]*Node{client}, ws)

	// Every job's agreeing replicas are in distinct /24s.
	for i := range 10 {
		rep, err := client.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte(fmt.Sprint("job ", i)), Replicas: 2})
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		prefixes := map[string]bool{}
		for _, r := range rep.Replicas {
			if r.Err == nil {
				prefixes[r.Prefix] = true
			}
		}
		if len(prefixes) < 2 {
			t.Fatalf("submit %d: agreeing replicas in %d prefix(es): %+v", i, len(prefixes), rep.Replicas)
		}
	}

	// Only the two workers of 10.1.0.0/24 left: counted by prefix they are one vote.
	for _, w := range ws[2:] {
		w.Close()
	}
	only := jobs.Request{Binary: fakeELF, Input: []byte("one prefix"), Replicas: 2, MaxReplicas: 2, Trust: []peer.ID{ws[0].ID(), ws[1].ID()}}
	rep, err := client.Submit(ctx, only)
	if !errors.Is(err, jobs.ErrNoQuorum) && !errors.Is(err, jobs.ErrNoWorkers) {
		t.Fatalf("two workers in one /24: got %v (%+v), want no quorum", err, rep)
	}
	if rep != nil && len(rep.Output) > 0 {
		t.Fatalf("two workers in one /24 formed a quorum: %q", rep.Output)
	}
	only.SamePrefix = true
	if rep, err = client.Submit(ctx, only); err != nil || string(rep.Output) != "one prefix" {
		t.Fatalf("two workers in one /24 with SamePrefix: %v", err)
	}
}
