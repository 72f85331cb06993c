package balancer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
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

// logRecords keeps what a logger was given, for tests of what an operator
// is told.
type logRecords struct {
	mu   sync.Mutex
	list []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, r)
	return nil
}

// matching returns the records at level whose message and attributes,
// written "message key=value ...", contain every one of parts.
func (l *logRecords) matching(level slog.Level, parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
next:
	for _, r := range l.list {
		if r.Level != level {
			continue
		}
		text := r.Message
		r.Attrs(func(a slog.Attr) bool {
			text += " " + a.String()
			return true
		})
		for _, p := range parts {
			if !strings.Contains(text, p) {
				continue next
			}
		}
		out = append(out, text)
	}
	return out
}

// With encap.source_v4 empty and no IPv4 address to take (169.254.0.0/16
// is not taken), packets to IPv4 backends left from 0.0.0.0, dropped by
// every router, and nothing said so; the same for IPv6.
func TestMissingOuterSourceIsWarnedOnce(t *testing.T) {
	topo, node := newSourceTopo(t, "fe80::7/64", "169.254.7.1/16")
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	yaml := `
datapath: {interface: ` + sourceIface + `, conn_table_size: 4096}
nexthop: {gateway: 169.254.7.254}
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
      - {name: be2, address: "fd00:2:1::2"}
`
	cfg, dp := loadWithDatapath(t, path, yaml)
	logs := &logRecords{}
	b := newInNode(t, topo, node, path, cfg, dp, logs)
	for _, fam := range []struct{ name, field, from string }{
		{"IPv4", "encap.source_v4", "0.0.0.0"},
		{"IPv6", "encap.source_v6", "::"},
	} {
		if got := logs.matching(slog.LevelWarn, "no outer "+fam.name+" source", fam.field, "leave from "+fam.from+" ", "add such an address"); len(got) != 1 {
			t.Errorf("%s backend, no %s address on %s (link-local only) and %s empty: %d warnings naming the fix, want 1; logged: %v",
				fam.name, fam.name, sourceIface, fam.field, len(got), logs.matching(slog.LevelWarn))
		}
	}

	// An address added later is taken, and said so; IPv6 is not warned
	// about again.
	if err := topo.AddAddr(node, sourceIface, netip.MustParsePrefix("10.9.0.1/24")); err != nil {
		t.Fatal(err)
	}
	syncInNode(t, topo, node, b)
	if want := netip.MustParseAddr("10.9.0.1"); b.settings.SourceV4 != want {
		t.Errorf("outer IPv4 source after adding 10.9.0.1/24 is %v, want %v", b.settings.SourceV4, want)
	}
	if got := logs.matching(slog.LevelInfo, "outer IPv4 source found"); len(got) != 1 {
		t.Errorf("IPv4 address added: %d infos saying the source was found, want 1", len(got))
	}
	if got := logs.matching(slog.LevelWarn, "no outer"); len(got) != 2 {
		t.Errorf("after a second sync: %d warnings of a missing source, want still 2 (one per family): %v", len(got), got)
	}
}

// loadWithDatapath writes yaml to path, loads it as the configuration, and
// loads an unpinned datapath for it, closed when the test ends.
func loadWithDatapath(t *testing.T, path, yaml string) (*config.Config, *datapath.Balancer) {
	t.Helper()
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
	return cfg, dp
}

