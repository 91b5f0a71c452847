package main

import (
	"encoding"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
)

// logFlags are the logging flags of the commands that log (run, submit, testnet): every
// one logs through log/slog to stderr, with the attribute names of docs/ARCHITECTURE.md.
type logFlags struct {
	level   slog.Level
	format  logFormat
	verbose bool
}

// addLogFlags adds --log-level (default def), --log-format and -v to fs.
func addLogFlags(fs *flag.FlagSet, def slog.Level) *logFlags {
	l := &logFlags{level: def, format: "text"}
	fs.TextVar(&l.level, "log-level", def, "log messages at `LEVEL` and above: debug, info, warn or error")
	fs.Var(&l.format, "log-format", "log `FORMAT`: text (key=value pairs) or json (one object per line)")
	fs.BoolVar(&l.verbose, "v", false, "log debug messages: --log-level debug")
	return l
}

// effective is the level in force: debug with -v, else --log-level.
func (l *logFlags) effective() slog.Level {
	if l.verbose {
		return slog.LevelDebug
	}
	return l.level
}

// logger returns the logger on stderr that the flags ask for.
func (l *logFlags) logger() *slog.Logger {
	return newHandlerLogger(os.Stderr, l.effective(), string(l.format))
}

// newLogger returns the text logger on stderr at lvl or, with debug, at debug level.
func newLogger(lvl slog.Level, debug bool) *slog.Logger {
	if debug {
		lvl = slog.LevelDebug
	}
	return newHandlerLogger(os.Stderr, lvl, "text")
}

func newHandlerLogger(w io.Writer, lvl slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		opts.ReplaceAttr = stringers
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logFormat is --log-format: text or json.
type logFormat string

func (f *logFormat) String() string { return string(*f) }
func (f *logFormat) Get() any       { return string(*f) }
func (f *logFormat) Set(v string) error {
	if v != "text" && v != "json" {
		return fmt.Errorf("%q: want text or json", v)
	}
	*f = logFormat(v)
	return nil
}

// stringers makes a JSON log show a value as the text log does when it has a String method
// and no JSON form of its own (an enum such as the node's reach would be a bare number).
func stringers(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindAny {
		return a
	}
	switch v := a.Value.Any().(type) {
	case json.Marshaler, encoding.TextMarshaler, error:
	case fmt.Stringer:
		return slog.String(a.Key, v.String())
	}
	return a
}
