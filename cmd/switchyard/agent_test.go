package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// agentHostState is what `switchyard agent` changes on a backend.
type agentHostState struct {
	sysctls []string
	lo      []string
	xdp     bool
	pinned  bool
}

func agentState(t *testing.T, topo *topology.Topology, node, pinDir string) agentHostState {
	t.Helper()
	var s agentHostState
	for _, key := range []string{"all.arp_ignore", "all.arp_announce", "eth0.arp_ignore", "eth0.arp_announce", "all.rp_filter", "eth0.rp_filter"} {
		v, err := topo.SysctlValue(node, "net.ipv4.conf."+key)
		if err != nil {
			t.Fatal(err)
		}
		s.sysctls = append(s.sysctls, key+"="+v)
	}
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		addrs, err := h.AddrList(lo, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			s.lo = append(s.lo, a.IPNet.String())
		}
		slices.Sort(s.lo)
		eth, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		s.xdp = eth.Attrs().Xdp != nil && eth.Attrs().Xdp.Attached
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(pinDir)
	s.pinned = err == nil
	return s
}

// fullPipe returns a pipe whose buffer is already full, so that the first
// write to w blocks until r is read.
func fullPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(p[0]), "stderr-r"), os.NewFile(uintptr(p[1]), "stderr-w")
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 4096); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(p[1], true); err != nil {
		t.Fatal(err)
	}
	fill := bytes.Repeat([]byte("#"), 4096)
	for {
		if _, err := unix.Write(p[1], fill); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.SetNonblock(p[1], false); err != nil {
		t.Fatal(err)
	}
	return r, w
}

