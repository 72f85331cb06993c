package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/balancer"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/datapath/datapathtest"
	"github.com/switchyard-lb/switchyard/pkg/ethtool"
	"github.com/switchyard-lb/switchyard/pkg/topology"
	"github.com/switchyard-lb/switchyard/test/readme"
)

// Daemons whose API sockets share a directory keep their drains apart
// when their pin directories differ, even in their last element: before,
// /sys/fs/bpf/a/pins and /sys/fs/bpf/b/pins shared drains-pins.json, and
// each daemon took the other's drains at its next start.
func TestDrainFilePerPinDir(t *testing.T) {
	const socket = "/run/switchyard/switchyard.sock"
	a, legacyA := drainFiles(socket, "/sys/fs/bpf/a/pins")
	b, _ := drainFiles(socket, "/sys/fs/bpf/b/pins")
	if a == b {
		t.Errorf("pin dirs /sys/fs/bpf/a/pins and /sys/fs/bpf/b/pins share the drains file %s", a)
	}
	for _, f := range []string{a, b} {
		if filepath.Dir(f) != "/run/switchyard" {
			t.Errorf("drains file %s is not beside the socket %s", f, socket)
		}
	}
	if a2, _ := drainFiles(socket, "/sys/fs/bpf/a/pins/"); a2 != a {
		t.Errorf("pin dir /sys/fs/bpf/a/pins/ (a trailing slash): drains file %s, want %s as without", a2, a)
	}
	// An upgrade finds the file an earlier release wrote.
	if legacyA != "/run/switchyard/drains-pins.json" {
		t.Errorf("earlier name of the drains file of /sys/fs/bpf/a/pins: %q, want /run/switchyard/drains-pins.json", legacyA)
	}
	// The default pin dir keeps the name every release has used.
	if f, legacy := drainFiles(socket, datapath.DefaultPinDir("eth0")); f != "/run/switchyard/drains-eth0.json" || legacy != "" {
		t.Errorf("drains file of the default pin dir: %s (earlier %q), want /run/switchyard/drains-eth0.json (no other)", f, legacy)
	}
}

// `run -h` lists what an operator sets: --program-variant, which only the
// upgrade tests use, is left out, yet still taken.
func TestRunHelpHidesTestFlags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, tc := range []struct {
		args         []string
		code         int
		want, refuse string
	}{
		{[]string{"run", "-h"}, 0, "-config", "program-variant"},
		{[]string{"run", "--config", missing, "-h"}, 0, "(default \"/etc/switchyard/switchyard.yaml\")", "program-variant"},
		{[]string{"run", "--program-variant", "1", "--config", missing}, 1, "read config", "flag provided but not defined"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], tc.args...)
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		code := 0
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) || strings.Contains(stderr.String(), tc.refuse) {
			t.Errorf("switchyard %q: exit %d, stderr %q; want exit %d with %q and without %q", tc.args, code, stderr.String(), tc.code, tc.want, tc.refuse)
		}
	}
}

