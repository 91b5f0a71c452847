// Command gridnode runs a peer-to-peer volunteer grid node, submits jobs to the grid and runs
// jobs in the local sandbox.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/sandbox"
)

// command is one subcommand; each lives in its own file as an XCommand type.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

// commands lists the subcommands in the order `gridnode --help` shows them.
var commands = []command{
	{"cid", "print the CID of files", (&CIDCommand{}).Run},
	{"build", "compile a C job (or a bundled example) with the job SDK", (&BuildCommand{}).Run},
	{"sandbox", "run a job in the local sandbox", (&SandboxCommand{}).Run},
	{"run", "run a grid node that donates idle CPU", (&RunCommand{}).Run},
	{"config", "print the configuration 'gridnode run' would use, and where each value came from", (&ConfigCommand{}).Run},
	{"submit", "run a job on the grid and print the verified output", (&SubmitCommand{}).Run},
	{"status", "show a running daemon's health, and why jobs may not be arriving", (&StatusCommand{}).Run},
	{"peers", "list a running daemon's connected peers", (&PeersCommand{}).Run},
	{"jobs", "list the recent jobs a daemon ran and submitted", (&JobsCommand{}).Run},
	{"job", "describe one job: every replica, its receipt, why it counted or not", (&JobCommand{}).Run},
	{"result", "print a submitted job's accepted output again", (&ResultCommand{}).Run},
	{"credit", "show the CPU time submitters verified, export or check the signed records", (&CreditCommand{}).Run},
	{"pause", "stop the daemon's worker from taking jobs", (&PauseCommand{}).Run},
	{"resume", "let a paused worker take jobs again", (&ResumeCommand{}).Run},
	{"dashboard", "serve a web page of a running daemon's health, jobs, peers and credit", (&DashboardCommand{}).Run},
	{"testnet", "run a local grid of nodes on 127.0.0.1", (&TestnetCommand{}).Run},
	{"demo", "run one job end to end on an in-process grid", (&DemoCommand{}).Run},
	{"version", "print the version and commit", versionCommand},
}

// Exit statuses, as timeout(1), env(1) and chroot(1) give them; a job that exited passes
// its own status through.
const (
	exitTimeout  = 124 // the job's wall-clock limit, or submit's --timeout, ran out
	exitFailed   = 125 // gridnode itself failed, or was used wrongly
	exitRejected = 126 // the job was refused before it ran
	exitSignal   = 128 // + N: the job, or gridnode, was killed by signal N
)

// exitHelp is the exit status paragraph of every job command's --help.
const exitHelp = `Exit status, as timeout(1) and env(1) give it:
  N       the job exited with status N (0: success)
  124     the job ran past its wall-clock limit (--wall), or submit's --timeout ran out
  125     gridnode itself failed: bad flags or arguments, no workers, no quorum, network
  126     the job was rejected before it ran (not a static job ELF, over a limit)
  128+N   the job was killed by signal N: 137 (SIGKILL) for a forbidden system call or
          the output limit, 139 for SIGSEGV, 152 (SIGXCPU) or 137 at the CPU limit
  130     gridnode was interrupted by Ctrl-C (143 by SIGTERM)
`

// errUsage reports bad usage; the reason and the usage have been printed already.
var errUsage = errors.New("usage")

// jobOutcome is a job that ran, or was refused, and did not exit 0; exitCode turns it into
// the exit status. It has been reported already.
type jobOutcome struct {
	status   string
	exitCode int
	signal   string
}

func (o jobOutcome) Error() string { return "job " + o.status }

// reported wraps an error that a --json report has shown already; main prints nothing more.
type reported struct{ err error }

func (r reported) Error() string { return r.err.Error() }
func (r reported) Unwrap() error { return r.err }

// jobExit maps a job's outcome to the command's result: nil when the job exited 0, else a
// jobOutcome, or runErr when the run itself failed. Without --json it names a job that did
// not exit on stderr (gridnode: job crashed: SIGSEGV) and main prints runErr; with --json
// the report already holds both.
func jobExit(status string, exitCode int, signal, reason string, runErr error, asJSON bool) error {
	switch {
	case runErr != nil && asJSON:
		return reported{runErr}
	case runErr != nil:
		return runErr
	case status == string(sandbox.StatusExited) && exitCode == 0:
		return nil
	}
	if !asJSON && status != string(sandbox.StatusExited) {
		line := "gridnode: job " + status
		why := signal
		switch {
		case why == "":
			why = reason
		case reason != "" && reason != "killed by "+signal:
			why += " (" + reason + ")"
		}
		if why != "" {
			line += ": " + why
		}
		fmt.Fprintln(os.Stderr, line)
	}
	return jobOutcome{status: status, exitCode: exitCode, signal: signal}
}