// agentSetup builds a topology for `switchyard agent` on backend 1 and
// writes its config, with metrics set as given (a YAML flow mapping).
func agentSetup(t *testing.T, metrics string) (topo *topology.Topology, be, pinDir, cfgPath string) {
	t.Helper()
	topo = topology.NewForTest(t, topology.Config{Prefix: "syHag", Balancers: 1, Backends: 1})
	be = topo.Backend(1)
	pinDir = filepath.Join(datapath.BPFFSRoot, topo.Prefix(), topology.EthName)
	t.Cleanup(func() {
		if err := datapath.RemoveDecap(pinDir); err != nil {
			t.Errorf("cleanup: remove pins: %v", err)
		}
	})
	dir := t.TempDir()
	cfgPath = filepath.Join(dir, "agent.yaml")
	// The agent keeps its state file beside api.socket: here, not in the
	// host's /run/switchyard.
	cfg := fmt.Sprintf("node: {name: be1}\ninterface: %s\nvips: [10.100.0.1, \"fd00:100::1\"]\npin_dir: %s\nmetrics: %s\napi: {socket: %s}\n",
		topology.EthName, pinDir, metrics, filepath.Join(dir, "agent.sock"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return topo, be, pinDir, cfgPath
}

// agentCommand returns `switchyard agent --config cfgPath args...` run by
// the test binary inside node.
func agentCommand(t *testing.T, topo *topology.Topology, node, cfgPath string, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel) // kills the agent if the test ends before it exits
	cmd := topo.Command(ctx, node, self, append([]string{"agent", "--config", cfgPath}, args...)...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	return cmd
}

// TestAgentSignalDuringStart: a SIGTERM that arrives while the agent is
// still starting (after it has begun to change the host) lets the start
// finish and then shuts down cleanly, leaving the host as it was. Killed
// mid-start, the agent would leave its sysctls, VIPs and pins behind until
// a next run took them over.
//
// The agent is held inside Start by its own log: its stderr is a pipe that
// is full until the test reads it.
func TestAgentSignalDuringStart(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	before := agentState(t, topo, be, pinDir)

	r, w := fullPipe(t)
	cmd := agentCommand(t, topo, be, cfgPath)
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var stderr bytes.Buffer
	drained := make(chan struct{})
	drain := func() {
		go func() { io.Copy(&stderr, r); close(drained) }()
	}

	// The first change Start makes is to load the decap program, which
	// pins its maps.
	deadline := time.Now().Add(10 * time.Second)
	for !agentState(t, topo, be, pinDir).pinned {
		select {
		case err := <-exited:
			drain()
			<-drained
			t.Fatalf("agent exited before it started: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent did not begin to start within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	drain()
	err := waitExit(t, cmd, exited)
	<-drained
	requireCleanStop(t, err, strings.TrimLeft(stderr.String(), "#"))
	requireAgentState(t, agentState(t, topo, be, pinDir), before)
}

// TestAgentSIGTERMWhileWaitingForHostLock: an agent that waits for the
// host's other agents (their lock in the state directory, held here by
// the test as a hung agent would) ends the wait on SIGTERM, undoes what
// it did (its pin directory) and exits cleanly. Start took no context,
// so the agent sat out the lock's 30 s timeout first, past a service
// manager's stop timeout (10 s here), which then kills it.
func TestAgentSIGTERMWhileWaitingForHostLock(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	before := agentState(t, topo, be, pinDir)
	// The state directory is that of api.socket, beside the config.
	cmd, stderr, exited, release := startAgentAtHeldHostLock(t, topo, be, cfgPath)
	defer release()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, cmd, exited); err != nil {
		t.Errorf("agent exited with %v, want a clean exit; its log:\n%s", err, stderr.String())
	}
	if want := "agent stopped while it waited for the host's other agents: nothing changed on the host"; !strings.Contains(stderr.String(), want) {
		t.Errorf("agent log lacks %q:\n%s", want, stderr.String())
	}
	requireAgentState(t, agentState(t, topo, be, pinDir), before)
}

// startAgentAtHeldHostLock holds the host lock of the agent of cfgPath
// (agents.lock in the state directory, that of api.socket beside the
// config), as a hung agent would, starts the agent and returns once it
// logs that it waits for that lock. release frees the lock (again: it may
// be called twice); the agent is killed if it does not wait in time.
func startAgentAtHeldHostLock(t *testing.T, topo *topology.Topology, be, cfgPath string) (cmd *exec.Cmd, stderr *syncBuffer, exited <-chan error, release func()) {
	t.Helper()
	holder, err := os.OpenFile(filepath.Join(filepath.Dir(cfgPath), "agents.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	release = func() { holder.Close() }
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
		release()
		t.Fatal(err)
	}
	stderr = new(syncBuffer)
	cmd = agentCommand(t, topo, be, cfgPath)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		release()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	const waiting = "waiting for the agents' host lock, which another agent holds"
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), waiting); time.Sleep(5 * time.Millisecond) {
		select {
		case err := <-done:
			release()
			t.Fatalf("agent exited before it waited for the host lock: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			release()
			t.Fatalf("the agent did not log %q within 10 s:\n%s", waiting, stderr.String())
		}
	}
	return cmd, stderr, done, release
}

// waitExit waits for the agent to exit after a signal, killing it (by its
// PID) if it does not.
func waitExit(t *testing.T, cmd *exec.Cmd, exited <-chan error) error {
	t.Helper()
	select {
	case err := <-exited:
		return err
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatal("agent did not exit within 10 s of SIGTERM")
		return nil
	}
}

func requireCleanStop(t *testing.T, exitErr error, log string) {
	t.Helper()
	if exitErr != nil {
		t.Errorf("agent exited with %v, want a clean stop; its log:\n%s", exitErr, log)
	}
	if !strings.Contains(log, "agent stopped; decap detached, its VIPs and sysctls undone") {
		t.Errorf("agent log does not say it stopped cleanly:\n%s", log)
	}
}

func requireAgentState(t *testing.T, after, before agentHostState) {
	t.Helper()
	if !slices.Equal(after.sysctls, before.sysctls) || !slices.Equal(after.lo, before.lo) ||
		after.xdp != before.xdp || after.pinned != before.pinned {
		t.Errorf("host after the agent stopped: %+v\nwas %+v", after, before)
	}
}

// syncBuffer is a bytes.Buffer that a command's output goroutine and the
// test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAgentCommand: `switchyard agent` attaches the decap program in the
// mode --attach-mode asks, puts the VIPs on lo, serves its metrics on
// metrics.listen, and on SIGTERM stops and leaves the host as it was.
func TestAgentCommand(t *testing.T) {
	t.Parallel()
	const metricsAddr = "127.0.0.1:9302" // in the backend's own namespace
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: "`+metricsAddr+`"}`)
	before := agentState(t, topo, be, pinDir)

	var stderr syncBuffer
	cmd := agentCommand(t, topo, be, cfgPath, "--attach-mode", "generic")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// The metrics server starts after Start: once it answers, the agent runs.
	client := topo.HTTPClient(be)
	client.Timeout = time.Second
	var metrics string
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("agent exited: %v\n%s", err, stderr.String())
		default:
		}
		if resp, err := client.Get("http://" + metricsAddr + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				metrics = string(b)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics on %s within 10 s; agent log:\n%s", metricsAddr, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(metrics, "\nswitchyard_agent_vips 2\n") {
		t.Errorf("metrics do not count the 2 VIPs:\n%s", metrics)
	}
	eth, err := topo.Link(be, topology.EthName)
	if err != nil {
		t.Fatal(err)
	}
	if x := eth.Attrs().Xdp; x == nil || !x.Attached || x.AttachMode != nl.XDP_ATTACHED_SKB {
		t.Errorf("eth0 XDP %+v, want the decap program in generic mode (--attach-mode generic)", x)
	}
	running := agentState(t, topo, be, pinDir)
	for _, vip := range []string{"10.100.0.1/32", "fd00:100::1/128"} {
		if !slices.Contains(running.lo, vip) {
			t.Errorf("VIP %s not on lo: %v", vip, running.lo)
		}
	}
	sock := filepath.Join(filepath.Dir(cfgPath), "agent.sock")
	checkAgentStatusCommand(t, sock, cfgPath)
	// The same configuration started again is refused before it touches
	// the host, and the running agent keeps its socket.
	again := agentCommand(t, topo, be, cfgPath, "--attach-mode", "generic")
	if out, err := again.CombinedOutput(); err == nil || !strings.Contains(string(out), "another daemon is listening on "+sock) {
		t.Errorf("a second agent of the same configuration: %v\n%s", err, out)
	}
	if out, err := runMain(t, "status", "--agent", "--socket", sock); err != nil {
		t.Errorf("status --agent after a second agent was refused: %v\n%s", err, out)
	}
	if now := agentState(t, topo, be, pinDir); !slices.Equal(now.sysctls, running.sysctls) || !slices.Equal(now.lo, running.lo) || !now.xdp {
		t.Errorf("the refused second agent changed the host: %+v, was %+v", now, running)
	}

	stopAgentCommand(t, cmd, &stderr, exited)
	requireAgentState(t, agentState(t, topo, be, pinDir), before)
}

// checkAgentStatusCommand runs `switchyard status --agent` against the
// running agent of agentSetup's configuration at cfgPath, whose API
// listens on sock (a unix socket, reachable from the host's namespace).
func checkAgentStatusCommand(t *testing.T, sock, cfgPath string) {
	t.Helper()
	out, err := runMain(t, "status", "--agent", "--socket", sock)
	if err != nil {
		t.Fatalf("status --agent: %v\n%s", err, out)
	}
	for _, want := range []string{
		"node:             be1 (agent), up ",
		"interface:        eth0 (generic), decap program ",
		"config:           " + cfgPath,
		"(the addresses of eth0)",
		"GUE:              UDP port 6080",
		"10.100.0.1   yes    agent",
		"fd00:100::1  yes    agent",
		"net.ipv4.conf.eth0.arp_ignore",
		"drops: none",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status --agent lacks %q:\n%s", want, out)
		}
	}
	js, err := runMain(t, "status", "--agent", "--socket", sock, "--json")
	if err != nil {
		t.Fatalf("status --agent --json: %v\n%s", err, js)
	}
	var st api.AgentStatus
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		t.Fatalf("status --agent --json: %v\n%s", err, js)
	}
	if st.Interface != "eth0" || st.AttachMode != "generic" || len(st.VIPs) != 2 || len(st.EncapAddresses) == 0 {
		t.Errorf("status --agent --json = %+v", st)
	}
	// The balancer's status on the agent's socket says which command fits.
	out, err = runMain(t, "status", "--socket", sock)
	if err == nil || !strings.Contains(out, "is the socket of `switchyard agent`, not of `switchyard run`: add --agent") {
		t.Errorf("status on the agent's socket: %v\n%s", err, out)
	}
	// The balancer's other commands have no --agent to add: they are
	// told to use the balancer's socket.
	for _, args := range [][]string{{"flows"}, {"drain", "be1"}, {"undrain", "be1"}, {"reload"}} {
		out, err := runMain(t, append(args, "--socket", sock)...)
		const want = "is the socket of `switchyard agent`, not of `switchyard run`: this command is the balancer's (an agent answers only `switchyard status --agent`): give --socket the balancer's api.socket"
		if err == nil || !strings.Contains(out, want) || strings.Contains(out, "add --agent") {
			t.Errorf("%s on the agent's socket: %v\n%s\nwant %q", args[0], err, out, want)
		}
	}
}

// runMain runs the test binary as `switchyard args...` and returns its
// standard output, or its standard error with a failure.
func runMain(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stderr.String(), err
	}
	return stdout.String(), nil
}

// TestAgentAttachModeHint: when the NIC's driver has no native XDP, the
// agent's error says how to choose another mode for the agent (its
// --attach-mode flag), not the balancer's datapath.attach_mode, which an
// agent config refuses as an unknown field.
func TestAgentAttachModeHint(t *testing.T) {
	t.Parallel()
	topo := topology.NewForTest(t, topology.Config{Prefix: "syRam", Balancers: 1, Backends: 1})
	be := topo.Backend(1)
	// A bridge: no driver XDP, so a native attach fails.
	const dev = "br0"
	err := topo.Netlink(be, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: dev}})
	})
	if err != nil {
		t.Fatal(err)
	}
	pinDir := filepath.Join(datapath.BPFFSRoot, topo.Prefix(), dev)
	t.Cleanup(func() {
		if err := datapath.RemoveDecap(pinDir); err != nil {
			t.Errorf("cleanup: remove pins: %v", err)
		}
	})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.yaml")
	cfg := fmt.Sprintf("node: {name: be1}\ninterface: %s\nencap_addresses: [10.2.1.2]\nvips: [10.100.0.1]\npin_dir: %s\nmetrics: {listen: \"\"}\napi: {socket: %s}\n",
		dev, pinDir, filepath.Join(dir, "agent.sock"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	var stderr syncBuffer
	cmd := agentCommand(t, topo, be, cfgPath, "--attach-mode", "native")
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 1 {
		t.Fatalf("agent on a device without native XDP: %v, want exit status 1; its log:\n%s", err, stderr.String())
	}
	log := stderr.String()
	if !strings.Contains(log, "may not support native XDP") || !strings.Contains(log, "--attach-mode auto or generic") {
		t.Errorf("agent error does not point at its --attach-mode flag:\n%s", log)
	}
	if strings.Contains(log, "datapath.attach_mode") {
		t.Errorf("agent error names the balancer's datapath.attach_mode, which the agent has no such field for:\n%s", log)
	}
}

// TestAgentSIGHUP: a SIGHUP (the balancer's reload signal, or the hangup
// of the terminal the agent was started from) does not end the agent: its
// default action killed it on the spot, leaving its VIPs, sysctls and
// pins until a next run took them over. The agent has no reload: it says
// so, and keeps running.
func TestAgentSIGHUP(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	before := agentState(t, topo, be, pinDir)

	var stderr syncBuffer
	cmd := agentCommand(t, topo, be, cfgPath, "--attach-mode", "generic")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitLog := func(line, after string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), line); time.Sleep(10 * time.Millisecond) {
			select {
			case err := <-exited:
				t.Fatalf("agent exited %s: %v\n%s", after, err, stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent did not log %q within 10 s %s:\n%s", line, after, stderr.String())
			}
		}
	}
	waitLog("agent running", "before it ran")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog("SIGHUP ignored", "on SIGHUP")
	if !slices.Contains(agentState(t, topo, be, pinDir).lo, "10.100.0.1/32") {
		t.Errorf("after SIGHUP the VIP is no longer on lo")
	}

	stopAgentCommand(t, cmd, &stderr, exited)
	requireAgentState(t, agentState(t, topo, be, pinDir), before)
}

// runAgentCommand starts `switchyard agent --config cfgPath` (generic
// mode) in node and waits until it logs that it runs. It returns the
// command, its stderr and a channel that receives its exit.
func runAgentCommand(t *testing.T, topo *topology.Topology, node, cfgPath string) (*exec.Cmd, *syncBuffer, <-chan error) {
	t.Helper()
	var stderr syncBuffer
	// From the file's directory with a relative --config, as an
	// operator may: status names the file by its absolute path.
	cmd := agentCommand(t, topo, node, filepath.Base(cfgPath), "--attach-mode", "generic")
	cmd.Dir = filepath.Dir(cfgPath)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), "agent running"); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("agent exited before it ran: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not run within 10 s:\n%s", stderr.String())
		}
	}
	return cmd, &stderr, exited
}

// killedAgent runs the agent of cfgPath in node until it runs, then kills
// it outright (SIGKILL, as the OOM killer does), and checks it left its VIP
// on lo.
func killedAgent(t *testing.T, topo *topology.Topology, node, pinDir, cfgPath string) {
	t.Helper()
	cmd, _, exited := runAgentCommand(t, topo, node, cfgPath)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	if s := agentState(t, topo, node, pinDir); !slices.Contains(s.lo, "10.100.0.1/32") {
		t.Fatalf("after SIGKILL the VIP is not on lo: %v", s.lo)
	}
}

// stopAgentCommand stops the agent cmd started by runAgentCommand with
// SIGTERM and requires a clean stop.
func stopAgentCommand(t *testing.T, cmd *exec.Cmd, stderr *syncBuffer, exited <-chan error) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	requireCleanStop(t, waitExit(t, cmd, exited), stderr.String())
}

// runRemoveAgent runs `switchyard remove --agent --config cfgPath` in node
// and returns what it printed.
func runRemoveAgent(t *testing.T, topo *topology.Topology, node, cfgPath string) (string, error) {
	t.Helper()
	return runSwitchyardIn(t, topo, node, "remove", "--agent", "--config", cfgPath)
}

// runSwitchyardIn runs `switchyard args...` (the test binary) in node's
// namespace, killed after 30 s, and returns what it printed.
func runSwitchyardIn(t *testing.T, topo *topology.Topology, node string, args ...string) (string, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := topo.Command(ctx, node, self, args...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestAgentLinkPinRemovedThenKilled: the decap program's link pin removed
// by hand (rm) while the agent runs changes nothing at once, as the
// agent's own handle keeps the program attached; but once the agent dies
// (SIGKILL, the OOM killer, the kill of an in-place upgrade) the program
// went with it, and the backend silently stopped decapsulating. The agent
// now pins the link again, here at the status call, which shows it, so a
// killed agent leaves the program attached for its next run.
func TestAgentLinkPinRemovedThenKilled(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	before := agentState(t, topo, be, pinDir)
	cmd, stderr, exited := runAgentCommand(t, topo, be, cfgPath)
	pin := filepath.Join(pinDir, "link")
	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := api.NewAgentClient(filepath.Join(filepath.Dir(cfgPath), "agent.sock")).AgentStatus(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if !st.LinkPinned || st.LinkPinRestores != 1 || st.LinkPinError != "" {
		t.Errorf("status after the link pin was removed: link_pinned %v, link_pin_restores %d, link_pin_error %q; want pinned again, once",
			st.LinkPinned, st.LinkPinRestores, st.LinkPinError)
	}
	if _, err := os.Stat(pin); err != nil {
		t.Errorf("link pin after the status: %v", err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	if !agentState(t, topo, be, pinDir).xdp {
		t.Errorf("the decap program went with the killed agent: its link was not pinned; agent log:\n%s", stderr.String())
	}
	// The next run takes it over, and its clean stop leaves the host as
	// it was.
	cmd, stderr, exited = runAgentCommand(t, topo, be, cfgPath)
	stopAgentCommand(t, cmd, stderr, exited)
	requireAgentState(t, agentState(t, topo, be, pinDir), before)
}

// TestAgentKilledThenRestarted: an agent killed outright (SIGKILL, as the
// OOM killer does) leaves its VIPs and sysctls; the next run takes them
// over, and its clean stop leaves the host as it was before the first run.
// The next run used to take them for the admin's and keep them for good.
func TestAgentKilledThenRestarted(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	if err := topo.Sysctl(be, "net.ipv4.conf.eth0.rp_filter", "1"); err != nil {
		t.Fatal(err)
	}
	before := agentState(t, topo, be, pinDir)

	killedAgent(t, topo, be, pinDir, cfgPath)

	cmd, stderr, exited := runAgentCommand(t, topo, be, cfgPath)
	if !strings.Contains(stderr.String(), "an earlier run did not stop cleanly") {
		t.Errorf("the restarted agent does not say it takes over the killed one's changes:\n%s", stderr.String())
	}
	stopAgentCommand(t, cmd, stderr, exited)
	requireAgentState(t, agentState(t, topo, be, pinDir), before)
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(cfgPath), "agent-*.json")); len(left) != 0 {
		t.Errorf("state files left after a clean stop: %v", left)
	}
}

// TestRemoveAgentAfterKill: `switchyard remove --agent --config FILE` after
// an agent was killed outright leaves the host as it was before the agent
// started: VIPs, sysctls, pins and the state file. It used to remove the
// pins alone.
func TestRemoveAgentAfterKill(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	if err := topo.Sysctl(be, "net.ipv4.conf.eth0.rp_filter", "1"); err != nil {
		t.Fatal(err)
	}
	before := agentState(t, topo, be, pinDir)

	killedAgent(t, topo, be, pinDir, cfgPath)

	out, err := runRemoveAgent(t, topo, be, cfgPath)
	if err != nil {
		t.Fatalf("remove --agent: %v\n%s", err, out)
	}
	if !strings.Contains(out, "undid the host changes") {
		t.Errorf("remove --agent says %q, want that it undid the recorded host changes", out)
	}
	requireAgentState(t, agentState(t, topo, be, pinDir), before)
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(cfgPath), "agent-*.json")); len(left) != 0 {
		t.Errorf("state files left after remove --agent: %v", left)
	}

	// Nothing left: said so, as an error.
	if out, err := runRemoveAgent(t, topo, be, cfgPath); err == nil || !strings.Contains(out, "nothing pinned at") {
		t.Errorf("second remove --agent: %v, %q; want an error saying nothing is pinned", err, out)
	}
}

// requireRefusedRemoveKeptAgent fails t unless a refused `remove --agent`
// left the running generic-mode agent of cfgPath as it had the host
// (running), GRO off under its program, and its state file.
func requireRefusedRemoveKeptAgent(t *testing.T, topo *topology.Topology, be, pinDir, cfgPath string, running agentHostState) {
	t.Helper()
	if after := agentState(t, topo, be, pinDir); !slices.Equal(after.sysctls, running.sysctls) || !slices.Equal(after.lo, running.lo) ||
		after.xdp != running.xdp || after.pinned != running.pinned {
		t.Errorf("host after the refused remove --agent: %+v\nthe running agent had %+v", after, running)
	}
	if gro, err := topo.GRO(be, topology.EthName); err != nil || gro {
		t.Errorf("GRO under the running generic-mode agent after the refused remove --agent: %v, %v; want off", gro, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(cfgPath), "agent-*.json")); len(left) != 1 {
		t.Errorf("state files after the refused remove --agent: %v, want the running agent's", left)
	}
}

// TestRemoveAgentRefusesARunningAgentWhosePinsWereRemoved: `switchyard
// remove --agent` while the agent runs with its pin directory removed by
// hand (rm -r, a clean-up of bpffs), which took the directory's lock with
// it, refuses, naming the agent's process and socket, and undoes nothing.
// It used to find no lock holder and undo the live agent's VIPs, sysctls
// and GRO from its state file, while the agent's generic-mode program
// stayed attached, decapsulating to VIPs no longer on lo, GRO merging
// packets under it.
//
// With its api.socket removed too, remove --agent finds neither lock nor
// listener, but the run lock beside the agent's state file still shows
// it running: it refuses, saying so, undoing nothing. It used to undo the
// live agent's changes from its record under its attached program.
//
// The whole directory is removed, so the agent cannot pin its link
// again (it pins only into its own directory): remove --agent meets the
// agent without pins however long it takes.
func TestRemoveAgentRefusesARunningAgentWhosePinsWereRemoved(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		removeSocket bool
		// want: what the refusal must say, given the agent's process
		// and its socket.
		want func(pid int, sock string) []string
	}{
		{"pin directory", false, func(pid int, sock string) []string {
			return []string{fmt.Sprintf("process %d", pid), sock, "stop it first"}
		}},
		{"pin directory and socket", true, func(int, string) []string {
			return []string{"an agent of this configuration holds its run lock", "stop that agent"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
			if err := topo.SetGRO(be, topology.EthName, true); err != nil {
				t.Fatal(err)
			}
			before := agentState(t, topo, be, pinDir)
			cmd, stderr, exited := runAgentCommand(t, topo, be, cfgPath)
			running := agentState(t, topo, be, pinDir)
			if gro, err := topo.GRO(be, topology.EthName); err != nil || gro {
				t.Fatalf("GRO under the generic-mode agent: %v, %v; want off", gro, err)
			}
			if err := os.RemoveAll(pinDir); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(filepath.Dir(cfgPath), "agent.sock")
			if tc.removeSocket {
				if err := os.Remove(sock); err != nil {
					t.Fatal(err)
				}
			}
			running.pinned = false

			out, err := runRemoveAgent(t, topo, be, cfgPath)
			if err == nil {
				t.Errorf("remove --agent under a running agent succeeded: %s", out)
			} else {
				for _, w := range tc.want(cmd.Process.Pid, sock) {
					if !strings.Contains(out, w) {
						t.Errorf("remove --agent under a running agent: %v, %q; want it to say %q", err, out, w)
					}
				}
			}
			requireRefusedRemoveKeptAgent(t, topo, be, pinDir, cfgPath, running)

			// The agent's own stop undoes it all.
			stopAgentCommand(t, cmd, stderr, exited)
			requireAgentState(t, agentState(t, topo, be, pinDir), before)
			if gro, err := topo.GRO(be, topology.EthName); err != nil || !gro {
				t.Errorf("GRO after the agent's stop: %v, %v; want on again", gro, err)
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(cfgPath), "agent-*")); len(left) != 0 {
				t.Errorf("files left in the state directory after the agent's stop: %v, want none (its state file and run lock go)", left)
			}
		})
	}
}

// TestRemoveAgentRefusesAListenerThatDoesNotAnswer: with a process
// listening on the agent's api.socket that does not answer its status
// (an agent still starting, or hung), `switchyard remove --agent` cannot
// tell it from a running agent of its configuration, and refuses, naming
// the process, undoing nothing of what the killed run left. It used to
// look at the pin directory's lock alone.
func TestRemoveAgentRefusesAListenerThatDoesNotAnswer(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	killedAgent(t, topo, be, pinDir, cfgPath)
	left := agentState(t, topo, be, pinDir)

	// In place of the killed agent's socket, a listener that never answers.
	ln, _, _ := silentAgentSocket(t, cfgPath)

	out, err := runRemoveAgent(t, topo, be, cfgPath)
	if want := fmt.Sprintf("(process %d) but did not answer its status", os.Getpid()); err == nil || !strings.Contains(out, want) {
		t.Errorf("remove --agent with a silent listener on the agent's socket: %v, %q; want an error saying %q", err, out, want)
	}
	requireAgentState(t, agentState(t, topo, be, pinDir), left)
	if files, _ := filepath.Glob(filepath.Join(filepath.Dir(cfgPath), "agent-*.json")); len(files) != 1 {
		t.Errorf("state files after the refused remove --agent: %v, want the killed agent's", files)
	}

	// Once the listener is gone, remove --agent undoes the killed run.
	ln.Close()
	if out, err := runRemoveAgent(t, topo, be, cfgPath); err != nil {
		t.Errorf("remove --agent once nothing listens: %v\n%s", err, out)
	}
}

// TestRemoveAgentInterruptedWhileWaitingForTheRunLock: `switchyard remove
// --agent` that finds the run lock held (an agent of the configuration
// stopping, or one whose pin directory was removed by hand) waits up to
// 5 s for it. A Ctrl-C or SIGTERM meanwhile ends the wait at once with an
// error saying it was interrupted and undid nothing, exit status 1, and
// the killed run's record, VIPs, sysctls and pins stay for the next
// remove. The wait took no context: the signal's default action killed
// the process with no word, after a wait that had logged nothing either.
func TestRemoveAgentInterruptedWhileWaitingForTheRunLock(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	killedAgent(t, topo, be, pinDir, cfgPath)
	left := agentState(t, topo, be, pinDir)
	states, _ := filepath.Glob(filepath.Join(filepath.Dir(cfgPath), "agent-*.json"))
	if len(states) != 1 {
		t.Fatalf("state files the killed agent left: %v, want one", states)
	}

	// The run lock beside the state file, held as a stopping agent holds
	// it (an OFD lock, as the agent takes it).
	runLock := states[0] + ".lock"
	holder, err := os.OpenFile(runLock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := unix.FcntlFlock(holder.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}); err != nil {
		t.Fatalf("take the run lock %s: %v", runLock, err)
	}

	cmd, exited, out := startRemoveAgent(t, topo, be, cfgPath)
	const waiting = "waiting for the agent's run lock"
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), waiting); time.Sleep(5 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("remove --agent exited before it logged %q: %v\n%s", waiting, err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("remove --agent did not log %q within 10 s:\n%s", waiting, out.String())
		}
	}
	interruptRemoveAgent(t, cmd, exited, out,
		"remove --agent interrupted while it waited: wait for the agent's run lock "+runLock+": context canceled; nothing was undone or removed")
	requireAgentState(t, agentState(t, topo, be, pinDir), left)
	if _, err := os.Stat(states[0]); err != nil {
		t.Errorf("the killed agent's state file after the interrupted remove --agent: %v, want it kept", err)
	}

	// Once the lock is free, remove --agent undoes the killed run.
	holder.Close()
	if out, err := runRemoveAgent(t, topo, be, cfgPath); err != nil {
		t.Errorf("remove --agent once the run lock is free: %v\n%s", err, out)
	}
}

// TestRemoveAgentInterruptedWhileAskingTheSocket: `switchyard remove
// --agent` first asks what listens on the agent's api.socket whether it is
// an agent of this configuration, waiting up to 5 s for its answer. A
// Ctrl-C meanwhile ends that wait at once, as it ends remove's other
// waits: an error saying it was interrupted and undid nothing, exit status
// 1, and the killed run's record, VIPs, sysctls and pins stay. The check
// took no context and came before remove took Ctrl-C: the signal's
// default action killed the process with no word.
func TestRemoveAgentInterruptedWhileAskingTheSocket(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	killedAgent(t, topo, be, pinDir, cfgPath)
	left := agentState(t, topo, be, pinDir)
	states, _ := filepath.Glob(filepath.Join(filepath.Dir(cfgPath), "agent-*.json"))
	if len(states) != 1 {
		t.Fatalf("state files the killed agent left: %v, want one", states)
	}

	// A listener that never answers, as an agent hung, or still starting.
	ln, sock, asked := silentAgentSocket(t, cfgPath)

	cmd, exited, out := startRemoveAgent(t, topo, be, cfgPath)
	select {
	case <-asked:
	case err := <-exited:
		t.Fatalf("remove --agent exited before it asked the listener on %s for the agent's status: %v\n%s", sock, err, out.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("remove --agent did not ask the listener on %s for the agent's status within 10 s:\n%s", sock, out.String())
	}
	interruptRemoveAgent(t, cmd, exited, out,
		"remove --agent interrupted while it waited: wait for an answer on the agent's api.socket "+sock+": context canceled; nothing was undone or removed")
	requireAgentState(t, agentState(t, topo, be, pinDir), left)
	if _, err := os.Stat(states[0]); err != nil {
		t.Errorf("the killed agent's state file after the interrupted remove --agent: %v, want it kept", err)
	}

	// Once the listener is gone, remove --agent undoes the killed run.
	ln.Close()
	if out, err := runRemoveAgent(t, topo, be, cfgPath); err != nil {
		t.Errorf("remove --agent once nothing listens: %v\n%s", err, out)
	}
}

// silentAgentSocket puts in place of the agent's api.socket beside
// cfgPath a listener that takes connections and requests and never
// answers, as an agent hung, or still starting. asked is closed at its
// first request; closing ln ends it (the test's end does too).
func silentAgentSocket(t *testing.T, cfgPath string) (ln net.Listener, sock string, asked <-chan struct{}) {
	t.Helper()
	sock = filepath.Join(filepath.Dir(cfgPath), "agent.sock")
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	first := make(chan struct{})
	var (
		connsMu sync.Mutex
		conns   []net.Conn
	)
	t.Cleanup(func() {
		connsMu.Lock()
		defer connsMu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		var once sync.Once
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			connsMu.Lock()
			conns = append(conns, conn)
			connsMu.Unlock()
			go func() {
				buf := make([]byte, 512)
				if n, _ := conn.Read(buf); strings.HasPrefix(string(buf[:n]), "GET ") {
					once.Do(func() { close(first) })
				}
			}()
		}
	}()
	return ln, sock, first
}

// startRemoveAgent starts `switchyard remove --agent` of cfgPath in node,
// for a test to interrupt: exited says how it ended, out what it printed.
func startRemoveAgent(t *testing.T, topo *topology.Topology, node, cfgPath string) (*exec.Cmd, <-chan error, *syncBuffer) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	cmd := topo.Command(ctx, node, self, "remove", "--agent", "--config", cfgPath)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return cmd, exited, out
}

// interruptRemoveAgent sends Ctrl-C to cmd, a `remove --agent` that
// waits, and requires it to end at once (well within the 5 s each of its
// waits lasts unless interrupted), with exit status 1 and want in what it
// printed.
func interruptRemoveAgent(t *testing.T, cmd *exec.Cmd, exited <-chan error, out *syncBuffer, want string) {
	t.Helper()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-exited:
	case <-time.After(2 * time.Second):
		t.Fatalf("remove --agent still waits 2 s after Ctrl-C:\n%s", out.String())
	}
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 1 {
		t.Errorf("remove --agent interrupted: %v, want exit status 1; it printed:\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), want) {
		t.Errorf("remove --agent interrupted printed:\n%s\nwant %q", out.String(), want)
	}
}

// TestAgentInterfaceRemoved: when its interface is removed, `switchyard
// agent` has nothing left to decapsulate on: it undoes its changes and
// exits with an error saying so, for a service manager to start it again
// (an interface created again under the name is another one). It used to
// run on, decapsulating nothing, its status saying all was well.
func TestAgentInterfaceRemoved(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	before := agentState(t, topo, be, pinDir)
	cmd, stderr, exited := runAgentCommand(t, topo, be, cfgPath)
	exitErr := deleteEthAndAwaitExit(t, topo, be, cmd, exited, stderr, "agent")
	log := stderr.String()
	if exitErr == nil || !strings.Contains(log, "the agent's interface is gone") || !strings.Contains(log, "start the agent again once the interface is back") {
		t.Errorf("agent exited with %v, want an error saying its interface is gone and what to do; its log:\n%s", exitErr, log)
	}
	// agentState reads eth0's settings: an eth0 of its own is there again.
	err := topo.Netlink(be, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: topology.EthName}, PeerName: "hqpeer0"})
	})
	if err != nil {
		t.Fatal(err)
	}
	after := agentState(t, topo, be, pinDir)
	if !slices.Equal(after.lo, before.lo) || after.pinned {
		t.Errorf("after the agent exited: lo %v, pinned %t; want lo %v, nothing pinned", after.lo, after.pinned, before.lo)
	}
}

