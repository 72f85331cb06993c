package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchyard-lb/switchyard/pkg/demo"
)

func runDemo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	binary := fs.String("binary", "", "switchyard binary to run in the lab (default: this one)")
	keep := fs.Bool("keep", false, "leave the lab running at the end, to explore it")
	cleanup := fs.Bool("cleanup", false, "only remove what an earlier demo left (after --keep or an interrupted run)")
	requests := fs.Int("requests", 300, "requests of the load-spreading step")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: switchyard demo [flags]\n\n"+
			"Builds a client, a router, a balancer and three backends in network namespaces\n"+
			"(prefix %q), sends real traffic through the balancer, drains a backend under a\n"+
			"live connection, shows metrics and status, and removes everything again.\n"+
			"Ctrl-C tears down too.\n\n", demo.Prefix)
		fs.PrintDefaults()
	}
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	if *requests < 1 {
		return &usageError{fmt.Sprintf("--requests %d: give at least 1, e.g. 300", *requests)}
	}
	if os.Geteuid() != 0 {
		return errNotRoot
	}
	bin := *binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return fmt.Errorf("find this binary (use --binary): %w", err)
		}
	}
	if *cleanup {
		found, err := demo.Cleanup(bin)
		if err != nil {
			return err
		}
		if !found {
			fmt.Println("nothing to remove: no demo namespaces, pins or files on this host")
			return nil
		}
		fmt.Println("removed the demo's namespaces, processes, pins and files")
		return nil
	}
	// The first Ctrl-C cancels the demo, which then tears the lab down;
	// further ones are ignored until it is gone. So does a hangup (the
	// terminal closed, ssh dropped): it reaches only the demo, as the lab's
	// processes run in process groups of their own, which would run on
	// had the demo died of it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	// Output piped into a pager that quits early must not kill the demo
	// before its teardown.
	signal.Ignore(syscall.SIGPIPE)
	err := demo.Run(ctx, demo.Config{Binary: bin, Out: os.Stdout, Requests: *requests, Keep: *keep})
	if ctx.Err() != nil && err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	return err
}
