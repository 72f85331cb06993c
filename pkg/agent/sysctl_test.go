package agent

import (
	"fmt"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/topology"
	"github.com/vishvananda/netlink"
)

// TestRPFilterRelaxedOnlyOnInterface: the decapsulated packets arrive on
// the agent's interface, so only its reverse-path filter needs to be
// loose. The kernel applies the larger of "all" and the device's value, so
// the device's 2 makes it loose whatever "all" says, and "all" stays: the
// agent used to set all.rp_filter=2 as well, which turned off strict
// anti-spoofing on every other interface of the host (an uplink, say).
func TestRPFilterRelaxedOnlyOnInterface(t *testing.T) {
	t.Parallel()
	const other = "aAother0"
	for _, tc := range []struct{ all, dev, wantDev string }{
		{all: "1", dev: "1", wantDev: "2"},
		{all: "1", dev: "0", wantDev: "2"}, // strict through "all"
		{all: "0", dev: "1", wantDev: "2"},
		{all: "2", dev: "0", wantDev: "0"}, // loose already
		{all: "0", dev: "0", wantDev: "0"}, // off
	} {
		t.Run(fmt.Sprintf("all=%s,eth0=%s", tc.all, tc.dev), func(t *testing.T) {
			t.Parallel()
			topo := newTopology(t)
			be := topo.Backend(1)
			err := topo.Netlink(be, func(h *netlink.Handle) error {
				return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: other}, PeerName: other + "p"})
			})
			if err != nil {
				t.Fatal(err)
			}
			setSysctl(t, topo, be, "net.ipv4.conf.all.rp_filter", tc.all)
			setSysctl(t, topo, be, "net.ipv4.conf."+topology.EthName+".rp_filter", tc.dev)
			setSysctl(t, topo, be, "net.ipv4.conf."+other+".rp_filter", "1")
			before := snapshot(t, topo, be)
			a := startAgent(t, topo, be, testConfig(topo))

			all := sysctlValue(t, topo, be, "net.ipv4.conf.all.rp_filter")
			if all != tc.all {
				t.Errorf("all.rp_filter = %s while running, want %s (left alone)", all, tc.all)
			}
			if got := sysctlValue(t, topo, be, "net.ipv4.conf.eth0.rp_filter"); got != tc.wantDev {
				t.Errorf("eth0.rp_filter = %s while running, want %s", got, tc.wantDev)
			}
			// What the kernel applies on the other interface.
			if eff, want := max(all, sysctlValue(t, topo, be, "net.ipv4.conf."+other+".rp_filter")), max(tc.all, "1"); eff != want {
				t.Errorf("rp_filter in force on %s: %s while the agent runs, want %s, as the admin set it", other, eff, want)
			}
			if err := a.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			requireSame(t, before, snapshot(t, topo, be))
		})
	}
}

// TestSysctlChangedMeanwhileKept: a setting the admin changes while the
// agent runs is the admin's newest choice, and Stop leaves it; the agent
// used to write back the value it had found at Start over it. Settings
// still as the agent set them are restored.
func TestSysctlChangedMeanwhileKept(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "0")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_ignore", "0")
	a := startAgent(t, topo, be, testConfig(topo))
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "1")
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := sysctlValue(t, topo, be, "net.ipv4.conf.eth0.arp_announce"); got != "1" {
		t.Errorf("eth0.arp_announce = %s after Stop, want 1, as the admin set it while the agent ran", got)
	}
	if got := sysctlValue(t, topo, be, "net.ipv4.conf.eth0.arp_ignore"); got != "0" {
		t.Errorf("eth0.arp_ignore = %s after Stop, want 0, as found at Start", got)
	}
}
