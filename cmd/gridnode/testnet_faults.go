package main

import (
	"context"
	"fmt"
	"time"

	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/testnet"
)

// faultyNodeArg and nodeArg are the hidden first arguments of `gridnode testnet` that run
// one node of a testnet: `gridnode testnet node RUN-FLAGS` is `gridnode run RUN-FLAGS` tuned
// for a grid whose nodes all share one machine (oneMachine), and `gridnode testnet
// faulty-node BEHAVIOUR RUN-FLAGS` is that node misbehaving as
// testnet.ParseBehaviour(BEHAVIOUR) says ("liar+boaster"). They are how the testnet gives a
// child process test-only settings without a production flag: `gridnode run` has none, and
// neither lists them in its help.
const (
	faultyNodeArg = "faulty-node"
	nodeArg       = "node"
)

func runFaultyNode(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("testnet %s: no behaviour given", faultyNodeArg)
	}
	b, err := testnet.ParseBehaviour(args[0])
	if err != nil {
		return fmt.Errorf("testnet %s: %w", faultyNodeArg, err)
	}
	return runTestnetNode(ctx, args[1:], b)
}

func runTestnetNode(ctx context.Context, args []string, b testnet.Behaviour) error {
	return (&RunCommand{testnet: func(cfg *node.Config) func(context.Context, *node.Node) error {
		oneMachine(cfg)
		return b.Configure(cfg)
	}}).Run(ctx, args)
}

// oneMachine tunes a node for a testnet of many processes on one machine, where every
// connection's handshake and keep-alives, and every DHT query, take the same few cores
// from all the nodes at once (BenchmarkTestnetScale).
//   - Buckets of 10, not 20: a lookup ends once the 10 closest peers answered, and the
//     connections kad-dht keeps (its two nearest buckets) are at most 20, so a 50-node
//     grid is no full mesh; records then live on 10 peers, so that a testnet of a few
//     dozen nodes also exercises routing, not one bucket that holds everybody.
//   - The connection manager trims past 24 connections down to 12 once they are 10s old,
//     instead of past 128 after a minute.
func oneMachine(cfg *node.Config) {
	cfg.DHTBucketSize = 10
	cfg.ConnLow, cfg.ConnHigh, cfg.ConnGrace = 12, 24, 10*time.Second
}
