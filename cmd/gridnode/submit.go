package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
)

// SubmitCommand submits a job to the grid, or a batch of them (batch.go).
type SubmitCommand struct{}

// submitOpts are a submit's parsed flags that say where it goes.
type submitOpts struct {
	api      apiFlag
	boot     []string
	data     string // "": the default data dir
	noDaemon bool
	logf     *logFlags
}

// Run executes the command.
func (c *SubmitCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode submit", flag.ContinueOnError)
	var o submitOpts
	var boot stringsFlag
	var lim sandbox.Limits // unset: each worker's defaults
	fs.Var(&boot, "bootstrap", "join the grid through the peer at full multiaddr `ADDR` (repeatable), unless the data dir's daemon is in its grid (see --no-daemon)")
	fs.Var(&o.api, "api", "submit through the daemon's unix socket (in --data) and only through it; --api=ADDR for a socket path, or for the loopback HOST:PORT of 'gridnode run --api'")
	fs.BoolVar(&o.noDaemon, "no-daemon", false, "never go through the data dir's daemon: join the grid from this process (through --bootstrap, else the data dir's bootstrap and remembered peers)")
	data := fs.String("data", "", "data `DIR`: the daemon's to go through (its socket and token); when joining, where the record of workers (workers.json), trusted-peers and the peers to join through are read (default $XDG_DATA_HOME/gridnode or ~/.local/share/gridnode)")
	var trust stringsFlag
	fs.Var(&trust, "trust", "trust worker `PEERID` to anchor quorums: one of your own machines (repeatable)")
	var trustFiles stringsFlag
	fs.Var(&trustFiles, "trust-file", "trust the workers listed in `FILE`, one peer ID per line, # comments (repeatable)")
	verifyLocal := fs.Bool("verify-local", false, "also run the job in this machine's sandbox; that run anchors the quorum")
	samePrefix := fs.Bool("same-prefix", false, "count replicas from one network prefix (/24, /48) as many votes: a testnet on one machine or a grid on one LAN")
	adaptive := fs.Bool("adaptive", false, "run the job on one worker with 10 agreements and none against, alone, except 1 job in 10 (BOINC's adaptive replication)")
	input := fs.String("input", "", "the job's stdin from `FILE` (default standard input, unless it is a terminal)")
	inputs := fs.String("inputs", "", "batch: one job for each regular file in `DIR`, its bytes as stdin (with --outputs)")
	outputs := fs.String("outputs", "", "batch: write each job's output and outcome to `DIR`, a directory other than --inputs")
	parallel := fs.Int("parallel", defaultParallel, "batch: jobs of inputs over 64 KiB in flight at once, at most `N` (smaller ones go in batches the workers' free slots pace)")
	replicas := fs.Int("replicas", 2, "independent workers to run the job on (R)")
	quorum := fs.Int("quorum", 0, "identical results needed to accept one (Q, at most R; default R)")
	maxReplicas := fs.Int("max-replicas", 0, "most workers to try when results fail or disagree (M, at least R; default 2R+1)")
	asJSON := fs.Bool("json", false, "print one JSON report instead of the output (batch: one JSON line per job and a summary line)")
	timeout := fs.Duration("timeout", 0, "give up after `D`, the whole batch with --inputs (default: never)")
	o.logf = addLogFlags(fs, slog.LevelWarn)
	addLimitFlags(fs, &lim, "each worker's default")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode submit [flags] JOB
       gridnode submit [flags] --inputs DIR --outputs DIR JOB

Runs the static ELF job on independent grid workers and prints the output they agreed on.

Where it goes: through the daemon of the data dir (--data, default ~/.local/share/gridnode)
when one runs there and answers (already in the grid, its connections warm); otherwise it
joins the grid itself as a short-lived client peer, through --bootstrap or else the data
dir's bootstrap file and the peers its daemon remembered (DIR/bootstrap, DIR/peers), and
fails saying what to do when it has none. A socket that does not answer within 2s (a
daemon that crashed or hangs) is passed over with a note. With --bootstrap, the daemon
is used (and stderr says so) when it is in that grid: it is a --bootstrap peer or
connected to one; otherwise, or with --no-daemon, submit joins through --bootstrap
itself. --api goes through a daemon and only through it: its unix socket DIR/api.sock,
or --api=HOST:PORT (loopback TCP; the token is read from DIR/api.token). Progress goes to
stderr: on a terminal one status line (finding workers, sending the binary, running on N
of R, verifying), else plain lines.

The job's binary is checked here as a worker checks it: a file the sandbox would refuse
is never sent. The accepted replica's stdout goes to stdout and its stderr (at most
64 KiB) to stderr after it; replicas must agree on both.

Verification (docs/TRUST.md): a result is accepted once Q replicas agree on output,
stderr, status, exit code and signal, counting one per network prefix (--same-prefix: one
per worker), and one of them is anchored: a worker you trust (--trust, --trust-file,
DIR/trusted-peers), this machine's own run (--verify-local), or a worker with an
established record with you (3 agreements with accepted results and none against, kept
in DIR/workers.json). Refusals, failures, timeouts and disagreement send the job to more
workers, up to M. Where no worker can anchor a quorum (a new grid), submit says so and
sends nothing: it never believes strangers alone. A busy grid is waited on (--timeout).

