package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/gridnode/gridnode/node"
)

// StatusCommand prints a running daemon's status.
type StatusCommand struct{}

// Run executes the command.
func (c *StatusCommand) Run(ctx context.Context, args []string) error {
	_, cf := newControlFlags("status", `Usage: gridnode status [flags]

Prints the daemon's health at a glance: its peer ID, addresses and reachability (public,
nat, nat-punch, relayed, loopback), connected peers and the DHT's routing table, slots
busy and free, the donor's policy, whether it is paused, the store against its quota,
CPU seconds donated and jobs run (all time, from the history), and uptime. When
something may keep jobs from arriving (not announced yet, no peers, paused, a busy
machine, behind NAT without a relay), it says so, most likely first.
`, `With --json, the object of GET /v1/status: api_version, peer_id, addrs, reachability,
connected_peers, routing_table, worker, announced, arch, slots_busy, slots_free, policy
{slots, slots_per_peer, limits {cpu_ms, wall_ms, memory, stack, output, binary},
max_input, max_load, hours, cpu_share}, paused, load, load_paused, off_hours, next_window,
store_used_bytes, store_quota_bytes, cpu_seconds_donated, jobs_run, history {jobs_run,
jobs_run_ok, cpu_ms_donated, jobs_submitted, jobs_accepted, since}, history_dropped,
started, uptime_seconds, reasons.
`)
	if err := cf.parse(args, false); err != nil {
		return err
	}
	var st node.Status
	if err := cf.get(ctx, "/v1/status", &st); err != nil {
		return err
	}
	if cf.json {
		return printJSON(os.Stdout, st)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, a...)) }
	row("peer", "%s", st.PeerID)
	row("reachability", "%s", st.Reachability)
	for i, a := range st.Addrs {
		k := ""
		if i == 0 {
			k = "addresses"
		}
		row(k, "%s", a)
	}
	row("peers", "%d connected, %d in the routing table", st.ConnectedPeers, st.RoutingTable)
	if st.Worker {
		ann := "announced"
		if !st.Announced {
			ann = "not announced yet"
		}
		row("worker", "%s, %d of %d slots busy, %s", st.Arch, st.SlotsBusy, st.SlotsBusy+st.SlotsFree, ann)
		if p := st.Policy; p != nil {
			pol := fmt.Sprintf("%d slots, %d per peer", p.Slots, p.SlotsPerPeer)
			if p.MaxLoad > 0 {
				pol += fmt.Sprintf(", max load %.2f (now %.2f)", p.MaxLoad, st.Load)
			}
			if p.Hours != "" {
				pol += fmt.Sprintf(", hours %s", p.Hours)
			}
			if p.CPUShare > 0 {
				pol += fmt.Sprintf(", %d%% of the CPUs", p.CPUShare)
			}
			if l := p.Limits; l != nil {
				pol += fmt.Sprintf("; a job at most cpu %v, wall %v, memory %s, output %s, binary %s, input %s",
					time.Duration(l.CpuMs)*time.Millisecond, time.Duration(l.WallMs)*time.Millisecond,
					humanBytes(int64(l.Memory)), humanBytes(int64(l.Output)), humanBytes(int64(l.Binary)), humanBytes(p.MaxInput))
			}
			row("policy", "%s", pol)
		}
		paused := "no"
		switch {
		case st.Paused:
			paused = "yes, by the donor ('gridnode resume' resumes)"
		case st.LoadPaused:
			paused = "yes, the machine is busy"
		case st.OffHours && st.NextWindow != nil:
			paused = "yes, outside the donor's hours until " + st.NextWindow.Local().Format("Mon Jan 2 15:04 MST")
		case st.OffHours:
			paused = "yes, outside the donor's hours"
		}
		row("paused", "%s", paused)
	}
	row("store", "%s of %s", humanBytes(st.StoreUsed), humanBytes(st.StoreQuota))
	if h := st.History; h != nil {
		since := ""
		if !h.Since.IsZero() {
			since = " since " + when(h.Since)
		}
		row("donated", "%.1f CPU seconds in %d jobs run (%d with a result)%s", st.CPUSeconds, h.Ran, h.RanOK, since)
		row("submitted", "%d jobs, %d accepted", h.Submitted, h.Accepted)
		if st.HistoryDropped > 0 {
			row("history", "%d records dropped (the queue was full)", st.HistoryDropped)
		}
	} else {
		row("history", "none kept")
	}
	row("uptime", "%v (since %s)", time.Duration(st.UptimeSeconds)*time.Second, when(st.Started))
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.Worker && len(st.Reasons) > 0 && st.SlotsBusy == 0 {
		fmt.Println("\nWhy jobs may not be arriving:")
		for _, r := range st.Reasons {
			fmt.Println("  - " + r)
		}
	}
	return nil
}
