package balancer

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// A next hop is resolved only once the datapath took the settings that
// carry its MAC. Before, the balancer marked it resolved before the write:
// when the datapath refused the settings (here: an interface MTU under
// 576), status and switchyard_nexthop_resolved said resolved while VIP
// traffic was dropped as no_nexthop.
func TestNextHopResolvedOnlyOnceWritten(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "aLnh", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	gw := topology.RouterBalancerIPv4(1)
	routerMAC, _ := net.ParseMAC("02:00:00:00:0a:01")
	setMTU := func(mtu int) {
		t.Helper()
		err := topo.Do(node, func() error {
			l, err := netlink.LinkByName(topology.EthName)
			if err != nil {
				return err
			}
			return netlink.LinkSetMTU(l, mtu)
		})
		if err != nil {
			t.Fatalf("set the MTU of %s in %s to %d: %v", topology.EthName, node, mtu, err)
		}
	}
	setMTU(400)
	// A permanent entry: resolved whatever the router answers.
	err := topo.Do(node, func() error {
		l, err := netlink.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		return netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4,
			State: netlink.NUD_PERMANENT, IP: gw.AsSlice(), HardwareAddr: routerMAC})
	})
	if err != nil {
		t.Fatalf("add the router's neighbour entry: %v", err)
	}

	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	yaml := "nexthop: {gateway: " + gw.String() + "}\n" + strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1)
	cfg, dp := loadWithDatapath(t, path, yaml)
	// The control loop is not run: every call below reads the interface
	// and neighbour table of the balancer's namespace, on Do's thread.
	var b *Balancer
	if err := topo.Do(node, func() error {
		var err error
		b, err = New(Config{ConfigPath: path, Initial: cfg, Datapath: dp})
		return err
	}); err != nil {
		t.Fatalf("New with settings the datapath refuses (not fatal at start): %v", err)
	}
	t.Cleanup(b.health.Close)
	st, _, err := b.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.NextHop.Resolved || st.NextHop.MAC != "" {
		t.Errorf("settings refused (MTU 400): status says next hop resolved %v, MAC %q; want not resolved, as the datapath has no next hop",
			st.NextHop.Resolved, st.NextHop.MAC)
	}

	// Once the datapath takes them, the next hop is resolved.
	setMTU(1500)
	if err := topo.Do(node, b.syncSettings); err != nil {
		t.Fatalf("settings with the MTU raised: %v", err)
	}
	if st, _, err = b.status(); err != nil {
		t.Fatal(err)
	}
	if !st.NextHop.Resolved || st.NextHop.MAC != routerMAC.String() {
		t.Errorf("settings written: next hop resolved %v, MAC %q; want resolved, %s", st.NextHop.Resolved, st.NextHop.MAC, routerMAC)
	}
}