`+batchHelp+`
`+exitHelp+`
With --json, one object: job_cid, input_cid, and for the verdict a quorum agreed on
output_cid, stderr_cid, status, exit_code, signal, reason, output and stderr (base64);
error and error_kind (rejected, no_workers, no_quorum, no_trust, timeout, cancelled,
failed) when the submit failed; replicas: [{worker, status, exit_code, signal,
output_cid, stderr_cid, receipt_valid, receipt (base64), error, anchor (trusted,
established, local or ""), prefix, local, cpu_ms, wall_ms}], every worker asked, with
why it did not count in error. It is printed on failures too.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseArgs(fs, args); err != nil {
		return usageErr(err)
	}
	o.boot, o.data = boot, *data
	batch := *inputs != "" || *outputs != ""
	switch {
	case o.api.set && o.api.addr == "" && fs.NArg() == 2:
		return badUsage(fs, "write --api=ADDR, with '='")
	case fs.NArg() == 0:
		return badUsage(fs, "no JOB given")
	case fs.NArg() > 1:
		return badUsage(fs, "one JOB at a time, got %d arguments (a batch of inputs: --inputs DIR --outputs DIR)", fs.NArg())
	case o.api.set && len(boot) > 0:
		return badUsage(fs, "--api and --bootstrap exclude each other: --api goes through a daemon, --bootstrap joins the grid from here")
	case o.api.set && o.noDaemon:
		return badUsage(fs, "--api and --no-daemon exclude each other")
	case batch && (*inputs == "" || *outputs == ""):
		return badUsage(fs, "--inputs and --outputs go together")
	case batch && *input != "":
		return badUsage(fs, "--input is one job's stdin; a batch reads --inputs")
	case *parallel < 1 || *parallel > maxParallel:
		return badUsage(fs, "--parallel %d: from 1 to %d", *parallel, maxParallel)
	}
	req := jobs.Request{Limits: lim, Replicas: *replicas, Quorum: *quorum, MaxReplicas: *maxReplicas,
		VerifyLocal: *verifyLocal, SamePrefix: *samePrefix, Adaptive: *adaptive}
	if err := req.Settle(); err != nil {
		return badUsage(fs, "%v", err)
	}
	for _, s := range trust {
		p, err := peer.Decode(s)
		if err != nil {
			return badUsage(fs, "--trust %q: not a peer ID: %v", s, err)
		}
		req.Trust = append(req.Trust, p)
	}
	for _, f := range trustFiles {
		ps, err := node.ReadTrustFile(f)
		if err != nil {
			return badUsage(fs, "--trust-file: %v", err)
		}
		req.Trust = append(req.Trust, ps...)
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	if batch {
		return runBatch(ctx, batchConfig{opts: o, req: req, job: fs.Arg(0), inputs: *inputs, outputs: *outputs,
			parallel: *parallel, asJSON: *asJSON})
	}
	sp := newSubmitProgress(os.Stderr, req.Replicas, req.Quorum) // progress.go
	defer sp.Close()
	progress := sp.Line
	start := time.Now()
	// From here on every failure is a report, so that --json always prints one object.
	rep := func() *jobs.ReportJSON {
		bin, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return jobs.JSON(nil, err)
		}
		in, err := readInput(*input)
		if err != nil {
			return jobs.JSON(nil, err)
		}
		// Before joining the grid: a file that is not a job says so even when the grid is away.
		if _, err := jobs.CheckBinary(bin, lim); err != nil {
			return jobs.JSON(nil, fmt.Errorf("submit: %w", err))
		}
		req.Binary, req.Input = bin, in
		g, err := o.open(ctx, progress, progress)
		if err != nil {
			return jobs.JSON(nil, err)
		}
		defer g.Close()
		return g.submit(ctx, req)
	}()
	sp.Close() // the status line ends before the output and the result's line
	err := rep.Err()
	if err == nil {
		v := jobs.Verdict{Status: rep.Status, ExitCode: rep.ExitCode, Signal: rep.Signal}
		progress(fmt.Sprintf("%s in %v", v.Outcome(), time.Since(start).Round(time.Millisecond)))
	}
	if *asJSON {
		if jerr := printJSON(os.Stdout, rep); jerr != nil {
			return jerr
		}
	} else if err == nil {
		os.Stdout.Write(rep.Output)
		os.Stderr.Write(rep.Stderr)
	}
	return jobExit(rep.Status, rep.ExitCode, rep.Signal, rep.Reason, err, *asJSON)
}

// daemonProbeTimeout is how long submit waits for the data dir's daemon to answer before
// it joins the grid itself: a socket left by a crashed daemon refuses at once, a hung one
// never answers.
const daemonProbeTimeout = 2 * time.Second

// grid is where a submit goes: a daemon's API, or a one-shot peer of this process.
type grid struct {
	api *node.APIClient
	n   *node.Node
}