// deleteEthAndAwaitExit deletes node's eth0, under the running command cmd
// (who, for messages), and returns how cmd exited (exited says it), within
// 10 s.
func deleteEthAndAwaitExit(t *testing.T, topo *topology.Topology, node string, cmd *exec.Cmd, exited <-chan error, stderr *syncBuffer, who string) error {
	t.Helper()
	if err := topo.DeleteLink(node, topology.EthName); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		return err
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("%s still runs 10 s after its interface was removed:\n%s", who, stderr.String())
		return nil
	}
}

// TestAgentStopRefusesRequestsAtTheSocket: a SIGTERM stops the agent
// without an error, also while a client reads its status. Before, the
// agent undid its changes while its API still took requests, and each
// status asked meanwhile was answered "agent is not running" (500) and
// logged as an error: every planned restart of an agent under a monitor
// left errors in its log. Now the socket closes (answering the requests
// in flight) before the agent stops.
func TestAgentStopRefusesRequestsAtTheSocket(t *testing.T) {
	t.Parallel()
	const metricsAddr = "127.0.0.1:9302" // in the backend's own namespace
	topo, be, _, cfgPath := agentSetup(t, `{listen: "`+metricsAddr+`"}`)
	cmd, stderr, exited := runAgentCommand(t, topo, be, cfgPath)
	client := api.NewClient(filepath.Join(filepath.Dir(cfgPath), "agent.sock"))
	if st, err := client.AgentStatus(t.Context()); err != nil {
		t.Fatal(err)
	} else if st.ConfigFile != cfgPath {
		t.Errorf("status --agent names the configuration file %q, want %q (absolute)", st.ConfigFile, cfgPath)
	}
	scraper := topo.HTTPClient(be)
	refused, exitErr := stopWhileReading(t, t.Context(), cmd, exited, "not running",
		func(ctx context.Context) error { _, err := client.AgentStatus(ctx); return err },
		func(ctx context.Context) error { return scrape(ctx, scraper, "http://"+metricsAddr+"/metrics") })
	log := stderr.String()
	requireCleanStop(t, exitErr, log)
	for l := range strings.Lines(log) {
		if strings.Contains(l, "level=ERROR") {
			t.Errorf("the agent, stopped by SIGTERM, logged: %s", l)
		}
	}
	if len(refused) > 0 {
		t.Errorf("%d status requests during the stop were answered that the agent is not running, where the socket should refuse them; the first: %s", len(refused), refused[0])
	}
}