// A next hop that is not resolved is a warning whichever way the control
// loop learns it: it was logged as an error ("update datapath settings")
// when a network event brought it, but as a warning by the tick, and an
// operator alerting on errors was paged for a neighbour that answers a
// moment later.
func TestNextHopLostIsAWarningAfterANetworkEvent(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "swcnh", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	// On the balancer's link (10.1.1.0/24), answered by no one: only the
	// entry below resolves it.
	gw := netip.MustParseAddr("10.1.1.9")
	mac, _ := net.ParseMAC("02:00:00:00:0a:09")
	neigh := func(h *netlink.Handle) (*netlink.Neigh, error) {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return nil, err
		}
		return &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4,
			State: netlink.NUD_PERMANENT, IP: gw.AsSlice(), HardwareAddr: mac}, nil
	}
	if err := topo.Netlink(node, func(h *netlink.Handle) error {
		n, err := neigh(h)
		if err != nil {
			return err
		}
		return h.NeighSet(n)
	}); err != nil {
		t.Fatalf("add the next hop's neighbour entry: %v", err)
	}

	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	yaml := "nexthop: {gateway: " + gw.String() + "}\n" + strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1)
	cfg, dp := loadWithDatapath(t, path, yaml)
	logs := &logRecords{}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *Balancer, 1)
	runErr := make(chan error, 1)
	// Run in the balancer's namespace: the watch's sockets are opened on
	// Run's thread.
	go func() {
		runErr <- topo.Do(node, func() error {
			b, err := New(Config{ConfigPath: path, Initial: cfg, Datapath: dp, Logger: slog.New(logs)})
			if err != nil {
				started <- nil
				return err
			}
			started <- b
			return b.Run(ctx)
		})
	}()
	b := <-started
	t.Cleanup(func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if b == nil {
		t.Fatal(<-runErr)
	}
	if got := logs.matching(slog.LevelInfo, "next hop resolved"); len(got) != 1 {
		t.Fatalf("next hop %s with a permanent entry: %d infos saying it is resolved, want 1", gw, len(got))
	}

	// Once the loop takes requests, the watch is subscribed and Run's
	// first sync done. While the next hop is resolved the tick syncs
	// nothing: what follows comes from the neighbour event.
	if err := b.do(ctx, func() {}); err != nil {
		t.Fatal(err)
	}
	if err := topo.Netlink(node, func(h *netlink.Handle) error {
		n, err := neigh(h)
		if err != nil {
			return err
		}
		return h.NeighDel(n)
	}); err != nil {
		t.Fatalf("delete the next hop's neighbour entry: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(logs.matching(slog.LevelWarn, "next hop lost")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("neighbour entry of %s deleted: no \"next hop lost\" within 5 s", gw)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The sync that logged it has returned, and its error been logged,
	// once the loop runs this.
	if err := b.do(ctx, func() {}); err != nil {
		t.Fatal(err)
	}
	if got := logs.matching(slog.LevelError, "not resolved"); len(got) != 0 {
		t.Errorf("next hop unresolved after a neighbour event: logged as an error %d times, want a warning: %v", len(got), got)
	}
	if got := logs.matching(slog.LevelWarn, "datapath settings"); len(got) == 0 {
		t.Errorf("next hop unresolved after a neighbour event: no \"datapath settings\" warning")
	}
}

// A multipath (ECMP) default route lists its next hops apart from the
// route, with no gateway or interface of its own: the balancer found no
// default route on its interface ("set nexthop.gateway") and dropped all
// VIP traffic. It now takes the lowest next hop through its interface,
// whatever order the route lists them in, says so, and ignores the next
// hops on other interfaces. IPv6 next hops appended one by one (`ip -6
// route append`) count the same.
func TestGatewayOfAMultipathDefaultRoute(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "htmp", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	const other = "htx0"
	var eth, oth int
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: other}, PeerName: "htx1"}); err != nil {
			return err
		}
		for _, name := range []string{other, "htx1"} {
			l, err := h.LinkByName(name)
			if err != nil {
				return err
			}
			if err := h.LinkSetUp(l); err != nil {
				return err
			}
		}
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		eth = l.Attrs().Index
		if l, err = h.LinkByName(other); err != nil {
			return err
		}
		oth = l.Attrs().Index
		for _, p := range []string{"10.9.0.2/24", "fd00:9::2/64"} {
			a, _ := netlink.ParseAddr(p)
			a.Flags = unix.IFA_F_NODAD
			if err := h.AddrAdd(l, a); err != nil {
				return err
			}
		}
		// The topology's default routes, through eth0 alone.
		if err := deleteDefaultRoutes(h); err != nil {
			return err
		}
		// default nexthop via 10.9.0.1 dev htx0 nexthop via 10.1.1.7
		// dev eth0 nexthop via 10.1.1.5 dev eth0
		_, any4, _ := net.ParseCIDR("0.0.0.0/0")
		return h.RouteAdd(&netlink.Route{Dst: any4, MultiPath: []*netlink.NexthopInfo{
			{LinkIndex: oth, Gw: net.ParseIP("10.9.0.1")},
			{LinkIndex: eth, Gw: net.ParseIP("10.1.1.7")},
			{LinkIndex: eth, Gw: net.ParseIP("10.1.1.5")},
		}})
	})
	if err != nil {
		t.Fatalf("multipath default route in %s: %v", node, err)
	}
	nextHops := func() []netip.Addr {
		t.Helper()
		var hops []netip.Addr
		if err := topo.Do(node, func() (err error) {
			hops, err = nextHopsFor(eth, netip.Addr{})
			return err
		}); err != nil {
			t.Fatalf("next hops: %v", err)
		}
		return hops
	}
	want := []netip.Addr{netip.MustParseAddr("10.1.1.5"), netip.MustParseAddr("10.1.1.7")}
	if hops := nextHops(); !slices.Equal(hops, want) {
		t.Errorf("IPv4 multipath default route: next hops on eth0 %v, want %v", hops, want)
	}

	// What the daemon shows and says of it.
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	cfg, dp := loadWithDatapath(t, path, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1))
	logs := &logRecords{}
	b := newInNode(t, topo, node, path, cfg, dp, logs)
	if st, _, err := b.status(); err != nil || st.NextHop.Gateway != "10.1.1.5" {
		t.Errorf("status: next hop %q (%v), want 10.1.1.5", st.NextHop.Gateway, err)
	}
	if got := logs.matching(slog.LevelInfo, "several next hops", "gateway=10.1.1.5", "next_hops=2"); len(got) != 1 {
		t.Errorf("%d infos naming the next hop chosen among 2, want 1: %v", len(got), logs.matching(slog.LevelInfo))
	}

	// IPv6, the route built by appending its next hops one at a time.
	err = topo.Netlink(node, func(h *netlink.Handle) error {
		_, any4, _ := net.ParseCIDR("0.0.0.0/0")
		if err := h.RouteDel(&netlink.Route{Dst: any4}); err != nil {
			return err
		}
		_, any6, _ := net.ParseCIDR("::/0")
		for _, hop := range []struct {
			link int
			gw   string
		}{{oth, "fd00:9::1"}, {eth, "fd00:1:1::7"}, {eth, "fd00:1:1::5"}} {
			if err := h.RouteAppend(&netlink.Route{Dst: any6, LinkIndex: hop.link, Gw: net.ParseIP(hop.gw)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("IPv6 multipath default route in %s: %v", node, err)
	}
	want = []netip.Addr{netip.MustParseAddr("fd00:1:1::5"), netip.MustParseAddr("fd00:1:1::7")}
	if hops := nextHops(); !slices.Equal(hops, want) {
		t.Errorf("IPv6 multipath default route: next hops on eth0 %v, want %v", hops, want)
	}
}

// An IPv4 default route through an IPv6 router (`ip route add default via
// inet6 fd00:1:1::1`, as BGP unnumbered sets up) names its gateway apart
// (RTA_VIA): the balancer found no default route, and dropped all VIP
// traffic; it now takes that router and resolves its MAC over ND.
func TestGatewayOfAnIPv4RouteViaIPv6(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "htvia", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	router := topology.RouterBalancerIPv6(1)
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		if err := deleteDefaultRoutes(h); err != nil {
			return err
		}
		_, any4, _ := net.ParseCIDR("0.0.0.0/0")
		return h.RouteAdd(&netlink.Route{Dst: any4, LinkIndex: l.Attrs().Index,
			Via: &netlink.Via{AddrFamily: netlink.FAMILY_V6, Addr: router.AsSlice()}})
	})
	if err != nil {
		t.Fatalf("IPv4 default route via inet6 %s in %s: %v", router, node, err)
	}
	logs := &logRecords{}
	b, _ := runInNode(t, topo, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1), logs)
	waitNextHop(t, b, logs, router, 10*time.Second, "since the start")
}

