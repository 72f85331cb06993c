package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/config"
)

// errNotRoot explains how to get the privileges the datapath needs.
var errNotRoot = errors.New("must run as root (loading XDP programs needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON): use sudo")

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, &usageError{fmt.Sprintf("--log-level %q: use debug, info, warn or error", level)}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// clientFlags are the flags of the CLI commands that talk to a daemon.
type clientFlags struct {
	socket  string
	json    bool
	timeout time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.socket, "socket", config.DefaultAPISocket, "API socket of the daemon")
	fs.BoolVar(&c.json, "json", false, "print JSON for scripts")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "give up after this long")
}

// context bounds a request by --timeout, which must be positive: a zero
// or negative one would fail every request with "did not answer in time"
// before it is sent. It also checks --socket, which every request uses.
func (c *clientFlags) context() (context.Context, context.CancelFunc, error) {
	if c.timeout <= 0 {
		return nil, nil, &usageError{fmt.Sprintf("--timeout %v: give a positive duration, such as 30s", c.timeout)}
	}
	// Longer, connecting failed with "invalid argument".
	if len(c.socket) > api.MaxSocketPath {
		return nil, nil, &usageError{fmt.Sprintf("--socket %s is %d bytes, longer than the %d a unix socket path may have: give the daemon's api.socket", c.socket, len(c.socket), api.MaxSocketPath)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	return ctx, cancel, nil
}

// usageError is a command line a command cannot take. main exits 2 on it,
// as the flag package does on an unknown flag, so that a script can tell a
// wrong call from a failed one.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// parseInterspersed parses flags that may come before or after positional
// arguments (`switchyard drain be1 --socket S` and `drain --socket S be1`),
// returning the positionals.
func parseInterspersed(fs *flag.FlagSet, args []string) []string {
	var pos []string
	for {
		fs.Parse(args)
		if fs.NArg() == 0 {
			return pos
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseFlagsOnly parses the flags of a command that takes no positional
// arguments. The flag package stops at the first one and ignores the rest,
// so `switchyard flows web --json` listed every VIP's flows as a table, and
// `switchyard run my.yaml` ran the default configuration file: refuse them.
func parseFlagsOnly(fs *flag.FlagSet, args []string) error {
	if pos := parseInterspersed(fs, args); len(pos) > 0 {
		return &usageError{fmt.Sprintf("unexpected argument %q: this command takes only flags (`switchyard %s -h` lists them)", pos[0], fs.Name())}
	}
	return nil
}

// newFlagSet returns the flag set of command name, whose usage (-h) starts
// with the command line it takes, as `switchyard -h` writes it.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: switchyard %s [flags]\n\n", name)
		fs.PrintDefaults()
	}
	return fs
}

// hideFlags makes fs's usage (-h) list its flags but the hidden ones,
// which stay usable: flags for tests, which an operator has no use for.
func hideFlags(fs *flag.FlagSet, hidden ...string) {
	fs.Usage = func() {
		shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
		shown.SetOutput(fs.Output())
		fs.VisitAll(func(f *flag.Flag) {
			if slices.Contains(hidden, f.Name) {
				return
			}
			shown.Var(f.Value, f.Name, f.Usage)
			// Var takes the value as set by the command line so far.
			shown.Lookup(f.Name).DefValue = f.DefValue
		})
		fmt.Fprintf(fs.Output(), "usage: switchyard %s [flags]\n\n", fs.Name())
		shown.PrintDefaults()
	}
}
