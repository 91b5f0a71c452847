package main

import (
	"context"
	"net/url"
	"os"

	"github.com/gridnode/gridnode/history"
)

// ResultCommand prints the accepted output of a job the daemon submitted.
type ResultCommand struct{}

// Run executes the command.
func (c *ResultCommand) Run(ctx context.Context, args []string) error {
	fs, cf := newControlFlags("result", `Usage: gridnode result [flags] ID

Prints the output a quorum accepted for a job the daemon submitted (ID as in 'gridnode
job'), byte for byte, on stdout, as 'gridnode submit' printed it. Workers keep no
outputs, so a job run for someone else has none; neither has a submit that reached no
verdict, nor one whose output was too large for the history (above 1/8 of its bound).
`, `With --json, one object: id, job_cid, output_cid, output (base64).
`)
	if err := cf.parse(args, true); err != nil {
		return err
	}
	path := "/v1/jobs/" + url.PathEscape(fs.Arg(0))
	var out []byte
	if err := cf.get(ctx, path+"/result", &out); err != nil {
		return err
	}
	if !cf.json {
		_, err := os.Stdout.Write(out)
		return err
	}
	var j history.Job
	if err := cf.get(ctx, path, &j); err != nil {
		return err
	}
	return printJSON(os.Stdout, struct {
		ID        uint64 `json:"id"`
		JobCID    string `json:"job_cid"`
		OutputCID string `json:"output_cid"`
		Output    []byte `json:"output"`
	}{j.ID, j.JobCID, j.OutputCID, out})
}
