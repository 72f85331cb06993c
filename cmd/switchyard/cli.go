package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/agent"
	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"golang.org/x/sys/unix"
)

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runStatus(args []string) error {
	var cf clientFlags
	fs := newFlagSet("status")
	cf.register(fs)
	agentFlag := fs.Bool("agent", false, fmt.Sprintf("show a backend agent's status (default --socket %s)", config.DefaultAgentAPISocket))
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	ctx, cancel, err := cf.context()
	if err != nil {
		return err
	}
	defer cancel()
	if *agentFlag {
		socket := cf.socket
		if !flagGiven(fs, "socket") {
			socket = config.DefaultAgentAPISocket
		}
		st, err := api.NewAgentClient(socket).AgentStatus(ctx)
		if err != nil {
			return err
		}
		if cf.json {
			return printJSON(st)
		}
		return api.WriteAgentStatus(os.Stdout, st)
	}
	st, err := api.NewClient(cf.socket).Status(ctx)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(st)
	}
	return api.WriteStatus(os.Stdout, st)
}

// flagGiven says whether the command line set the flag name.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

func runFlows(args []string) error {
	var cf clientFlags
	fs := newFlagSet("flows")
	cf.register(fs)
	vip := fs.String("vip", "", "only flows of this VIP (by name)")
	limit := fs.Int("limit", 1000, fmt.Sprintf("at most this many flows (up to %d)", api.MaxFlowsLimit))
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	if *limit < 1 {
		// The API takes 0 and below as its default of 1000.
		return &usageError{fmt.Sprintf("--limit %d: give at least 1", *limit)}
	}
	if *limit > api.MaxFlowsLimit {
		return &usageError{fmt.Sprintf("--limit %d: give at most %d (narrow the list with --vip)", *limit, api.MaxFlowsLimit)}
	}
	ctx, cancel, err := cf.context()
	if err != nil {
		return err
	}
	defer cancel()
	fl, err := api.NewClient(cf.socket).Flows(ctx, *vip, *limit)
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(fl)
	}
	return api.WriteFlows(os.Stdout, fl)
}

func runDrain(args []string) error   { return drainCmd("drain", args) }
func runUndrain(args []string) error { return drainCmd("undrain", args) }

func drainCmd(name string, args []string) error {
	var cf clientFlags
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	cf.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: switchyard %s [flags] BACKEND\n\nBACKEND is a backend name (in every VIP) or VIP/NAME.\n\n", name)
		fs.PrintDefaults()
	}
	pos := parseInterspersed(fs, args)
	if len(pos) == 0 {
		fs.Usage()
		return &usageError{fmt.Sprintf("name the BACKEND to %s: NAME (in every VIP) or VIP/NAME, as `switchyard status` shows them", name)}
	}
	if len(pos) > 1 {
		fs.Usage()
		return &usageError{fmt.Sprintf("name one BACKEND, not %d: %q", len(pos), pos)}
	}
	ctx, cancel, err := cf.context()
	if err != nil {
		return err
	}
	defer cancel()
	c := api.NewClient(cf.socket)
	var resp api.DrainResponse
	if name == "drain" {
		resp, err = c.Drain(ctx, pos[0])
	} else {
		resp, err = c.Undrain(ctx, pos[0])
	}
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(resp)
	}
	// The names and warnings are the words of whatever answers on the
	// socket: a control character in them must not move the operator's
	// cursor or clear the screen, as status does not let the daemon's
	// strings.
	fmt.Printf("%sed: %s\n", name, api.VisibleJoin(resp.Matched, ", "))
	for _, w := range resp.Warnings {
		fmt.Fprintf(os.Stderr, "switchyard %s: warning: %s\n", name, api.Visible(w))
	}
	return nil
}

func runReload(args []string) error {
	var cf clientFlags
	fs := newFlagSet("reload")
	cf.register(fs)
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	ctx, cancel, err := cf.context()
	if err != nil {
		return err
	}
	defer cancel()
	// A reload that changes many VIPs' tables takes seconds (512 VIPs of
	// 65,537 slots: about 1.5 s on 2 cores).
	done := showProgress("reload", "reloading", cf.json)
	resp, err := api.NewClient(cf.socket).Reload(ctx)
	done()
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(resp)
	}
	if len(resp.Changed) == 0 {
		fmt.Printf("reloaded (generation %d): nothing changed\n", resp.Generation)
		return nil
	}
	// As drain's: the changes are the words of whatever answers.
	fmt.Printf("reloaded (generation %d):\n  %s\n", resp.Generation, api.VisibleJoin(resp.Changed, "\n  "))
	return nil
}

