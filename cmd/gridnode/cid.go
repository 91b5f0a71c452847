package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gridnode/gridnode/cids"
)

// CIDCommand prints the CID of files.
type CIDCommand struct{}

// Run executes the command.
func (c *CIDCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode cid", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode cid FILE...

Prints the CID of each file (CIDv1, raw codec, sha2-256 of the whole file), the same as
'ipfs block put --cid-codec raw' gives for a block that fits. Each line is
  CID  NAME
as sha256sum prints them, for one file or many. FILE "-" is standard input, named "-".
`)
	}
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return badUsage(fs, "no FILE given (use - for standard input)")
	}
	for _, name := range fs.Args() {
		var b []byte
		var err error
		if name == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(name)
		}
		if err != nil {
			return fmt.Errorf("cid: %w", err)
		}
		fmt.Printf("%s  %s\n", cids.Sum(b), name)
	}
	return nil
}
