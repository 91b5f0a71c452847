package main

import (
	"context"
	"fmt"
	"os"

	"github.com/gridnode/gridnode/node"
)

// PauseCommand pauses a running daemon's worker.
type PauseCommand struct{}

// Run executes the command.
func (c *PauseCommand) Run(ctx context.Context, args []string) error {
	fs, cf := newControlFlags("pause", `Usage: gridnode pause [flags]

Stops the daemon's worker from taking jobs until 'gridnode resume': every new request
is refused BUSY ("paused by the donor") and its signed offer shows no free slot and says
it is paused, so submitters pick other workers. Running jobs finish, unless --cancel.
The pause lasts until resume or the daemon's restart.
`, `With --json, the object of POST /v1/pause: paused, running (jobs still running),
cancelled.
`)
	cancel := fs.Bool("cancel", false, "also cancel the jobs running now (their submitters get CANCELLED and go elsewhere)")
	if err := cf.parse(args, false); err != nil {
		return err
	}
	path := "/v1/pause"
	if *cancel {
		path += "?cancel=1"
	}
	return pauseOrResume(ctx, cf, path)
}

func pauseOrResume(ctx context.Context, cf *controlFlags, path string) error {
	api, err := cf.client()
	if err != nil {
		return err
	}
	var ps node.PauseState
	if err := api.Post(ctx, path, nil, &ps); err != nil {
		return err
	}
	if cf.json {
		return printJSON(os.Stdout, ps)
	}
	switch {
	case !ps.Paused:
		fmt.Println("resumed: taking jobs again")
	case ps.Cancelled:
		fmt.Println("paused: no new jobs; the running ones were cancelled")
	case ps.Running > 0:
		fmt.Printf("paused: no new jobs; %d running finish first\n", ps.Running)
	default:
		fmt.Println("paused: no new jobs")
	}
	return nil
}
