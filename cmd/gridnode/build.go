package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gridnode/gridnode/cids"
	examplejobs "github.com/gridnode/gridnode/examples/jobs"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/sdk"
)

// BuildCommand compiles a C job, or one of the bundled examples, with the job SDK.
type BuildCommand struct{}

// Run executes the command.
func (c *BuildCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode build", flag.ContinueOnError)
	out := fs.String("o", "", "output `FILE` (default: the source's name without .c, or the example's name)")
	example := fs.String("example", "", "build the bundled example `NAME` ("+strings.Join(examplejobs.Names(), ", ")+")")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: gridnode build [-o FILE] SOURCE.c
       gridnode build --example NAME [-o FILE]

Compiles a job written in C against the job SDK (sdk/gridjob.h, built in) with the
machine's C compiler ($CC, cc or gcc):
  cc %s
checks that the sandbox accepts the result, and prints its path and CID.

Flags:
`, strings.Join(sdk.Flags(), " "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if (*example == "") == (fs.NArg() == 0) || fs.NArg() > 1 {
		fs.Usage()
		return errUsage
	}
	var path string
	if *example != "" {
		src, err := examplejobs.Source(*example)
		if err != nil {
			return err
		}
		path = *out
		if path == "" {
			path = *example
		}
		if err := sdk.Compile(ctx, src, path); err != nil {
			return err
		}
	} else {
		path = *out
		if path == "" {
			path = strings.TrimSuffix(filepath.Base(fs.Arg(0)), ".c")
		}
		if err := sdk.CompileFile(ctx, fs.Arg(0), path); err != nil {
			return err
		}
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := sandbox.Validate(bin, sandbox.DefaultLimits()); err != nil {
		return fmt.Errorf("built %s, but the sandbox would refuse it: %w", path, err)
	}
	fmt.Printf("%s  %s\n", cids.Sum(bin), path)
	return nil
}
