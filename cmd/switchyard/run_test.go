package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
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
