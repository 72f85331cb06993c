package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/demo"
)

// TestInvalidReloadRefused: a reload of an invalid configuration is refused
// — `switchyard reload` exits non-zero naming the file and line, SIGHUP
// logs it — and changes nothing: a stream keeps flowing, new connections
// still reach every backend, the generation stays, and status and metrics
// count the failures. A valid file reloads again afterwards.
func TestInvalidReloadRefused(t *testing.T) {
	lab := newLab(t, demo.LabConfig{})
	ctx := testContext(t, time.Minute)
	web := demo.URL(demo.WebVIP, "/")
	stream, err := lab.OpenStream(within(t, ctx, 5*time.Second), demo.WebVIP, streamInterval)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	before, err := lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}

	// Break be2's address in web; the line number is the one to report.
	path := lab.ConfigPath(1)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(good), "\n")
	bad := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == `address: "10.2.2.2"` {
			lines[i] = strings.Replace(l, "10.2.2.2", "10.2.2.300", 1)
			bad = i + 1
			break
		}
	}
	if bad < 0 {
		t.Fatalf("no be2 address line in %s:\n%s", path, good)
	}
	if err := lab.WriteRawConfig(1, strings.Join(lines, "\n")); err != nil {
		t.Fatal(err)
	}
	where := fmt.Sprintf("%s:%d", path, bad)

	out, err := lab.Reload(ctx, 1)
	if err == nil {
		t.Fatalf("switchyard reload of an invalid file succeeded:\n%s", out)
	}
	t.Logf("switchyard reload: %v", err)
	if !strings.Contains(out, where) {
		t.Errorf("switchyard reload output does not name %s:\n%s", where, out)
	}

	if err := stream.Advance(within(t, ctx, 5*time.Second), 10); err != nil {
		t.Errorf("stream stopped after the refused reload: %v", err)
	}
	counts := spread(t, ctx, lab, web, 90)
	for _, b := range []string{"be1", "be2", "be3"} {
		if counts[b] == 0 {
			t.Errorf("after the refused reload %s took none of 90 new connections: %s", b, format(counts))
		}
	}
	st, err := lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if st.ReloadFailures != before.ReloadFailures+1 {
		t.Errorf("status reload_failures = %d, want %d", st.ReloadFailures, before.ReloadFailures+1)
	}
	if st.ConfigGeneration != before.ConfigGeneration {
		t.Errorf("status config_generation = %d after a refused reload, want %d", st.ConfigGeneration, before.ConfigGeneration)
	}
	if !strings.Contains(st.LastReloadError, where) {
		t.Errorf("status last_reload_error = %q, want it to name %s", st.LastReloadError, where)
	}
	metrics, err := lab.Metrics(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v := metricValue(metrics, "switchyard_config_reload_failures_total"); v != 1 {
		t.Errorf("switchyard_config_reload_failures_total = %v, want 1", v)
	}

	// SIGHUP takes the same path.
	if err := lab.Daemon(1).Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err = lab.Status(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if st.ReloadFailures == before.ReloadFailures+2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.ReloadFailures != before.ReloadFailures+2 {
		t.Errorf("after SIGHUP with the invalid file reload_failures = %d, want %d", st.ReloadFailures, before.ReloadFailures+2)
	}
	if !lab.Daemon(1).Running() {
		t.Fatalf("the daemon exited on SIGHUP: %v", lab.Daemon(1).ExitErr())
	}

	// A valid file again, the running one: applied, and the error is
	// cleared. It changes nothing, so the generation stays; the reload
	// counts.
	if err := lab.WriteConfig(lab.Spec()); err != nil {
		t.Fatal(err)
	}
	if out, err := lab.Reload(ctx, 1); err != nil {
		t.Fatalf("reload of the valid file: %v", err)
	} else {
		t.Logf("switchyard reload: %s", strings.TrimSpace(out))
	}
	st, err = lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if st.ConfigGeneration != before.ConfigGeneration || st.Reloads != before.Reloads+1 || st.LastReloadError != "" {
		t.Errorf("after a valid reload of the running file: generation %d (want %d), reloads %d (want %d), last_reload_error %q (want none)",
			st.ConfigGeneration, before.ConfigGeneration, st.Reloads, before.Reloads+1, st.LastReloadError)
	}
	if err := stream.Advance(within(t, ctx, 5*time.Second), 5); err != nil {
		t.Errorf("stream stopped: %v", err)
	}
	if g := stream.MaxGap(); g > time.Second {
		t.Errorf("the stream stalled for %s (a line is due every %s)", g, streamInterval)
	}
}
