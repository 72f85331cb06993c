package balancer

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

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
	st, err := b.status()
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
	if st, err = b.status(); err != nil {
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
