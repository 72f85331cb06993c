package e2e

import (
	"net/netip"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/demo"
)

// TestAgentCleanShutdownRestoresBackend: the agent changes what direct
// server return needs on a backend — DSR sysctls, VIPs on lo, the decap
// program on eth0 and its pins — and a clean stop (SIGTERM) puts back
// exactly what it found. The backend starts with strict rp_filter (which
// the agent relaxes) and with one VIP already on lo (which the agent must
// leave there).
func TestAgentCleanShutdownRestoresBackend(t *testing.T) {
	var before demo.BackendState
	preexisting := netip.MustParsePrefix("10.100.0.1/32")
	lab := newLab(t, demo.LabConfig{Backends: 2, BeforeStart: func(l *demo.Lab) error {
		topo := l.Topology()
		node := topo.Backend(1)
		for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.eth0.rp_filter"} {
			if err := topo.Sysctl(node, k, "1"); err != nil {
				return err
			}
		}
		if err := topo.AddAddr(node, "lo", preexisting); err != nil {
			return err
		}
		var err error
		before, err = l.BackendState(1)
		return err
	}})
	ctx := testContext(t, time.Minute)

	during, err := lab.BackendState(1)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2",
		"net.ipv4.conf.eth0.arp_ignore": "1", "net.ipv4.conf.eth0.arp_announce": "2",
		"net.ipv4.conf.all.rp_filter": "1", "net.ipv4.conf.eth0.rp_filter": "2", // relaxed on eth0 alone
	} {
		if during.Sysctls[k] != want {
			t.Errorf("with the agent running %s = %s, want %s", k, during.Sysctls[k], want)
		}
	}
	if !during.XDPAttached {
		t.Error("with the agent running there is no XDP program on eth0")
	}
	if !slices.Contains(during.LoAddrs, netip.MustParsePrefix("fd00:100::1/128")) {
		t.Errorf("with the agent running lo has %v, want the VIP fd00:100::1/128", during.LoAddrs)
	}
	if _, err := os.Stat(lab.AgentPinDir(1)); err != nil {
		t.Errorf("with the agent running: %v", err)
	}
	// And the backend serves through it.
	if counts := spread(t, ctx, lab, demo.URL(demo.WebVIP, "/"), 40); counts["be1"] == 0 {
		t.Errorf("be1 took none of 40 connections: %s", format(counts))
	}

	if err := lab.StopAgent(1); err != nil {
		t.Fatalf("agent stop: %v\n%s", err, lab.Agent(1).Tail(20))
	}
	after, err := lab.BackendState(1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("the agent's clean stop left the backend changed:\nbefore %+v\nafter  %+v", before, after)
	}
	if _, err := os.Stat(lab.AgentPinDir(1)); !os.IsNotExist(err) {
		t.Errorf("pin directory %s after the agent stopped: %v, want it gone", lab.AgentPinDir(1), err)
	}
	// No BPF program of any kind is left on eth0 (generic or offloaded).
	l, err := lab.Topology().Link(lab.Topology().Backend(1), "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && (x.Attached || x.ProgId != 0) {
		t.Errorf("eth0 still has an XDP program after the agent stopped: %+v", x)
	}
}
