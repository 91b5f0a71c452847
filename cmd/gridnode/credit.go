package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/credit"
	"github.com/gridnode/gridnode/node"
)

// CreditCommand shows a donor's verified credit, exports its signed records, or checks an
// export offline.
type CreditCommand struct{}

// Run executes the command.
func (c *CreditCommand) Run(ctx context.Context, args []string) error {
	fs, cf := newControlFlags("credit", `Usage: gridnode credit [flags]

Shows the CPU time this worker donated that submitters verified: after a quorum accepts a
verdict, the submitter signs a credit record for each worker whose replica agreed (job,
input, worker, the CPU time of the worker's receipt, a hash of that receipt, the
submitter, the time), and the worker keeps it once it has checked that it names a job it
ran for that submitter. A replica that disagreed or failed earns none. Totals by submitter
and by day.

--export writes the records, each with its signed envelope (base64), one JSON object a
line; anyone can check such a file with 'gridnode credit --verify FILE', which checks
every signature and that each line says what its envelope does, and exits 125 if any does
not.
`, `With --json, the object of GET /v1/credit: records, cpu_seconds, by_submitter
[{submitter, records, cpu_seconds}] (most first), by_day [{day, records, cpu_seconds}]
(UTC, oldest first); --verify --json prints the same for the records that check out.
`)
	export := fs.String("export", "", "write the signed records to `FILE` as JSON lines ('-': stdout)")
	verify := fs.String("verify", "", "check an export in `FILE` offline ('-': stdin); needs no daemon")
	worker := fs.String("worker", "", "with --verify, also check that every record is for worker `PEERID`")
	if err := cf.parse(args, false); err != nil {
		return err
	}
	if *verify != "" && *export != "" {
		return badUsage(fs, "--verify and --export: choose one")
	}
	if *worker != "" && *verify == "" {
		return badUsage(fs, "--worker is for --verify")
	}
	if *verify != "" {
		return verifyCredit(*verify, *worker, cf.json)
	}
	api, err := cf.client()
	if err != nil {
		return err
	}
	if *export != "" {
		var rs node.CreditRecords
		if err := api.Get(ctx, "/v1/credit/records", &rs); err != nil {
			return err
		}
		return exportCredit(*export, rs.Records)
	}
	var sum credit.Summary
	if err := api.Get(ctx, "/v1/credit", &sum); err != nil {
		return err
	}
	if cf.json {
		return printJSON(os.Stdout, sum)
	}
	return printCredit(os.Stdout, sum)
}

func printCredit(w io.Writer, sum credit.Summary) error {
	if sum.Records == 0 {
		fmt.Fprintln(w, "no verified credit yet: it comes when a submitter's quorum accepts a job this worker ran")
		return nil
	}
	fmt.Fprintf(w, "verified CPU: %.3f s in %d jobs\n\n", sum.CPUSeconds, sum.Records)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBMITTER\tJOBS\tCPU SECONDS")
	for _, t := range sum.BySubmitter {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\n", t.Submitter, t.Records, t.CPUSeconds)
	}
	fmt.Fprintln(tw, "\nDAY (UTC)\tJOBS\tCPU SECONDS")
	for _, t := range sum.ByDay {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\n", t.Day, t.Records, t.CPUSeconds)
	}
	return tw.Flush()
}

func exportCredit(path string, rs []credit.Record) (err error) {
	w := io.Writer(os.Stdout)
	if path != "-" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		defer func() {
			if cerr := f.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("export: %w", cerr)
			}
		}()
		w = f
	}
	enc := json.NewEncoder(w)
	for _, r := range rs {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	if path != "-" {
		fmt.Fprintf(os.Stderr, "exported %d credit records to %s\n", len(rs), path)
	}
	return nil
}

func verifyCredit(path, worker string, asJSON bool) error {
	var want peer.ID
	if worker != "" {
		var err error
		if want, err = peer.Decode(worker); err != nil {
			return fmt.Errorf("--worker %q: %w", worker, err)
		}
	}
	r := io.Reader(os.Stdin)
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		defer f.Close()
		r = f
	}
	ok, bad := credit.Verify(r, want)
	for _, err := range bad {
		fmt.Fprintf(os.Stderr, "gridnode credit: %s: %v\n", path, err)
	}
	sum := credit.Summarize(ok)
	var err error
	if asJSON {
		err = printJSON(os.Stdout, sum)
	} else {
		fmt.Printf("%d records check out, %d do not\n", len(ok), len(bad))
		err = printCredit(os.Stdout, sum)
	}
	if err == nil && len(bad) > 0 {
		err = errors.New("verify: " + fmt.Sprint(len(bad)) + " records do not check out")
	}
	return err
}
