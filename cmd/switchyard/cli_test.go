package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/api"
)

func TestParseInterspersed(t *testing.T) {
	for _, args := range [][]string{
		{"be1", "--socket", "/x.sock", "--json"},
		{"--socket", "/x.sock", "be1", "--json"},
		{"--json", "--socket=/x.sock", "be1"},
	} {
		var cf clientFlags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		cf.register(fs)
		pos := parseInterspersed(fs, args)
		if !slices.Equal(pos, []string{"be1"}) || cf.socket != "/x.sock" || !cf.json {
			t.Errorf("%q: positionals %q socket %q json %v", args, pos, cf.socket, cf.json)
		}
	}
}

// The CLI commands name the socket and the fix when no daemon answers.
func TestClientCommandsWithoutDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for name, run := range map[string]func([]string) error{
		"status": runStatus, "flows": runFlows, "reload": runReload,
	} {
		err := run([]string{"--socket", sock})
		if !errors.Is(err, api.ErrNoDaemon) || !strings.Contains(err.Error(), sock) {
			t.Errorf("%s: %v, want ErrNoDaemon naming %s", name, err, sock)
		}
	}
	if err := runDrain([]string{"be1", "--socket", sock}); !errors.Is(err, api.ErrNoDaemon) {
		t.Errorf("drain: %v, want ErrNoDaemon", err)
	}
}

// run and agent refuse a bad configuration before touching the system,
// naming the file and line.
func TestRunRefusesInvalidConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("datapath:\n  interface: eth0\n  bogus: 1\n"), 0o600)
	err := runRun([]string{"--config", bad})
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:3") || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("run: %v, want an error naming bad.yaml:3 and the unknown field", err)
	}
	err = runAgent([]string{"--config", filepath.Join(dir, "missing.yaml")})
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("agent: %v, want an error naming the missing file", err)
	}
}

func TestRemoveNeedsATarget(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: remove checks for root first")
	}
	if err := runRemove(nil); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Errorf("remove without a target: %v", err)
	}
	if err := runRemove([]string{"--pin-dir", "/sys/fs/bpf/switchyard-does-not-exist"}); err == nil || !strings.Contains(err.Error(), "nothing pinned") {
		t.Errorf("remove of nothing: %v", err)
	}
}