func runRemove(args []string) error {
	fs := newFlagSet("remove")
	cfgPath := fs.String("config", "", "configuration file of the balancer (with --agent: of the agent) to remove")
	iface := fs.String("interface", "", "interface of the balancer (with --agent: of the agent) to remove (default pin directory)")
	pinDir := fs.String("pin-dir", "", "pin directory to remove")
	agent := fs.Bool("agent", false, "remove the backend agent's decap program instead")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" && *iface == "" && *pinDir == "" {
		return &usageError{"say what to remove: --config FILE, --interface NAME or --pin-dir DIR"}
	}
	// The file names its interface, and --interface is the default pin
	// directory's (and, with --agent, state file's) other way to name it:
	// given both, the file won and --interface went unread, whatever it
	// said. --pin-dir with --config names the pins in place of the
	// file's pin_dir, and with --agent --interface in place of the
	// default's, keeping the interface's state file.
	if *cfgPath != "" && *iface != "" {
		return &usageError{"--config and --interface both say what to remove, and the file names its own interface: " +
			"keep --config FILE (the configuration the daemon ran with), or --interface NAME alone for the default pin directory"}
	}
	if !*agent && *iface != "" && *pinDir != "" {
		return &usageError{"--interface and --pin-dir both name the balancer's pin directory (--interface NAME names /sys/fs/bpf/switchyard/NAME): " +
			"keep --pin-dir DIR, alone or with --config FILE (the configuration the daemon ran with)"}
	}
	if os.Geteuid() != 0 {
		return errNotRoot
	}
	if *agent && (*cfgPath != "" || *iface != "") {
		return removeAgent(*cfgPath, *iface, *pinDir)
	}
	dir := *pinDir
	// The balancer's GRO record is beside its API socket: the
	// configuration's, even with --pin-dir (which names the pins alone),
	// or the default one. (--agent with --config or --interface was
	// dealt with above.)
	socket := config.DefaultAPISocket
	switch {
	case *cfgPath != "":
		c, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		if dir == "" {
			dir = c.Datapath.PinDir
		}
		if dir == "" {
			dir = datapath.DefaultPinDir(c.Datapath.Interface)
		}
		socket = c.API.Socket
	case dir != "":
	case *iface != "":
		// Joined to the pin directory's path: "..", say, would name
		// another program's pins, or all of bpffs.
		if err := config.CheckInterfaceName(*iface); err != nil {
			return &usageError{fmt.Sprintf("--interface: %v", err)}
		}
		dir = datapath.DefaultPinDir(*iface)
	}
	if _, err := os.Stat(dir); err != nil {
		nothing := fmt.Errorf("nothing pinned at %s: %w", dir, err)
		if *agent || !errors.Is(err, os.ErrNotExist) {
			return nothing
		}
		// Pins removed by hand, or by an earlier remove that then
		// failed to turn GRO on: GRO a generic-mode run turned off
		// goes back on all the same, with no program left to need it
		// off.
		done, gerr := restoreGRO(groFile(socket, dir), 0)
		if done != "" {
			fmt.Println(done)
		}
		return errors.Join(gerr, nothing)
	}
	// A running daemon holds its pin directory: removing its pins would
	// take its program off the interface when it exits, and leave it
	// writing maps no one can find.
	lock, err := datapath.TryLockPinDir(dir)
	if err != nil {
		if errors.Is(err, datapath.ErrPinDirLocked) {
			daemon := "switchyard run"
			if *agent {
				daemon = "switchyard agent"
			}
			return fmt.Errorf("pin directory %s: %w: stop that %s (SIGTERM) first, then remove", dir, err, daemon)
		}
		return err
	}
	defer lock.Close()
	remove := datapath.RemoveBalancer
	if *agent {
		remove = datapath.RemoveDecap
	}
	if err := remove(dir); err != nil {
		return err
	}
	if *agent {
		fmt.Printf("removed the agent's decap program and maps pinned at %s\n", dir)
		fmt.Println("(VIPs and sysctls a crashed agent recorded are undone only with --config FILE or --interface NAME)")
		return nil
	}
	fmt.Printf("removed the balancer's XDP program and maps pinned at %s\n", dir)
	// With the program off, GRO a generic-mode run turned off goes back
	// on, as it was.
	done, err := restoreGRO(groFile(socket, dir), 0)
	if done != "" {
		fmt.Println(done)
	}
	return err
}

