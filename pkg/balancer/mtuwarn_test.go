package balancer

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
)

// With datapath.mtu set, the datapath settings do not change when the
// interface's MTU does: lowering the interface's MTU under datapath.mtu
// went unwarned, though from then on the driver drops every outer packet
// between the two and no "too big" tells the clients.
func TestDatapathMTUAboveALoweredInterfaceMTUIsWarned(t *testing.T) {
	topo, node := newSourceTopo(t, "fe80::7/64", "10.9.0.1/24")
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	yaml := `
datapath: {interface: ` + sourceIface + `, conn_table_size: 4096, mtu: 1500}
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
`
	cfg, dp := loadWithDatapath(t, path, yaml)
	logs := &logRecords{}
	setMTU := func(mtu int) {
		t.Helper()
		err := topo.Netlink(node, func(h *netlink.Handle) error {
			l, err := h.LinkByName(sourceIface)
			if err != nil {
				return err
			}
			return h.LinkSetMTU(l, mtu)
		})
		if err != nil {
			t.Fatalf("set the MTU of %s to %d: %v", sourceIface, mtu, err)
		}
	}
	setMTU(1500)
	b := newInNode(t, topo, node, path, cfg, dp, logs)
	sync := func() { t.Helper(); syncInNode(t, topo, node, b) }
	warned := func() []string {
		return logs.matching(slog.LevelWarn, "datapath.mtu is above the interface's MTU")
	}
	if got := warned(); len(got) != 0 {
		t.Fatalf("datapath.mtu 1500 on an interface of MTU 1500: warned %v", got)
	}

	setMTU(1400)
	sync()
	if got := warned(); len(got) != 1 || len(logs.matching(slog.LevelWarn, "interface_mtu=1400", "datapath.mtu=1500")) != 1 {
		t.Fatalf("interface MTU lowered from 1500 to 1400 under datapath.mtu 1500: %d warnings (%v), want 1 naming both MTUs", len(got), got)
	}
	// A tick or a network event that changes nothing says it no more.
	sync()
	if got := warned(); len(got) != 1 {
		t.Errorf("nothing changed since the warning: %d warnings, want still 1", len(got))
	}
	// Back to 1500: nothing to warn about.
	setMTU(1500)
	sync()
	if got := warned(); len(got) != 1 {
		t.Errorf("interface MTU raised back to 1500: %d warnings, want still 1", len(got))
	}
}
