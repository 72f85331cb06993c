package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/config"
)

// errNotRoot explains how to get the privileges the datapath needs.
var errNotRoot = errors.New("must run as root (loading XDP programs needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON): use sudo")

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
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

func (c *clientFlags) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

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
