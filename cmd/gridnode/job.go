package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/gridnode/gridnode/history"
)

// JobCommand describes one job of a daemon's history in full.
type JobCommand struct{}

// Run executes the command.
func (c *JobCommand) Run(ctx context.Context, args []string) error {
	fs, cf := newControlFlags("job", `Usage: gridnode job [flags] ID

Describes one job of the daemon's history (ID is its number in 'gridnode jobs', or a job
CID for the newest job with it), as 'bacalhau describe' does: for a job submitted, the
verdict a quorum accepted or why none was, and every replica: its worker, network prefix
and anchor, the verdict its receipt states, whether the receipt checked out, and why it
counted or not; for a job run as a worker, who asked, the outcome, the times and the
receipt sent.
`, `With --json, the object of GET /v1/jobs/ID: id, kind, start, end, job_cid, input_cid,
submitter, output_cid, stderr_cid, status, exit_code, signal, cpu_ms, wall_ms, receipt
(base64), error, error_kind, accepted, reason, stderr (base64), replicas [{worker,
status, exit_code, signal, output_cid, stderr_cid, receipt_valid, receipt, error,
anchor, prefix, local, cpu_ms, wall_ms}], output_size, output_kept.
`)
	if err := cf.parse(args, true); err != nil {
		return err
	}
	var j history.Job
	if err := cf.get(ctx, "/v1/jobs/"+url.PathEscape(fs.Arg(0)), &j); err != nil {
		return err
	}
	if cf.json {
		return printJSON(os.Stdout, j)
	}
	describeJob(j)
	return nil
}

func describeJob(j history.Job) {
	ms := func(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
	fmt.Printf("Job %d, %s\n", j.ID, j.Kind)
	fmt.Printf("  job      %s\n  input    %s\n", j.JobCID, j.InputCID)
	if !j.Start.IsZero() {
		fmt.Printf("  started  %s\n", when(j.Start))
	}
	fmt.Printf("  ended    %s\n", when(j.End))
	if j.Kind == history.KindRan {
		fmt.Printf("  for      %s\n", j.Submitter)
		if j.Error != "" {
			fmt.Printf("  result   none sent: %s\n", j.Error)
			return
		}
		fmt.Printf("  outcome  %s\n  output   %s\n  stderr   %s\n", outcome(j.Status, j.ExitCode, j.Signal), j.OutputCID, j.StderrCID)
		fmt.Printf("  cpu      %v\n  wall     %v\n  receipt  %d bytes, signed by this worker\n", ms(j.CPUMs), ms(j.WallMs), len(j.Receipt))
		return
	}
	if j.Accepted {
		fmt.Printf("  verdict  accepted: %s\n  output   %s (%d bytes", outcome(j.Status, j.ExitCode, j.Signal), j.OutputCID, j.OutputSize)
		if !j.OutputKept {
			fmt.Print(", too large to keep")
		}
		fmt.Printf(")\n  stderr   %s\n", j.StderrCID)
		if j.Reason != "" {
			fmt.Printf("  reason   %s\n", oneLine(j.Reason, 200))
		}
	} else {
		fmt.Printf("  verdict  none accepted (%s): %s\n", j.ErrorKind, j.Error)
	}
	fmt.Printf("Replicas (%d, in the order they answered):\n", len(j.Replicas))
	for i, r := range j.Replicas {
		who := r.Worker
		if r.Local {
			who = "this machine (--verify-local)"
		}
		fmt.Printf("  %d. %s\n", i+1, who)
		anchor := r.Anchor
		if anchor == "" {
			anchor = "none (a stranger)"
		}
		if r.Prefix != "" {
			fmt.Printf("     prefix   %s\n", r.Prefix)
		}
		fmt.Printf("     anchor   %s\n", anchor)
		if r.Status != "" {
			fmt.Printf("     outcome  %s, output %s, cpu %v, wall %v\n", outcome(r.Status, r.ExitCode, r.Signal), r.OutputCID, ms(r.CPUMs), ms(r.WallMs))
		}
		switch {
		case r.ReceiptValid:
			fmt.Printf("     receipt  valid (%d bytes)\n", len(r.Receipt))
		case len(r.Receipt) > 0:
			fmt.Printf("     receipt  INVALID (%d bytes)\n", len(r.Receipt))
		default:
			fmt.Println("     receipt  none")
		}
		if r.Error == "" {
			fmt.Println("     counted  yes: agrees with the accepted verdict")
		} else {
			fmt.Printf("     counted  no: %s\n", r.Error)
		}
	}
}
