package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/gridnode/gridnode/node"
)

// PeersCommand lists a running daemon's connected peers.
type PeersCommand struct{}

// Run executes the command.
func (c *PeersCommand) Run(ctx context.Context, args []string) error {
	_, cf := newControlFlags("peers", `Usage: gridnode peers [flags]

Lists the peers the daemon is connected to: peer ID, the direction of the first
connection, whether it is in the DHT's routing table, whether every connection goes
through a relay, the round-trip latency, its agent and its connections' addresses.
`, `With --json, the object of GET /v1/peers: peers [{peer_id, addrs, direction (inbound or
outbound), relayed, latency_ms, agent, routing}], sorted by peer ID.
`)
	if err := cf.parse(args, false); err != nil {
		return err
	}
	var ps node.Peers
	if err := cf.get(ctx, "/v1/peers", &ps); err != nil {
		return err
	}
	if cf.json {
		return printJSON(os.Stdout, ps)
	}
	if len(ps.Peers) == 0 {
		fmt.Println("no peers connected")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tDIRECTION\tROUTING\tRELAYED\tLATENCY\tAGENT\tADDRESS")
	for _, p := range ps.Peers {
		addr := ""
		if len(p.Addrs) > 0 {
			addr = p.Addrs[0]
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%.1f ms\t%s\t%s\n", p.PeerID, p.Direction, yesNo(p.Routing), yesNo(p.Relayed), p.LatencyMs, oneLine(p.Agent, 24), addr)
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
