package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/gridnode/gridnode/cids"
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
	Stderr     string `json:"stderr"`
}

// Run executes the command.
func (c *SandboxCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode sandbox", flag.ContinueOnError)
	lim := sandbox.DefaultLimits()
	addLimitFlags(fs, &lim)
	input := fs.String("input", "", "read the job's stdin from `FILE` instead of standard input")
	asJSON := fs.Bool("json", false, "print one JSON report instead of the job's output")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode sandbox [flags] JOB

Runs a static ELF job in the local sandbox, exactly as a worker would: strict seccomp
(only read, write, exit and sigreturn), the limits below, no environment, no files.
The job's stdin comes from standard input (or --input), its stdout goes to stdout.

Exit status: 0 when the job exited 0; the job's own code when it exited non-zero;
1 when it was killed, stopped by a limit or rejected; 2 for bad usage.
With --json, one object with job_cid, status (exited, violation, crashed, cpu_limit,
wall_timeout, output_limit, rejected), exit_code, signal, error, cpu_ms, wall_ms,
output_cid, output_size, output (base64) and stderr.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
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
	res, runErr := (&sandbox.Runner{}).Run(ctx, sandbox.Job{Binary: bin, Stdin: stdin}, lim)
	if *asJSON {
		rep := sandboxReport{
			JobCID:     cids.Sum(bin).String(),
			Status:     string(res.Status),
			ExitCode:   res.ExitCode,
			Signal:     res.Signal,
			CPUMs:      res.CPUTime.Milliseconds(),
			WallMs:     res.WallTime.Milliseconds(),
			OutputCID:  cidString(res.OutputCID),
			OutputSize: len(res.Output),
			Output:     res.Output,
			Stderr:     string(res.Stderr),
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
	return jobExit(string(res.Status), res.ExitCode, res.Reason, runErr, *asJSON)
}

// addLimitFlags registers --cpu, --wall, --mem and --max-output on fs, defaulting to lim.
func addLimitFlags(fs *flag.FlagSet, lim *sandbox.Limits) {
	fs.DurationVar(&lim.CPU, "cpu", lim.CPU, "CPU time limit (Go duration; enforced in whole seconds)")
	fs.DurationVar(&lim.Wall, "wall", lim.Wall, "wall-clock limit (Go duration)")
	fs.Var((*sizeFlag)(&lim.Memory), "mem", "memory limit: segments + stack (e.g. 256MiB)")
	fs.Var((*sizeFlag)(&lim.MaxOutput), "max-output", "stdout limit (e.g. 16MiB)")
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
