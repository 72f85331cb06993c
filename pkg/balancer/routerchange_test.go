package balancer

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// A router replaced by one with another MAC (or failed over to a router
// with its own MAC) that sends no gratuitous ARP, or whose gratuitous ARP
// is lost: the balancer's only next hop kept its old MAC for good, STALE
// in the neighbour table, as XDP traffic bypasses the neighbour layer and
// nothing else asked the kernel to check it. All VIP traffic went to a MAC
// no one has, while status said resolved. The balancer now has the kernel
// check its next hop on every tick, whether or not there are others to
// choose, and takes the new MAC.
func TestNextHopFollowsARouterReplacedWithoutGratuitousARP(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "syaumac", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	// The kernel's neighbour timers shortened, as a router's absence
	// would otherwise take 30 s or more to notice.
	for key, value := range map[string]string{
		"net.ipv4.neigh." + topology.EthName + ".base_reachable_time_ms": "500",
		"net.ipv4.neigh." + topology.EthName + ".delay_first_probe_time": "0",
		"net.ipv4.neigh." + topology.EthName + ".retrans_time_ms":        "200",
	} {
		if err := topo.Sysctl(node, key, value); err != nil {
			t.Fatal(err)
		}
	}
	routerIf := topology.RouterBalancerIf(1)
	// No gratuitous ARP when the router's MAC changes (the default).
	if err := topo.Sysctl(topo.Router(), "net.ipv4.conf."+routerIf+".arp_notify", "0"); err != nil {
		t.Fatal(err)
	}
	logs := &logRecords{}
	b, _ := runInNode(t, topo, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1), logs)
	gw := topology.RouterBalancerIPv4(1)
	waitNextHop(t, b, logs, gw, 10*time.Second, "since the start")

	newMAC, _ := net.ParseMAC("02:00:00:00:0a:77")
	if err := topo.Netlink(topo.Router(), func(h *netlink.Handle) error {
		l, err := h.LinkByName(routerIf)
		if err != nil {
			return err
		}
		return h.LinkSetHardwareAddr(l, newMAC)
	}); err != nil {
		t.Fatalf("change the MAC of %s in %s: %v", routerIf, topo.Router(), err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, err := b.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.NextHop.Resolved && st.NextHop.MAC == newMAC.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("router %s now at %s, without a gratuitous ARP: next hop %+v after 20 s, want its new MAC; warnings: %v",
				gw, newMAC, st.NextHop, logs.matching(slog.LevelWarn))
		}
	}
}

// A next hop that stays unresolved (no default route, here) was warned of
// as "datapath settings" on every tick, every 2 s, for as long as it
// lasted: 43,200 lines a day saying what status and
// switchyard_nexthop_resolved already say. It is warned of once, and
// again only when it comes back after being resolved, or the error
// changes.
func TestUnresolvedNextHopIsWarnedOfOnce(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "syaulog", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	if err := topo.Netlink(node, deleteDefaultRoutes); err != nil {
		t.Fatal(err)
	}
	logs := &logRecords{}
	b, _ := runInNode(t, topo, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1), logs)
	noRoute := func() []string { return logs.matching(slog.LevelWarn, "datapath settings", "no default route") }
	// What the tick does while the next hop is unresolved; and the
	// start (New, then Run) synced twice already.
	tick := func(n int) {
		t.Helper()
		for range n {
			if err := b.do(context.Background(), func() { b.logSettings(b.syncSettings()) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	tick(3)
	if got := noRoute(); len(got) != 1 {
		t.Errorf("no default route, over a start and 3 ticks: %d warnings %q, want 1", len(got), got)
	}

	gw := topology.RouterBalancerIPv4(1)
	if err := topo.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		_, any4, _ := net.ParseCIDR("0.0.0.0/0")
		return h.RouteAdd(&netlink.Route{Dst: any4, LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()})
	}); err != nil {
		t.Fatal(err)
	}
	waitNextHop(t, b, logs, gw, 10*time.Second, "default route added")
	if err := topo.Netlink(node, deleteDefaultRoutes); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(noRoute()) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("default route deleted again: no new warning within 10 s; warnings: %q", logs.matching(slog.LevelWarn))
		}
	}
	tick(3)
	if got := noRoute(); len(got) != 2 {
		t.Errorf("no default route again, over 3 ticks: %d warnings %q, want 2 (one each time it went)", len(got), got)
	}
}

