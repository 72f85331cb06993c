package balancer

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
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
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := datapath.LoadBalancer(datapath.Options{ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
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