// When the default route goes, status names no next hop ("-"): it went on
// naming the router of the route that was gone, so an operator looked at
// that router's ARP instead of the missing route, and with no route from
// the start it showed "invalid IP", as did the "next hop lost" warning,
// which now names the router lost.
func TestStatusNamesNoGatewayWithoutADefaultRoute(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "htnogw", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	logs := &logRecords{}
	b, _ := runInNode(t, topo, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1), logs)
	status := func() api.NextHop {
		t.Helper()
		st, err := b.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return st.NextHop
	}
	for deadline := time.Now().Add(10 * time.Second); !status().Resolved; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("next hop %+v not resolved 10 s after the start", status())
		}
	}
	// (IPv6's first: the next hop is the IPv4 route's router, which the
	// IPv6 route would replace if it outlived the IPv4 one.)
	if err := topo.Netlink(node, deleteDefaultRoutes); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); status().Resolved; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("default routes deleted: next hop %+v still resolved after 10 s", status())
		}
	}
	if nh := status(); nh.Gateway != "" {
		t.Errorf("no default route: status names next hop %q, want none", nh.Gateway)
	}
	gw := topology.RouterBalancerIPv4(1).String()
	if got := logs.matching(slog.LevelWarn, "next hop lost"); len(got) != 1 || !strings.Contains(got[0], "gateway="+gw) {
		t.Errorf("default route deleted: warnings %q, want one \"next hop lost\" naming %s", got, gw)
	}
}

