package balancer

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// A backend written with an address of the balancer's own interface
// validates (config cannot know the host's addresses) but gets nothing:
// in the lab, its packets went to the router, which sent them back to the
// balancer, whose kernel dropped them, and every connection timed out with
// nothing said. It is warned about once, and status shows it while it
// lasts.
func TestBackendAtTheBalancersOwnAddressIsWarned(t *testing.T) {
	topo, node := newSourceTopo(t, "fe80::7/64", "10.9.0.1/24")
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	yaml := `
datapath: {interface: ` + sourceIface + `, conn_table_size: 4096}
nexthop: {gateway: 10.9.0.254}
api: {socket: /tmp/unused.sock}
metrics: {listen: ""}
vips:
  - name: web
    address: 10.100.0.1
    port: 80
    table_size: 251
    health: {type: none}
    backends:
      - {name: be1, address: 10.2.1.2}
      - {name: self, address: 10.9.0.1}
`
	cfg, dp := loadWithDatapath(t, path, yaml)
	logs := &logRecords{}
	b := newInNode(t, topo, node, path, cfg, dp, logs)
	sync := func() { t.Helper(); syncInNode(t, topo, node, b) }
	warned := func() []string {
		return logs.matching(slog.LevelWarn, "a backend's address is one of this balancer's own", "vip=web", "backend=self", "address=10.9.0.1", "interface="+sourceIface)
	}
	statusWarnings := func() []string {
		t.Helper()
		st, _, err := b.status()
		if err != nil {
			t.Fatal(err)
		}
		return st.Warnings
	}
	want := "backend self of VIP web: 10.9.0.1 is an address of this balancer's interface " + sourceIface
	if got := warned(); len(got) != 1 {
		t.Fatalf("backend at the interface's address 10.9.0.1: %d warnings naming it, want 1; warnings: %v", len(got), logs.matching(slog.LevelWarn))
	}
	if got := statusWarnings(); len(got) != 1 || !strings.Contains(got[0], want) {
		t.Errorf("status warnings %q, want one saying %q", got, want)
	}
	// A sync that changes nothing says it no more.
	sync()
	if got := warned(); len(got) != 1 {
		t.Errorf("nothing changed since the warning: %d warnings, want still 1", len(got))
	}

	// The address leaves the interface: nothing to show any more.
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(sourceIface)
		if err != nil {
			return err
		}
		a, err := netlink.ParseAddr("10.9.0.1/24")
		if err != nil {
			return err
		}
		return h.AddrDel(l, a)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Another address keeps the next hop on the link.
	if err := topo.AddAddr(node, sourceIface, netip.MustParsePrefix("10.9.0.2/24")); err != nil {
		t.Fatal(err)
	}
	sync()
	if got := statusWarnings(); len(got) != 0 {
		t.Errorf("10.9.0.1 removed from %s: status warnings %q, want none", sourceIface, got)
	}
	// Back again: warned again.
	if err := topo.AddAddr(node, sourceIface, netip.MustParsePrefix("10.9.0.1/24")); err != nil {
		t.Fatal(err)
	}
	sync()
	if got := warned(); len(got) != 2 {
		t.Errorf("10.9.0.1 added back: %d warnings, want 2", len(got))
	}
	if got := statusWarnings(); len(got) != 1 {
		t.Errorf("10.9.0.1 added back: status warnings %q, want one", got)
	}
}

// A VIP at the next hop's address passes validation when the next hop
// comes from the default route (config refuses it as nexthop.gateway),
// and gets no packet: in the lab, the router answered the client itself
// (connection refused). It is warned about once, and status shows it
// until a reload moves the VIP.
func TestVIPAtTheDefaultRoutesGatewayIsWarned(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "swcgw", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	gw := topology.RouterBalancerIPv4(1)
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	yaml := `
datapath: {interface: ` + topology.EthName + `, conn_table_size: 4096}
api: {socket: /tmp/unused.sock}
metrics: {listen: ""}
vips:
  - name: web
    address: ` + gw.String() + `
    port: 80
    table_size: 251
    health: {type: none}
    backends:
      - {name: be1, address: 10.2.1.2}
`
	cfg, dp := loadWithDatapath(t, path, yaml)
	logs := &logRecords{}
	b := newInNode(t, topo, node, path, cfg, dp, logs)
	warned := func() []string {
		return logs.matching(slog.LevelWarn, "a VIP's address is the next hop's, the router's own", "vip=web", "address="+gw.String())
	}
	statusWarnings := func() []string {
		t.Helper()
		st, _, err := b.status()
		if err != nil {
			t.Fatal(err)
		}
		return st.Warnings
	}
	want := "VIP web: " + gw.String() + " is the next hop's address, the router's own"
	if got := warned(); len(got) != 1 {
		t.Fatalf("VIP at the default route's gateway %s: %d warnings naming it, want 1; warnings: %v", gw, len(got), logs.matching(slog.LevelWarn))
	}
	if got := statusWarnings(); len(got) != 1 || !strings.Contains(got[0], want) {
		t.Errorf("status warnings %q, want one saying %q", got, want)
	}
	syncInNode(t, topo, node, b)
	if got := warned(); len(got) != 1 {
		t.Errorf("nothing changed since the warning: %d warnings, want still 1", len(got))
	}

	// A reload moves the VIP to an address the router sends on.
	if err := os.WriteFile(path, []byte(strings.Replace(yaml, "address: "+gw.String(), "address: 10.100.0.1", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	moved, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Do(node, func() error { _, err := b.apply(moved); return err }); err != nil {
		t.Fatal(err)
	}
	if got := statusWarnings(); len(got) != 0 {
		t.Errorf("VIP moved to 10.100.0.1: status warnings %q, want none", got)
	}
}
