package agent

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
	"github.com/vishvananda/netlink"
)

// TestAgentStatus: the status reports the agent's program, its VIPs and
// who put each on lo, the sysctls it changed and the decap counters, and
// reads lo and the sysctls afresh: a VIP removed from lo, or a sysctl
// changed behind the agent's back, shows as such.
func TestAgentStatus(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	// The IPv6 VIP is the admin's; strict reverse-path filtering on eth0.
	if err := topo.AddAddr(be, "lo", netip.PrefixFrom(vip6, 128)); err != nil {
		t.Fatal(err)
	}
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	c := testConfig(topo)
	a := newAgent(t, c)
	if _, err := a.AgentStatus(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("AgentStatus before Start: %v, want ErrNotRunning", err)
	}
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}

	st, err := a.AgentStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != "be1" || st.Interface != topology.EthName || st.AttachMode != "native" || st.ProgramTag == "" ||
		st.PinDir != c.PinDir || st.StateFile != a.StatePath() || st.StartedAt.IsZero() || st.GUEPort != 6080 {
		t.Errorf("status %+v", st)
	}
	wantEncap := []string{topology.BackendIPv4(1).String(), topology.BackendIPv6(1).String()}
	if !st.EncapFollowsInterface || !slices.Equal(st.EncapAddresses, wantEncap) {
		t.Errorf("encap addresses %v (follow %v), want eth0's %v", st.EncapAddresses, st.EncapFollowsInterface, wantEncap)
	}
	wantVIPs := []api.AgentVIP{
		{Address: vip4.String(), OnLo: true, Added: true},
		{Address: vip6.String(), OnLo: true, Added: false},
	}
	if !slices.Equal(st.VIPs, wantVIPs) {
		t.Errorf("VIPs %+v, want %+v", st.VIPs, wantVIPs)
	}
	rp := api.AgentSysctl{Name: "net.ipv4.conf.eth0.rp_filter", Old: "1", Set: "2", Now: "2"}
	announce := api.AgentSysctl{Name: "net.ipv4.conf.eth0.arp_announce", Old: "0", Set: "2", Now: "2"}
	if !slices.Contains(st.Sysctls, rp) || !slices.Contains(st.Sysctls, announce) {
		t.Errorf("sysctls %+v, want %+v and %+v among them", st.Sysctls, rp, announce)
	}
	stats, err := a.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for name := range stats {
		if _, ok := st.Counters[name]; !ok {
			t.Errorf("counters %v lack %s", st.Counters, name)
		}
	}

	// Behind the agent's back: the VIP goes, a sysctl changes.
	err = topo.Netlink(be, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		addr, err := netlink.ParseAddr(vip4.String() + "/32")
		if err != nil {
			return err
		}
		return h.AddrDel(lo, addr)
	})
	if err != nil {
		t.Fatal(err)
	}
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "1")
	st, err = a.AgentStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.VIPs[0].OnLo {
		t.Errorf("VIP %s removed from lo reads %+v", vip4, st.VIPs[0])
	}
	announce.Now = "1"
	if !slices.Contains(st.Sysctls, announce) {
		t.Errorf("sysctls %+v, want %+v among them", st.Sysctls, announce)
	}

	if err := topo.Do(be, a.Stop); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := a.AgentStatus(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("AgentStatus after Stop: %v, want ErrNotRunning", err)
	}
}

// TestStatusInterfaceIndexReused: the status's interface line followed
// the interface by its index alone. With the interface deleted while the
// agent ran and its index given to another device (`ip link add ...
// index N`, or one moved into the namespace), it showed that device as
// the agent's interface, "renamed from eth0". It now shows eth0, as
// configured; a rename is still followed (TestInterfaceRenamedWhileRunning).
func TestStatusInterfaceIndexReused(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	a := startAgent(t, topo, be, testConfig(topo))
	const other = "systi0"
	topo.ReuseEthIndex(t, be, other, "systi1")
	st, err := a.AgentStatus(context.Background())
	if err != nil {
		t.Fatalf("AgentStatus after the reuse: %v", err)
	}
	if st.Interface != topology.EthName || st.ConfiguredInterface != "" {
		t.Errorf("status interface %q (configured %q), want %q: %s took the index of the deleted eth0, and is not the agent's interface renamed",
			st.Interface, st.ConfiguredInterface, topology.EthName, other)
	}
}

