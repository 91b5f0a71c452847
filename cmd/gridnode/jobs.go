package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/gridnode/gridnode/history"
	"github.com/gridnode/gridnode/node"
)

// JobsCommand lists the recent jobs a daemon ran and submitted.
type JobsCommand struct{}

// Run executes the command.
func (c *JobsCommand) Run(ctx context.Context, args []string) error {
	fs, cf := newControlFlags("jobs", `Usage: gridnode jobs [flags]

Lists the newest jobs in the daemon's history, newest first: those it ran as a worker
(for whom, the outcome its receipt states, CPU time) and those it submitted (the verdict
a quorum accepted, or why none was, and how many replicas agreed). 'gridnode job ID'
shows one in full, 'gridnode result ID' prints a submitted job's output again. The
history survives restarts and keeps the newest 10000 jobs (and 64 MiB) by default.
`, `With --json, the object of GET /v1/jobs?limit=N: jobs [{id, kind (ran or submitted),
start, end, job_cid, input_cid, submitter, output_cid, stderr_cid, status, exit_code,
signal, cpu_ms, wall_ms, receipt, error, error_kind, accepted, reason, stderr,
replicas, output_size, output_kept}], as 'gridnode job --json' prints each.
`)
	limit := fs.Int("limit", 20, "list the newest `N` jobs (at most 10000)")
	if err := cf.parse(args, false); err != nil {
		return err
	}
	if *limit < 1 || *limit > history.DefaultMaxJobs {
		return badUsage(fs, "--limit %d: want 1 to %d", *limit, history.DefaultMaxJobs)
	}
	var list node.JobList
	if err := cf.get(ctx, "/v1/jobs?limit="+strconv.Itoa(*limit), &list); err != nil {
		return err
	}
	if cf.json {
		return printJSON(os.Stdout, list)
	}
	if len(list.Jobs) == 0 {
		fmt.Println("no jobs in the history yet")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tENDED\tJOB\tOUTCOME\tDETAIL")
	for _, j := range list.Jobs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Kind, when(j.End), shortID(j.JobCID), outcome(j.Status, j.ExitCode, j.Signal), jobDetail(j))
	}
	return tw.Flush()
}

// jobDetail is a job's one-line summary for the table.
func jobDetail(j history.Job) string {
	if j.Kind == history.KindRan {
		if j.Error != "" {
			return "for " + shortID(j.Submitter) + ": " + oneLine(j.Error, 60)
		}
		return fmt.Sprintf("for %s, cpu %d ms", shortID(j.Submitter), j.CPUMs)
	}
	agree := 0
	for _, r := range j.Replicas {
		if r.Error == "" {
			agree++
		}
	}
	if !j.Accepted {
		return fmt.Sprintf("not accepted (%d replicas): %s", len(j.Replicas), oneLine(j.Error, 60))
	}
	return fmt.Sprintf("accepted: %d of %d replicas agree", agree, len(j.Replicas))
}
