package main

import (
	"context"
	"fmt"

	"github.com/gridnode/gridnode/testnet"
)

// faultyNodeArg is the hidden first argument of `gridnode testnet` that runs one faulty
// node of a testnet: `gridnode testnet faulty-node BEHAVIOUR RUN-FLAGS` is `gridnode run
// RUN-FLAGS` misbehaving as testnet.ParseBehaviour(BEHAVIOUR) says ("liar+boaster"). It is
// how the testnet gives a child process a test-only behaviour without a production flag:
// `gridnode run` has none, and neither lists it in its help.
const faultyNodeArg = "faulty-node"

func runFaultyNode(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("testnet %s: no behaviour given", faultyNodeArg)
	}
	b, err := testnet.ParseBehaviour(args[0])
	if err != nil {
		return fmt.Errorf("testnet %s: %w", faultyNodeArg, err)
	}
	return (&RunCommand{faulty: b.Configure}).Run(ctx, args[1:])
}
