package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gridnode/gridnode/internal/config"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
)

// RunCommand runs the gridnode daemon.
type RunCommand struct {
	// testnet, set only by the testnet's node forms (testnet_faults.go), tunes the node for
	// a testnet on one machine and makes a faulty one misbehave: it edits the config and
	// returns what to do once the node is open.
	testnet func(cfg *node.Config) (started func(ctx context.Context, n *node.Node) error)
}

// runFlags are gridnode run's flags. They are also the keys of its config file
// (internal/config), which `gridnode config` reads with this same flag set: a new flag is a
// new key, with nothing else to keep in step.
type runFlags struct {
	fs                                *flag.FlagSet
	listen, boot, relays              stringsFlag
	lim                               sandbox.Limits // the most a job may ask for; unset: the stock limits
	quota                             int64
	data, jobUIDs, api, reach, config *string
	metrics, hours                    *string
	slots, perPeer, cpuShare          *int
	maxLoad                           *float64
	noMDNS, relayService, worker      *bool
	log                               *logFlags
}

// configFlag is the flag naming the config file; it is not a key of the file.
const configFlag = "config"

func newRunFlags(name string) *runFlags {
	f := &runFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	fs := f.fs
	f.config = fs.String(configFlag, "", "read defaults for these flags from the TOML `FILE` (default $XDG_CONFIG_HOME/gridnode/config.toml or ~/.config/gridnode/config.toml, if it exists; --config= for none); see 'gridnode config'")
	f.data = fs.String("data", "", "data `DIR` holding the identity key and blob store (default $XDG_DATA_HOME/gridnode or ~/.local/share/gridnode)")
	fs.Var(&f.listen, "listen", fmt.Sprintf("listen on multiaddr `ADDR` (repeatable; default TCP and QUIC on port %d)", node.DefaultPort))
	fs.Var(&f.boot, "bootstrap", "join the grid through the peer at full multiaddr `ADDR` (repeatable)")
	fs.Var(&f.relays, "relay", "use the relay at full multiaddr `ADDR` when behind NAT (repeatable)")
	f.slots = fs.Int("slots", 0, fmt.Sprintf("jobs run at once (default half the CPUs, at least 1: %d here)", jobs.DefaultSlots()))
	f.maxLoad = fs.Float64("max-load", 0, "admit no job while the machine's non-grid load is above `L`: its runnable tasks (procs_running in /proc/stat) less the grid jobs running, averaged over about 10 s (0: admit whatever the load)")
	f.hours = fs.String("hours", "", "admit jobs only within these `WINDOWS` of the local clock, such as 'Mon-Fri 18:00-08:00, Sat-Sun 00:00-24:00' (see below; default always)")
	f.cpuShare = fs.Int("cpu-share", 0, "let jobs use at most `P` percent of the machine's CPUs together, such as 50 (1 to 100; default 0: no cap)")
	f.perPeer = fs.Int("slots-per-peer", 0, "slots one peer may hold at once (default half the slots, rounded up)")
	f.jobUIDs = fs.String("job-uids", "", "uids that jobs run as when run as root, FIRST-LAST, one per running job; none may belong to a user or file (default 2100000000-2100000255)")
	fs.Var((*sizeFlag)(&f.quota), "store-quota", "disk space for stored job binaries, least recently used evicted first (default 2GiB)")
	f.api = fs.String("api", "", "also serve the submit API on loopback TCP `ADDR` (127.0.0.1:PORT), where requests need the token in DIR/"+node.APITokenFile)
	f.metrics = fs.String("metrics", "", "serve Prometheus metrics at GET /metrics on `HOST:PORT`, such as 127.0.0.1:9090 (no job data, no token; a host other than loopback, such as 0.0.0.0, serves whoever can reach it)")
	f.reach = fs.String("reach", "auto", "addresses the node dials: `R` is public, lan (also private and link-local), loopback, or auto (the widest of the listen and bootstrap addresses)")
	f.noMDNS = fs.Bool("no-mdns", false, "do not look for other gridnode nodes on the LAN with multicast DNS")
	f.relayService = fs.Bool("relay-service", false, "relay connections for grid nodes behind NAT (only on a machine with a public address; see docs/donating.md)")
	f.worker = fs.Bool("worker", true, "run jobs for others; --worker=false for a bootstrap or relay node that only serves the grid")
	f.log = addLogFlags(fs, slog.LevelInfo)
	addLimitFlags(fs, &f.lim, "the stock limit") // here, the most a job may ask for
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode run [flags]

Runs a grid node: donates idle CPU by running other peers' jobs under strict seccomp.
Prints the node's peer ID and then its listen addresses, one per line, on stdout; logs go
to stderr. SIGINT or SIGTERM stop it; running jobs are killed and reported cancelled.
The limits below are the largest a job may ask for. Jobs run under SCHED_IDLE, so they
only get CPU time nothing else on the machine wants; --slots and --max-load keep them off
the machine altogether: both are stated in every offer the node signs, and a job asked for
while the load is above --max-load is refused as busy ("the donor's machine is busy").

--hours gives the times jobs are admitted, on this machine's clock and time zone: windows
separated by commas, each an optional day or day range (Mon, Tue, Wed, Thu, Fri, Sat, Sun;
Mon-Fri; Fri-Mon wraps) and a time range HH:MM-HH:MM, 00:00 to 24:00; no day means every
day. A range that ends before it starts crosses midnight and belongs to the day it starts
on: 'Mon-Fri 18:00-08:00' is Monday 18:00 to Tuesday 08:00, ..., Friday 18:00 to Saturday
08:00. Outside the windows jobs are refused as busy ("outside the donor's hours") and
offers show no free slot; running jobs finish ('gridnode pause --cancel' ends them).
--cpu-share holds the running jobs to P percent of the CPUs by stopping and continuing
them on a 100 ms cycle (no root needed); a job's wall limit then counts only the time it
was let run, so it takes longer but does the same work. Each job must get a quarter of a
core or more with every slot busy, so P cannot be below 25 x slots / CPUs.

It joins the grid through the --bootstrap peers, the peers listed in DIR/bootstrap (one
full multiaddr per line), the peers it remembered from its last run (DIR/peers), and
gridnode nodes on the LAN (mDNS, unless --no-mdns); it keeps retrying them while it is
cut off. Behind a home router it uses UPnP/NAT-PMP, hole punching and relays.

The local submit API ('gridnode submit --api') is served on the unix socket DIR/api.sock,
which only this user may open (mode 0600), with the bearer token in DIR/api.token (0600);
--api adds loopback TCP with the same token.

Every flag can be set in the config file (--config) under its own name, as in
'slots = 4' or 'bootstrap = ["/ip4/..."]'; a flag given here overrides the file.
'gridnode config' prints the configuration in force.

Flags:
`)
		fs.PrintDefaults()
	}
	return f
}

// parse parses args and then the config file, and returns where each value came from.
func (f *runFlags) parse(args []string) (path string, src map[string]config.Source, err error) {
	fs := f.fs
	if err := parseArgs(fs, args); err != nil {
		return "", nil, err
	}
	if fs.NArg() != 0 {
		return "", nil, badUsage(fs, "no arguments expected, got %q", fs.Args())
	}
	path, explicit := *f.config, false
	fs.Visit(func(fl *flag.Flag) { explicit = explicit || fl.Name == configFlag })
	if !explicit {
		if path, err = config.DefaultPath(); err != nil {
			return "", nil, err
		}
	}
	if src, err = config.Apply(fs, path, explicit, configFlag); err != nil {
		return "", nil, err
	}
	return path, src, nil
}

// Run executes the command.
func (c *RunCommand) Run(ctx context.Context, args []string) error {
	f := newRunFlags("gridnode run")
	if _, _, err := f.parse(args); err != nil {
		return err
	}
	fs := f.fs
	listen, boot, relays, lim, quota := f.listen, f.boot, f.relays, f.lim, f.quota
	data, jobUIDs, api, reach := f.data, f.jobUIDs, f.api, f.reach
	slots, perPeer, maxLoad := f.slots, f.perPeer, f.maxLoad
	noMDNS, relayService, worker := f.noMDNS, f.relayService, f.worker
	if *slots < 0 || *perPeer < 0 || quota < 0 || !(*maxLoad >= 0) {
		return badUsage(fs, "--slots, --slots-per-peer, --store-quota and --max-load must not be negative")
	}
	if *f.cpuShare < 0 || *f.cpuShare > 100 {
		return badUsage(fs, "--cpu-share %d: want 1 to 100 (0: no cap)", *f.cpuShare)
	}
	hours, err := jobs.ParseHours(*f.hours, time.Local)
	if err != nil {
		return badUsage(fs, "--%v", err)
	}
	uids, err := parseUIDRange(*jobUIDs)
	if err != nil {
		return badUsage(fs, "--job-uids: %v", err)
	}
	r, ok := node.ParseReach(*reach)
	if !ok {
		return badUsage(fs, "--reach %q: want public, lan, loopback or auto", *reach)
	}
	log := f.log.logger()
	var metrics net.Listener // before the node starts, so that a bad address stops nothing
	if *f.metrics != "" {
		if metrics, err = node.ListenMetrics(*f.metrics); err != nil {
			return err
		}
		defer metrics.Close()
	}
	cfg := node.Config{
		Reach:        r,
		DataDir:      *data,
		Listen:       listen,
		Bootstrap:    boot,
		Relays:       relays,
		Slots:        *slots,
		MaxLoad:      *maxLoad,
		Hours:        hours,
		CPUShare:     *f.cpuShare,
		SlotsPerPeer: *perPeer,
		StoreQuota:   quota,
		JobUIDs:      uids,
		Limits:       lim,
		Worker:       *worker,
		MDNS:         !*noMDNS,
		RelayService: *relayService,
		Metrics:      *f.metrics != "",
		Logger:       log,
	}
	started := func(context.Context, *node.Node) error { return nil }
	if c.testnet != nil {
		started = c.testnet(&cfg)
	}
	n, err := node.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	if err := started(ctx, n); err != nil {
		return err
	}
	if _, err := n.ServeAPI(*api); err != nil {
		return err
	}
	if metrics != nil {
		if err := n.ServeMetrics(metrics); err != nil {
			return err
		}
	}
	var b strings.Builder
	fmt.Fprintln(&b, n.ID())
	for _, a := range n.Addrs() {
		fmt.Fprintln(&b, a)
	}
	os.Stdout.WriteString(b.String())
	<-ctx.Done()
	log.Info("shutting down")
	return n.Close()
}

// stringsFlag is a repeatable string flag; a config file gives it an array.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Get() any           { return []string(*s) }
func (s *stringsFlag) IsRepeatable() bool { return true }
func (s *stringsFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// parseUIDRange parses FIRST-LAST; "" is the zero range (the default).
func parseUIDRange(s string) (sandbox.UIDRange, error) {
	if s == "" {
		return sandbox.UIDRange{}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.ParseUint(a, 10, 32)
	last, err2 := strconv.ParseUint(b, 10, 32)
	switch {
	case !ok || err1 != nil || err2 != nil:
		return sandbox.UIDRange{}, fmt.Errorf("%q: want FIRST-LAST, as in 2100000000-2100000255", s)
	case first == 0 || last < first:
		return sandbox.UIDRange{}, fmt.Errorf("%q: want 0 < FIRST <= LAST", s)
	case last-first >= 1<<16:
		return sandbox.UIDRange{}, fmt.Errorf("%q: at most 65536 uids", s)
	}
	return sandbox.UIDRange{First: uint32(first), Count: int(last - first + 1)}, nil
}
