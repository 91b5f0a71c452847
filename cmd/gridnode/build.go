package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
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
	out := fs.String("o", "", "output `FILE` (default: the source's base name without .c, in the current directory, or the example's name)")
	example := fs.String("example", "", "build the bundled example `NAME` ("+strings.Join(examplejobs.Names(), ", ")+")")
	var mem sizeFlag
	fs.Var(&mem, "mem", "check the job against the memory limit `SIZE`: segments + stack (default 256MiB)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: gridnode build [-o FILE] [--mem SIZE] SOURCE.c
       gridnode build --example NAME [-o FILE] [--mem SIZE]

Compiles a job written in C against the job SDK (sdk/gridjob.h, built in) with the
machine's C compiler ($CC, cc or gcc):
  cc %s SOURCE.c %s
checks that the sandbox accepts the result under --mem, and prints "CID  FILE".

The output is -o FILE, else SOURCE without its .c, in the current directory; a source
without .c needs -o. It never replaces the source, nor an existing file that is not an
ELF executable.

Exit status: 0 when built; 126 when built but the sandbox would refuse the job; 125 on
any other failure (bad usage, the compiler's errors).

Flags:
`, strings.Join(sdk.Flags(), " "), strings.Join(sdk.Libs(), " "))
		fs.PrintDefaults()
	}
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	switch {
	case *example == "" && fs.NArg() == 0:
		return badUsage(fs, "give a SOURCE.c or --example NAME")
	case *example != "" && fs.NArg() > 0:
		return badUsage(fs, "give a SOURCE.c or --example NAME, not both")
	case fs.NArg() > 1:
		return badUsage(fs, "one SOURCE.c at a time, got %d", fs.NArg())
	}
	path := *out
	if *example != "" {
		src, err := examplejobs.Source(*example)
		if err != nil {
			return badUsage(fs, "%v", err)
		}
		if path == "" {
			path = *example
		}
		if err := checkOutput(path, ""); err != nil {
			return err
		}
		if err := sdk.Compile(ctx, src, path); err != nil {
			return err
		}
	} else {
		source := fs.Arg(0)
		if path == "" {
			base := filepath.Base(source)
			if !strings.HasSuffix(base, ".c") || base == ".c" {
				return badUsage(fs, "%s does not end in .c: name the output with -o FILE", source)
			}
			path = strings.TrimSuffix(base, ".c")
		}
		if err := checkOutput(path, source); err != nil {
			return err
		}
		if err := sdk.CompileFile(ctx, source, path); err != nil {
			return err
		}
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lim := sandbox.Limits{Memory: int64(mem)}.Or(sandbox.DefaultLimits())
	if err := sandbox.Validate(bin, lim); err != nil {
		return fmt.Errorf("built %s, but the sandbox would refuse it: %w", path, err)
	}
	fmt.Printf("%s  %s\n", cids.Sum(bin), path)
	return nil
}

// errOverwrite is returned for an output path that build will not write over.
var errOverwrite = errors.New("refusing to overwrite")

// checkOutput refuses an output path that is the source itself (by name or as the same
// file), or an existing file that is not an ELF executable: `gridnode build notes.txt`
// once replaced the notes with the job.
func checkOutput(out, source string) error {
	fi, err := os.Stat(out)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("output %s: %w", out, err)
	}
	if source != "" {
		if si, err := os.Stat(source); err == nil && os.SameFile(fi, si) {
			return fmt.Errorf("%w %s: it is the source; name the output with -o FILE", errOverwrite, out)
		}
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w %s: not a regular file", errOverwrite, out)
	}
	f, err := os.Open(out)
	if err != nil {
		return fmt.Errorf("output %s: %w", out, err)
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil || !bytes.Equal(magic, []byte("\x7fELF")) {
		return fmt.Errorf("%w %s: it exists and is not an executable; remove it or choose another -o", errOverwrite, out)
	}
	return nil
}
