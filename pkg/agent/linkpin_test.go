package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLinkPinRestoredByWatcher: a running agent pins its decap link again
// when someone removes the pin, without waiting for a status call (the
// watcher checks it now and then), and says so in its metrics. Before, the
// pin stayed missing, and a kill or an in-place upgrade of the agent
// detached the program (cmd/switchyard's TestAgentLinkPinRemovedThenKilled
// shows that). A pin directory removed whole cannot be restored (the
// agent's lock is on the removed directory): status and metrics say the
// link is not pinned.
func TestLinkPinRestoredByWatcher(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	a := newAgent(t, c)
	a.linkCheckEvery = 20 * time.Millisecond
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pin := filepath.Join(c.PinDir, "link")
	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(pin); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the decap link's pin %s was not restored within %s", pin, testTimeout)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.Collector())
	m := gather(t, reg)
	if m["switchyard_agent_link_pinned"] != 1 || m["switchyard_agent_link_pin_restores_total"] != 1 {
		t.Errorf("switchyard_agent_link_pinned %v, switchyard_agent_link_pin_restores_total %v; want 1 and 1",
			m["switchyard_agent_link_pinned"], m["switchyard_agent_link_pin_restores_total"])
	}

	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %+v", err, problems)
	}

	if err := os.RemoveAll(c.PinDir); err != nil {
		t.Fatal(err)
	}
	st, err := a.AgentStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.LinkPinned || !strings.Contains(st.LinkPinError, "the pin directory "+c.PinDir+" was removed") {
		t.Errorf("status with the pin directory removed: link_pinned %v, link_pin_error %q; want not pinned, saying the directory was removed",
			st.LinkPinned, st.LinkPinError)
	}
	if v := gather(t, reg)["switchyard_agent_link_pinned"]; v != 0 {
		t.Errorf("switchyard_agent_link_pinned = %v with the pin directory removed, want 0", v)
	}
}
