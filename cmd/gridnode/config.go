package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gridnode/gridnode/internal/config"
)

// ConfigCommand prints the configuration `gridnode run` would use with the same flags.
type ConfigCommand struct {
	Stdout io.Writer // default os.Stdout
}

// Run executes the command.
func (c *ConfigCommand) Run(ctx context.Context, args []string) error {
	f := newRunFlags("gridnode config")
	runUsage := f.fs.Usage
	f.fs.Usage = func() {
		fmt.Fprint(f.fs.Output(), `Usage: gridnode config [--config FILE] [run flags]

Prints the configuration 'gridnode run' would use with the same flags, as a config file:
one 'key = value' line per flag of 'gridnode run', each followed by where its value came
from: default, file or flag. A flag given here overrides the file, and the file the
defaults, as for 'gridnode run'.

The config file is TOML. Its keys are the flags of 'gridnode run' spelled as on the
command line (kebab-case: max-load, store-quota), each taking what the flag takes:
a string ("10m", "256MiB", "/ip4/..."), a number or true/false; repeatable flags
(listen, bootstrap, relay) take an array of strings. A key that is not a flag is an
error naming the key and its line. The file is --config FILE (which must exist), by
default $XDG_CONFIG_HOME/gridnode/config.toml or ~/.config/gridnode/config.toml (read if
it exists); --config= reads none.

For example:
  data = "/var/lib/gridnode"
  slots = 4
  max-load = 1.5
  bootstrap = ["/ip4/203.0.113.7/tcp/4011/p2p/12D3KooW..."]
  mem = "512MiB"

The flags are those of 'gridnode run':

`)
		runUsage()
	}
	path, src, err := f.parse(args)
	if err != nil {
		return err
	}
	out := c.Stdout
	if out == nil {
		out = os.Stdout
	}
	var b strings.Builder
	if path == "" {
		fmt.Fprint(&b, "# config file: none\n")
	} else if _, err := os.Stat(path); err != nil {
		fmt.Fprintf(&b, "# config file: %s (not found)\n", path)
	} else {
		fmt.Fprintf(&b, "# config file: %s\n", path)
	}
	settings := config.Effective(f.fs, src)
	width := 0
	for _, s := range settings {
		width = max(width, len(s.Name)+len(s.Value)+3)
	}
	for _, s := range settings {
		fmt.Fprintf(&b, "%-*s  # %s\n", width, s.Name+" = "+s.Value, s.Source)
	}
	_, err = io.WriteString(out, b.String())
	return err
}
