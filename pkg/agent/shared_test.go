package agent

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
	"github.com/vishvananda/netlink"
)

// twoAgents builds a backend with a second interface, swbv0, and the
// configurations of two agents that share the VIPs, one on eth0 and one
// on swbv0, with one state directory, as two services of a host.
func twoAgents(t *testing.T) (topo *topology.Topology, be string, c1, c2 config.AgentConfig) {
	t.Helper()
	topo = topology.NewForTest(t, topology.Config{Prefix: "swbshr", Balancers: 1, Backends: 1})
	be = topo.Backend(1)
	const second = "swbv0"
	err := topo.Netlink(be, func(h *netlink.Handle) error {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: second}, PeerName: second + "p"}); err != nil {
			return err
		}
		l, err := h.LinkByName(second)
		if err != nil {
			return err
		}
		return h.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	c1 = testConfig(topo)
	c2 = testConfig(topo)
	c2.Node.Name = "be1-second"
	c2.Interface = second
	c2.PinDir = filepath.Join(datapath.BPFFSRoot, topo.Prefix(), second)
	return topo, be, c1, c2
}

// vipsMissing is the agent's switchyard_agent_vips_missing.
func vipsMissing(t *testing.T, a *Agent) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.Collector())
	v, ok := gather(t, reg)["switchyard_agent_vips_missing"]
	if !ok {
		t.Fatal("no switchyard_agent_vips_missing")
	}
	return v
}

// TestSharedVIPsStayForOtherAgent: two agents of a host, on two
// interfaces, keep the same VIPs on lo. The one that stops first, whichever
// it is, leaves the VIPs and the "all" sysctls they share for the other,
// whose status still shows them; the last to stop removes them and puts
// the sysctls back, leaving the host as it was. The first to stop used to
// delete the VIPs under the other, which then dropped what the balancers
// sent it.
func TestSharedVIPsStayForOtherAgent(t *testing.T) {
	t.Parallel()
	for _, firstStops := range []bool{true, false} {
		name := "second stops first"
		if firstStops {
			name = "first stops first"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			topo, be, c1, c2 := twoAgents(t)
			before := snapshot(t, topo, be)
			a1 := startAgent(t, topo, be, c1)
			a2 := startAgent(t, topo, be, c2)
			if got := sysctlValue(t, topo, be, "net.ipv4.conf.swbv0.arp_ignore"); got != "1" {
				t.Fatalf("swbv0.arp_ignore = %s, want 1: the second agent did not start on swbv0", got)
			}
			stopping, staying := a1, a2
			if !firstStops {
				stopping, staying = a2, a1
			}
			if err := topo.Do(be, stopping.Stop); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			for _, p := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
				if !loHas(t, topo, be, p) {
					t.Errorf("VIP %s left lo when one agent stopped, while the other still uses it", p)
				}
			}
			st, err := staying.AgentStatus(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range st.VIPs {
				if !v.OnLo || !v.Added {
					t.Errorf("the running agent's status: %+v, want on lo and the agents' to remove", v)
				}
			}
			if n := vipsMissing(t, staying); n != 0 {
				t.Errorf("switchyard_agent_vips_missing = %v, want 0", n)
			}
			for key, want := range map[string]string{
				"net.ipv4.conf.all.arp_ignore":   "1",
				"net.ipv4.conf.all.arp_announce": "2",
			} {
				if got := sysctlValue(t, topo, be, key); got != want {
					t.Errorf("%s = %s while an agent runs, want %s", key, got, want)
				}
			}

			if err := topo.Do(be, staying.Stop); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			requireSame(t, before, snapshot(t, topo, be))
			requireNoState(t, a1)
			requireNoState(t, a2)
		})
	}
}

// TestSharedVIPsKilledAgentHoldsNothing: an agent killed outright claims
// nothing any more: the other agent's clean stop removes the VIPs and puts
// the "all" sysctls back although the killed one's record still lists
// them, and the killed one's next run takes over what is left of its own
// record and restores the host at its stop.
func TestSharedVIPsKilledAgentHoldsNothing(t *testing.T) {
	t.Parallel()
	topo, be, c1, c2 := twoAgents(t)
	before := snapshot(t, topo, be)
	a1 := startAgent(t, topo, be, c1)
	crash(t, startAgent(t, topo, be, c2))
	if err := topo.Do(be, a1.Stop); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for _, p := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
		if loHas(t, topo, be, p) {
			t.Errorf("VIP %s stayed on lo for an agent that was killed", p)
		}
	}
	if got := sysctlValue(t, topo, be, "net.ipv4.conf.all.arp_ignore"); got != before.sysctls["/proc/sys/net/ipv4/conf/all/arp_ignore"] {
		t.Errorf("all.arp_ignore = %s, kept for an agent that was killed", got)
	}

	a2 := startAgent(t, topo, be, c2)
	if err := topo.Do(be, a2.Stop); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoState(t, a2)
}

// TestSharedVIPsStayForPreviousReleaseAgent: during a rolling upgrade an
// agent of the previous release (its record in format /1, without the pin
// directory that tells whether it runs) shares the VIPs: this release's
// agent stopping leaves them on lo for it rather than remove them from
// under a running agent.
func TestSharedVIPsStayForPreviousReleaseAgent(t *testing.T) {
	t.Parallel()
	topo, be, c1, c2 := twoAgents(t)
	before := snapshot(t, topo, be)
	old := startAgent(t, topo, be, c2)
	rewriteAsPreviousRelease(t, old.StatePath())

	a := startAgent(t, topo, be, c1)
	if err := topo.Do(be, a.Stop); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for _, p := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
		if !loHas(t, topo, be, p) {
			t.Errorf("VIP %s left lo while an agent of the previous release may still use it", p)
		}
	}
	if err := topo.Do(be, old.Stop); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoState(t, a)
	requireNoState(t, old)
}

// TestSharedVIPsStayForAgentWhosePinsWereRemoved: an agent whose pin
// directory someone removed by hand (rm -r, a clean-up of bpffs) still
// runs, and still needs the VIPs and "all" sysctls it shares: the other
// agent's stop leaves them for it. The lock on the pin directory, which
// told that it ran, used to go with the directory, and the other agent's
// stop removed the VIPs and put the sysctls back under it.
func TestSharedVIPsStayForAgentWhosePinsWereRemoved(t *testing.T) {
	t.Parallel()
	topo, be, c1, c2 := twoAgents(t)
	before := snapshot(t, topo, be)
	a1 := startAgent(t, topo, be, c1)
	a2 := startAgent(t, topo, be, c2)
	if err := os.RemoveAll(a1.PinDir()); err != nil {
		t.Fatal(err)
	}
	if err := topo.Do(be, a2.Stop); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for _, p := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
		if !loHas(t, topo, be, p) {
			t.Errorf("VIP %s left lo when one agent stopped, while the other, whose pin directory was removed, still uses it", p)
		}
	}
	for key, want := range map[string]string{
		"net.ipv4.conf.all.arp_ignore":   "1",
		"net.ipv4.conf.all.arp_announce": "2",
	} {
		if got := sysctlValue(t, topo, be, key); got != want {
			t.Errorf("%s = %s while the agent whose pin directory was removed runs, want %s", key, got, want)
		}
	}

	if err := topo.Do(be, a1.Stop); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoState(t, a1)
	requireNoState(t, a2)
}