// Nor is an IPv4 address of 240.0.0.0/4 (class E, reserved: routers drop
// it) taken as the outer source, nor an IPv6 address that the kernel does
// not use as a source itself: tentative (duplicate address detection has
// not finished, or failed: dadfailed addresses stay tentative) or
// deprecated (its preferred lifetime is over).
func TestInterfaceSourceSkipsUnusableAddresses(t *testing.T) {
	topo, node := newSourceTopo(t)
	add := func(p string, flags, preferred int) {
		t.Helper()
		err := topo.Netlink(node, func(h *netlink.Handle) error {
			l, err := h.LinkByName(sourceIface)
			if err != nil {
				return err
			}
			a := &netlink.Addr{IPNet: netlink.NewIPNet(net.IP(netip.MustParsePrefix(p).Addr().AsSlice())), Flags: flags}
			a.Mask = net.CIDRMask(netip.MustParsePrefix(p).Bits(), netip.MustParsePrefix(p).Addr().BitLen())
			if preferred >= 0 {
				a.PreferedLft, a.ValidLft = preferred, 3600
			}
			return h.AddrAdd(l, a)
		})
		if err != nil {
			t.Fatalf("add %s to %s: %v", p, sourceIface, err)
		}
	}
	// sourceIface is down: an IPv6 address added without nodad stays
	// tentative, its detection waiting for the link (the topology turns
	// detection off; on for this device).
	if err := topo.Sysctl(node, "net.ipv6.conf."+sourceIface+".accept_dad", "1"); err != nil {
		t.Fatal(err)
	}
	add("240.0.0.1/24", 0, -1)
	add("fd00:7::1/64", 0, -1)
	add("fd00:8::1/64", unix.IFA_F_NODAD, 0)
	read := func() ifaceInfo {
		t.Helper()
		var ifi ifaceInfo
		if err := topo.Do(node, func() error {
			var err error
			ifi, err = readIface(sourceIface)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return ifi
	}
	// The kernel made them what the test needs, or the test proves nothing.
	if err := topo.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(sourceIface)
		if err != nil {
			return err
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		want := map[string]int{"fd00:7::1": unix.IFA_F_TENTATIVE, "fd00:8::1": unix.IFA_F_DEPRECATED}
		for _, a := range addrs {
			if f, ok := want[a.IP.String()]; ok && a.Flags&f != 0 {
				delete(want, a.IP.String())
			}
		}
		if len(want) > 0 {
			return fmt.Errorf("addresses without the flags the test needs (%v): %v", want, addrs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if ifi := read(); ifi.AddrV4.IsValid() || ifi.AddrV6.IsValid() {
		t.Errorf("outer sources of %s with only 240.0.0.1/24, tentative fd00:7::1/64 and deprecated fd00:8::1/64: %v and %v, want none",
			sourceIface, ifi.AddrV4, ifi.AddrV6)
	}
	add("10.9.0.1/24", 0, -1)
	add("fd00:9::1/64", unix.IFA_F_NODAD, -1)
	ifi := read()
	if want := netip.MustParseAddr("10.9.0.1"); ifi.AddrV4 != want {
		t.Errorf("outer IPv4 source of %s (240.0.0.1/24, 10.9.0.1/24) is %v, want %v", sourceIface, ifi.AddrV4, want)
	}
	if want := netip.MustParseAddr("fd00:9::1"); ifi.AddrV6 != want {
		t.Errorf("outer IPv6 source of %s (tentative, deprecated, then fd00:9::1/64) is %v, want %v", sourceIface, ifi.AddrV6, want)
	}
}

// A link-local next hop (an IPv6 router as router advertisements give it,
// or nexthop.gateway fe80::1) is solicited through the interface: the
// probe named no zone, so connect refused it (EINVAL), nothing asked for
// the router's MAC, and VIP traffic stayed dropped (no_nexthop) on a host
// that sent the router nothing else.
func TestLinkLocalGatewayIsProbed(t *testing.T) {
	topo, node := newSourceTopo(t, "fe80::7/64")
	router := topo.Backend(1)
	if err := topo.Netlink(node, func(h *netlink.Handle) error {
		peer, err := h.LinkByName("swc1")
		if err != nil {
			return err
		}
		if err := h.LinkSetNsFd(peer, int(topo.NsHandle(router))); err != nil {
			return err
		}
		l, err := h.LinkByName(sourceIface)
		if err != nil {
			return err
		}
		return h.LinkSetUp(l)
	}); err != nil {
		t.Fatal(err)
	}
	if err := topo.LinkUp(router, "swc1"); err != nil {
		t.Fatal(err)
	}
	if err := topo.AddAddr(router, "swc1", netip.MustParsePrefix("fe80::1/64")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	cfg, dp := loadWithDatapath(t, path, `
datapath: {interface: `+sourceIface+`, conn_table_size: 4096}
nexthop: {gateway: "fe80::1"}
encap: {source_v6: "fd00:9::1"}
api: {socket: /tmp/unused.sock}
metrics: {listen: ""}
vips:
  - name: web
    address: "fd00:100::1"
    port: 80
    table_size: 251
    health: {type: none}
    backends:
      - {name: be1, address: "fd00:2:1::2"}
`)
	gw := netip.MustParseAddr("fe80::1")
	if err := topo.Do(node, func() error {
		ifi, err := readIface(sourceIface)
		if err != nil {
			return err
		}
		if _, ok := neighbourMAC(ifi.Index, gw); ok {
			return fmt.Errorf("%s's MAC is known before the balancer starts: the test proves nothing", gw)
		}
		// The control loop is not run: New syncs the settings, probing
		// the gateway, on Do's thread.
		b, err := New(Config{ConfigPath: path, Initial: cfg, Datapath: dp})
		if err != nil {
			return err
		}
		t.Cleanup(b.health.Close)
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, ok := neighbourMAC(ifi.Index, gw); ok {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the MAC of the link-local gateway %s is not resolved 5 s after the balancer started", gw)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// newInNode makes a balancer of cfg on dp in node's network namespace,
// logging to logs, without running its control loop: New and
// syncSettings read the interface of that namespace on Do's thread, as
// the loop would on a network event.
func newInNode(t *testing.T, topo *topology.Topology, node, path string, cfg *config.Config, dp *datapath.Balancer, logs *logRecords) *Balancer {
	t.Helper()
	var b *Balancer
	if err := topo.Do(node, func() (err error) {
		b, err = New(Config{ConfigPath: path, Initial: cfg, Datapath: dp, Logger: slog.New(logs)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.health.Close)
	return b
}

// syncInNode runs b's settings sync in node's namespace, as the control
// loop's tick does; an unresolved next hop is no failure here.
func syncInNode(t *testing.T, topo *topology.Topology, node string, b *Balancer) {
	t.Helper()
	if err := topo.Do(node, b.syncSettings); err != nil && !errors.As(err, new(*nextHopError)) {
		t.Fatal(err)
	}
}