// removeAgent undoes what an agent that did not stop cleanly left: the
// host changes its state file records, and its pins. The agent's
// configuration (or, with an interface alone, the defaults) names the pin
// directory and the state file.
func removeAgent(cfgPath, iface, pinDir string) error {
	var c config.AgentConfig
	if cfgPath != "" {
		loaded, err := config.LoadAgent(cfgPath)
		if err != nil {
			return err
		}
		c = *loaded
	} else {
		// Joined to the pin directory's path: "..", say, would name
		// another program's pins, or all of bpffs.
		if err := config.CheckInterfaceName(iface); err != nil {
			return &usageError{fmt.Sprintf("--interface: %v", err)}
		}
		c = config.DefaultAgentConfig()
		c.Interface = iface
	}
	if pinDir != "" {
		c.PinDir = pinDir
	}
	// Warnings only: the lines a run's takeover logs as info are not
	// for remove, but its waits (for a stopping agent, or the host's
	// other agents) must show, or it seems to hang.
	log, err := newLogger("warn")
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{Agent: c, Logger: log, StateDir: filepath.Dir(c.API.Socket)})
	if err != nil {
		return err
	}
	_, perr := os.Stat(a.PinDir())
	_, serr := os.Stat(a.StatePath())
	if perr != nil && serr != nil {
		return fmt.Errorf("nothing pinned at %s and no state file %s: no agent left anything to remove", a.PinDir(), a.StatePath())
	}
	// The check for a running agent waits up to 5 s for an answer on its
	// api.socket, Remove up to 5 s for a stopping agent's run lock, and
	// up to 30 s for the host's other agents: a Ctrl-C or SIGTERM
	// meanwhile ends the wait, with nothing undone.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := refuseRunningAgent(ctx, c.API.Socket, a.PinDir(), a.StatePath()); err != nil {
		if ctx.Err() != nil && agent.Cancelled(err) {
			return fmt.Errorf("remove --agent interrupted while it waited: %w; nothing was undone or removed: run it again once what listens there has stopped or answers", err)
		}
		return err
	}
	if err := a.RemoveContext(ctx); err != nil {
		if ctx.Err() != nil && agent.Cancelled(err) {
			return fmt.Errorf("remove --agent interrupted while it waited: %w; nothing was undone or removed: run it again once the agent holding the lock has stopped", err)
		}
		return err
	}
	fmt.Printf("removed the agent's decap program and maps pinned at %s, and undid the host changes %s recorded\n", a.PinDir(), a.StatePath())
	return nil
}

// agentAnswerWait bounds remove --agent's status call to a running
// agent, which answers in milliseconds unless it is still starting (a
// start waits up to 30 s for the host's other agents).
const agentAnswerWait = 5 * time.Second

// refuseRunningAgent fails while the agent whose pins are in pinDir and
// whose record is statePath runs: Remove would undo its VIPs, sysctls and
// GRO from its record under its program, which stays attached. Remove's
// own test, the pin directory's lock, misses an agent whose directory was
// removed by hand (rm -r, a clean-up of bpffs), as the lock went with it;
// the run lock beside its state file, which Remove tests too, is held
// only by agents of this release. The agent's api.socket does not miss
// it, as a running agent listens on it whatever became of its pins, and
// the kernel closes it with the process.
// A listener that does not answer as another agent (one of another
// configuration with the same api.socket) counts as this one: starting,
// or hung.
//
// ctx ends the wait for the listener's answer (a Ctrl-C): the error then
// wraps ctx's.
func refuseRunningAgent(ctx context.Context, socket, pinDir, statePath string) error {
	dialCtx, cancel := context.WithTimeout(ctx, agentAnswerWait)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dialCtx, "unix", socket)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTDIR) {
		return nil // nothing listens: a stopped agent's socket, or none
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("wait for an answer on the agent's api.socket %s: %w", socket, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("check for a running agent on %s: %w (remove --agent undoes nothing while an agent of this configuration may run: its changes would go from under its decap program); fix the cause and run it again", socket, err)
	}
	who := "a process of another PID namespace"
	pid := 0
	if uc, ok := conn.(*net.UnixConn); ok {
		if raw, err := uc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil && cred.Pid > 0 {
					pid = int(cred.Pid)
				}
			})
		}
	}
	conn.Close()
	stop := "stop it first (`systemctl stop` its unit, or SIGTERM)"
	if pid > 0 {
		who = fmt.Sprintf("process %d", pid)
		stop = fmt.Sprintf("stop it first (`systemctl stop` its unit, or `kill -TERM %d`)", pid)
	}
	statusCtx, cancelStatus := context.WithTimeout(ctx, agentAnswerWait)
	defer cancelStatus()
	st, err := api.NewAgentClient(socket).AgentStatus(statusCtx)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("wait for an answer on the agent's api.socket %s: %w", socket, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("something listens on the agent's api.socket %s (%s) but did not answer its status (%w): it may be this configuration's agent, starting or hung; "+
			"%s, then run `switchyard remove --agent` again", socket, who, err, stop)
	}
	if filepath.Clean(st.PinDir) != filepath.Clean(pinDir) && st.StateFile != statePath {
		return nil // another configuration's agent, on the same socket
	}
	return fmt.Errorf("an agent of this configuration runs (%s, on %s; pin directory %s, state file %s): %s; "+
		"its stop undoes its VIPs, sysctls and GRO itself, while `switchyard remove --agent` is for what an agent that no longer runs left behind",
		who, socket, st.PinDir, st.StateFile, stop)
}
