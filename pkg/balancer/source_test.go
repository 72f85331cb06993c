package balancer

import (
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// sourceIface is the device the outer-source tests give addresses to: a
// veth of its own in the balancer's namespace, so that no address the
// topology set comes first.
const sourceIface = "swc0"

// newSourceTopo builds a topology and adds sourceIface, with addrs in this
// order, to its balancer.
func newSourceTopo(t *testing.T, addrs ...string) (*topology.Topology, string) {
	t.Helper()
	topo := topology.NewForTest(t, topology.Config{Prefix: "swcsrc", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: sourceIface}, PeerName: "swc1"})
	})
	if err != nil {
		t.Fatalf("add veth %s in %s: %v", sourceIface, node, err)
	}
	for _, a := range addrs {
		if err := topo.AddAddr(node, sourceIface, netip.MustParsePrefix(a)); err != nil {
			t.Fatal(err)
		}
	}
	return topo, node
}

// The outer source taken from the interface must be one that routers
// forward: the balancer took the first IPv4 address, a link-local
// 169.254.0.0/16 one included, and every packet to an IPv4 backend behind
// the next hop was lost (config refuses such an address as source_v4).
func TestInterfaceSourceSkipsLinkLocal(t *testing.T) {
	topo, node := newSourceTopo(t, "fe80::7/64", "169.254.7.1/16", "10.9.0.1/24", "fd00:9::1/64")
	var ifi ifaceInfo
	if err := topo.Do(node, func() error {
		var err error
		ifi, err = readIface(sourceIface)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddr("10.9.0.1"); ifi.AddrV4 != want {
		t.Errorf("outer IPv4 source of %s (169.254.7.1/16, then 10.9.0.1/24) is %v, want %v", sourceIface, ifi.AddrV4, want)
	}
	if want := netip.MustParseAddr("fd00:9::1"); ifi.AddrV6 != want {
		t.Errorf("outer IPv6 source of %s (fe80::7/64, then fd00:9::1/64) is %v, want %v", sourceIface, ifi.AddrV6, want)
	}
}
