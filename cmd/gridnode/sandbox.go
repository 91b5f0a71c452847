package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/sandbox"
)

// SandboxCommand runs one job in the local sandbox.
type SandboxCommand struct{}

// sandboxReport is the --json output; its keys are a stable interface.
type sandboxReport struct {
	JobCID     string `json:"job_cid"`
	Status     string `json:"status"`
	ExitCode   int    `json:"exit_code"`
	Signal     string `json:"signal"`
	Error      string `json:"error"`
	CPUMs      int64  `json:"cpu_ms"`
	WallMs     int64  `json:"wall_ms"`
	OutputCID  string `json:"output_cid"`
	OutputSize int    `json:"output_size"`
	Output     []byte `json:"output"` // base64
	Stderr     []byte `json:"stderr"` // base64, as output
}

// Run executes the command.
func (c *SandboxCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode sandbox", flag.ContinueOnError)
	var lim sandbox.Limits // unset: the sandbox's defaults
	addLimitFlags(fs, &lim, "the sandbox's")
	input := fs.String("input", "", "read the job's stdin from `FILE` instead of standard input")
	asJSON := fs.Bool("json", false, "print one JSON report instead of the job's output")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode sandbox [flags] JOB

Runs a static ELF job in the local sandbox, exactly as a worker would: strict seccomp
(only read, write, exit and sigreturn), the limits below, no environment, no files.
The job's stdin comes from standard input (or --input), read to the end before the job
starts and at most 16MiB, the grid's input limit; its stdout goes to stdout.

`+exitHelp+`
With --json, one object with job_cid, status (exited, violation, crashed, cpu_limit,
wall_timeout, output_limit, rejected), exit_code, signal, error, cpu_ms, wall_ms,
output_cid, output_size, output and stderr (both base64: the bytes as written).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseArgs(fs, args); err != nil {
		return usageErr(err)
	}
	if fs.NArg() != 1 {
		return badUsage(fs, "want one JOB, got %d arguments", fs.NArg())
	}
	// The sandbox's one-time set-up (a launcher thread in namespaces of its own, probed by
	// a fork: about 1 ms) runs while the job and its input are read, not after.
	runner := &sandbox.Runner{}
	go runner.Isolation()
	bin, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	var stdin io.Reader = os.Stdin
	if *input != "" {
		f, err := os.Open(*input)
		if err != nil {
			return err
		}
		defer f.Close()
		stdin = f
	}
	// As a worker would, the job gets its whole input, of at most the grid's limit.
	in, err := io.ReadAll(io.LimitReader(stdin, jobs.DefaultMaxInput+1))
	if err != nil {
		return fmt.Errorf("read input: %w", err)
	}
	if len(in) > jobs.DefaultMaxInput {
		return fmt.Errorf("input over the grid's %s limit: workers refuse it", formatSize(jobs.DefaultMaxInput))
	}
	res, runErr := runner.Run(ctx, sandbox.Job{Binary: bin, Stdin: bytes.NewReader(in)}, lim)
	if *asJSON {
		rep := sandboxReport{
			JobCID:     cids.Sum(bin).String(),
			Status:     string(res.Status),
			ExitCode:   res.ExitCode,
			Signal:     res.Signal,
			CPUMs:      res.CPUTime.Milliseconds(),
			WallMs:     res.WallTime.Milliseconds(),
			OutputCID:  cidOrEmpty(res.OutputCID),
			OutputSize: len(res.Output),
			Output:     res.Output,
			Stderr:     res.Stderr,
		}
		if res.Status != sandbox.StatusExited {
			rep.Error = res.Reason
		}
		if runErr != nil {
			rep.Error = runErr.Error()
		}
		if err := printJSON(os.Stdout, rep); err != nil {
			return err
		}
	} else {
		os.Stdout.Write(res.Output)
		os.Stderr.Write(res.Stderr)
	}
	return jobExit(string(res.Status), res.ExitCode, res.Signal, res.Reason, runErr, *asJSON)
}

// addLimitFlags registers --cpu, --wall, --mem and --max-output on fs, filling lim. A flag
// not given leaves its limit unset: unset names who fills it then (the sandbox, each
// worker). A given value must be positive; 0 is not "no limit", since every job has one.
func addLimitFlags(fs *flag.FlagSet, lim *sandbox.Limits, unset string) {
	d := sandbox.DefaultLimits()
	fs.Var((*durationLimit)(&lim.CPU), "cpu", fmt.Sprintf("CPU time limit `D`, a Go duration enforced in whole seconds (default: %s, stock %v)", unset, d.CPU))
	fs.Var((*durationLimit)(&lim.Wall), "wall", fmt.Sprintf("wall-clock limit `D` (default: %s, stock %v)", unset, d.Wall))
	fs.Var((*sizeLimit)(&lim.Memory), "mem", fmt.Sprintf("memory limit `SIZE`: segments + stack, e.g. 64MiB; the stack is at most a quarter of it (default: %s, stock %s)", unset, formatSize(d.Memory)))
	fs.Var((*sizeLimit)(&lim.MaxOutput), "max-output", fmt.Sprintf("stdout limit `SIZE` (default: %s, stock %s)", unset, formatSize(d.MaxOutput)))
}

// durationLimit is a time limit flag: a positive Go duration.
type durationLimit time.Duration

func (d *durationLimit) String() string {
	if d == nil || *d == 0 {
		return ""
	}
	return time.Duration(*d).String()
}

func (d *durationLimit) Set(v string) error {
	t, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return fmt.Errorf("want a Go duration such as 90s or 10m: %v", err)
	case t <= 0:
		return fmt.Errorf("%s: a limit must be positive (leave the flag out for the default)", v)
	}
	*d = durationLimit(t)
	return nil
}

// sizeLimit is a size limit flag: a positive byte count.
type sizeLimit int64

func (s *sizeLimit) String() string {
	if s == nil || *s == 0 {
		return ""
	}
	return formatSize(int64(*s))
}

func (s *sizeLimit) Set(v string) error {
	n, err := parseSize(v)
	switch {
	case err != nil:
		return err
	case n <= 0:
		return fmt.Errorf("%s: a limit must be positive (leave the flag out for the default)", v)
	}
	*s = sizeLimit(n)
	return nil
}

// sizeFlag is a byte count that accepts KiB/MiB/GiB suffixes.
type sizeFlag int64

func (s *sizeFlag) String() string { return formatSize(int64(*s)) }
func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"kB", 1e3}, {"B", 1},
}

// parseSize parses a byte count such as "4096", "64KiB", "16MiB" or "1GB".
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q: want a number of bytes with an optional KiB, MiB or GiB suffix", s)
	}
	return n * mult, nil
}

func formatSize(n int64) string {
	for _, u := range sizeUnits[:4] {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// cidOrEmpty is c's string, or "" when c is undefined (a run that failed).
func cidOrEmpty(c cid.Cid) string {
	if !c.Defined() {
		return ""
	}
	return c.String()
}