// TestAgentStatusDuringStartWaits: a status asked for while the agent
// starts waits for the start and is answered. Before, one that came in
// the moment between the socket opening and the start was answered
// "agent is not running" (500) and logged as an error (the soak's agent
// restarts met it). The moment is short: the agent is started a number
// of times with readers at its socket from before each start.
func TestAgentStatusDuringStartWaits(t *testing.T) {
	t.Parallel()
	topo, be, _, cfgPath := agentSetup(t, `{listen: ""}`)
	client := api.NewClient(filepath.Join(filepath.Dir(cfgPath), "agent.sock"))
	const starts = 10
	for i := range starts {
		var stderr syncBuffer
		cmd := agentCommand(t, topo, be, cfgPath)
		cmd.Stderr = &stderr
		stopped := make(chan struct{})
		var readers sync.WaitGroup
		var mu sync.Mutex
		var refused []string
		for range 8 {
			readers.Go(func() {
				for {
					select {
					case <-stopped:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
					_, err := client.AgentStatus(ctx)
					cancel()
					if err != nil && !errors.Is(err, api.ErrNoDaemon) {
						mu.Lock()
						refused = append(refused, err.Error())
						mu.Unlock()
					}
				}
			})
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), "agent running"); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("start %d: the agent did not run within 10 s:\n%s", i+1, stderr.String())
			}
		}
		close(stopped)
		readers.Wait()
		stopAgentCommand(t, cmd, &stderr, exited)
		if len(refused) > 0 {
			t.Fatalf("start %d: %d status requests were refused while the agent started; the first: %s\n%s", i+1, len(refused), refused[0], stderr.String())
		}
	}
}

