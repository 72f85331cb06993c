// Package demo runs Switchyard for real on one host: a Lab is a namespace
// topology (client, router, balancers, backends; see pkg/topology) with the
// switchyard binary running in it, as an operator would run it — `switchyard
// run` on each balancer, `switchyard agent` and `switchyard testserver` on
// each backend, the CLI against the daemons' sockets. `switchyard demo`
// (Run) and the end-to-end tests (test/e2e) both drive a Lab.
//
// A Lab owns everything it creates — namespaces named after its prefix, a
// pin directory PinBase(prefix) under /sys/fs/bpf, a work directory with the
// configuration files, sockets and logs — and Close removes all of it.
// Traffic stays inside the lab's namespaces.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// Defaults of LabConfig.
const (
	DefaultBalancers    = 1
	DefaultBackends     = 3
	DefaultReadyTimeout = 30 * time.Second
	// MetricsPort is where each daemon serves /metrics, on 127.0.0.1 inside
	// its balancer's namespace.
	MetricsPort = 9301
	// AgentMetricsPort is where each agent serves /metrics, on 127.0.0.1
	// inside its backend's namespace.
	AgentMetricsPort = 9302
)

// LabConfig describes a lab.
type LabConfig struct {
	// Prefix names the lab's namespaces ("<prefix>-client") and its pin
	// directory (PinBase). Required; see topology.Config.Prefix.
	Prefix string
	// Binary is the switchyard binary to run. Required.
	Binary string
	// Balancers and Backends are the numbers of nodes (defaults 1 and 3).
	Balancers, Backends int
	// Configured is how many backend nodes (the first ones) the initial
	// balancer configuration lists; 0 means all. Every backend node runs an
	// agent and a test server either way, ready to be added by a reload.
	Configured int
	// Weights are the weights of backends 1, 2, ... (missing: 1).
	Weights []int
	// HealthInterval is the health-check interval of every VIP (default
	// 1s); the timeout is half of it, rise and fall are 2.
	HealthInterval time.Duration
	// WorkDir holds configuration files, sockets and logs. "" means a new
	// temporary directory, which Close removes; a given directory is kept.
	WorkDir string
	// LogLevel of the daemons (default "info").
	LogLevel string
	// ReadyTimeout bounds the wait for each part to come up (default 30s).
	ReadyTimeout time.Duration
	// Progress, if set, receives a line for each thing NewLab and Close do.
	Progress io.Writer
	// OnPhase, if set, is called as NewLab enters each phase: "creating
	// namespaces", "starting backends", "starting the balancer".
	OnPhase func(phase string)
	// AttachMode is the balancers' datapath.attach_mode: "native" (the
	// default), "generic" or "auto". The agents attach in native mode.
	AttachMode string
	// BeforeStart, if set, is called once the topology exists and before
	// any process starts (to record or change a node's initial state).
	BeforeStart func(l *Lab) error
}

