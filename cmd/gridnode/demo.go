package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	examplejobs "github.com/gridnode/gridnode/examples/jobs"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/testnet"
)

// DemoCommand shows one job's whole path on an in-process grid.
type DemoCommand struct {
	Stdout io.Writer // default os.Stdout
}

// demoInputs are the inputs each example job gets unless --input says otherwise.
var demoInputs = map[string]string{
	"primes":     "1000000\n",
	"echo":       "hello from the grid\n",
	"sha256":     "hello from the grid\n",
	"mandelbrot": "64 32 256\n",
}

// Run executes the command.
func (c *DemoCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode demo", flag.ContinueOnError)
	nodes := fs.Int("nodes", 5, "worker nodes to start")
	replicas := fs.Int("replicas", 2, "workers to run the job on")
	job := fs.String("job", "primes", "example job: "+strings.Join(examplejobs.Names(), ", "))
	input := fs.String("input", "", "the job's input `TEXT` (default depends on the job)")
	verbose := fs.Bool("v", false, "log the nodes' messages to stderr")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode demo [flags]

Starts a grid of worker nodes on 127.0.0.1 inside this process, builds an example job with
the C compiler, submits it from a client peer that runs no jobs, and prints the verified
result and each replica's worker, output CID and receipt check. Needs cc (gcc or clang).

`+exitHelp+`
Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() != 0:
		return badUsage(fs, "no arguments expected, got %q", fs.Args())
	case *nodes < 1 || *replicas < 1:
		return badUsage(fs, "--nodes %d, --replicas %d: both must be at least 1", *nodes, *replicas)
	case *replicas > *nodes:
		return badUsage(fs, "--replicas %d needs at least as many --nodes, not %d", *replicas, *nodes)
	}
	out := c.Stdout
	if out == nil {
		out = os.Stdout
	}
	in := demoInputs[*job]
	if *input != "" {
		in = *input
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()

	dir, err := os.MkdirTemp("", "gridnode-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path, err := examplejobs.Build(ctx, *job, dir)
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "built example job %q: %d bytes\n", *job, len(bin))

	setup := testnet.Setup{Nodes: *nodes}
	if *verbose {
		setup.Logger = newLogger(slog.LevelDebug, true)
	}
	t0 := time.Now()
	net, err := testnet.Start(ctx, setup)
	if err != nil {
		return err
	}
	defer net.Close()
	fmt.Fprintf(out, "started %d worker nodes on 127.0.0.1 in %v\n", *nodes, time.Since(t0).Round(time.Millisecond))
	client, err := net.NewClient(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "submitting from client %s (not a worker) with %d replicas, input %q;\n", client.ID(), *replicas, in)
	fmt.Fprintf(out, "the client trusts the %d workers this demo runs to anchor its quorum (docs/TRUST.md)\n", *nodes)

	t0 = time.Now()
	rep, err := client.Submit(ctx, jobs.Request{Binary: bin, Input: []byte(in), Replicas: *replicas, Quorum: *replicas})
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	fmt.Fprintf(out, "verified by %d of %d replicas in %v\n\n", countAgreeing(rep), len(rep.Replicas), time.Since(t0).Round(time.Millisecond))
	fmt.Fprintf(out, "job    %s\ninput  %s\noutput %s\nstatus %s\n", rep.JobCID, rep.InputCID, rep.OutputCID, rep.Outcome())
	if utf8.Valid(rep.Output) && len(rep.Output) <= 4096 {
		fmt.Fprintf(out, "\n%s", rep.Output)
		if !strings.HasSuffix(string(rep.Output), "\n") {
			fmt.Fprintln(out)
		}
	} else {
		fmt.Fprintf(out, "\n(%d bytes of binary output)\n", len(rep.Output))
	}
	fmt.Fprintln(out, "\nreceipts:")
	for _, r := range rep.Replicas {
		valid := "valid"
		if !r.ReceiptValid {
			valid = "INVALID"
		}
		line := fmt.Sprintf("  worker %s  %s  output %s  receipt %s  %s", r.Worker, r.Outcome(), r.OutputCID, valid, cmp.Or(r.Anchor, "stranger"))
		if r.Err != nil {
			line += "  error: " + r.Err.Error()
		}
		fmt.Fprintln(out, line)
	}
	fmt.Fprintf(out, "\ndone in %v\n", time.Since(start).Round(time.Millisecond))
	return jobExit(rep.Status, rep.ExitCode, rep.Signal, rep.Reason, nil, false)
}

// countAgreeing counts the replicas with a valid receipt for the accepted output.
func countAgreeing(rep *jobs.Report) int {
	n := 0
	for _, r := range rep.Replicas {
		if r.ReceiptValid && r.OutputCID.Equals(rep.OutputCID) {
			n++
		}
	}
	return n
}