// deleteDefaultRoutes deletes the default routes of h's namespace, IPv6's
// first.
func deleteDefaultRoutes(h *netlink.Handle) error {
	for _, fam := range []int{netlink.FAMILY_V6, netlink.FAMILY_V4} {
		routes, err := h.RouteListFiltered(fam, &netlink.Route{}, 0)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			if err := h.RouteDel(&r); err != nil {
				return err
			}
		}
	}
	return nil
}

// ecmpLab is a balancer namespace whose default route is multipath over
// routers that are addresses of the router namespace, resolved before the
// balancer starts (the first one chosen is then the lowest, not the first
// to answer), with the kernel's neighbour timers shortened so that the
// entry of a router gone FAILS within a second or two of being checked.
type ecmpLab struct {
	t    *testing.T
	topo *topology.Topology
	node string
	eth  int
}

func newECMPLab(t *testing.T, prefix string, hops ...netip.Addr) *ecmpLab {
	t.Helper()
	topo := topology.NewForTest(t, topology.Config{Prefix: prefix, Balancers: 1, Backends: 1})
	l := &ecmpLab{t: t, topo: topo, node: topo.Balancer(1)}
	for key, value := range map[string]string{
		"net.ipv4.neigh." + topology.EthName + ".base_reachable_time_ms": "500",
		"net.ipv4.neigh." + topology.EthName + ".delay_first_probe_time": "0",
		"net.ipv4.neigh." + topology.EthName + ".retrans_time_ms":        "200",
	} {
		if err := topo.Sysctl(l.node, key, value); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range hops {
		l.routerAddr(a, true)
	}
	err := topo.Netlink(l.node, func(h *netlink.Handle) error {
		eth, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		l.eth = eth.Attrs().Index
		var nh []*netlink.NexthopInfo
		for _, a := range slices.Backward(hops) { // not in the order chosen
			nh = append(nh, &netlink.NexthopInfo{LinkIndex: l.eth, Gw: a.AsSlice()})
		}
		_, any4, _ := net.ParseCIDR("0.0.0.0/0")
		return h.RouteReplace(&netlink.Route{Dst: any4, MultiPath: nh})
	})
	if err != nil {
		t.Fatalf("multipath default route in %s: %v", l.node, err)
	}
	for _, a := range hops {
		l.resolve(a)
	}
	return l
}

// routerAddr adds a to the router's side of the balancer's link, or
// removes it: the router a names then no longer answers.
func (l *ecmpLab) routerAddr(a netip.Addr, add bool) {
	l.t.Helper()
	router, routerIf := l.topo.Router(), topology.RouterBalancerIf(1)
	if add {
		if err := l.topo.AddAddr(router, routerIf, netip.PrefixFrom(a, 24)); err != nil {
			l.t.Fatal(err)
		}
		return
	}
	if err := l.topo.Netlink(router, func(h *netlink.Handle) error {
		link, err := h.LinkByName(routerIf)
		if err != nil {
			return err
		}
		return h.AddrDel(link, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(24, 32)}})
	}); err != nil {
		l.t.Fatalf("remove %s from %s in %s: %v", a, routerIf, router, err)
	}
}

// resolve resolves a's MAC in the balancer's namespace as any traffic to
// it would, and waits until the entry is usable.
func (l *ecmpLab) resolve(a netip.Addr) {
	l.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var ok bool
		if err := l.topo.Do(l.node, func() error {
			if _, ok = neighbourMAC(l.eth, a); !ok {
				probeGateway(a, topology.EthName)
			}
			return nil
		}); err != nil {
			l.t.Fatal(err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s not resolved in %s within 10 s", a, l.node)
		}
	}
}

// idle waits until a's entry is STALE: no traffic of the kernel's checks
// it any more (XDP's bypasses the neighbour layer), so that what notices a
// router gone is the balancer's own check.
func (l *ecmpLab) idle(a netip.Addr) {
	l.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var state string
		if err := l.topo.Do(l.node, func() error {
			state = neighbourState(l.eth, a)
			return nil
		}); err != nil {
			l.t.Fatal(err)
		}
		if state == "STALE" {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("neighbour entry of %s in %s %s after 10 s, want STALE", a, l.node, state)
		}
	}
}

// waitFor waits until b's status says its next hop is gw, resolved.
func (l *ecmpLab) waitFor(b *Balancer, logs *logRecords, gw netip.Addr, why string) {
	l.t.Helper()
	waitNextHop(l.t, b, logs, gw, 20*time.Second, why)
}