// open finds where the submit goes (see the help's "Where it goes"): note gets the lines
// a user should read (a daemon passed over, the daemon used instead of --bootstrap),
// progress is the one-shot peer's (nil for none).
func (o *submitOpts) open(ctx context.Context, note, progress func(string)) (*grid, error) {
	dir := o.data
	if dir == "" {
		var err error
		if dir, err = node.DefaultDataDir(); err != nil {
			return nil, err
		}
	}
	if o.api.set {
		c, err := apiClient(o.api.addr, dir)
		if err != nil {
			return nil, err
		}
		note("submitting through " + c.Addr)
		return &grid{api: c}, nil
	}
	if !o.noDaemon {
		c, st, why := probeDaemon(ctx, dir)
		switch {
		case c != nil && len(o.boot) > 0 && !inGridOf(ctx, c, st, o.boot):
			note("the daemon on " + dir + " is not connected to the --bootstrap peers: joining the grid through them from here")
		case c != nil:
			if len(o.boot) > 0 {
				note("a daemon on " + dir + " is in the grid of --bootstrap: submitting through it (--no-daemon joins from here)")
			}
			note("submitting through " + c.Addr)
			return &grid{api: c}, nil
		case why != "":
			note(why + ": joining the grid from here")
		}
	}
	boot := o.boot
	if len(boot) == 0 {
		peers, err := node.JoinPeers(dir)
		if err != nil {
			return nil, err
		}
		if len(peers) == 0 {
			return nil, fmt.Errorf("no daemon runs on %s and it lists no peer to join the grid through: start one with 'gridnode run --data %s' (it joins through --bootstrap ADDR or %s, and remembers its peers in %s), or give --bootstrap ADDR",
				dir, dir, filepath.Join(dir, node.BootstrapFile), filepath.Join(dir, node.PeersFile))
		}
		boot = peers
	}
	// A one-shot client peer, with the record of workers and the trust of the data dir.
	ps, err := node.ReadTrustFile(filepath.Join(dir, node.TrustFile))
	if err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return nil, err
	}
	n, err := node.Open(ctx, node.Config{Ephemeral: true, Bootstrap: boot, Logger: o.logf.logger(), Progress: progress,
		Records: filepath.Join(dir, node.RecordsFile), History: filepath.Join(dir, node.HistoryFile), Trust: ps})
	if err != nil {
		return nil, err
	}
	return &grid{n: n}, nil
}

// probeDaemon returns a client of the daemon of data dir dir and its status if it answers
// within daemonProbeTimeout; else nil and why not ("" when there is no socket at all).
func probeDaemon(ctx context.Context, dir string) (*node.APIClient, node.Status, string) {
	var st node.Status
	sock := filepath.Join(dir, node.APISocket)
	if _, err := os.Lstat(sock); err != nil {
		return nil, st, ""
	}
	c := &node.APIClient{Addr: sock}
	pctx, cancel := context.WithTimeout(ctx, daemonProbeTimeout)
	defer cancel()
	err := c.Get(pctx, "/v1/status", &st)
	switch {
	case err == nil:
		return c, st, ""
	case ctx.Err() != nil:
		return nil, st, ""
	case pctx.Err() != nil:
		return nil, st, fmt.Sprintf("the daemon at %s did not answer within %v", sock, daemonProbeTimeout)
	case errors.Is(err, node.ErrNoDaemon):
		return nil, st, fmt.Sprintf("no daemon listens on %s (a crashed one left it)", sock)
	}
	return nil, st, fmt.Sprintf("the daemon at %s: %v", sock, err)
}

// inGridOf reports whether the daemon c (whose status is st) is one of the boot peers or
// connected to one: then it is in the grid they name, and a user who names another grid
// (a testnet beside a daemon of the real grid) gets that one.
func inGridOf(ctx context.Context, c *node.APIClient, st node.Status, boot []string) bool {
	want := map[string]bool{}
	for _, a := range boot {
		if ai, err := peer.AddrInfoFromString(a); err == nil {
			want[ai.ID.String()] = true
		}
	}
	if want[st.PeerID] {
		return true
	}
	pctx, cancel := context.WithTimeout(ctx, daemonProbeTimeout)
	defer cancel()
	var ps node.Peers
	if err := c.Get(pctx, "/v1/peers", &ps); err != nil {
		return false
	}
	return slices.ContainsFunc(ps.Peers, func(p node.PeerStatus) bool { return want[p.PeerID] })
}

// submit runs req and reports how it went; only a report's Err says it failed.
func (g *grid) submit(ctx context.Context, req jobs.Request) *jobs.ReportJSON {
	if g.api == nil {
		return jobs.JSON(g.n.Submit(ctx, req))
	}
	rep, err := g.api.Submit(ctx, req)
	if err != nil {
		return jobs.JSON(nil, err)
	}
	return rep
}

// Close leaves the grid when this process joined it.
func (g *grid) Close() {
	if g.n != nil {
		g.n.Close()
	}
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
