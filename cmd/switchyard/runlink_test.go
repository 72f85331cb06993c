package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/datapath/datapathtest"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// runDaemon is a `switchyard run` started in a balancer namespace of topo.
type runDaemon struct {
	cmd    *exec.Cmd
	exited chan error // its exit, once
	stderr *syncBuffer
	client *api.Client     // on switchyard.sock beside its configuration
	ctx    context.Context // ends 60 s after the start, killing it if still running
}

// runFailing runs `switchyard run --config cfgPath` in node's namespace,
// requires that it exits with status 1 (a refused start) holding every
// string of want in its standard error within 30 s, and returns that.
func runFailing(t *testing.T, topo *topology.Topology, node, cfgPath string, want ...string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := topo.Command(ctx, node, self, "run", "--config", cfgPath)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 1 {
		t.Fatalf("switchyard run --config %s: %v, want exit status 1; stderr:\n%s", cfgPath, err, stderr.String())
	}
	for _, w := range want {
		if !strings.Contains(stderr.String(), w) {
			t.Fatalf("switchyard run --config %s exited with status 1, but without %q; stderr:\n%s", cfgPath, w, stderr.String())
		}
	}
	return stderr.String()
}

// startRun starts `switchyard run` with cfgPath in node's namespace and
// waits until it runs. It is started from the file's directory with a
// relative --config, as an operator may.
func startRun(t *testing.T, topo *topology.Topology, node, cfgPath string) *runDaemon {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel) // kills the daemon if the test ends before it exits
	cmd := topo.Command(ctx, node, self, "run", "--config", filepath.Base(cfgPath))
	cmd.Dir = filepath.Dir(cfgPath)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	d := &runDaemon{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan error, 1), ctx: ctx,
		client: api.NewClient(filepath.Join(filepath.Dir(cfgPath), "switchyard.sock"))}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(d.stderr.String(), "switchyard running"); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-d.exited:
			t.Fatalf("switchyard run exited before it ran: %v\n%s", err, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("switchyard run did not run within 10 s:\n%s", d.stderr.String())
		}
	}
	return d
}

// status asks the daemon for its status.
func (d *runDaemon) status(t *testing.T) api.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := d.client.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, d.stderr.String())
	}
	return st
}

// linkTestSetup makes a topology with one balancer and backend, and a
// configuration for `switchyard run` on the balancer's eth0 whose pins go
// in a pin directory removed at the test's end.
func linkTestSetup(t *testing.T, prefix string) (topo *topology.Topology, lb, pinDir, cfgPath string) {
	t.Helper()
	topo = topology.NewForTest(t, topology.Config{Prefix: prefix, Balancers: 1, Backends: 1})
	lb = topo.Balancer(1)
	pinDir = filepath.Join(datapath.BPFFSRoot, topo.Prefix(), topology.EthName)
	t.Cleanup(func() {
		if err := datapath.RemoveBalancer(pinDir); err != nil {
			t.Errorf("cleanup: remove pins: %v", err)
		}
	})
	dir := t.TempDir()
	cfgPath = filepath.Join(dir, "switchyard.yaml")
	cfg := "datapath: {interface: " + topology.EthName + ", attach_mode: generic, conn_table_size: 4096, pin_dir: " + pinDir + "}\n" +
		"api: {socket: " + filepath.Join(dir, "switchyard.sock") + "}\nmetrics: {listen: \"\"}\n" +
		"vips: [{name: web, address: 10.100.0.1, port: 80, protocol: tcp, table_size: 251, health: {type: none}, backends: [{name: be1, address: 10.2.1.2}]}]\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return topo, lb, pinDir, cfgPath
}

