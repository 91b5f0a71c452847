package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
)

// The commands that ask a running daemon through its local control API (status, peers,
// jobs, job, result, pause, resume) share these flags; docs/API.md has the JSON.

// controlFlags are --data, --api and --json, in the flag set fs.
type controlFlags struct {
	fs        *flag.FlagSet
	data, api string
	json      bool
}

// newControlFlags returns the flag set of the control command 'gridnode name' with the
// control flags; its --help is about, controlHelp, jsonHelp (what --json prints) and the
// flags.
func newControlFlags(name, about, jsonHelp string) (*flag.FlagSet, *controlFlags) {
	fs := flag.NewFlagSet("gridnode "+name, flag.ContinueOnError)
	c := addControlFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), about+"\n"+controlHelp+"\n"+jsonHelp+"\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs, c
}

func addControlFlags(fs *flag.FlagSet) *controlFlags {
	c := &controlFlags{fs: fs}
	fs.StringVar(&c.data, "data", "", "the daemon's data `DIR`, with its socket and token (default $XDG_DATA_HOME/gridnode or ~/.local/share/gridnode)")
	fs.StringVar(&c.api, "api", "", "the daemon's API at `ADDR`: a unix socket path, or the loopback HOST:PORT of 'gridnode run --api' (default DIR/api.sock)")
	fs.BoolVar(&c.json, "json", false, "print the daemon's answer as JSON (keys in docs/API.md)")
	return c
}

// parse parses args into the flag set: the command takes one job ID if wantID, else no
// argument.
func (c *controlFlags) parse(args []string, wantID bool) error {
	if err := parseArgs(c.fs, args); err != nil {
		return usageErr(err)
	}
	switch n := c.fs.NArg(); {
	case wantID && n != 1:
		return badUsage(c.fs, "want one job ID, got %d arguments", n)
	case !wantID && n > 0:
		return badUsage(c.fs, "no arguments expected, got %q", c.fs.Args())
	}
	return nil
}

// client is the API client the flags name.
func (c *controlFlags) client() (*node.APIClient, error) { return apiClient(c.api, c.data) }

// get asks the daemon for path and decodes its answer into v.
func (c *controlFlags) get(ctx context.Context, path string, v any) error {
	api, err := c.client()
	if err != nil {
		return err
	}
	return api.Get(ctx, path, v)
}

// controlHelp ends the --help of every control command.
const controlHelp = `It asks the daemon ('gridnode run') through its local control API: the unix socket
DIR/api.sock (or --api), with the token in DIR/api.token. Without a daemon it says so and
exits 125.
`

// shortID abbreviates a CID or peer ID for a table: its start and end.
func shortID(s string) string {
	if len(s) <= 16 {
		return s
	}
	return s[:8] + "…" + s[len(s)-6:]
}

// humanBytes is n in the largest binary unit that keeps it at least 1, one decimal.
func humanBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f, i := float64(n), 0
	for f >= 1024 && i < len(units)-1 {
		f, i = f/1024, i+1
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// outcome is a verdict in words, as jobs.Verdict.Outcome says it, or "-" without one.
func outcome(status string, exitCode int, signal string) string {
	if status == "" {
		return "-"
	}
	return jobs.Verdict{Status: status, ExitCode: exitCode, Signal: signal}.Outcome()
}

// when is t in local time to the second, or "-".
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// oneLine keeps s on one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
