package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
)

// SubmitCommand submits a job to the grid.
type SubmitCommand struct{}

// submitReport is the --json output; its keys are a stable interface.
type submitReport struct {
	JobCID    string          `json:"job_cid"`
	InputCID  string          `json:"input_cid"`
	OutputCID string          `json:"output_cid"`
	Status    string          `json:"status"`
	ExitCode  int             `json:"exit_code"`
	Signal    string          `json:"signal"`
	Error     string          `json:"error,omitempty"`
	Output    []byte          `json:"output"` // base64
	Replicas  []submitReplica `json:"replicas"`
}

type submitReplica struct {
	Worker       string `json:"worker"`
	Status       string `json:"status"`
	ExitCode     int    `json:"exit_code"`
	OutputCID    string `json:"output_cid"`
	ReceiptValid bool   `json:"receipt_valid"`
	Error        string `json:"error"`
	CPUMs        int64  `json:"cpu_ms"`
	WallMs       int64  `json:"wall_ms"`
}

// Run executes the command.
func (c *SubmitCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode submit", flag.ContinueOnError)
	var boot stringsFlag
	lim := sandbox.DefaultLimits()
	fs.Var(&boot, "bootstrap", "join the grid through the peer at full multiaddr `ADDR` (repeatable)")
	var api apiFlag
	fs.Var(&api, "api", "submit through the local daemon's unix socket (in --data); --api=ADDR for a socket path, or for the loopback HOST:PORT of 'gridnode run --api'")
	data := fs.String("data", "", "the daemon's data `DIR`, for --api: its socket and token (default $XDG_DATA_HOME/gridnode or ~/.local/share/gridnode)")
	input := fs.String("input", "", "the job's stdin from `FILE` (default standard input, unless it is a terminal)")
	replicas := fs.Int("replicas", 2, "independent workers to run the job on")
	quorum := fs.Int("quorum", 0, "identical results needed to accept one (default: replicas)")
	maxReplicas := fs.Int("max-replicas", 0, "most workers to try when results fail or disagree (default 2*replicas+1)")
	asJSON := fs.Bool("json", false, "print one JSON report instead of the output")
	timeout := fs.Duration("timeout", 0, "give up after `D` (default: never)")
	verbose := fs.Bool("v", false, "log debug messages")
	addLimitFlags(fs, &lim)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode submit [flags] JOB

Runs the static ELF job on independent grid workers and prints the output they agreed on.
It joins the grid as a short-lived client peer through --bootstrap, or goes through a
running daemon with --api (its unix socket DIR/api.sock) or --api=HOST:PORT (loopback TCP;
the token is read from DIR/api.token). Progress goes to stderr.

Exit status: 0 when a quorum of workers agreed and the job exited 0; the job's own code
when it exited non-zero; 1 on any other failure; 2 for bad usage.
With --json, one object with job_cid, input_cid, output_cid, status, exit_code, signal,
output (base64) and replicas: [{worker, status, exit_code, output_cid, receipt_valid,
error, cpu_ms, wall_ms}].

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if fs.NArg() != 1 || (len(boot) == 0) == !api.set || *replicas < 1 {
		switch {
		case api.set && api.addr == "" && fs.NArg() == 2:
			fmt.Fprintln(fs.Output(), "gridnode submit: write --api=ADDR, with '='")
		case fs.NArg() == 1 && *replicas >= 1:
			fmt.Fprintln(fs.Output(), "gridnode submit: give exactly one of --bootstrap or --api")
		}
		fs.Usage()
		return errUsage
	}
	bin, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	in, err := readInput(*input)
	if err != nil {
		return err
	}
	if *quorum <= 0 {
		*quorum = *replicas
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	req := jobs.Request{Binary: bin, Input: in, Limits: lim, Replicas: *replicas, Quorum: *quorum, MaxReplicas: *maxReplicas}
	progress := func(msg string) { fmt.Fprintln(os.Stderr, "gridnode:", msg) }

	start := time.Now()
	var rep *jobs.Report
	if api.set {
		var c *node.APIClient
		if c, err = apiClient(api.addr, *data); err != nil {
			return err
		}
		progress("submitting through " + c.Addr)
		rep, err = c.Submit(ctx, req)
	} else {
		var n *node.Node
		n, err = node.Open(ctx, node.Config{Ephemeral: true, Bootstrap: boot, Logger: newLogger(slog.LevelWarn, *verbose), Progress: progress})
		if err != nil {
			return err
		}
		defer n.Close()
		rep, err = n.Submit(ctx, req)
	}
	if err == nil {
		progress(fmt.Sprintf("%s in %v", rep.Status, time.Since(start).Round(time.Millisecond)))
	}
	if *asJSON {
		if jerr := printSubmitJSON(os.Stdout, rep, err); jerr != nil {
			return jerr
		}
	} else if err == nil {
		os.Stdout.Write(rep.Output)
	}
	if err != nil {
		return jobExit("", 0, "", err, *asJSON)
	}
	return jobExit(rep.Status, rep.ExitCode, "", nil, *asJSON)
}

// apiFlag is --api, with or without a value.
type apiFlag struct {
	set  bool
	addr string
}

func (f *apiFlag) IsBoolFlag() bool { return true }
func (f *apiFlag) String() string   { return f.addr }
func (f *apiFlag) Set(v string) error {
	switch v {
	case "true":
		f.set, f.addr = true, ""
	case "false":
		f.set, f.addr = false, ""
	default:
		f.set, f.addr = true, v
	}
	return nil
}

// apiClient is the client for --api=addr: the unix socket in the data dir when addr is
// empty, a socket path when it has a '/', else loopback TCP with the data dir's token.
func apiClient(addr, dataDir string) (*node.APIClient, error) {
	if addr != "" && strings.Contains(addr, "/") {
		return &node.APIClient{Addr: addr}, nil
	}
	if dataDir == "" {
		var err error
		if dataDir, err = node.DefaultDataDir(); err != nil {
			return nil, err
		}
	}
	if addr == "" {
		return &node.APIClient{Addr: filepath.Join(dataDir, node.APISocket)}, nil
	}
	tok, err := node.ReadAPIToken(filepath.Join(dataDir, node.APITokenFile))
	if err != nil {
		return nil, fmt.Errorf("api token (the daemon's --data, here %s): %w", dataDir, err)
	}
	return &node.APIClient{Addr: addr, Token: tok}, nil
}

// readInput reads the job's input from name, or from stdin unless stdin is a terminal.
func readInput(name string) ([]byte, error) {
	if name != "" {
		return os.ReadFile(name)
	}
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return nil, nil
	}
	return io.ReadAll(os.Stdin)
}

func printSubmitJSON(w io.Writer, rep *jobs.Report, err error) error {
	out := submitReport{Replicas: []submitReplica{}}
	if rep != nil {
		out = submitReport{
			JobCID:    cidString(rep.JobCID),
			InputCID:  cidString(rep.InputCID),
			OutputCID: cidString(rep.OutputCID),
			Status:    rep.Status,
			ExitCode:  rep.ExitCode,
			Signal:    rep.Signal,
			Output:    rep.Output,
			Replicas:  make([]submitReplica, 0, len(rep.Replicas)),
		}
		for _, r := range rep.Replicas {
			out.Replicas = append(out.Replicas, submitReplica{
				Worker:       r.Worker.String(),
				Status:       r.Status,
				ExitCode:     r.ExitCode,
				OutputCID:    cidString(r.OutputCID),
				ReceiptValid: r.ReceiptValid,
				Error:        r.Err,
				CPUMs:        r.CPU.Milliseconds(),
				WallMs:       r.Wall.Milliseconds(),
			})
		}
	}
	if err != nil {
		out.Error = err.Error()
	}
	return printJSON(w, out)
}

func cidString(c cid.Cid) string {
	if !c.Defined() {
		return ""
	}
	return c.String()
}
