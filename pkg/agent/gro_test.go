package agent

import (
	"context"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

func groOf(t *testing.T, topo *topology.Topology, node string) bool {
	t.Helper()
	on, err := topo.GRO(node, topology.EthName)
	if err != nil {
		t.Fatal(err)
	}
	return on
}

// startInMode starts an agent for backend 1 in mode, GRO on at first as a
// NIC's driver has it.
func startInMode(t *testing.T, topo *topology.Topology, mode datapath.AttachMode) *Agent {
	t.Helper()
	be := topo.Backend(1)
	a := newAgent(t, testConfig(topo))
	a.mode = mode
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return a
}

// TestGenericModeGRO: in generic (skb) mode the decap program runs after
// GRO, and stripped the outer header of merged super-packets whose
// segmentation metadata then no longer fit. The agent turns GRO off for
// generic mode, records it, shows it in the status, and turns it on again
// when it stops; native mode leaves it alone.
func TestGenericModeGRO(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode    datapath.AttachMode
		running bool // GRO while the agent runs
	}{
		{datapath.AttachGeneric, false},
		{datapath.AttachNative, true},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			t.Parallel()
			topo := newTopology(t)
			be := topo.Backend(1)
			if err := topo.SetGRO(be, topology.EthName, true); err != nil {
				t.Fatal(err)
			}
			a := startInMode(t, topo, tc.mode)
			if on := groOf(t, topo, be); on != tc.running {
				t.Errorf("GRO of eth0 is %t while the agent runs in %s mode, want %t", on, tc.mode, tc.running)
			}
			data, err := os.ReadFile(a.StatePath())
			if err != nil {
				t.Fatal(err)
			}
			if recorded := strings.Contains(string(data), `"gro"`); recorded == tc.running {
				t.Errorf("state file records GRO: %t, want %t:\n%s", recorded, !tc.running, data)
			}
			st, err := a.AgentStatus(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var want *api.AgentGRO
			if !tc.running {
				want = &api.AgentGRO{Interface: topology.EthName, WasOn: true, NowOn: false}
			}
			if !reflect.DeepEqual(st.GRO, want) {
				t.Errorf("status GRO %+v, want %+v", st.GRO, want)
			}
			if !tc.running {
				// Turned on behind the agent's back: the status reads it.
				if err := topo.SetGRO(be, topology.EthName, true); err != nil {
					t.Fatal(err)
				}
				if st, err = a.AgentStatus(context.Background()); err != nil {
					t.Fatal(err)
				}
				if want.NowOn = true; !reflect.DeepEqual(st.GRO, want) {
					t.Errorf("status GRO %+v after GRO was turned on again, want %+v", st.GRO, want)
				}
			}
			if err := a.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if !groOf(t, topo, be) {
				t.Errorf("GRO of eth0 is off after the agent (%s mode) stopped, want on as it was", tc.mode)
			}
			requireNoState(t, a)
		})
	}
}

// TestCrashedGenericRunGRO: a generic-mode agent that died leaves GRO off
// and recorded; `remove --agent` turns it on again, and so does the next
// run's stop, which keeps it off meanwhile. GRO the admin turned on again
// since stays as it is.
func TestCrashedGenericRunGRO(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	if err := topo.SetGRO(be, topology.EthName, true); err != nil {
		t.Fatal(err)
	}

	crash(t, startInMode(t, topo, datapath.AttachGeneric))
	if groOf(t, topo, be) {
		t.Fatal("GRO is on after the generic-mode agent crashed: it was never turned off")
	}
	r := newAgent(t, c)
	if err := topo.Do(be, r.Remove); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if !groOf(t, topo, be) {
		t.Error("GRO is off after `remove --agent` of a crashed generic-mode agent, want on as before it")
	}

	crash(t, startInMode(t, topo, datapath.AttachGeneric))
	a := startInMode(t, topo, datapath.AttachGeneric)
	if groOf(t, topo, be) {
		t.Error("GRO is on while a generic-mode agent runs after a crashed one")
	}
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !groOf(t, topo, be) {
		t.Error("GRO is off after the run that took over a crashed one stopped, want on as before both")
	}

	// A native run after a crashed generic one turns GRO on at once.
	crash(t, startInMode(t, topo, datapath.AttachGeneric))
	n := startInMode(t, topo, datapath.AttachNative)
	if !groOf(t, topo, be) {
		t.Error("GRO is off while a native-mode agent runs after a crashed generic one, want on")
	}
	if err := n.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}