// waitNextHop waits up to limit until b's status says its next hop is gw,
// resolved; else fails t, saying why it waited and what b warned of.
func waitNextHop(t *testing.T, b *Balancer, logs *logRecords, gw netip.Addr, limit time.Duration, why string) {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(10 * time.Millisecond) {
		st, err := b.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.NextHop.Resolved && st.NextHop.Gateway == gw.String() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: next hop %+v after %s, want %s resolved; warnings: %v", why, st.NextHop, limit, gw, logs.matching(slog.LevelWarn))
		}
	}
}

// With a multipath (ECMP) default route the datapath sends VIP traffic to
// one next hop, the lowest: when that router died and nothing withdrew it
// from the route (static ECMP), its neighbour entry FAILED, and all VIP
// traffic was dropped as no_nexthop though the other router answered. The
// balancer now moves to a next hop whose entry is usable, says so once,
// and stays on it when the first recovers (no flapping), until it fails in
// turn. The routers are two addresses of the router namespace, one taken
// away at a time, once nothing but the balancer would notice it.
func TestNextHopFailsOverWithinAMultipathDefaultRoute(t *testing.T) {
	low, high := netip.MustParseAddr("10.1.1.3"), netip.MustParseAddr("10.1.1.7")
	lab := newECMPLab(t, "hzecmp", low, high)
	logs := &logRecords{}
	b, _ := runInNode(t, lab.topo, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1), logs)
	switched := func(from, to netip.Addr) []string {
		return logs.matching(slog.LevelWarn, "next hop switched", "from="+from.String(), "to="+to.String())
	}
	lab.waitFor(b, logs, low, "both routers answer")

	lab.idle(low)
	lab.routerAddr(low, false)
	lab.waitFor(b, logs, high, low.String()+" gone from the router")
	if got := switched(low, high); len(got) != 1 || !strings.Contains(got[0], "from_neighbour=FAILED") {
		t.Errorf("%s gone: warnings %q, want one \"next hop switched\" from %s (FAILED) to %s", low, got, low, high)
	}
	if got := logs.matching(slog.LevelWarn, "next hop lost"); len(got) != 0 {
		t.Errorf("%s gone, %s there: warnings %q, want no \"next hop lost\"", low, high, got)
	}

	// Back, and resolved: the balancer stays where it is.
	lab.routerAddr(low, true)
	lab.resolve(low)
	if err := b.do(context.Background(), func() { b.logSettings(b.syncSettings()) }); err != nil {
		t.Fatal(err)
	}
	if st, err := b.Status(context.Background()); err != nil || st.NextHop.Gateway != high.String() {
		t.Errorf("%s back: next hop %+v (%v), want %s still", low, st.NextHop, err, high)
	}

	lab.idle(high)
	lab.routerAddr(high, false)
	lab.waitFor(b, logs, low, high.String()+" gone from the router")
	if got := switched(high, low); len(got) != 1 {
		t.Errorf("%s gone: warnings %q, want one \"next hop switched\" from %s to %s", high, got, high, low)
	}
}

// Of the next hops of a multipath default route, the lowest that answers
// is taken, whichever answered first: the balancer kept the first to
// answer (at the start, when the neighbour table is empty, the order in
// which the routers answer), so that balancers with the same routes sent
// VIP traffic to different routers. Here the lower router answers only
// once the balancer runs.
func TestNextHopIsTheLowestThatAnswersNotTheFirst(t *testing.T) {
	low, high := netip.MustParseAddr("10.1.1.3"), netip.MustParseAddr("10.1.1.7")
	lab := newECMPLab(t, "hzlow", low, high)
	lab.routerAddr(low, false)
	if err := lab.topo.Netlink(lab.node, func(h *netlink.Handle) error {
		return h.NeighDel(&netlink.Neigh{LinkIndex: lab.eth, Family: netlink.FAMILY_V4, IP: low.AsSlice()})
	}); err != nil {
		t.Fatalf("delete the neighbour entry of %s in %s: %v", low, lab.node, err)
	}
	logs := &logRecords{}
	b, _ := runInNode(t, lab.topo, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1), logs)
	lab.waitFor(b, logs, high, low.String()+" does not answer")

	lab.routerAddr(low, true)
	lab.resolve(low)
	lab.waitFor(b, logs, low, low.String()+" answers")
	if got := logs.matching(slog.LevelInfo, "next hop changed", "from="+high.String(), "to="+low.String()); len(got) != 1 {
		t.Errorf("%s answers: infos %q, want one \"next hop changed\" from %s to %s", low, got, high, low)
	}
	if got := logs.matching(slog.LevelWarn, "next hop switched"); len(got) != 0 {
		t.Errorf("%s answers: warnings %q, want no \"next hop switched\" (%s did not fail)", low, got, high)
	}
}

