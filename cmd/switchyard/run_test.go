package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/balancer"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
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
	pinDir := filepath.Join(datapath.BPFFSRoot, topo.Prefix(), topology.EthName)
	t.Cleanup(func() {
		if err := datapath.RemoveBalancer(pinDir); err != nil {
			t.Errorf("cleanup: remove pins: %v", err)
		}
	})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "switchyard.yaml")
	cfg := "datapath: {interface: " + topology.EthName + ", attach_mode: generic, conn_table_size: 4096, pin_dir: " + pinDir + "}\n" +
		"api: {socket: " + filepath.Join(dir, "switchyard.sock") + "}\nmetrics: {listen: \"\"}\n" +
		"vips: [{name: web, address: 10.100.0.1, port: 80, protocol: tcp, table_size: 251, health: {type: none}, backends: [{name: be1, address: 10.2.1.2}]}]\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel) // kills the daemon if the test ends before it exits
	cmd := topo.Command(ctx, lb, self, "run", "--config", cfgPath)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), "switchyard running"); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("switchyard run exited before it ran: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("switchyard run did not run within 10 s:\n%s", stderr.String())
		}
	}
	exitErr := deleteEthAndAwaitExit(t, topo, lb, cmd, exited, &stderr, "switchyard run")
	log := stderr.String()
	var ee *exec.ExitError
	if !errors.As(exitErr, &ee) || ee.ExitCode() != 1 || !strings.Contains(log, "switchyard run: the balancer's interface is gone: eth0") ||
		!strings.Contains(log, "start switchyard run again once the interface is back") || strings.Contains(log, "the datapath stays attached") {
		t.Errorf("switchyard run exited with %v, want exit 1 and an error saying its interface is gone and what to do (and not that the datapath stays attached); its log:\n%s", exitErr, log)
	}
}
