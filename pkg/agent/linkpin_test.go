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

	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath/datapathtest"
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
	c, a := startWatchedAgent(t)
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

// TestMapPinsRestoredByWatcher: a running agent pins its decap program's
// maps again when someone removes their pins (rm, a clean-up of bpffs),
// each name holding the very map the program uses, and says so in its
// status and metrics. Before, the pins stayed missing: the next run (a
// restart, a kill, an in-place upgrade) found no maps and created them
// afresh (the counters it took back only through the link pin).
func TestMapPinsRestoredByWatcher(t *testing.T) {
	t.Parallel()
	c, a := startWatchedAgent(t)
	names := []string{"decap_addrs", "decap_cfg", "decap_stats"}
	ids := map[string]uint32{}
	for _, name := range names {
		ids[name] = pinnedMapID(t, filepath.Join(c.PinDir, name))
		if err := os.Remove(filepath.Join(c.PinDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		pin := filepath.Join(c.PinDir, name)
		for deadline := time.Now().Add(testTimeout); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(pin); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the pin %s was not restored within %s", pin, testTimeout)
			}
		}
		if id := pinnedMapID(t, pin); id != ids[name] {
			t.Errorf("%s pins map %d after the restore, want the decap program's map %d", pin, id, ids[name])
		}
	}
	st, err := a.AgentStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.MapsPinned || st.MapPinError != "" || st.MapPinRestores != 3 {
		t.Errorf("status: maps_pinned %v, map_pin_error %q, map_pin_restores %d; want pinned, no error, 3 restores",
			st.MapsPinned, st.MapPinError, st.MapPinRestores)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.Collector())
	m := gather(t, reg)
	if m["switchyard_agent_maps_pinned"] != 1 || m["switchyard_agent_map_pin_restores_total"] != 3 {
		t.Errorf("switchyard_agent_maps_pinned %v, switchyard_agent_map_pin_restores_total %v; want 1 and 3",
			m["switchyard_agent_maps_pinned"], m["switchyard_agent_map_pin_restores_total"])
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %+v", err, problems)
	}

	// Another map pinned in the place of one is not the agent's to
	// remove: the status says which, the metrics that not all are pinned.
	// (Renamed over the pin: the watcher restores a pin removed first.)
	stats := filepath.Join(c.PinDir, "decap_stats")
	if err := datapathtest.PinRivalMap(filepath.Join(c.PinDir, "other")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(c.PinDir, "other"), stats); err != nil {
		t.Fatal(err)
	}
	if st, err = a.AgentStatus(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st.MapsPinned || !strings.Contains(st.MapPinError, stats+" holds map") {
		t.Errorf("status with another map at %s: maps_pinned %v, map_pin_error %q; want not pinned, naming it", stats, st.MapsPinned, st.MapPinError)
	}
	if v := gather(t, reg)["switchyard_agent_maps_pinned"]; v != 0 {
		t.Errorf("switchyard_agent_maps_pinned = %v with another map at %s, want 0", v, stats)
	}
	if err := os.Remove(stats); err != nil {
		t.Fatal(err)
	}
}

// pinnedMapID returns the ID of the map pinned at path.
func pinnedMapID(t *testing.T, path string) uint32 {
	t.Helper()
	id, err := datapathtest.PinnedMapID(path)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// startWatchedAgent starts an agent on a backend of a topology of its own
// whose pin checks run every 20 ms, for the tests that remove its pins.
func startWatchedAgent(t *testing.T) (config.AgentConfig, *Agent) {
	t.Helper()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	a := newAgent(t, c)
	a.linkCheckEvery = 20 * time.Millisecond
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return c, a
}