// TestAgentThatCannotServeChangesNothing: an agent start that cannot
// serve (a file at its api.socket, its metrics address in use) fails
// before it touches the host. The metrics listener was taken only after
// the start: a start over a killed agent's changes took them over,
// failed at the metrics address and then undid them all, taking the
// decap program off the interface and the VIPs off lo, where the killed
// agent's program had gone on decapsulating.
func TestAgentThatCannotServeChangesNothing(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	before := agentState(t, topo, be, pinDir)
	killedAgent(t, topo, be, pinDir, cfgPath)
	killed := agentState(t, topo, be, pinDir)
	prog := topo.EthXDPProgID(t, be)
	if prog == 0 || !killed.pinned {
		t.Fatalf("the killed agent left no program on eth0 (ID %d) or no pins (%v): the test proves nothing", prog, killed.pinned)
	}
	yaml, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	// fail starts the agent with cfg and checks that it exits with status
	// 1 and a message holding want, and that the killed agent's program,
	// pins, VIPs and sysctls are as it left them.
	fail := func(t *testing.T, cfg, want string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := agentCommand(t, topo, be, cfgPath, "--attach-mode", "generic")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		out := stderr.String()
		if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 1 || !strings.Contains(out, want) {
			t.Fatalf("switchyard agent: %v, want exit status 1 and %q; stderr:\n%s", err, want, out)
		}
		if id := topo.EthXDPProgID(t, be); id != prog {
			t.Errorf("a start that could not serve changed the program on eth0 from ID %d to %d; its log:\n%s", prog, id, out)
		}
		if after := agentState(t, topo, be, pinDir); !slices.Equal(after.sysctls, killed.sysctls) || !slices.Equal(after.lo, killed.lo) || after.xdp != killed.xdp || after.pinned != killed.pinned {
			t.Errorf("host after a start that could not serve: %+v\nthe killed agent left %+v; its log:\n%s", after, killed, out)
		}
		if strings.Contains(out, "agent started") {
			t.Errorf("a start that could not serve started before it failed:\n%s", out)
		}
	}

	t.Run("file at api.socket", func(t *testing.T) {
		socket := filepath.Join(filepath.Dir(cfgPath), "agent.sock")
		// The killed agent's socket, replaced by a regular file.
		if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if err := os.WriteFile(socket, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(socket)
		fail(t, string(yaml), "exists and is not a socket")
	})
	t.Run("metrics address in use", func(t *testing.T) {
		var ln net.Listener
		if err := topo.Do(be, func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cfg := strings.Replace(string(yaml), `metrics: {listen: ""}`, `metrics: {listen: "`+ln.Addr().String()+`"}`, 1)
		if cfg == string(yaml) {
			t.Fatal("the configuration has no metrics line to change")
		}
		fail(t, cfg, "is already in use by another program")
	})

	// The next start takes the killed agent's changes over, and its clean
	// stop leaves the host as it was.
	if err := os.WriteFile(cfgPath, yaml, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, stderr, exited := runAgentCommand(t, topo, be, cfgPath)
	stopAgentCommand(t, cmd, stderr, exited)
	requireAgentState(t, agentState(t, topo, be, pinDir), before)
}

// TestAgentStatusDuringHeldStart: `status --agent` asked while a starting
// agent waits for the host's other agents (their lock, held here by the
// test as a hung agent would), over the socket a killed agent left, is
// not told that the agent was killed or crashed: the agent takes its
// socket before its start waits for anything, replacing the stale one,
// and a status waits for the start (here until its --timeout). Once the
// lock is free the start completes and the status answers. A start that
// took its socket only after that wait would leave the killed agent's
// socket in place meanwhile, and the status would say "killed or
// crashed ... start it again" of an agent that is starting.
func TestAgentStatusDuringHeldStart(t *testing.T) {
	t.Parallel()
	topo, be, pinDir, cfgPath := agentSetup(t, `{listen: ""}`)
	before := agentState(t, topo, be, pinDir)
	sock := filepath.Join(filepath.Dir(cfgPath), "agent.sock")
	// A killed agent's socket: the file stays, nothing listens.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	const crashed = "was killed or crashed"
	if out, err := runMain(t, "status", "--agent", "--socket", sock); err == nil || !strings.Contains(out, crashed) {
		t.Fatalf("status --agent on a killed agent's socket: %v\n%s\nwant it to say %q: the test proves nothing", err, out, crashed)
	}
	cmd, stderr, exited, release := startAgentAtHeldHostLock(t, topo, be, cfgPath)
	defer release()
	out, err := runMain(t, "status", "--agent", "--socket", sock, "--timeout", "1s")
	if err == nil || strings.Contains(out, crashed) || strings.Contains(out, "is `switchyard agent` running?") || !strings.Contains(out, "did not answer in time") {
		t.Errorf("status --agent while the agent's start waits for the host lock: %v\n%s\nwant it to wait for the start, until its timeout", err, out)
	}

	release()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), "agent running"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the agent did not run within 10 s of the lock's release:\n%s", stderr.String())
		}
	}
	if out, err := runMain(t, "status", "--agent", "--socket", sock); err != nil || !strings.Contains(out, "node:             be1 (agent), up ") {
		t.Errorf("status --agent once the agent runs: %v\n%s", err, out)
	}
	stopAgentCommand(t, cmd, stderr, exited)
	requireAgentState(t, agentState(t, topo, be, pinDir), before)
}
