package main

import (
	"context"
	"flag"
	"fmt"
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
'ipfs block put --cid-codec raw' gives for a block that fits.
`)
	}
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	for _, name := range fs.Args() {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		if fs.NArg() == 1 {
			fmt.Println(cids.Sum(b))
		} else {
			fmt.Printf("%s  %s\n", cids.Sum(b), name)
		}
	}
	return nil
}

// usageErr maps a flag parsing error to errUsage, keeping -h/--help a success.
func usageErr(err error) error {
	if err == flag.ErrHelp {
		return err
	}
	return errUsage
}
