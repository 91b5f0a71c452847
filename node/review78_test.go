package node

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestReview78FailsLoopbackBootstrapTurnsOffPrefixes: a donor whose daemon runs on the
// internet grid (listening on 0.0.0.0) submits a one-shot job through it with
// `gridnode submit --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/DAEMON` (the README's form).
// allLoopback sees only loopback bootstrap addresses and no listen address, so the client
// becomes a Loopback node, and Loopback implies SamePrefix (node/jobs.go:
// "SamePrefix: cfg.SamePrefix || cfg.Loopback"): replicas are counted by peer, not by
// prefix, against workers on the internet, silently (the gater lets a Loopback node dial
// every class of address). Sybils in one /24 then form quorums with one anchor.
//
// Fix: imply SamePrefix only where every *worker* is on loopback (e.g. netPrefix of a
// loopback connection counts by peer, as the commit message of bef827f says, rather than a
// node-wide switch), or only for Config.Loopback set explicitly (testnet), never derived
// from bootstrap addresses.
//
// Fixed: nothing implies SamePrefix; a loopback connection counts by peer in netPrefix
// (jobs), so a testnet needs no switch and internet workers are counted by prefix.
func TestReview78LoopbackBootstrapCountsPrefixes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	daemon, err := Open(ctx, Config{Ephemeral: true, Listen: []string{"/ip4/0.0.0.0/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer daemon.Close()
	var boot []string
	for _, a := range daemon.AddrStrings() {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/") {
			boot = append(boot, a)
		}
	}
	if len(boot) == 0 {
		t.Fatalf("daemon has no loopback address in %v", daemon.AddrStrings())
	}
	c, err := Open(ctx, Config{Ephemeral: true, Bootstrap: boot})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.cfg.SamePrefix {
		t.Errorf("a one-shot client bootstrapped through its own internet daemon's %s: SamePrefix %v; want prefixes counted", boot[0], c.cfg.SamePrefix)
	}
}