// exitCode is gridnode's exit status (see exitHelp) for err, the result of run with ctx.
func exitCode(ctx context.Context, err error) int {
	var job jobOutcome
	var sig signalCause
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &job):
		switch sandbox.Status(job.status) {
		case sandbox.StatusExited:
			return job.exitCode
		case sandbox.StatusWallTimeout:
			return exitTimeout
		case sandbox.StatusRejected:
			return exitRejected
		case sandbox.StatusViolation, sandbox.StatusOutputLimit:
			return exitSignal + int(syscall.SIGKILL) // both are killed with SIGKILL
		}
		if n := unix.SignalNum(job.signal); n > 0 {
			return exitSignal + int(n) // crashed, cpu_limit
		}
		return exitFailed
	case errors.Is(err, errUsage):
		return exitFailed
	case errors.As(context.Cause(ctx), &sig):
		return exitSignal + int(sig.sig)
	case errors.Is(err, context.DeadlineExceeded):
		return exitTimeout
	case errors.Is(err, sandbox.ErrRejected), errors.Is(err, jobs.ErrRejected):
		return exitRejected
	}
	return exitFailed
}

// printJSON writes v to w as indented JSON, the form of every --json report.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// signalCause is the main context's cause when SIGINT or SIGTERM cancelled it.
type signalCause struct{ sig syscall.Signal }

func (s signalCause) Error() string { return "interrupted by " + unix.SignalName(s.sig) }

// notifyContext is signal.NotifyContext with the signal as the context's cause, for the
// exit status 128+N.
func notifyContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-ch:
			cancel(signalCause{s.(syscall.Signal)})
		case <-ctx.Done():
		}
	}()
	return ctx, func() { signal.Stop(ch); cancel(nil) }
}

func main() {
	ctx, stop := notifyContext()
	err := run(ctx, os.Args[1:])
	stop()
	var job jobOutcome
	var rep reported
	if err != nil && !errors.Is(err, flag.ErrHelp) && !errors.Is(err, errUsage) && !errors.As(err, &job) && !errors.As(err, &rep) {
		fmt.Fprintln(os.Stderr, "gridnode:", err)
	}
	os.Exit(exitCode(ctx, err))
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, "gridnode: no command\n\n")
		usage(os.Stderr)
		return errUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(os.Stdout)
		return nil
	case "help":
		if len(args) == 1 {
			usage(os.Stdout)
			return nil
		}
		args = []string{args[1], "--help"} // gridnode help CMD
	case "-version", "--version":
		return versionCommand(ctx, args[1:])
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:])
		}
	}
	fmt.Fprintf(os.Stderr, "gridnode: unknown command %q\n\n", args[0])
	usage(os.Stderr)
	return errUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, "gridnode shares spare CPU on a peer-to-peer grid; jobs run under strict seccomp.\n\nUsage:\n  gridnode <command> [flags] [args]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun 'gridnode <command> --help' for a command's flags; 'gridnode --version' for the version.\n")
}

// parseArgs parses args into fs with flags and positional arguments in any order, as in
// `gridnode sandbox JOB --json`; "--" ends the flags. -h and --help print the usage on
// stdout and return flag.ErrHelp; a bad flag prints "gridnode CMD: reason" and the usage on
// stderr and returns errUsage.
func parseArgs(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	err := splitAndParse(fs, args)
	fs.SetOutput(nil)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(os.Stdout)
		fs.Usage()
		fs.SetOutput(nil)
		return flag.ErrHelp
	}
	return badUsage(fs, "%v", err)
}

// splitAndParse is parseArgs without the printing: it moves the flags (and the values of
// those that take one) before the positional arguments and parses them.
func splitAndParse(fs *flag.FlagSet, args []string) error {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case len(a) < 2 || a[0] != '-': // "-" is an argument: stdin
			pos = append(pos, a)
		default:
			flags = append(flags, a)
			name := strings.TrimPrefix(a[1:], "-")
			if strings.Contains(name, "=") {
				continue
			}
			// A flag that takes a value takes the next argument, whatever it looks like,
			// as the flag package does; an unknown one is left to fs.Parse to report.
			if f := fs.Lookup(name); f != nil && !isBoolFlag(f) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	if err := fs.Parse(flags); err != nil {
		return err
	}
	return fs.Parse(append([]string{"--"}, pos...)) // only sets fs.Args
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// badUsage prints "gridnode CMD: reason" and fs's usage on stderr and returns errUsage.
func badUsage(fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(os.Stderr, "%s: %s\n\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.SetOutput(os.Stderr)
	fs.Usage()
	fs.SetOutput(nil)
	return errUsage
}

// usageErr is the result of parseArgs' error: parseArgs has reported it already.
func usageErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return flag.ErrHelp
	}
	return errUsage
}

// versionCommand prints the module version and the VCS commit that `go build` embeds in a
// git checkout; `go run` and `go test` binaries may lack them: "(devel)" and "unknown".
func versionCommand(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode version", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode version   (or gridnode --version)

Prints the version, the commit it was built from (", modified" when the checkout had
uncommitted changes) and the Go version.
`)
	}
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return badUsage(fs, "no arguments expected, got %q", fs.Args())
	}
	version, rev, modified := "(devel)", "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision":
				rev = s.Value
			case s.Key == "vcs.modified" && s.Value == "true":
				modified = ", modified"
			}
		}
	}
	fmt.Printf("gridnode %s (commit %s%s, %s)\n", version, rev, modified, runtime.Version())
	return nil
}