func (c *LabConfig) setDefaults() {
	if c.Balancers == 0 {
		c.Balancers = DefaultBalancers
	}
	if c.Backends == 0 {
		c.Backends = DefaultBackends
	}
	if c.Configured == 0 {
		c.Configured = c.Backends
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = time.Second
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.AttachMode == "" {
		c.AttachMode = "native"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
}

// Validate reports whether the configuration can be built.
func (c LabConfig) Validate() error {
	if c.Binary == "" {
		return errors.New("lab: Binary is empty: give the path of the switchyard binary")
	}
	if c.Configured < 0 || c.Configured > c.Backends {
		return fmt.Errorf("lab: Configured = %d: must be between 0 and Backends (%d)", c.Configured, c.Backends)
	}
	if _, err := datapath.ParseAttachMode(c.AttachMode); err != nil {
		return fmt.Errorf("lab: AttachMode: %w", err)
	}
	return topology.Config{Prefix: c.Prefix, Balancers: c.Balancers, Backends: c.Backends}.Validate()
}

// PinBase is the bpffs directory under which a lab with this prefix pins
// its balancers' (lb<i>) and agents' (be<i>-agent) programs and maps.
func PinBase(prefix string) string {
	return filepath.Join(datapath.BPFFSRoot, "switchyard-lab-"+prefix)
}

// Lab is a running Switchyard installation in namespaces. Its methods are
// safe for concurrent use.
type Lab struct {
	cfg     LabConfig
	topo    *topology.Topology
	dir     string
	ownDir  bool
	pinBase string

	mu      sync.Mutex
	spec    Spec
	daemons []*Process // index i-1 for balancer i; nil when not running
	agents  []*Process // index j-1 for backend j
	servers []*Process
	closed  bool
}

// NewLab builds the topology, writes the configuration files, starts an
// agent and a test server on every backend and a daemon on every balancer,
// and returns once the lab is ready: each daemon answers on its socket,
// has resolved its next hop and reports every configured backend healthy,
// and HTTP through the VIPs works. On failure it tears down what it built.
// A prefix whose namespaces exist gives an error matching
// topology.ErrPrefixInUse.
func NewLab(ctx context.Context, cfg LabConfig) (_ *Lab, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bin, err := filepath.Abs(cfg.Binary)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("lab: switchyard binary: %w", err)
	}
	cfg.Binary = bin
	l := &Lab{
		cfg:     cfg,
		pinBase: PinBase(cfg.Prefix),
		spec:    DefaultSpec(cfg.Configured, cfg.Weights, cfg.HealthInterval),
		daemons: make([]*Process, cfg.Balancers),
		agents:  make([]*Process, cfg.Backends),
		servers: make([]*Process, cfg.Backends),
	}
	if err := checkBPFFS(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(l.pinBase); err == nil {
		return nil, fmt.Errorf("%w: %s exists (another run, or leftovers: demo.CleanupLeftovers(%q))", topology.ErrPrefixInUse, l.pinBase, cfg.Prefix)
	}

	l.phase("creating namespaces")
	l.topo, err = topology.New(topology.Config{
		Prefix: cfg.Prefix, Balancers: cfg.Balancers, Backends: cfg.Backends,
		AttachPass: datapath.AttachPass,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	l.progress("namespaces %s", strings.Join(l.topo.Nodes(), ", "))
	// Recorded with the topology, so that if this process is killed
	// before Close, topology.SweepOrphans removes them with it.
	if err := l.topo.Own(l.pinBase); err != nil {
		return nil, err
	}
	if cfg.WorkDir == "" {
		if l.dir, err = os.MkdirTemp("", "switchyard-lab-"+cfg.Prefix+"-"); err != nil {
			return nil, err
		}
		l.ownDir = true
		if err := l.topo.Own(l.dir); err != nil {
			return nil, err
		}
	} else {
		l.dir = cfg.WorkDir
		if err := os.MkdirAll(l.dir, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(l.pinBase, 0o700); err != nil {
		return nil, fmt.Errorf("create the pin directory: %w", err)
	}
	if cfg.BeforeStart != nil {
		if err := cfg.BeforeStart(l); err != nil {
			return nil, fmt.Errorf("lab: BeforeStart: %w", err)
		}
	}

	l.phase("starting backends")
	for j := 1; j <= cfg.Backends; j++ {
		if err := l.StartAgent(ctx, j); err != nil {
			return nil, err
		}
		if err := l.StartServer(ctx, j); err != nil {
			return nil, err
		}
		l.progress("%s: agent (decap on eth0, VIPs on lo) and test server on %s up", BackendName(j), topology.BackendIPv4(j))
	}

	l.phase("starting the balancer")
	if err := l.WriteConfig(l.spec); err != nil {
		return nil, err
	}
	for i := 1; i <= cfg.Balancers; i++ {
		if err := l.StartDaemon(ctx, i); err != nil {
			return nil, err
		}
		l.progress("lb%d: switchyard run up, XDP on eth0, api %s", i, l.Socket(i))
	}
	return l, nil
}

func (l *Lab) phase(name string) {
	if l.cfg.OnPhase != nil {
		l.cfg.OnPhase(name)
	}
}

func (l *Lab) progress(format string, args ...any) {
	if l.cfg.Progress != nil {
		fmt.Fprintf(l.cfg.Progress, "      "+format+"\n", args...)
	}
}

// Topology is the lab's network.
func (l *Lab) Topology() *topology.Topology { return l.topo }

// Prefix is the lab's namespace prefix.
func (l *Lab) Prefix() string { return l.cfg.Prefix }

// Binary is the absolute path of the switchyard binary the lab runs.
func (l *Lab) Binary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cfg.Binary
}

// SetBinary makes the lab run the switchyard binary at path from now on:
// the daemons, agents, test servers and commands it starts next (those
// running go on), and the removal of the pins at Close. An upgrade test
// runs one release's processes, then another's on the same pins.
func (l *Lab) SetBinary(path string) error {
	bin, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("lab: switchyard binary: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cfg.Binary = bin
	return nil
}

// Dir is the lab's work directory (configuration files, sockets, logs).
func (l *Lab) Dir() string { return l.dir }

// ConfigPath is the configuration file of balancer i (1-based).
func (l *Lab) ConfigPath(i int) string { return filepath.Join(l.dir, fmt.Sprintf("lb%d.yaml", i)) }

// Socket is the API socket of balancer i.
func (l *Lab) Socket(i int) string { return filepath.Join(l.dir, fmt.Sprintf("lb%d.sock", i)) }

// PinDir is the pin directory of balancer i.
func (l *Lab) PinDir(i int) string { return filepath.Join(l.pinBase, fmt.Sprintf("lb%d", i)) }

// AgentConfigPath is the agent configuration file of backend j.
func (l *Lab) AgentConfigPath(j int) string {
	return filepath.Join(l.dir, BackendName(j)+"-agent.yaml")
}

// AgentPinDir is the pin directory of the agent on backend j.
func (l *Lab) AgentPinDir(j int) string {
	return filepath.Join(l.pinBase, BackendName(j)+"-agent")
}

// AgentSocket is the API socket of backend j's agent.
func (l *Lab) AgentSocket(j int) string {
	return filepath.Join(l.dir, BackendName(j)+"-agent.sock")
}

// AgentStatus runs `switchyard status --agent` against backend j's agent
// and returns its output.
func (l *Lab) AgentStatus(ctx context.Context, j int) (string, error) {
	return l.run(ctx, "status", "--agent", "--socket", l.AgentSocket(j))
}

// API returns a client of balancer i's daemon.
func (l *Lab) API(i int) *api.Client { return api.NewClient(l.Socket(i)) }

// Status reads balancer i's status through its API.
func (l *Lab) Status(ctx context.Context, i int) (api.Status, error) {
	return l.API(i).Status(ctx)
}

// Spec returns (a copy of) the configuration last written.
func (l *Lab) Spec() Spec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.spec.Clone()
}

// WriteConfig writes s as every balancer's configuration file. The daemons
// read it when they start or reload (Reload).
func (l *Lab) WriteConfig(s Spec) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 1; i <= l.cfg.Balancers; i++ {
		text := render(balancerFile{
			node: fmt.Sprintf("lb%d", i), mode: l.cfg.AttachMode, pinDir: l.PinDir(i), socket: l.Socket(i),
			metrics: net.JoinHostPort("127.0.0.1", strconv.Itoa(MetricsPort)),
		}, s)
		if err := writeFileAtomic(l.ConfigPath(i), text); err != nil {
			return err
		}
	}
	l.spec = s.Clone()
	return nil
}

// WriteRawConfig replaces balancer i's configuration file with text, valid
// or not (Spec is left as it was).
func (l *Lab) WriteRawConfig(i int, text string) error {
	return writeFileAtomic(l.ConfigPath(i), text)
}

// writeFileAtomic replaces path, so a daemon never reads half a file.
func writeFileAtomic(path, text string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// CLI runs `switchyard CMD --socket <balancer i's socket> ARGS...` on the
// host (a unix socket works across network namespaces) and returns its
// combined output; a non-zero exit is an error carrying that output.
func (l *Lab) CLI(ctx context.Context, i int, cmd string, args ...string) (string, error) {
	argv := append([]string{cmd, "--socket", l.Socket(i)}, args...)
	return l.run(ctx, argv...)
}

// run runs the switchyard binary on the host.
func (l *Lab) run(ctx context.Context, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, l.Binary(), argv...).CombinedOutput()
	if err != nil {
		err = fmt.Errorf("switchyard %s: %w", strings.Join(argv, " "), err)
		if msg := strings.TrimSpace(string(out)); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return string(out), err
	}
	return string(out), nil
}

// Reload runs `switchyard reload` against balancer i.
func (l *Lab) Reload(ctx context.Context, i int) (string, error) { return l.CLI(ctx, i, "reload") }

// ReloadAll reloads every balancer.
func (l *Lab) ReloadAll(ctx context.Context) error {
	for i := 1; i <= l.cfg.Balancers; i++ {
		if _, err := l.Reload(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// Daemon returns balancer i's daemon process (nil if not running).
func (l *Lab) Daemon(i int) *Process {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.daemons[i-1]
}

// StartDaemon starts `switchyard run --config <ConfigPath(i)> ARGS...` on
// balancer i and waits until it is ready (see WaitReady).
func (l *Lab) StartDaemon(ctx context.Context, i int, args ...string) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errors.New("lab is closed")
	}
	if p := l.daemons[i-1]; p != nil && p.Running() {
		l.mu.Unlock()
		return fmt.Errorf("lb%d: a daemon runs already (pid %d)", i, p.Pid())
	}
	node := l.topo.Balancer(i)
	name := fmt.Sprintf("lb%d", i)
	argv := append([]string{"run", "--config", l.ConfigPath(i), "--log-level", l.cfg.LogLevel}, args...)
	p, err := start(name, node, logPath(l.dir, name), l.topo.Command(context.Background(), node, l.cfg.Binary, argv...))
	if err != nil {
		l.mu.Unlock()
		return err
	}
	l.daemons[i-1] = p
	l.mu.Unlock()
	return l.WaitReady(ctx, i)
}

// StopDaemon stops balancer i's daemon with SIGTERM (the datapath stays
// attached and keeps forwarding) and returns its exit error.
func (l *Lab) StopDaemon(i int) error {
	p := l.Daemon(i)
	if p == nil {
		return nil
	}
	return p.Stop(0)
}

// WaitReady waits until balancer i's daemon answers on its socket, has
// resolved its next hop, reports every configured backend healthy (but
// those drained, and those whose test server the lab killed), and a
// request through each TCP VIP with backends is answered.
func (l *Lab) WaitReady(ctx context.Context, i int) error {
	p := l.Daemon(i)
	if p == nil {
		return fmt.Errorf("lb%d: no daemon started", i)
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.ReadyTimeout)
	defer cancel()
	var last string
	err := poll(ctx, 20*time.Millisecond, p, func() bool {
		st, err := l.Status(ctx, i)
		if err != nil {
			last = err.Error()
			return false
		}
		if !st.NextHop.Resolved {
			last = "next hop " + st.NextHop.Gateway + " not resolved"
			return false
		}
		for _, v := range st.VIPs {
			for _, b := range v.Backends {
				if !b.Healthy && !b.Drained && !b.Removed && !l.serverKilled(b.Name) {
					last = fmt.Sprintf("backend %s/%s unhealthy: %s", v.Name, b.Name, b.HealthInfo)
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("lb%d: daemon not ready (%s): %w%s", i, last, err, tailUnlessCanceled(ctx, p))
	}
	// The datapath is the last part to be ready: the first SYN can meet a
	// next hop that only the control loop knows yet.
	for _, v := range l.Spec().VIPs {
		if v.Protocol != "tcp" || len(v.Backends) == 0 {
			continue
		}
		u := URL(netip.AddrPortFrom(v.Address, uint16(v.Port)), "/")
		err := poll(ctx, 50*time.Millisecond, p, func() bool {
			actx, acancel := context.WithTimeout(ctx, time.Second)
			defer acancel()
			_, _, err := l.Get(actx, u)
			if err != nil {
				last = err.Error()
			}
			return err == nil
		})
		if err != nil {
			return fmt.Errorf("lb%d: no answer through VIP %s (%s): %w%s", i, v.Name, last, err, tailUnlessCanceled(ctx, p))
		}
	}
	return nil
}

// serverKilled tells whether the backend called name is a backend node
// whose test server the lab started and that no longer runs: a backend a
// test took down on purpose, which no daemon can find healthy.
func (l *Lab) serverKilled(name string) bool {
	var j int
	if _, err := fmt.Sscanf(name, "be%d", &j); err != nil || j < 1 || j > l.cfg.Backends || BackendName(j) != name {
		return false
	}
	p := l.Server(j)
	return p != nil && !p.Running()
}

// tailUnlessCanceled is the end of p's log, to explain a failure, or
// nothing when the user cancelled.
func tailUnlessCanceled(ctx context.Context, p *Process) string {
	if p == nil || errors.Is(context.Cause(ctx), context.Canceled) {
		return ""
	}
	return "\nlast lines of " + p.Log + ":\n" + p.Tail(20)
}

// errExited is returned by poll when the process it watches exits.
var errExited = errors.New("process exited")

// poll calls cond every interval until it returns true, ctx ends, or p
// (if not nil) exits.
func poll(ctx context.Context, interval time.Duration, p *Process, cond func() bool) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		var done <-chan struct{}
		if p != nil {
			done = p.Done()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return fmt.Errorf("%s: %w: %v", p.Name, errExited, p.ExitErr())
		case <-t.C:
		}
	}
}

// Agent returns backend j's agent process (nil if not running).
func (l *Lab) Agent(j int) *Process {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.agents[j-1]
}

// StartAgent writes backend j's agent configuration, starts `switchyard
// agent` there and waits until it has started (it answers on its socket
// and serves its metrics), the decap program is attached to eth0 and the
// VIPs are on lo. The program and the VIPs alone could be a killed
// agent's, which the new one is still taking over.
func (l *Lab) StartAgent(ctx context.Context, j int) error {
	node := l.topo.Backend(j)
	name := BackendName(j) + "-agent"
	text := renderAgent(agentFile{
		node: BackendName(j), index: j, pinDir: l.AgentPinDir(j),
		socket: l.AgentSocket(j),
	})
	if err := writeFileAtomic(l.AgentConfigPath(j), text); err != nil {
		return err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errors.New("lab is closed")
	}
	p, err := start(name, node, logPath(l.dir, name),
		l.topo.Command(context.Background(), node, l.cfg.Binary, "agent", "--config", l.AgentConfigPath(j)))
	if err != nil {
		l.mu.Unlock()
		return err
	}
	l.agents[j-1] = p
	l.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, l.cfg.ReadyTimeout)
	defer cancel()
	var last string
	err = poll(ctx, 20*time.Millisecond, p, func() bool {
		// The agent answers once its start is done.
		if _, err := api.NewClient(l.AgentSocket(j)).AgentStatus(ctx); err != nil {
			last = err.Error()
			return false
		}
		if _, err := l.AgentMetrics(ctx, j); err != nil {
			last = err.Error()
			return false
		}
		st, err := l.BackendState(j)
		if err != nil {
			last = err.Error()
			return false
		}
		if !st.XDPAttached {
			last = "no XDP program on eth0"
			return false
		}
		for _, vip := range []netip.Addr{WebVIP.Addr(), Web6VIP.Addr()} {
			if !slices.Contains(st.LoAddrs, netip.PrefixFrom(vip, vip.BitLen())) {
				last = "VIP " + vip.String() + " not on lo"
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("%s: agent not ready (%s): %w%s", BackendName(j), last, err, tailUnlessCanceled(ctx, p))
	}
	return nil
}

// StopAgent stops backend j's agent with SIGTERM (a clean stop undoes
// everything it did) and returns its exit error.
func (l *Lab) StopAgent(j int) error {
	p := l.Agent(j)
	if p == nil {
		return nil
	}
	return p.Stop(0)
}

// Server returns backend j's test server process (nil if not running).
func (l *Lab) Server(j int) *Process {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.servers[j-1]
}

// StartServer starts `switchyard testserver --name be<j> --http :80 --udp
// :53` on backend j and waits until it answers on the backend's address.
func (l *Lab) StartServer(ctx context.Context, j int) error {
	node := l.topo.Backend(j)
	name := BackendName(j) + "-server"
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errors.New("lab is closed")
	}
	p, err := start(name, node, logPath(l.dir, name),
		l.topo.Command(context.Background(), node, l.cfg.Binary, "testserver", "--name", BackendName(j), "--http", ":80", "--udp", ":53"))
	if err != nil {
		l.mu.Unlock()
		return err
	}
	l.servers[j-1] = p
	l.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, l.cfg.ReadyTimeout)
	defer cancel()
	client := l.topo.HTTPClient(l.topo.Router())
	defer client.CloseIdleConnections()
	u := "http://" + net.JoinHostPort(topology.BackendIPv4(j).String(), "80") + "/healthz"
	var last string
	err = poll(ctx, 20*time.Millisecond, p, func() bool {
		actx, acancel := context.WithTimeout(ctx, time.Second)
		defer acancel()
		_, _, err := get(actx, client, u)
		if err != nil {
			last = err.Error()
		}
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("%s: test server not ready (%s): %w%s", BackendName(j), last, err, tailUnlessCanceled(ctx, p))
	}
	return nil
}

// KillServer kills backend j's test server with SIGKILL, as a crash would.
func (l *Lab) KillServer(j int) {
	if p := l.Server(j); p != nil {
		p.Kill()
	}
}

// BackendState is what a backend's agent is expected to change.
type BackendState struct {
	Sysctls     map[string]string // AgentSysctls → value
	LoAddrs     []netip.Prefix    // addresses on lo, sorted
	XDPAttached bool              // an XDP program on eth0
}

// AgentSysctls are the sysctls the agent may change for direct server
// return.
var AgentSysctls = []string{
	"net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce", "net.ipv4.conf.all.rp_filter",
	"net.ipv4.conf.eth0.arp_ignore", "net.ipv4.conf.eth0.arp_announce", "net.ipv4.conf.eth0.rp_filter",
}

// BackendState reads the sysctls, lo addresses and XDP attachment of
// backend j.
func (l *Lab) BackendState(j int) (BackendState, error) {
	node := l.topo.Backend(j)
	st := BackendState{Sysctls: map[string]string{}}
	for _, k := range AgentSysctls {
		v, err := l.topo.SysctlValue(node, k)
		if err != nil {
			return st, err
		}
		st.Sysctls[k] = v
	}
	err := l.topo.Netlink(node, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		addrs, err := h.AddrList(lo, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ones, _ := a.Mask.Size()
			st.LoAddrs = append(st.LoAddrs, netip.PrefixFrom(ip.Unmap(), ones))
		}
		eth, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		st.XDPAttached = eth.Attrs().Xdp != nil && eth.Attrs().Xdp.Attached
		return nil
	})
	slices.SortFunc(st.LoAddrs, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	return st, err
}

// Metrics scrapes balancer i's /metrics from inside its namespace.
func (l *Lab) Metrics(ctx context.Context, i int) (string, error) {
	client := l.topo.HTTPClient(l.topo.Balancer(i))
	defer client.CloseIdleConnections()
	_, body, err := get(ctx, client, fmt.Sprintf("http://127.0.0.1:%d/metrics", MetricsPort))
	return string(body), err
}

// AgentMetrics scrapes backend j's agent's /metrics from inside its
// namespace.
func (l *Lab) AgentMetrics(ctx context.Context, j int) (string, error) {
	client := l.topo.HTTPClient(l.topo.Backend(j))
	defer client.CloseIdleConnections()
	_, body, err := get(ctx, client, fmt.Sprintf("http://127.0.0.1:%d/metrics", AgentMetricsPort))
	return string(body), err
}

// WaitHealth waits until balancer i reports backend vip/backend with the
// given health and has acted on it: the backend is in the VIP's table
// exactly when healthy (unless drained). Status answers come from the
// control loop, so by then the datapath has the table too.
func (l *Lab) WaitHealth(ctx context.Context, i int, vip, backend string, healthy bool) error {
	var last string
	err := poll(ctx, 10*time.Millisecond, l.Daemon(i), func() bool {
		st, err := l.Status(ctx, i)
		if err != nil {
			last = err.Error()
			return false
		}
		for _, v := range st.VIPs {
			if v.Name != vip {
				continue
			}
			for _, b := range v.Backends {
				if b.Name == backend {
					// The checker's verdict shows at once; the
					// table (and so the datapath) follows when the
					// control loop has handled it.
					inTable := b.TableSlots > 0
					last = fmt.Sprintf("healthy=%t (%s), %d table slots", b.Healthy, b.HealthInfo, b.TableSlots)
					return b.Healthy == healthy && (b.Drained || inTable == healthy)
				}
			}
		}
		last = "not in the status"
		return false
	})
	if err != nil {
		return fmt.Errorf("lb%d: %s/%s never became healthy=%t (%s): %w", i, vip, backend, healthy, last, err)
	}
	return nil
}

// Logs returns the last n lines of every process log, for a failure report.
func (l *Lab) Logs(n int) string {
	if l.dir == "" {
		return ""
	}
	paths, _ := filepath.Glob(filepath.Join(l.dir, "*.log"))
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "==== %s\n%s", filepath.Base(p), tailFile(p, n))
	}
	return b.String()
}

// Close stops every process (SIGTERM, then SIGKILL after StopTimeout),
// removes the pinned datapaths with `switchyard remove`, deletes the
// namespaces, and removes the work directory if NewLab created it. It is
// idempotent. Processes that exited before Close are not errors; a process
// that does not stop cleanly is.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	groups := [][]*Process{slices.Clone(l.daemons), slices.Clone(l.servers), slices.Clone(l.agents)}
	l.mu.Unlock()

	var errs []error
	// Daemons first, so that no health check sees a backend go away; then
	// servers; agents last, as their clean stop is what restores the
	// backends.
	for _, g := range groups {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, p := range g {
			if p == nil || !p.Running() {
				continue
			}
			wg.Go(func() {
				if err := p.Stop(0); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("stop %s: %w", p.Name, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	if l.pinBase != "" {
		if err := removePins(l.Binary(), l.pinBase); err != nil {
			errs = append(errs, err)
		}
	}
	if l.ownDir && l.dir != "" {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, err)
		}
	}
	// Last: closing the topology removes its marker, which names the pin
	// and work directories for a sweep should this process die before.
	if l.topo != nil {
		if err := l.topo.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	l.progress("lab %s removed", l.cfg.Prefix)
	return errors.Join(errs...)
}

// removePins uninstalls every datapath pinned under base — balancers with
// `switchyard remove --pin-dir`, agents with `switchyard remove --agent
// --pin-dir` — and removes base.
func removePins(binary, base string) error {
	entries, err := os.ReadDir(base)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		dir := filepath.Join(base, e.Name())
		argv := []string{"remove", "--pin-dir", dir}
		if strings.HasSuffix(e.Name(), "-agent") {
			argv = []string{"remove", "--agent", "--pin-dir", dir}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, binary, argv...).CombinedOutput()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("switchyard %s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out))))
		}
	}
	// Whatever `remove` left: deleting a pin releases what it held.
	if err := os.RemoveAll(base); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", base, err))
	}
	return errors.Join(errs...)
}

// checkBPFFS makes sure pins can be created under datapath.BPFFSRoot.
func checkBPFFS() error {
	var st unix.Statfs_t
	if err := unix.Statfs(datapath.BPFFSRoot, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("lab: bpffs is not mounted on %s: mount it with `mount -t bpf bpf %s` (make demo and make test do)",
			datapath.BPFFSRoot, datapath.BPFFSRoot)
	}
	return nil
}

// CleanupLeftovers removes what an interrupted lab with this prefix left
// behind: processes and namespaces (topology.Cleanup), then pinned
// datapaths (with binary's `remove`). With nothing left it does nothing.
func CleanupLeftovers(prefix, binary string) error {
	err := topology.Cleanup(prefix)
	return errors.Join(err, removePins(binary, PinBase(prefix)))
}