// TestStatusInterfaceGone: once the agent's interface is deleted, the
// watcher reports it on Lost and `switchyard agent` stops, but a status
// call can come first. It failed as a whole (`read sysctl
// net.ipv4.conf.eth0.arp_ignore: no such file or directory`) whenever
// the agent had changed a setting of the interface, and, in generic
// mode, on its GRO. It now answers: the interface is gone (the agent's
// words, on the interface line), and so are its settings and its GRO,
// none of them counted as changed behind the agent's back. Here the
// agent runs until Stop (Lost only reports), so the call lands in that
// window every time.
func TestStatusInterfaceGone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		remove func(t *testing.T, topo *topology.Topology, be string)
	}{
		{"deleted", func(t *testing.T, topo *topology.Topology, be string) {
			if err := topo.DeleteLink(be, topology.EthName); err != nil {
				t.Fatal(err)
			}
		}},
		{"index reused", func(t *testing.T, topo *topology.Topology, be string) {
			topo.ReuseEthIndex(t, be, "systg0", "systg1")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topo := newTopology(t)
			be := topo.Backend(1)
			// GRO on, as a NIC's driver has it, and eth0's settings
			// left at the kernel's defaults: the agent changes both.
			if err := topo.SetGRO(be, topology.EthName, true); err != nil {
				t.Fatal(err)
			}
			a := newAgent(t, testConfig(topo))
			a.mode = datapath.AttachGeneric
			if err := topo.Do(be, a.Start); err != nil {
				t.Fatalf("Start: %v", err)
			}
			st, err := a.AgentStatus(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(st.Sysctls, func(s api.AgentSysctl) bool { return strings.Contains(s.Name, ".eth0.") }) || st.GRO == nil {
				t.Fatalf("the agent changed no setting of eth0 (%+v) or not its GRO (%+v): the test proves nothing", st.Sysctls, st.GRO)
			}
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(a.Collector())

			tc.remove(t, topo, be)
			st, err = a.AgentStatus(context.Background())
			if err != nil {
				t.Fatalf("AgentStatus with eth0 gone: %v", err)
			}
			if want := a.goneError().Error(); st.ProgramAttached || st.ProgramDetached != want {
				t.Errorf("status program attached %t, detached %q; want the interface gone: %q", st.ProgramAttached, st.ProgramDetached, want)
			}
			for _, s := range st.Sysctls {
				ofEth := strings.Contains(s.Name, ".eth0.")
				if s.Gone != ofEth || ofEth && s.Now != "" || !ofEth && s.Now != s.Set {
					t.Errorf("status sysctl %+v; want those of eth0 gone, with no value now, and the others as the agent set them", s)
				}
			}
			if want := (&api.AgentGRO{Interface: topology.EthName, WasOn: true, Gone: true}); !reflect.DeepEqual(st.GRO, want) {
				t.Errorf("status GRO %+v, want %+v", st.GRO, want)
			}
			var out strings.Builder
			if err := api.WriteAgentStatus(&out, st); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"the agent's interface is gone: eth0", "GONE with its interface", "GONE: interface eth0 is gone"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("status --agent does not say %q:\n%s", want, out.String())
				}
			}
			m := gather(t, reg)
			if v, ok := m["switchyard_agent_sysctls_overridden"]; !ok || v != 0 || m["switchyard_agent_scrape_errors_total"] != 0 {
				t.Errorf("scrape with eth0 gone: sysctls_overridden %v (%t), scrape errors %v; want 0: settings gone with their interface were changed by nobody",
					v, ok, m["switchyard_agent_scrape_errors_total"])
			}
			if err := a.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
		})
	}
}
