package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// A balancer in generic mode turns GRO off on its interface, which stays
// off with the attachment, after the daemon too. Nothing recorded that it
// had been on: after `switchyard remove`, or a restart in native mode
// (which runs before GRO), it stayed off, and the operator had to turn it
// on by hand. The balancer now records it beside its API socket, and
// both turn it on again and remove the record. A native-mode run writes
// none.
func TestRunGROIsRestored(t *testing.T) {
	t.Parallel()
	topo, lb, pinDir, cfgPath := linkTestSetup(t, "sygro")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	record := groFile(filepath.Join(filepath.Dir(cfgPath), "switchyard.sock"), pinDir)
	groOn := func(t *testing.T) bool {
		t.Helper()
		on, err := topo.GRO(lb, topology.EthName)
		if err != nil {
			t.Fatal(err)
		}
		return on
	}
	recorded := func() bool { _, err := os.Stat(record); return err == nil }
	runAndStop := func(t *testing.T) string {
		t.Helper()
		d := startRun(t, topo, lb, cfgPath)
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := <-d.exited; err != nil {
			t.Fatalf("switchyard run exited with %v on SIGTERM:\n%s", err, d.stderr.String())
		}
		return d.stderr.String()
	}
	// genericRun runs and stops a generic-mode balancer over eth0 with
	// GRO on, and checks that it turned GRO off and recorded it.
	genericRun := func(t *testing.T) {
		t.Helper()
		if err := topo.SetGRO(lb, topology.EthName, true); err != nil {
			t.Fatal(err)
		}
		out := runAndStop(t)
		if groOn(t) || !strings.Contains(out, "generic receive offload (GRO) turned off") {
			t.Fatalf("the generic-mode run did not turn GRO off, so the test proves nothing:\n%s", out)
		}
		if !recorded() {
			t.Errorf("a generic-mode run that turned GRO off wrote no record at %s:\n%s", record, out)
		}
	}
	yaml, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	setMode := func(t *testing.T, mode string) {
		t.Helper()
		cfg := strings.Replace(string(yaml), "attach_mode: generic", "attach_mode: "+mode, 1)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("remove", func(t *testing.T) {
		genericRun(t)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cmd := topo.Command(ctx, lb, self, "remove", "--config", cfgPath)
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("switchyard remove: %v\n%s", err, out)
		}
		if !groOn(t) {
			t.Errorf("GRO is off on eth0 after `switchyard remove` of the generic-mode balancer that turned it off; remove said:\n%s", out)
		}
		if !strings.Contains(string(out), "turned on again") {
			t.Errorf("switchyard remove does not say it turned GRO on again:\n%s", out)
		}
		if recorded() {
			t.Errorf("switchyard remove left the GRO record %s", record)
		}
	})
	t.Run("restart in native mode", func(t *testing.T) {
		setMode(t, "generic")
		genericRun(t)
		setMode(t, "native")
		out := runAndStop(t)
		if !strings.Contains(out, "pinned XDP link runs in another mode than asked") {
			t.Fatalf("the native-mode restart did not take over the generic-mode link, so the test proves nothing:\n%s", out)
		}
		if !groOn(t) {
			t.Errorf("GRO is off on eth0 after a native-mode restart over the generic-mode run that turned it off; its log:\n%s", out)
		}
		if recorded() {
			t.Errorf("the native-mode restart left the GRO record %s", record)
		}
		// Another native run: GRO stays on, and nothing is recorded.
		out = runAndStop(t)
		if !groOn(t) || recorded() {
			t.Errorf("a native-mode run: GRO on %v, record written %v; want on, none; its log:\n%s", groOn(t), recorded(), out)
		}
	})
}