// nexthop.gateway pins the router: the failover among the next hops of a
// multipath default route must not take VIP traffic elsewhere when it
// stops answering (the operator may have pinned it for a reason the route
// does not know); the balancer says the next hop is lost, and waits.
func TestPinnedGatewayIsNotLeftForAnotherNextHop(t *testing.T) {
	low, high := netip.MustParseAddr("10.1.1.3"), netip.MustParseAddr("10.1.1.7")
	lab := newECMPLab(t, "hzpin", low, high)
	logs := &logRecords{}
	yaml := "nexthop: {gateway: " + low.String() + "}\n" + strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1)
	b, _ := runInNode(t, lab.topo, yaml, logs)
	lab.waitFor(b, logs, low, "both routers answer")

	lab.routerAddr(low, false)
	// The test's datagrams have the kernel check the router's entry
	// sooner than the balancer's, every 2 s, would.
	for deadline := time.Now().Add(20 * time.Second); len(logs.matching(slog.LevelWarn, "next hop lost")) == 0; time.Sleep(10 * time.Millisecond) {
		if err := lab.topo.Do(lab.node, func() error {
			probeGateway(low, topology.EthName)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pinned %s gone from the router: no \"next hop lost\" within 20 s; warnings: %v", low, logs.matching(slog.LevelWarn))
		}
	}
	if st, err := b.Status(context.Background()); err != nil || st.NextHop.Gateway != low.String() || st.NextHop.Resolved {
		t.Errorf("pinned %s gone: next hop %+v (%v), want %s, not resolved", low, st.NextHop, err, low)
	}
	if got := logs.matching(slog.LevelWarn, "next hop switched"); len(got) != 0 {
		t.Errorf("pinned %s gone: warnings %q, want no switch", low, got)
	}
}

// The datagram that makes the kernel resolve the router's MAC leaves
// through the balancer's interface, whatever the routing table prefers:
// it was routed, so for a router reached `onlink` (here: eth0 holds a /32,
// and the default route is `via 10.1.1.1 dev eth0 onlink`) that another
// interface has a more specific route to, it left through the other
// interface, the router's entry on eth0 never resolved, and all VIP
// traffic was dropped as no_nexthop.
func TestNextHopProbeLeavesThroughTheInterface(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "hacbind", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	gw, self := topology.RouterBalancerIPv4(1), topology.BalancerIPv4(1)
	const other = "hacx0"
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		eth, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		if err := deleteDefaultRoutes(h); err != nil {
			return err
		}
		// The /24 goes, and its subnet route with it: the router is
		// reached through the onlink route alone.
		if err := h.AddrDel(eth, &netlink.Addr{IPNet: &net.IPNet{IP: self.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		if err := h.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: self.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		_, any4, _ := net.ParseCIDR("0.0.0.0/0")
		if err := h.RouteAdd(&netlink.Route{Dst: any4, LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice(), Flags: int(netlink.FLAG_ONLINK)}); err != nil {
			return err
		}
		// Another interface, with a more specific route to the router,
		// on which no one answers.
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: other}, PeerName: "hacx1"}); err != nil {
			return err
		}
		for _, name := range []string{other, "hacx1"} {
			l, err := h.LinkByName(name)
			if err != nil {
				return err
			}
			if err := h.LinkSetUp(l); err != nil {
				return err
			}
		}
		oth, err := h.LinkByName(other)
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("10.9.0.2/24")
		if err := h.AddrAdd(oth, a); err != nil {
			return err
		}
		if err := h.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(32, 32)}, LinkIndex: oth.Attrs().Index}); err != nil {
			return err
		}
		// Whatever the topology's set-up resolved: only the probe may.
		if err := h.NeighDel(&netlink.Neigh{LinkIndex: eth.Attrs().Index, Family: netlink.FAMILY_V4, IP: gw.AsSlice()}); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("onlink default route via %s on %s, and a /32 route to it on %s, in %s: %v", gw, topology.EthName, other, node, err)
	}

	logs := &logRecords{}
	b, _ := runInNode(t, topo, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1), logs)
	waitNextHop(t, b, logs, gw, 10*time.Second, "since the start, through "+topology.EthName)
}