// A nexthop.gateway that is not on the interface's link (here the
// router's address on the backends' subnet) is reached by the kernel
// through another router: the probes resolved that one, the gateway's
// neighbour entry never appeared, and the balancer said "MAC not resolved
// yet" for ever, as if the router were slow to answer. It now says that
// the gateway is not on the link, through which router the kernel reaches
// it, and what to set.
func TestGatewayOffTheLinkIsNamed(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "syauoff", Balancers: 1, Backends: 1})
	gw, via := topology.RouterBackendIPv4(1), topology.RouterBalancerIPv4(1)
	logs := &logRecords{}
	yaml := "nexthop: {gateway: " + gw.String() + "}\n" + strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1)
	b, _ := runInNode(t, topo, yaml, logs)
	got := logs.matching(slog.LevelWarn, "datapath settings")
	if len(got) != 1 || !strings.Contains(got[0], "next hop "+gw.String()+" is not on the link of "+topology.EthName) ||
		!strings.Contains(got[0], "through "+via.String()) || !strings.Contains(got[0], "set nexthop.gateway to a router on") {
		t.Errorf("nexthop.gateway %s, reached through %s: warnings %q, want one saying it is not on the link of %s, through %s, and what to set",
			gw, via, got, topology.EthName, via)
	}
	if st, err := b.Status(context.Background()); err != nil || st.NextHop.Resolved || st.NextHop.Gateway != gw.String() {
		t.Errorf("nexthop.gateway %s off the link: next hop %+v (%v), want %s, not resolved", gw, st.NextHop, err, gw)
	}
}

// A router that answers from another MAC at the same address (replaced,
// or a VRRP failover without a virtual MAC, announced by a gratuitous
// ARP) moves all VIP traffic to another box: the balancer took the new
// MAC without a word, so nothing in its log matched the moment traffic
// moved. It says so once, naming both MACs.
func TestNextHopMACChangeIsLogged(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "syaugarp", Balancers: 1, Backends: 1})
	routerIf := topology.RouterBalancerIf(1)
	// A gratuitous ARP when the router's MAC changes.
	if err := topo.Sysctl(topo.Router(), "net.ipv4.conf."+routerIf+".arp_notify", "1"); err != nil {
		t.Fatal(err)
	}
	logs := &logRecords{}
	b, _ := runInNode(t, topo, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1), logs)
	gw := topology.RouterBalancerIPv4(1)
	waitNextHop(t, b, logs, gw, 10*time.Second, "since the start")
	st, err := b.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	oldMAC := st.NextHop.MAC
	newMAC, _ := net.ParseMAC("02:00:00:00:0a:78")
	if err := topo.Netlink(topo.Router(), func(h *netlink.Handle) error {
		l, err := h.LinkByName(routerIf)
		if err != nil {
			return err
		}
		return h.LinkSetHardwareAddr(l, newMAC)
	}); err != nil {
		t.Fatalf("change the MAC of %s in %s: %v", routerIf, topo.Router(), err)
	}
	want := []string{"next hop MAC changed", "gateway=" + gw.String(), "from=" + oldMAC, "to=" + newMAC.String()}
	for deadline := time.Now().Add(10 * time.Second); len(logs.matching(slog.LevelInfo, want...)) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("router %s moved from %s to %s with a gratuitous ARP: no info %q within 10 s; infos: %q",
				gw, oldMAC, newMAC, want, logs.matching(slog.LevelInfo, "next hop"))
		}
	}
	if st, err := b.Status(context.Background()); err != nil || !st.NextHop.Resolved || st.NextHop.MAC != newMAC.String() {
		t.Errorf("after the gratuitous ARP: next hop %+v (%v), want %s resolved", st.NextHop, err, newMAC)
	}
}

// A default route changed to another router (replaced at another
// address, or a routing daemon's choice) moves all VIP traffic to that
// box: the balancer followed it without a word. It says so once, naming
// both.
func TestNextHopChangedWithTheRouteIsLogged(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "sygwchg", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	logs := &logRecords{}
	b, _ := runInNode(t, topo, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1), logs)
	gw := topology.RouterBalancerIPv4(1)
	waitNextHop(t, b, logs, gw, 10*time.Second, "since the start")
	// Another router on the link, resolved by a permanent entry.
	other := netip.MustParseAddr("10.1.1.9")
	otherMAC, _ := net.ParseMAC("02:00:00:00:0a:09")
	if err := topo.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		if err := h.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4,
			State: netlink.NUD_PERMANENT, IP: other.AsSlice(), HardwareAddr: otherMAC}); err != nil {
			return err
		}
		_, any4, _ := net.ParseCIDR("0.0.0.0/0")
		return h.RouteReplace(&netlink.Route{Dst: any4, LinkIndex: l.Attrs().Index, Gw: other.AsSlice()})
	}); err != nil {
		t.Fatal(err)
	}
	waitNextHop(t, b, logs, other, 10*time.Second, "default route moved to "+other.String())
	if got := logs.matching(slog.LevelInfo, "next hop changed with the default route", "from="+gw.String(), "to="+other.String()); len(got) != 1 {
		t.Errorf("%d infos naming the move from %s to %s, want 1; infos: %q", len(got), gw, other, logs.matching(slog.LevelInfo))
	}
}
