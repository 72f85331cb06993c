package agent

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/vishvananda/netlink"
)

// TestIPv6VIPWithIPv6DisabledOnLo: with IPv6 turned off on lo the kernel
// refuses an IPv6 VIP with EACCES, which the agent passed on as a bare
// "permission denied" to a user who is root. The error names the VIP, the
// sysctl and the fix, and the partial start is undone.
func TestIPv6VIPWithIPv6DisabledOnLo(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv6.conf.lo.disable_ipv6", "1")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	a := newAgent(t, c)
	err := topo.Do(be, a.Start)
	if err == nil {
		t.Fatal("Start succeeded with IPv6 disabled on lo")
	}
	t.Logf("Start: %v", err)
	for _, want := range []string{vip6.String(), "net.ipv6.conf.lo.disable_ipv6", "set it to 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start: %v; want it to name %q", err, want)
		}
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoPins(t, c.PinDir)
}

// TestVIPRemovedBehindAgentNoLongerItsOwn: a VIP the agent added that
// someone removes from lo is no longer the agent's; one added again
// afterwards (keepalived taking it back, an admin) is whoever added it,
// and the agent's stop leaves it on lo. The agent used to keep counting
// it as its own, and its stop (or, after a crash, its next run's) removed
// the other daemon's address.
func TestVIPRemovedBehindAgentNoLongerItsOwn(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	a := startAgent(t, topo, be, testConfig(topo))
	p4 := netip.PrefixFrom(vip4, 32)
	err := topo.Netlink(be, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.AddrDel(lo, &netlink.Addr{IPNet: ipNet(p4)})
	})
	if err != nil {
		t.Fatal(err)
	}
	// The status says it as soon as the agent has taken note.
	deadline := time.Now().Add(testTimeout)
	for {
		st, err := a.AgentStatus(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		want := []api.AgentVIP{{Address: vip4.String()}, {Address: vip6.String(), OnLo: true, Added: true}}
		if slices.Equal(st.VIPs, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status VIPs %+v %s after %s was removed from lo, want %+v: the agent still takes it for its own",
				st.VIPs, testTimeout, p4, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Its record no longer lists it, so a crash now would not make the
	// next run take the address for its own either.
	rec, _ := readStateRecord(t, a.StatePath(), "the running agent's state file is gone")
	if slices.Contains(rec.VIPs, p4) || !slices.Contains(rec.VIPs, netip.PrefixFrom(vip6, 128)) {
		t.Errorf("state file records VIPs %v, want %v without %v", rec.VIPs, vip6, p4)
	}

	// Another daemon puts it back: it is that daemon's now.
	if err := topo.AddAddr(be, "lo", p4); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	lo := snapshot(t, topo, be).lo
	if !slices.ContainsFunc(lo, func(s string) bool { return strings.HasPrefix(s, p4.String()+" ") }) {
		t.Errorf("lo holds %v after Stop: %v, added again by another daemon, was removed", lo, p4)
	}
	if slices.ContainsFunc(lo, func(s string) bool { return strings.HasPrefix(s, vip6.String()+"/") }) {
		t.Errorf("lo holds %v after Stop: the agent's %v stayed", lo, vip6)
	}
}
