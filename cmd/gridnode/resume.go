package main

import (
	"context"
)

// ResumeCommand resumes a paused daemon's worker.
type ResumeCommand struct{}

// Run executes the command.
func (c *ResumeCommand) Run(ctx context.Context, args []string) error {
	_, cf := newControlFlags("resume", `Usage: gridnode resume [flags]

Undoes 'gridnode pause': the daemon's worker takes jobs again and offers its free slots.
`, `With --json, the object of POST /v1/resume: paused (false), running, cancelled (false).
`)
	if err := cf.parse(args, false); err != nil {
		return err
	}
	return pauseOrResume(ctx, cf, "/v1/resume")
}
