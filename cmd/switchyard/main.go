// Command switchyard is the Switchyard L4 load balancer: the balancer daemon
// (run), the backend agent (agent), and the operator's CLI.
package main

import (
	"errors"
	"fmt"
	"os"
)

type command struct {
	name    string
	summary string
	run     func(args []string) error
}

var commands = []command{
	{"run", "run the balancer daemon on this host", runRun},
	{"agent", "run the backend agent (decap, VIPs on lo, DSR sysctls)", runAgent},
	{"status", "show VIPs, backends, health and rates (--agent: a backend agent)", runStatus},
	{"flows", "list the connection table", runFlows},
	{"drain", "stop new flows to a backend (established flows continue)", runDrain},
	{"undrain", "let a drained backend take new flows again", runUndrain},
	{"reload", "re-read the daemon's configuration file", runReload},
	{"remove", "detach the datapath and delete its pins (drops every flow)", runRemove},
	{"testserver", "run the small HTTP/UDP server used by the demo and tests", runTestserver},
	{"demo", "build a namespace topology and run real traffic through it", runDemo},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: switchyard COMMAND [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\n`switchyard COMMAND -h` shows a command's flags.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	if a := os.Args[1]; a == "-h" || a == "--help" || a == "help" {
		// Asked for: not an error, as with `switchyard COMMAND -h`.
		usage()
		return
	}
	for _, c := range commands {
		if c.name == os.Args[1] {
			if err := c.run(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "switchyard %s: %v\n", c.name, err)
				if _, ok := errors.AsType[*usageError](err); ok {
					os.Exit(2)
				}
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "switchyard: unknown command %q\n\n", os.Args[1])
	usage()
	os.Exit(2)
}
