// Command switchyard is the Switchyard L4 load balancer: the balancer daemon
// (run), the backend agent (agent), and the operator's CLI.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/switchyard-lb/switchyard/pkg/api"
)

type command struct {
	name    string
	summary string
	run     func(args []string) error
}

var commands = []command{
	{"run", "run the balancer daemon on this host", runRun},
	{"agent", "run the backend agent (decap, VIPs on lo, DSR sysctls)", runAgent},
	{"check", "validate a configuration file without running it (--agent: an agent's)", runCheck},
	{"status", "show VIPs, backends, health and rates (--agent: a backend agent)", runStatus},
	{"flows", "list the connection table", runFlows},
	{"drain", "stop new flows to a backend (established flows continue)", runDrain},
	{"undrain", "let a drained backend take new flows again", runUndrain},
	{"reload", "re-read the daemon's configuration file", runReload},
	{"remove", "detach the datapath and delete its pins (drops every flow)", runRemove},
	{"testserver", "run the small HTTP/UDP server used by the demo and tests", runTestserver},
	{"demo", "build a namespace topology and run real traffic through it", runDemo},
	{"version", "print this binary's version, git revision and BPF program tags", runVersion},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: switchyard COMMAND [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\n`switchyard COMMAND -h` shows a command's flags.\n")
}

// askedForHelp says whether the argument a asks for the list of commands.
func askedForHelp(a string) bool {
	return a == "help" || a == "-h" || a == "-help" || a == "--help"
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name, args := os.Args[1], os.Args[2:]
	if name == "help" && len(args) == 1 && !askedForHelp(args[0]) {
		// `switchyard help status` is `switchyard status -h`: it printed
		// the list of commands, and exited 0 for a command that does not
		// exist.
		name, args = args[0], []string{"-h"}
	} else if name == "help" && len(args) > 1 {
		fmt.Fprintf(os.Stderr, "switchyard help: name one command, not %d: %q\n\n", len(args), args)
		usage()
		os.Exit(2)
	} else if name == "--version" || name == "-version" {
		// What other daemons' users type first; its flags (--json)
		// follow as those of `switchyard version`.
		name = "version"
	} else if askedForHelp(name) {
		// Asked for: not an error, as with `switchyard COMMAND -h`.
		usage()
		return
	}
	for _, c := range commands {
		if c.name == name {
			if err := c.run(args); err != nil {
				// A client's error may hold the words of whatever
				// answers on the socket (the daemon's error text): a
				// control character in them must not reach the
				// terminal raw. Its lines stay lines.
				fmt.Fprintf(os.Stderr, "switchyard %s: %s\n", c.name, api.VisibleLines(err.Error(), "\n"))
				if _, ok := errors.AsType[*usageError](err); ok {
					os.Exit(2)
				}
				os.Exit(1)
			}
			return
		}
	}
	if strings.HasPrefix(name, "-") {
		// `switchyard --socket S status`: the flags are each command's
		// own.
		fmt.Fprintf(os.Stderr, "switchyard: %q is not a command: flags go after the command they belong to, as in `switchyard status --json` (`switchyard COMMAND -h` lists a command's flags)\n\n", name)
	} else {
		fmt.Fprintf(os.Stderr, "switchyard: unknown command %q\n\n", name)
	}
	usage()
	os.Exit(2)
}
