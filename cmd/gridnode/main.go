// Command gridnode runs a peer-to-peer volunteer grid node, submits jobs to the grid and runs
// jobs in the local sandbox.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gridnode/gridnode/sandbox"
)

// command is one subcommand; each lives in its own file as an XCommand type.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

// commands lists the subcommands in the order `gridnode --help` shows them.
var commands = []command{
	{"cid", "print the CID of a file", (&CIDCommand{}).Run},
	{"build", "compile a C job (or a bundled example) with the job SDK", (&BuildCommand{}).Run},
	{"sandbox", "run a job in the local sandbox", (&SandboxCommand{}).Run},
	{"run", "run a grid node that donates idle CPU", (&RunCommand{}).Run},
	{"submit", "run a job on the grid and print the verified output", (&SubmitCommand{}).Run},
	{"testnet", "run a local grid of nodes on 127.0.0.1", (&TestnetCommand{}).Run},
	{"demo", "run one job end to end on an in-process grid", (&DemoCommand{}).Run},
}

// errUsage reports bad usage; the flag package has already printed what was wrong.
var errUsage = errors.New("usage")

// exitError carries an exit code chosen by a command without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// jobExit maps a job's outcome to the command's result: nil when the job exited 0, its own
// code when it exited non-zero, and exit status 1 when it did not exit or runErr is set.
// Without --json it names the failure on stderr (runErr through main); with --json the
// report already holds it.
func jobExit(status string, exitCode int, reason string, runErr error, asJSON bool) error {
	switch {
	case runErr != nil && asJSON:
		return exitError{1}
	case runErr != nil:
		return runErr
	case status == string(sandbox.StatusExited) && exitCode == 0:
		return nil
	case status == string(sandbox.StatusExited):
		return exitError{exitCode}
	}
	if !asJSON {
		if reason != "" {
			status += ": " + reason
		}
		fmt.Fprintf(os.Stderr, "gridnode: job %s\n", status)
	}
	return exitError{1}
}

// printJSON writes v to w as indented JSON, the form of every --json report.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "gridnode:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:])
		}
	}
	fmt.Fprintf(os.Stderr, "gridnode: unknown command %q\n\n", args[0])
	usage()
	return errUsage
}

func usage() {
	fmt.Fprint(os.Stderr, "gridnode shares spare CPU on a peer-to-peer grid; jobs run under strict seccomp.\n\nUsage:\n  gridnode <command> [flags] [args]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(os.Stderr, "\nRun 'gridnode <command> --help' for a command's flags.\n")
}
