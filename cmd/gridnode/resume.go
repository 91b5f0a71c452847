package main

import (
	"context"
	"flag"
	"fmt"
)

// ResumeCommand resumes a paused daemon's worker.
type ResumeCommand struct{}

// Run executes the command.
func (c *ResumeCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode resume", flag.ContinueOnError)
	cf := addControlFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode resume [flags]

Undoes 'gridnode pause': the daemon's worker takes jobs again and offers its free slots.

`+controlHelp+`
With --json, the object of POST /v1/resume: paused (false), running, cancelled (false).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseArgs(fs, args); err != nil {
		return usageErr(err)
	}
	if fs.NArg() > 0 {
		return badUsage(fs, "no arguments expected, got %q", fs.Args())
	}
	return pauseOrResume(ctx, cf, "/v1/resume")
}