// A SIGHUP whose file is refused is logged once, naming the file's error:
// the daemon's SIGHUP loop logged `SIGHUP reload failed` beside the
// balancer's own `reload refused`.
func TestRefusedSIGHUPReloadIsLoggedOnce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to load BPF programs (CI runs as root)")
	}
	const good = `
datapath: {interface: lo, conn_table_size: 4096}
api: {socket: /tmp/unused.sock}
metrics: {listen: ""}
vips:
  - name: web
    address: 10.100.0.1
    port: 80
    protocol: tcp
    table_size: 251
    health: {type: none}
    backends:
      - {name: be1, address: 10.2.1.2}
`
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := datapath.LoadBalancer(datapath.Options{ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	bal, err := balancer.New(balancer.Config{ConfigPath: path, Initial: cfg, Datapath: dp, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- bal.Run(ctx) }()
	defer func() { cancel(); <-done }()

	if err := os.WriteFile(path, []byte(strings.Replace(good, "10.2.1.2", "10.2.1.300", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	hup := make(chan os.Signal, 1)
	hup <- syscall.SIGHUP
	close(hup)
	reloadOnHUP(ctx, hup, bal) // returns once it has reloaded and logged
	var lines []string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "10.2.1.300") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "reload refused") {
		t.Errorf("a SIGHUP reload of an invalid file logged the file's error %d times, want once as `reload refused`:\n%s", len(lines), logs.String())
	}
}

// TestRunInterfaceRemoved: when its interface is removed, the XDP program
// goes with it: `switchyard run` exits with an error saying so, for a
// service manager to start it again (an interface created again under the
// name is another one). It used to run on, balancing nothing, its status
// saying all was well.
func TestRunInterfaceRemoved(t *testing.T) {
	t.Parallel()
	topo := topology.NewForTest(t, topology.Config{Prefix: "htrun", Balancers: 1, Backends: 1})
	lb := topo.Balancer(1)
	d := startRun(t, topo, lb, writeRunConfig(t, topo, ""))
	cmd, exited, stderr := d.cmd, d.exited, d.stderr
	exitErr := deleteEthAndAwaitExit(t, topo, lb, cmd, exited, stderr, "switchyard run")
	log := stderr.String()
	var ee *exec.ExitError
	if !errors.As(exitErr, &ee) || ee.ExitCode() != 1 || !strings.Contains(log, "switchyard run: the balancer's interface is gone: eth0") ||
		!strings.Contains(log, "start switchyard run again once the interface is back") || strings.Contains(log, "the datapath stays attached") {
		t.Errorf("switchyard run exited with %v, want exit 1 and an error saying its interface is gone and what to do (and not that the datapath stays attached); its log:\n%s", exitErr, log)
	}
}

// A first start of `switchyard run` that fails leaves nothing behind: it
// left its pinned maps (64 MiB of connection table at the default size)
// when the attach failed (a driver without native XDP, another program on
// the interface), and when a later step failed (an api.socket in the
// way) its program too, attached and balancing with no daemon to check
// the backends. The pins of an earlier run, which hold its flows, stay.
func TestRunFailedFirstStartLeavesNothing(t *testing.T) {
	t.Parallel()
	topo := topology.NewForTest(t, topology.Config{Prefix: "htfst", Balancers: 1, Backends: 1})
	lb := topo.Balancer(1)
	dir := t.TempDir()
	notASocket := filepath.Join(dir, "file")
	if err := os.WriteFile(notASocket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// run starts switchyard run in lb's namespace on its lo and returns
	// its standard error once it has exited with status 1.
	run := func(t *testing.T, pinDir, mode, socket string) string {
		t.Helper()
		cfgPath := filepath.Join(t.TempDir(), "switchyard.yaml")
		cfg := "datapath: {interface: lo, attach_mode: " + mode + ", conn_table_size: 4096, pin_dir: " + pinDir + "}\n" +
			"nexthop: {gateway: 10.1.1.1}\napi: {socket: " + socket + "}\nmetrics: {listen: \"\"}\n" +
			"vips: [{name: web, address: 10.100.0.1, port: 80, protocol: tcp, table_size: 251, health: {type: none}, backends: [{name: be1, address: 10.2.1.2}]}]\n"
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return runFailing(t, topo, lb, cfgPath)
	}
	xdpOnLo := func(t *testing.T) bool {
		t.Helper()
		l, err := topo.Link(lb, "lo")
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
	}
	pinDirFor := func(t *testing.T) string {
		pinDir := filepath.Join(datapath.BPFFSRoot, topo.Prefix()+"-"+strings.ReplaceAll(t.Name()[len("TestRunFailedFirstStartLeavesNothing/"):], " ", "-"))
		t.Cleanup(func() {
			if _, err := os.Stat(pinDir); err == nil {
				if err := datapath.RemoveBalancer(pinDir); err != nil {
					t.Errorf("cleanup: remove pins: %v", err)
				}
			}
		})
		return pinDir
	}

	t.Run("attach fails", func(t *testing.T) {
		pinDir := pinDirFor(t)
		// lo has no native XDP.
		out := run(t, pinDir, "native", filepath.Join(dir, "a.sock"))
		if !strings.Contains(out, "attach XDP to lo in native mode") {
			t.Errorf("switchyard run in native mode on lo printed %q, want the attach error", out)
		}
		if _, err := os.Stat(pinDir); err == nil {
			t.Errorf("a first start whose attach failed left its pins in %s", pinDir)
		}
	})
	t.Run("socket in the way", func(t *testing.T) {
		pinDir := pinDirFor(t)
		groOnLo := func(t *testing.T) bool {
			t.Helper()
			var on bool
			if err := topo.Do(lb, func() (err error) { on, err = ethtool.GRO("lo"); return err }); err != nil {
				t.Fatal(err)
			}
			return on
		}
		if err := topo.Do(lb, func() error { return ethtool.SetGRO("lo", true) }); err != nil {
			t.Fatal(err)
		}
		// The socket is taken before the load: the start fails
		// before it pins, attaches or turns GRO off.
		out := run(t, pinDir, "generic", notASocket)
		if !groOnLo(t) {
			t.Errorf("a first start with a file at api.socket left GRO off on lo")
		}
		if strings.Contains(out, "generic receive offload (GRO) turned off") || strings.Contains(out, "XDP balancer attached") {
			t.Errorf("switchyard run with a file at api.socket attached before it failed: %s", out)
		}
		if !strings.Contains(out, "exists and is not a socket") {
			t.Errorf("switchyard run with a file at api.socket printed %q, want the socket error", out)
		}
		if _, err := os.Stat(pinDir); err == nil {
			t.Errorf("a first start with a file at api.socket left its pins in %s", pinDir)
		}
		if xdpOnLo(t) {
			t.Errorf("a first start with a file at api.socket left its program attached to lo")
		}
	})
	// An empty pin directory holds no earlier run's pins: a run killed
	// before it pinned anything leaves one, and so may an administrator
	// who prepares it. A start that failed there left its 64 MiB of maps;
	// then it removed them with the directory, which it had not created.
	// The directory stays, empty.
	t.Run("empty pin directory", func(t *testing.T) {
		pinDir := pinDirFor(t)
		if err := os.MkdirAll(pinDir, 0o700); err != nil {
			t.Fatal(err)
		}
		out := run(t, pinDir, "native", filepath.Join(dir, "b.sock"))
		if !strings.Contains(out, "attach XDP to lo in native mode") {
			t.Errorf("switchyard run in native mode on lo printed %q, want the attach error", out)
		}
		if _, err := os.Stat(filepath.Join(pinDir, "conns")); err == nil {
			t.Errorf("a failed start in an empty pin directory left its connection table pinned in %s", pinDir)
		}
		if left, err := os.ReadDir(pinDir); err != nil || len(left) != 0 {
			t.Errorf("a failed start in an empty pin directory prepared beforehand: %v, %v; want the directory there, empty, as it was found", left, err)
		}
	})
	t.Run("earlier pins", func(t *testing.T) {
		pinDir := pinDirFor(t)
		dp, err := datapath.LoadBalancer(datapath.Options{PinDir: pinDir, ConnTableSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		dp.Close()
		run(t, pinDir, "native", filepath.Join(dir, "c.sock"))
		if _, err := os.Stat(filepath.Join(pinDir, "conns")); err != nil {
			t.Errorf("a failed start removed the connection table an earlier run pinned: %v", err)
		}
	})
}

// A balancer whose pin_dir is a running agent's is told that an agent
// holds it: the refusal said "a balancer already runs on it".
func TestRunOnAnAgentsPinDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to pin the decap maps (CI runs as root)")
	}
	pinDir := filepath.Join(datapath.BPFFSRoot, "syRag-"+strconv.Itoa(os.Getpid()))
	t.Cleanup(func() { datapath.RemoveDecap(pinDir) })
	// The agent's pins, and its lock on them as `switchyard agent` takes it.
	d, err := datapath.LoadDecap(pinDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	held, err := datapath.TryLockPinDir(pinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	lock, _, err := lockPinDir(pinDir)
	if err == nil {
		lock.Close()
	}
	if !errors.Is(err, datapath.ErrPinDirLocked) || !strings.Contains(err.Error(), "a switchyard agent runs with it") || strings.Contains(err.Error(), "a balancer already runs") {
		t.Errorf("lock an agent's pin directory for a balancer: %v, want it in use by a switchyard agent, not a balancer", err)
	}
	// Both refusals, the balancer's and the agent's (pkg/agent), are in
	// the README.
	ts := readme.Section(t, "## Troubleshooting")
	for _, phrase := range []string{"a switchyard agent runs with it", "in use by a running switchyard run, whose pins it holds, not an agent's"} {
		if !strings.Contains(ts, phrase) {
			t.Errorf("the README's Troubleshooting section does not have %q", phrase)
		}
	}
}

// TestRunStopRefusesRequestsAtTheSocket: a SIGTERM stops `switchyard run`
// without an error, also while clients read its status and scrape its
// metrics. Before, the control loop stopped while the API and metrics
// servers still took requests, and each request in that moment was
// answered "switchyard is shutting down" (500) and logged as an error:
// every planned restart under a monitoring scrape left errors in the log.
// Now the servers stop (answering the requests in flight) before the loop.
func TestRunStopRefusesRequestsAtTheSocket(t *testing.T) {
	t.Parallel()
	topo := topology.NewForTest(t, topology.Config{Prefix: "htstop", Balancers: 1, Backends: 1})
	lb := topo.Balancer(1)
	const metricsAddr = "127.0.0.1:9301" // in lb's network namespace
	cfgPath := writeRunConfig(t, topo, metricsAddr)
	d := startRun(t, topo, lb, cfgPath)
	cmd, exited, stderr, ctx := d.cmd, d.exited, d.stderr, d.ctx

	client := d.client
	if st, err := client.Status(ctx); err != nil {
		t.Fatal(err)
	} else if st.ConfigFile != cfgPath {
		t.Errorf("status names the configuration file %q, want %q (absolute)", st.ConfigFile, cfgPath)
	}
	scraper := topo.HTTPClient(lb)
	refused, exitErr := stopWhileReading(t, ctx, cmd, exited, "shutting down",
		func(ctx context.Context) error { _, err := client.Status(ctx); return err },
		func(ctx context.Context) error { return scrape(ctx, scraper, "http://"+metricsAddr+"/metrics") })
	if exitErr != nil {
		t.Errorf("switchyard run stopped by SIGTERM exited with %v, want 0:\n%s", exitErr, stderr.String())
	}
	for l := range strings.Lines(stderr.String()) {
		if strings.Contains(l, "level=ERROR") || strings.Contains(l, "cannot read the status") {
			t.Errorf("switchyard run, stopped by SIGTERM, logged: %s", l)
		}
	}
	if len(refused) > 0 {
		t.Errorf("%d requests during the stop were answered that the daemon is shutting down, where the socket should refuse them; the first: %s", len(refused), refused[0])
	}
}

// scrape gets url and fails unless it is answered 200.
func scrape(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, body)
	}
	return err
}

// stopWhileReading sends cmd (a daemon that answers reads) SIGTERM while
// readers call each of reads over and over, and returns once it has
// exited (exited gives its result) the answers whose error contains
// refusal, and its exit error.
func stopWhileReading(t *testing.T, ctx context.Context, cmd *exec.Cmd, exited <-chan error, refusal string, reads ...func(context.Context) error) ([]string, error) {
	t.Helper()
	stopped := make(chan struct{})
	var readers sync.WaitGroup
	var mu sync.Mutex
	var refused []string
	var answered sync.WaitGroup // every reader has had an answer before the stop
	for i := range 8 {
		read := reads[i%len(reads)]
		answered.Add(1)
		readers.Go(func() {
			first := true
			for {
				select {
				case <-stopped:
					return
				default:
				}
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err := read(rctx)
				cancel()
				if err != nil && strings.Contains(err.Error(), refusal) {
					mu.Lock()
					refused = append(refused, err.Error())
					mu.Unlock()
				}
				if first {
					first = false
					answered.Done()
				}
			}
		})
	}
	answered.Wait()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	select {
	case exitErr = <-exited:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		exitErr = <-exited
		t.Errorf("the daemon did not exit within 15 s of SIGTERM")
	}
	close(stopped)
	readers.Wait()
	return refused, exitErr
}

// writeRunConfig writes a configuration for `switchyard run` in balancer
// 1 of topo: eth0 in generic mode, one VIP, metrics on metricsListen (""
// for none), its socket switchyard.sock beside it, its pins removed at
// cleanup. It returns the file's path.
func writeRunConfig(t *testing.T, topo *topology.Topology, metricsListen string) string {
	t.Helper()
	pinDir := filepath.Join(datapath.BPFFSRoot, topo.Prefix(), topology.EthName)
	t.Cleanup(func() {
		if err := datapath.RemoveBalancer(pinDir); err != nil {
			t.Errorf("cleanup: remove pins: %v", err)
		}
	})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "switchyard.yaml")
	cfg := "datapath: {interface: " + topology.EthName + ", attach_mode: generic, conn_table_size: 4096, pin_dir: " + pinDir + "}\n" +
		"api: {socket: " + filepath.Join(dir, "switchyard.sock") + "}\nmetrics: {listen: \"" + metricsListen + "\"}\n" +
		"vips: [{name: web, address: 10.100.0.1, port: 80, protocol: tcp, table_size: 251, health: {type: none}, backends: [{name: be1, address: 10.2.1.2}]}]\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath
}

// A start over the pins of an earlier run that finds none of its programs
// on the interface (the interface was created again, or the link was
// detached by hand) attaches afresh. If it then failed (its first apply
// refused by the kernel, here), its program stayed attached, balancing with no daemon to check
// the backends, where the interface ran nothing before, and with GRO,
// which it had turned off for its generic mode, off. It now takes the
// program off and turns GRO on again, as a failed first start does,
// keeping the pins, and with them the flows, of the run before.
func TestRunFailedStartOverPinsDetachesWhatItAttached(t *testing.T) {
	t.Parallel()
	topo, lb, pinDir, cfgPath := linkTestSetup(t, "sybfa")
	d := startRun(t, topo, lb, cfgPath)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-d.exited; err != nil {
		t.Fatalf("switchyard run exited with %v on SIGTERM:\n%s", err, d.stderr.String())
	}
	// What an interface created again looks like: the pins stay, the
	// link is detached, GRO is on (a new device's default).
	if err := datapathtest.DetachPinnedLink(pinDir); err != nil {
		t.Fatal(err)
	}
	if err := topo.SetGRO(lb, topology.EthName, true); err != nil {
		t.Fatal(err)
	}
	if id := topo.EthXDPProgID(t, lb); id != 0 {
		t.Fatalf("eth0 runs XDP program %d after its link was detached: the test proves nothing", id)
	}
	// The start's first apply fails after the attach: vip_addrs is full
	// of addresses of no VIP, and the kernel refuses a new VIP's (E2BIG).
	yaml, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	failCfg := filepath.Join(filepath.Dir(cfgPath), "more-vips.yaml")
	more := strings.Replace(string(yaml), "vips: [", "vips: [{name: api, address: 10.100.0.2, port: 80, protocol: tcp, table_size: 251, health: {type: none}, backends: [{name: be1, address: 10.2.1.2}]}, ", 1)
	if err := os.WriteFile(failCfg, []byte(more), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign, err := datapathtest.FillPinnedMap(filepath.Join(pinDir, "vip_addrs"), func(i int, k []byte) {
		k[0], k[1], k[2], k[3] = 10, 250, byte(i>>8), byte(i)
	}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()

	out := runFailing(t, topo, lb, failCfg, "write VIP address 10.100.0.2")
	// The datapath's error alone named no step of the start.
	if !strings.Contains(out, "apply the configuration at start: ") {
		t.Errorf("the failed first apply does not say it was the start's apply of the configuration:\n%s", out)
	}
	if !strings.Contains(out, "generic receive offload (GRO) turned off") || !strings.Contains(out, "XDP balancer attached") {
		t.Fatalf("the failed start did not attach afresh and turn GRO off, so the test proves nothing:\n%s", out)
	}
	if id := topo.EthXDPProgID(t, lb); id != 0 {
		t.Errorf("a start over earlier pins that attached afresh and then failed left its program %d attached to eth0, which ran none before; its log:\n%s", id, out)
	}
	if on, err := topo.GRO(lb, topology.EthName); err != nil || !on {
		t.Errorf("a start over earlier pins that failed after its generic attach left GRO off on eth0 (%v)", err)
	}
	for _, pin := range []string{"conns", "vips"} {
		if _, err := os.Stat(filepath.Join(pinDir, pin)); err != nil {
			t.Errorf("the failed start removed the pin %s of the earlier run: %v", pin, err)
		}
	}
	if _, err := os.Stat(filepath.Join(pinDir, "link")); err == nil {
		t.Errorf("the failed start left its link pinned in %s", pinDir)
	}

	// The next start, with room in vip_addrs, attaches afresh over the pins.
	if err := foreign.Empty(); err != nil {
		t.Fatal(err)
	}
	d = startRun(t, topo, lb, cfgPath)
	if st := d.status(t); !st.ProgramAttached || !st.LinkPinned {
		t.Errorf("status after the start that followed: program_attached %v, link_pinned %v; want attached and pinned", st.ProgramAttached, st.LinkPinned)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-d.exited
}

// A start that cannot serve (a file at api.socket, another daemon's socket,
// a metrics address in use) swapped its program into the link an earlier
// run left pinned, or attached, and only then failed: the interface ran a
// program of a start that did not run, with no daemon to check the
// backends. The socket and the address are now taken before the load: the
// program the earlier run left runs on, untouched.
func TestRunThatCannotServeChangesNothing(t *testing.T) {
	t.Parallel()
	topo, lb, _, cfgPath := linkTestSetup(t, "sycns")
	d := startRun(t, topo, lb, cfgPath)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-d.exited; err != nil {
		t.Fatalf("switchyard run exited with %v on SIGTERM:\n%s", err, d.stderr.String())
	}
	before := topo.EthXDPProgID(t, lb)
	if before == 0 {
		t.Fatal("eth0 runs no XDP program after the first run stopped: the test proves nothing")
	}
	yaml, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	// fail starts switchyard run with cfg and returns its standard error
	// once it has exited with status 1 and a message holding want.
	fail := func(t *testing.T, cfg, want string) string {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return runFailing(t, topo, lb, cfgPath, want)
	}
	check := func(t *testing.T, out string) {
		t.Helper()
		if id := topo.EthXDPProgID(t, lb); id != before {
			t.Errorf("a start that could not serve changed the program on eth0 from ID %d to %d; its log:\n%s", before, id, out)
		}
		if strings.Contains(out, "reused the pinned datapath") || strings.Contains(out, "XDP balancer attached") {
			t.Errorf("a start that could not serve attached before it failed:\n%s", out)
		}
	}

	t.Run("file at api.socket", func(t *testing.T) {
		socket := filepath.Join(filepath.Dir(cfgPath), "switchyard.sock")
		if err := os.WriteFile(socket, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(socket)
		check(t, fail(t, string(yaml), "exists and is not a socket"))
	})
	t.Run("metrics address in use", func(t *testing.T) {
		var ln net.Listener
		if err := topo.Do(lb, func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cfg := strings.Replace(string(yaml), `metrics: {listen: ""}`, `metrics: {listen: "`+ln.Addr().String()+`"}`, 1)
		if cfg == string(yaml) {
			t.Fatal("the configuration has no metrics line to change")
		}
		check(t, fail(t, cfg, "is already in use by another program"))
	})
}
