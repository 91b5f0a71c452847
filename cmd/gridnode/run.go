package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
)

// RunCommand runs the gridnode daemon.
type RunCommand struct{}

// Run executes the command.
func (c *RunCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode run", flag.ContinueOnError)
	var listen, boot, relays stringsFlag
	lim := sandbox.DefaultLimits()
	data := fs.String("data", "", "data `DIR` holding the identity key and blob store (default $XDG_DATA_HOME/gridnode or ~/.local/share/gridnode)")
	fs.Var(&listen, "listen", fmt.Sprintf("listen on multiaddr `ADDR` (repeatable; default TCP and QUIC on port %d)", node.DefaultPort))
	fs.Var(&boot, "bootstrap", "join the grid through the peer at full multiaddr `ADDR` (repeatable)")
	fs.Var(&relays, "relay", "use the relay at full multiaddr `ADDR` when behind NAT (repeatable)")
	slots := fs.Int("slots", 0, "jobs run at once (default the number of CPUs)")
	api := fs.String("api", "", "serve a local submit API on `ADDR` (127.0.0.1:PORT only)")
	verbose := fs.Bool("v", false, "log debug messages")
	addLimitFlags(fs, &lim)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode run [flags]

Runs a grid node: donates idle CPU by running other peers' jobs under strict seccomp.
Prints the node's peer ID and then its listen addresses, one per line, on stdout; logs go
to stderr. SIGINT or SIGTERM stop it; running jobs are killed and reported cancelled.
The limits below are the largest a job may ask for.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	log := newLogger(slog.LevelInfo, *verbose)
	n, err := node.Open(ctx, node.Config{
		DataDir:   *data,
		Listen:    listen,
		Bootstrap: boot,
		Relays:    relays,
		Slots:     *slots,
		Limits:    lim,
		Worker:    true,
		Logger:    log,
	})
	if err != nil {
		return err
	}
	defer n.Close()
	var apiErr chan error
	if *api != "" {
		if apiErr, err = serveAPI(ctx, n, *api, log); err != nil {
			return err
		}
	}
	var b strings.Builder
	fmt.Fprintln(&b, n.ID())
	for _, a := range n.Addrs() {
		fmt.Fprintln(&b, a)
	}
	os.Stdout.WriteString(b.String())
	select {
	case <-ctx.Done():
	case err := <-apiErr:
		return err
	}
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

// serveAPI serves the local submit API on addr until ctx ends; the channel reports a server
// that stopped on its own.
func serveAPI(ctx context.Context, n *node.Node, addr string, log *slog.Logger) (chan error, error) {
	ln, err := node.ListenAPI(addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: n.APIHandler(), ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- fmt.Errorf("api: %w", srv.Serve(ln)) }()
	context.AfterFunc(ctx, func() { srv.Close() })
	log.Info("submit API listening", "addr", ln.Addr())
	return errc, nil
}
