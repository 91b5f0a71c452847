package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
)

// RunCommand runs the gridnode daemon.
type RunCommand struct {
	// faulty, set only by the testnet's faulty-node form (testnet_faults.go), makes the
	// node misbehave: it edits the config and returns what to do once the node is open.
	faulty func(cfg *node.Config) (started func(ctx context.Context, n *node.Node) error)
}

// Run executes the command.
func (c *RunCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode run", flag.ContinueOnError)
	var listen, boot, relays stringsFlag
	var lim sandbox.Limits // the most a job may ask for; unset: the stock limits
	data := fs.String("data", "", "data `DIR` holding the identity key and blob store (default $XDG_DATA_HOME/gridnode or ~/.local/share/gridnode)")
	fs.Var(&listen, "listen", fmt.Sprintf("listen on multiaddr `ADDR` (repeatable; default TCP and QUIC on port %d)", node.DefaultPort))
	fs.Var(&boot, "bootstrap", "join the grid through the peer at full multiaddr `ADDR` (repeatable)")
	fs.Var(&relays, "relay", "use the relay at full multiaddr `ADDR` when behind NAT (repeatable)")
	slots := fs.Int("slots", 0, fmt.Sprintf("jobs run at once (default half the CPUs, at least 1: %d here)", jobs.DefaultSlots()))
	maxLoad := fs.Float64("max-load", 0, "admit no job while the machine's non-grid load is above `L`: its runnable tasks (procs_running in /proc/stat) less the grid jobs running, averaged over about 10 s (0: admit whatever the load)")
	perPeer := fs.Int("slots-per-peer", 0, "slots one peer may hold at once (default half the slots, rounded up)")
	jobUIDs := fs.String("job-uids", "", "uids that jobs run as when run as root, FIRST-LAST, one per running job; none may belong to a user or file (default 2100000000-2100000255)")
	var quota int64
	fs.Var((*sizeFlag)(&quota), "store-quota", "disk space for stored job binaries, least recently used evicted first (default 2GiB)")
	api := fs.String("api", "", "also serve the submit API on loopback TCP `ADDR` (127.0.0.1:PORT), where requests need the token in DIR/"+node.APITokenFile)
	reach := fs.String("reach", "auto", "addresses the node dials: `R` is public, lan (also private and link-local), loopback, or auto (the widest of the listen and bootstrap addresses)")
	noMDNS := fs.Bool("no-mdns", false, "do not look for other gridnode nodes on the LAN with multicast DNS")
	relayService := fs.Bool("relay-service", false, "relay connections for grid nodes behind NAT (only on a machine with a public address; see docs/donating.md)")
	worker := fs.Bool("worker", true, "run jobs for others; --worker=false for a bootstrap or relay node that only serves the grid")
	verbose := fs.Bool("v", false, "log debug messages")
	addLimitFlags(fs, &lim, "the stock limit") // here, the most a job may ask for
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode run [flags]

Runs a grid node: donates idle CPU by running other peers' jobs under strict seccomp.
Prints the node's peer ID and then its listen addresses, one per line, on stdout; logs go
to stderr. SIGINT or SIGTERM stop it; running jobs are killed and reported cancelled.
The limits below are the largest a job may ask for. Jobs run under SCHED_IDLE, so they
only get CPU time nothing else on the machine wants; --slots and --max-load keep them off
the machine altogether: both are stated in every offer the node signs, and a job asked for
while the load is above --max-load is refused as busy ("the donor's machine is busy").

It joins the grid through the --bootstrap peers, the peers listed in DIR/bootstrap (one
full multiaddr per line), the peers it remembered from its last run (DIR/peers), and
gridnode nodes on the LAN (mDNS, unless --no-mdns); it keeps retrying them while it is
cut off. Behind a home router it uses UPnP/NAT-PMP, hole punching and relays.

The local submit API ('gridnode submit --api') is served on the unix socket DIR/api.sock,
which only this user may open (mode 0600), with the bearer token in DIR/api.token (0600);
--api adds loopback TCP with the same token.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return badUsage(fs, "no arguments expected, got %q", fs.Args())
	}
	if *slots < 0 || *perPeer < 0 || quota < 0 || !(*maxLoad >= 0) {
		return badUsage(fs, "--slots, --slots-per-peer, --store-quota and --max-load must not be negative")
	}
	uids, err := parseUIDRange(*jobUIDs)
	if err != nil {
		return badUsage(fs, "--job-uids: %v", err)
	}
	r, ok := node.ParseReach(*reach)
	if !ok {
		return badUsage(fs, "--reach %q: want public, lan, loopback or auto", *reach)
	}
	log := newLogger(slog.LevelInfo, *verbose)
	cfg := node.Config{
		Reach:        r,
		DataDir:      *data,
		Listen:       listen,
		Bootstrap:    boot,
		Relays:       relays,
		Slots:        *slots,
		MaxLoad:      *maxLoad,
		SlotsPerPeer: *perPeer,
		StoreQuota:   quota,
		JobUIDs:      uids,
		Limits:       lim,
		Worker:       *worker,
		MDNS:         !*noMDNS,
		RelayService: *relayService,
		Logger:       log,
	}
	started := func(context.Context, *node.Node) error { return nil }
	if c.faulty != nil {
		started = c.faulty(&cfg)
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

// newLogger returns the text logger on stderr that every command uses, at lvl or, with
// debug, at debug level.
func newLogger(lvl slog.Level, debug bool) *slog.Logger {
	if debug {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (s *stringsFlag) String() string { return strings.Join(*s, ",") }
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
