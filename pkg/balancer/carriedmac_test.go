package balancer

import (
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// A restart that finds no neighbour entry for the router (flushed while
// the daemon was down) keeps sending VIP traffic to the MAC the earlier
// run pinned while the kernel asks the router: it wrote no MAC, and the
// datapath dropped all VIP traffic as no_nexthop until the router
// answered (12 to 25 ms at 4 of 50 restarts of a soak). Once the router
// answers, its MAC is the one written; a router that does not answer
// ends the carried MAC when the kernel gives it up.
func TestRestartKeepsTheNextHopMACWhileTheRouterIsAsked(t *testing.T) {
	carried, _ := net.ParseMAC("02:00:00:00:0c:01")
	for _, tc := range []struct {
		name    string
		gateway netip.Addr
		answers bool
	}{
		{"the router answers", topology.RouterBalancerIPv4(1), true},
		// On the balancer's link (10.1.1.0/24), answered by no one.
		{"no one answers", netip.MustParseAddr("10.1.1.9"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topo := topology.NewForTest(t, topology.Config{Prefix: "carmac", Balancers: 1, Backends: 1})
			node := topo.Balancer(1)
			path := filepath.Join(t.TempDir(), "switchyard.yaml")
			yaml := "nexthop: {gateway: " + tc.gateway.String() + "}\n" + strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1)
			cfg, dp := loadWithDatapath(t, path, yaml)
			// What the earlier run left pinned.
			eth, err := topo.Link(node, topology.EthName)
			if err != nil {
				t.Fatal(err)
			}
			if err := dp.SetSettings(datapath.Settings{SourceMAC: eth.Attrs().HardwareAddr, MTU: 1500, NextHopMAC: carried}); err != nil {
				t.Fatal(err)
			}
			if n, _ := neighbourStateIn(t, topo, node, tc.gateway); n != "none" {
				t.Fatalf("the balancer has a neighbour entry (%s) for %s before the start: the test needs none", n, tc.gateway)
			}
			logs := &logRecords{}
			b := newInNode(t, topo, node, path, cfg, dp, logs)
			if mac, err := dp.NextHopMAC(); err != nil || mac.String() != carried.String() {
				t.Fatalf("next-hop MAC after the start with no neighbour entry: %v (%v), want the earlier run's %s", mac, err, carried)
			}
			if got := logs.matching(slog.LevelInfo, "next hop not resolved yet", "mac="+carried.String()); len(got) != 1 {
				t.Errorf("%d infos saying the earlier run's MAC is kept, want 1", len(got))
			}

			deadline := time.Now().Add(10 * time.Second)
			for {
				state, mac := neighbourStateIn(t, topo, node, tc.gateway)
				if (tc.answers && mac != nil) || (!tc.answers && state == "FAILED") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("neighbour %s still %s 10 s after the start", tc.gateway, state)
				}
				time.Sleep(20 * time.Millisecond)
			}
			syncInNode(t, topo, node, b)
			mac, err := dp.NextHopMAC()
			if err != nil {
				t.Fatal(err)
			}
			if _, want := neighbourStateIn(t, topo, node, tc.gateway); tc.answers && mac.String() != want.String() {
				t.Errorf("next-hop MAC once the router answered: %v, want its own %v", mac, want)
			}
			if !tc.answers && mac != nil {
				t.Errorf("next-hop MAC once the kernel gave the router up: %v, want none", mac)
			}
		})
	}
}

// neighbourStateIn is gw's neighbour state on node's eth0 and its MAC if
// resolved.
func neighbourStateIn(t *testing.T, topo *topology.Topology, node string, gw netip.Addr) (state string, mac net.HardwareAddr) {
	t.Helper()
	if err := topo.Do(node, func() error {
		l, err := net.InterfaceByName(topology.EthName)
		if err != nil {
			return err
		}
		state = neighbourState(l.Index, gw)
		mac, _ = neighbourMAC(l.Index, gw)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return state, mac
}