// TestRunLinkPinRemovedThenKilled: the balancer program's link pin removed
// by hand (rm) while `switchyard run` runs changes nothing at once, as the
// daemon's own handle keeps the program attached; but once the daemon died
// (SIGKILL, the OOM killer, the kill of an in-place upgrade) the program
// went with it, and no VIP was balanced until a new start. The daemon now
// pins the link again on its tick, says so in its status, and a killed
// daemon leaves the program attached.
func TestRunLinkPinRemovedThenKilled(t *testing.T) {
	t.Parallel()
	topo, lb, pinDir, cfgPath := linkTestSetup(t, "sybdp")
	d := startRun(t, topo, lb, cfgPath)
	prog := topo.EthXDPProgID(t, lb)
	pin := filepath.Join(pinDir, "link")
	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	// No status call: the tick (every 2 s) restores it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(pin); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the link pin %s was not restored within 10 s; daemon log:\n%s", pin, d.stderr.String())
		}
	}
	st := d.status(t)
	if !st.LinkPinned || st.LinkPinRestores != 1 || st.LinkPinError != "" {
		t.Errorf("status after the link pin was removed: link_pinned %v, link_pin_restores %d, link_pin_error %q; want pinned again, once",
			st.LinkPinned, st.LinkPinRestores, st.LinkPinError)
	}
	if !strings.Contains(d.stderr.String(), "the balancer program's link pin was removed while the daemon ran") {
		t.Errorf("the daemon did not warn of the restored pin:\n%s", d.stderr.String())
	}
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	if now := topo.EthXDPProgID(t, lb); now != prog {
		t.Errorf("eth0 runs XDP program %d after the daemon was killed, want the balancer's %d: the program went with the daemon; its log:\n%s",
			now, prog, d.stderr.String())
	}
}

// TestRunMapPinsRemoved: the pins of the balancer program's maps removed
// by hand (rm, a clean-up of bpffs) while `switchyard run` runs changed
// nothing at once, but stayed missing: the next run (a restart, a kill, an
// in-place upgrade) created those maps afresh, its VIPs, backends and
// Maglev tables empty. The daemon now pins them again on its tick, as it
// does the link, and says so in its log and status.
func TestRunMapPinsRemoved(t *testing.T) {
	t.Parallel()
	topo, lb, pinDir, cfgPath := linkTestSetup(t, "sybim")
	d := startRun(t, topo, lb, cfgPath)
	entries, err := os.ReadDir(pinDir)
	if err != nil {
		t.Fatal(err)
	}
	var pins []string
	for _, e := range entries {
		if e.Name() != "link" {
			pins = append(pins, filepath.Join(pinDir, e.Name()))
		}
	}
	if len(pins) == 0 {
		t.Fatalf("no map pinned in %s: the test proves nothing", pinDir)
	}
	for _, pin := range pins {
		if err := os.Remove(pin); err != nil {
			t.Fatal(err)
		}
	}
	// No status call: the tick (every 2 s) restores them.
	for _, pin := range pins {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(pin); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the map pin %s was not restored within 10 s; daemon log:\n%s", pin, d.stderr.String())
			}
		}
	}
	st := d.status(t)
	if !st.MapsPinned || st.MapPinRestores != uint64(len(pins)) || st.MapPinError != "" {
		t.Errorf("status after the map pins were removed: maps_pinned %v, map_pin_restores %d, map_pin_error %q; want pinned again, %d pins",
			st.MapsPinned, st.MapPinRestores, st.MapPinError, len(pins))
	}
	if !strings.Contains(d.stderr.String(), "pins of the balancer program's maps were removed while the daemon ran") {
		t.Errorf("the daemon did not warn of the restored pins:\n%s", d.stderr.String())
	}
}

// TestRunProgramDetached: the balancer program's link detached from under
// a running daemon (`bpftool link detach`, here followed by another tool's
// XDP program on the interface) left the daemon running and its status
// saying all was well, while nothing was balanced. The daemon now finds
// it on its tick, logs it once, shows it in its status, and does not
// attach its program again over the other one; a restart, once the other
// program is off, attaches it afresh.
func TestRunProgramDetached(t *testing.T) {
	t.Parallel()
	topo, lb, pinDir, cfgPath := linkTestSetup(t, "sybdd")
	d := startRun(t, topo, lb, cfgPath)
	ours := topo.EthXDPProgID(t, lb)

	if err := datapathtest.DetachPinnedLink(pinDir); err != nil { // what `bpftool link detach` does
		t.Fatal(err)
	}
	if err := datapath.AttachPass(topo.NsHandle(lb), topology.EthName); err != nil {
		t.Fatal(err)
	}
	other := topo.EthXDPProgID(t, lb)

	const logged = "the balancer program no longer runs on its interface, though the daemon runs"
	// No status call: the tick (every 2 s) finds it.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(d.stderr.String(), logged); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not log %q within 10 s; its log:\n%s", logged, d.stderr.String())
		}
	}
	st := d.status(t)
	if st.ProgramAttached || st.ProgramDetachments != 1 || !strings.Contains(st.ProgramDetached, "was detached from the interface") ||
		!strings.Contains(st.ProgramDetached, `"xdp_pass" now`) {
		t.Errorf("status with the link detached: program_attached %v, program_detachments %d, program_detached %q; want not attached, once, saying the link was detached and xdp_pass runs now",
			st.ProgramAttached, st.ProgramDetachments, st.ProgramDetached)
	}
	var b strings.Builder
	if err := api.WriteStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "NOT ATTACHED: VIP traffic is not balanced") {
		t.Errorf("switchyard status does not say the program is not attached:\n%s", b.String())
	}
	if n := strings.Count(d.stderr.String(), logged); n != 1 {
		t.Errorf("the detachment was logged %d times, want once:\n%s", n, d.stderr.String())
	}
	if now := topo.EthXDPProgID(t, lb); now != other {
		t.Errorf("eth0 runs XDP program %d, want the other tool's %d, left in place", now, other)
	}

	// The fix the README gives: the other program off, a restart.
	err := topo.Do(lb, func() error {
		eth, err := netlink.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(eth, -1, 1<<2) // XDP_FLAGS_DRV_MODE
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-d.exited; err != nil {
		t.Fatalf("switchyard run exited with %v on SIGTERM:\n%s", err, d.stderr.String())
	}
	d = startRun(t, topo, lb, cfgPath)
	st = d.status(t)
	if !st.ProgramAttached || st.ProgramDetached != "" || !st.LinkPinned {
		t.Errorf("status after a restart: program_attached %v, program_detached %q, link_pinned %v; want attached and pinned",
			st.ProgramAttached, st.ProgramDetached, st.LinkPinned)
	}
	if now := topo.EthXDPProgID(t, lb); now == 0 || now == other {
		t.Errorf("eth0 runs XDP program %d after a restart (the balancer's was %d, the other's %d), want the balancer's", now, ours, other)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-d.exited
}

// A start takes seconds over a full connection table, an upgrade's
// copies, or many VIPs' tables: `switchyard run` logs that it starts,
// with what, before its first work, and the time the start took once it
// runs.
func TestRunLogsItsStart(t *testing.T) {
	t.Parallel()
	topo, lb, pinDir, cfgPath := linkTestSetup(t, "sybyr")
	d := startRun(t, topo, lb, cfgPath)
	logs := d.stderr.String()
	begin := strings.Index(logs, `msg="switchyard starting" config=`+cfgPath+` interface=`+topology.EthName+` pins=`+pinDir+` vips=1`)
	load := strings.Index(logs, "XDP balancer attached")
	end := strings.Index(logs, `msg="switchyard running"`)
	if begin < 0 || load < begin || end < load {
		t.Fatalf("the log does not say the start began before the load, and then that it runs:\n%s", logs)
	}
	line, _, _ := strings.Cut(logs[end:], "\n")
	_, secs, ok := strings.Cut(line, " seconds=")
	if _, err := strconv.ParseFloat(secs, 64); !ok || err != nil {
		t.Fatalf("%q gives no duration in seconds", line)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-d.exited; err != nil {
		t.Fatalf("switchyard run exited with %v on SIGTERM:\n%s", err, d.stderr.String())
	}
}
