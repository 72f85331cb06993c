package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

var (
	vip4 = netip.MustParseAddr("10.100.0.1")
	vip6 = netip.MustParseAddr("fd00:100::1")
)

const testTimeout = 5 * time.Second

func newTopology(t *testing.T) *topology.Topology {
	t.Helper()
	return topology.NewForTest(t, topology.Config{Prefix: "syagt", Balancers: 1, Backends: 1})
}

// testConfig is backend 1's agent config. The pins go to a directory of
// this topology's own, so that parallel runs never share them.
func testConfig(topo *topology.Topology) config.AgentConfig {
	c := config.DefaultAgentConfig()
	c.Node.Name = "be1"
	c.Interface = topology.EthName
	c.VIPs = []string{vip4.String(), vip6.String()}
	c.PinDir = filepath.Join(datapath.BPFFSRoot, topo.Prefix(), topology.EthName)
	return c
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testStateDir is the state directory of the agents of the topology whose
// pin directory c names: agents sharing that share their record, as on a
// host, and never the real DefaultStateDir.
func testStateDir(t *testing.T, c config.AgentConfig) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "switchyard-agent-state-"+filepath.Base(filepath.Dir(c.PinDir)))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// newAgent builds an agent whose leftovers, should the test fail before
// stopping it, are removed before the topology is closed.
func newAgent(t *testing.T, c config.AgentConfig) *Agent {
	t.Helper()
	return newAgentLogging(t, c, testLogger(t))
}

// newAgentLogs is newAgent whose log goes to logs too.
func newAgentLogs(t *testing.T, c config.AgentConfig, logs *logBuffer) *Agent {
	t.Helper()
	return newAgentLogging(t, c, slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), nil)))
}

// newAgentLogging is newAgent logging to log.
func newAgentLogging(t *testing.T, c config.AgentConfig, log *slog.Logger) *Agent {
	t.Helper()
	a, err := New(Config{Agent: c, Logger: log, StateDir: testStateDir(t, c)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("cleanup: Stop: %v", err)
		}
		if err := datapath.RemoveDecap(c.PinDir); err != nil {
			t.Errorf("cleanup: remove pins: %v", err)
		}
	})
	return a
}

// startAgent starts an agent for c inside node.
func startAgent(t *testing.T, topo *topology.Topology, node string, c config.AgentConfig) *Agent {
	t.Helper()
	a := newAgent(t, c)
	if err := topo.Do(node, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return a
}

// hostState is what the agent may change on a backend.
type hostState struct {
	sysctls map[string]string // every IPv4 and IPv6 per-device setting
	lo      []string          // lo's addresses
	xdp     string            // XDP attachment of eth0, "" if none
}

func snapshot(t *testing.T, topo *topology.Topology, node string) hostState {
	t.Helper()
	s := hostState{sysctls: map[string]string{}}
	err := topo.Do(node, func() error {
		for _, root := range []string{"/proc/sys/net/ipv4/conf", "/proc/sys/net/ipv6/conf"} {
			err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				b, err := os.ReadFile(path)
				if err != nil { // e.g. stable_secret when unset
					s.sysctls[path] = "error: " + err.Error()
					return nil
				}
				s.sysctls[path] = strings.TrimSpace(string(b))
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read sysctls of %s: %v", node, err)
	}
	err = topo.Netlink(node, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		addrs, err := h.AddrList(lo, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			s.lo = append(s.lo, fmt.Sprintf("%s scope %d flags %#x", a.IPNet, a.Scope, a.Flags))
		}
		sort.Strings(s.lo)
		eth, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		if x := eth.Attrs().Xdp; x != nil && x.Attached {
			s.xdp = fmt.Sprintf("prog %d mode %d", x.ProgId, x.AttachMode)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read addresses of %s: %v", node, err)
	}
	return s
}

// requireSame fails the test if the host differs from before.
func requireSame(t *testing.T, before, after hostState) {
	t.Helper()
	for k, v := range before.sysctls {
		if after.sysctls[k] != v {
			t.Errorf("sysctl %s = %q, was %q", k, after.sysctls[k], v)
		}
	}
	for k, v := range after.sysctls {
		if _, ok := before.sysctls[k]; !ok {
			t.Errorf("sysctl %s = %q appeared", k, v)
		}
	}
	if !slices.Equal(before.lo, after.lo) {
		t.Errorf("addresses of lo:\n%s\nwere\n%s", strings.Join(after.lo, "\n"), strings.Join(before.lo, "\n"))
	}
	if before.xdp != after.xdp {
		t.Errorf("XDP on eth0: %q, was %q", after.xdp, before.xdp)
	}
}

func requireNoPins(t *testing.T, pinDir string) {
	t.Helper()
	for _, d := range []string{pinDir, filepath.Dir(pinDir)} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin directory %s is still there (stat: %v)", d, err)
		}
	}
}

func sysctlValue(t *testing.T, topo *topology.Topology, node, key string) string {
	t.Helper()
	v, err := topo.SysctlValue(node, key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func setSysctl(t *testing.T, topo *topology.Topology, node, key, value string) {
	t.Helper()
	if err := topo.Sysctl(node, key, value); err != nil {
		t.Fatal(err)
	}
}

// TestStartStop: a started agent has attached the decap program, put the
// VIPs on lo and set the sysctls for direct server return; a clean
// shutdown leaves the backend exactly as it found it.
func TestStartStop(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	// Strict reverse-path filtering, and a value the agent must put back.
	setSysctl(t, topo, be, "net.ipv4.conf.all.rp_filter", "1")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "1")
	before := snapshot(t, topo, be)
	c := testConfig(topo)

	a := startAgent(t, topo, be, c)

	running := snapshot(t, topo, be)
	eth, err := topo.Link(be, topology.EthName)
	if err != nil {
		t.Fatal(err)
	}
	if x := eth.Attrs().Xdp; x == nil || !x.Attached || x.AttachMode != nl.XDP_ATTACHED_DRV {
		t.Errorf("eth0 XDP: %+v, want a program attached in native mode", x)
	}
	for _, want := range []string{"10.100.0.1/32", "fd00:100::1/128"} {
		if !slices.ContainsFunc(running.lo, func(s string) bool { return strings.HasPrefix(s, want+" ") }) {
			t.Errorf("VIP %s not on lo: %v", want, running.lo)
		}
	}
	for key, want := range map[string]string{
		"net.ipv4.conf.all.arp_ignore":    "1",
		"net.ipv4.conf.all.arp_announce":  "2",
		"net.ipv4.conf.eth0.arp_ignore":   "1",
		"net.ipv4.conf.eth0.arp_announce": "2",
		"net.ipv4.conf.all.rp_filter":     "1", // relaxed on eth0 alone
		"net.ipv4.conf.eth0.rp_filter":    "2",
	} {
		if got := sysctlValue(t, topo, be, key); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	wantEncap := []netip.Addr{topology.BackendIPv4(1), topology.BackendIPv6(1)}
	if got := a.EncapAddrs(); !slices.Equal(got, wantEncap) {
		t.Errorf("encap addresses %v, want eth0's %v", got, wantEncap)
	}
	if err := topo.Do(be, a.Start); !errors.Is(err, ErrRunning) {
		t.Errorf("second Start: %v, want ErrRunning", err)
	}

	if err := topo.Do(be, a.Stop); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoPins(t, c.PinDir)
	if _, err := a.Stats(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Stats after Stop: %v, want ErrNotRunning", err)
	}
	if err := a.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestRPFilterOnlyRelaxedFromStrict: reverse-path filtering that is off or
// already loose is the admin's choice and stays.
func TestRPFilterOnlyRelaxedFromStrict(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.all.rp_filter", "0")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "2")
	startAgent(t, topo, be, testConfig(topo))
	if got := sysctlValue(t, topo, be, "net.ipv4.conf.all.rp_filter"); got != "0" {
		t.Errorf("all.rp_filter = %s, want 0 (left alone)", got)
	}
	if got := sysctlValue(t, topo, be, "net.ipv4.conf.eth0.rp_filter"); got != "2" {
		t.Errorf("eth0.rp_filter = %s, want 2 (left alone)", got)
	}
}

// TestARPIgnoreStricterKept: arp_ignore 2 and 8 answer no ARP for a VIP on
// lo either, and are stricter than the 1 the agent sets: an admin's choice
// of them stays (the kernel applies the larger of "all" and the device's).
// 3 and the reserved values answer for the VIP and are replaced. Stop puts
// back what it replaced.
func TestARPIgnoreStricterKept(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		all, dev         string // before Start
		wantAll, wantDev string // while running
	}{
		{all: "2", dev: "8", wantAll: "2", wantDev: "8"},
		{all: "8", dev: "0", wantAll: "8", wantDev: "1"},
		{all: "3", dev: "2", wantAll: "1", wantDev: "2"},
		{all: "0", dev: "5", wantAll: "1", wantDev: "1"},
	} {
		t.Run("all="+tc.all+",eth0="+tc.dev, func(t *testing.T) {
			t.Parallel()
			topo := newTopology(t)
			be := topo.Backend(1)
			setSysctl(t, topo, be, "net.ipv4.conf.all.arp_ignore", tc.all)
			setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_ignore", tc.dev)
			before := snapshot(t, topo, be)
			a := startAgent(t, topo, be, testConfig(topo))
			if got := sysctlValue(t, topo, be, "net.ipv4.conf.all.arp_ignore"); got != tc.wantAll {
				t.Errorf("all.arp_ignore = %s while running, want %s", got, tc.wantAll)
			}
			if got := sysctlValue(t, topo, be, "net.ipv4.conf.eth0.arp_ignore"); got != tc.wantDev {
				t.Errorf("eth0.arp_ignore = %s while running, want %s", got, tc.wantDev)
			}
			if err := a.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			requireSame(t, before, snapshot(t, topo, be))
		})
	}
}

// TestVIPAlreadyOnLoSurvivesStop: a VIP somebody else put on lo is not the
// agent's to remove. Stop runs outside the backend's namespace, as a
// signal handler's goroutine would, and still cleans up the right one.
func TestVIPAlreadyOnLoSurvivesStop(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	for _, p := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
		if err := topo.AddAddr(be, "lo", p); err != nil {
			t.Fatal(err)
		}
	}
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	a := startAgent(t, topo, be, c)
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoPins(t, c.PinDir)
}

// TestStartMissingInterface: the error names the interface, and nothing is
// left behind.
func TestStartMissingInterface(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	c.Interface = "nosuch0"
	a := newAgent(t, c)
	err := topo.Do(be, a.Start)
	if !errors.Is(err, datapath.ErrNoInterface) || !strings.Contains(err.Error(), `"nosuch0"`) {
		t.Fatalf("Start: %v, want an error naming nosuch0 that wraps ErrNoInterface", err)
	}
	t.Logf("Start: %v", err)
	requireSame(t, before, snapshot(t, topo, be))
	requireNoPins(t, c.PinDir)
}

// TestStartFailureUndoes: when the attach, the last step, fails because
// another XDP program holds the interface, everything done before it is
// undone.
func TestStartFailureUndoes(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	if err := datapath.AttachPass(topo.NsHandle(be), topology.EthName); err != nil {
		t.Fatal(err)
	}
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	a := newAgent(t, c)
	err := topo.Do(be, a.Start)
	if err == nil || !strings.Contains(err.Error(), "already attached") {
		t.Fatalf("Start: %v, want an error saying another program is attached", err)
	}
	// The advice is a command line remove takes: alone it asks which
	// datapath to remove.
	if !strings.Contains(err.Error(), "`switchyard remove --agent --config FILE`") {
		t.Errorf("Start: %v, want the advice to name `switchyard remove --agent --config FILE`", err)
	}
	t.Logf("Start: %v", err)
	requireSame(t, before, snapshot(t, topo, be))
	requireNoPins(t, c.PinDir)
}

// TestEncapAddrsFollowInterface: an address added to the interface is
// decapsulated as soon as the watcher sees it, and dropped from the set
// when it goes.
func TestEncapAddrsFollowInterface(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	a := startAgent(t, topo, be, testConfig(topo))
	extra := netip.MustParsePrefix("10.2.1.99/24")
	if err := topo.AddAddr(be, topology.EthName, extra); err != nil {
		t.Fatal(err)
	}
	waitEncap(t, a, extra.Addr(), true)

	conn := listenUDP(t, topo, be, netip.AddrPortFrom(vip4, 5353))
	pkt := packetCase{name: "ipip to new address", outerSrc: topology.BalancerIPv4(1), outerDst: extra.Addr(),
		innerSrc: netip.AddrPortFrom(topology.ClientIPv4, 40001), innerDst: netip.AddrPortFrom(vip4, 5353)}
	sendFrame(t, topo, buildFrame(t, topo, pkt))
	expectDatagram(t, conn, pkt)

	changeEthAddr(t, topo, be, extra, false)
	waitEncap(t, a, extra.Addr(), false)
}

// TestEncapAddrsSkipLinkLocal: with encap_addresses empty, the agent
// follows the interface's addresses but not its link-local ones (an IPv4
// 169.254.0.0/16 address present at the start or added later, the IPv6
// fe80:: one every interface has), which the configuration refuses as
// encap_addresses: no balancer beyond the link can reach them. A packet
// encapsulated to such an address is left to the stack. It used to be
// decapsulated to the VIP.
func TestEncapAddrsSkipLinkLocal(t *testing.T) {
	t.Parallel()
	topo := topology.NewForTest(t, topology.Config{Prefix: "swbll", Balancers: 1, Backends: 1})
	be := topo.Backend(1)
	atStart := netip.MustParsePrefix("169.254.7.2/16")
	if err := topo.AddAddr(be, topology.EthName, atStart); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, topo, be, testConfig(topo))
	later := netip.MustParsePrefix("169.254.8.2/16")
	if err := topo.AddAddr(be, topology.EthName, later); err != nil {
		t.Fatal(err)
	}
	// The watcher lists every address at each change: once it has seen
	// the global one added after the link-local one, it has seen both.
	global := netip.MustParsePrefix("10.2.1.99/24")
	if err := topo.AddAddr(be, topology.EthName, global); err != nil {
		t.Fatal(err)
	}
	waitEncap(t, a, global.Addr(), true)
	want := []netip.Addr{topology.BackendIPv4(1), global.Addr(), topology.BackendIPv6(1)}
	if got := a.EncapAddrs(); !slices.Equal(got, want) {
		t.Errorf("encap addresses %v, want %v (no link-local one)", got, want)
	}

	// The frames go through the link in order: when the datagram sent to
	// the global address arrives, the ones before it were handled, and a
	// decapsulated one would have reached the socket first.
	conn := listenUDP(t, topo, be, netip.AddrPortFrom(vip4, 5353))
	before, err := a.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for i, dst := range []netip.Addr{atStart.Addr(), later.Addr()} {
		sendFrame(t, topo, buildFrame(t, topo, packetCase{name: "ipip to link-local " + dst.String(),
			outerSrc: topology.BalancerIPv4(1), outerDst: dst,
			innerSrc: netip.AddrPortFrom(topology.ClientIPv4, uint16(40010+i)), innerDst: netip.AddrPortFrom(vip4, 5353)}))
	}
	ok := packetCase{name: "ipip to global", outerSrc: topology.BalancerIPv4(1), outerDst: global.Addr(),
		innerSrc: netip.AddrPortFrom(topology.ClientIPv4, 40020), innerDst: netip.AddrPortFrom(vip4, 5353)}
	sendFrame(t, topo, buildFrame(t, topo, ok))
	expectDatagram(t, conn, ok)
	after, err := a.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if n := after[statDecapIPv4] - before[statDecapIPv4]; n != 1 {
		t.Errorf("%d packets decapsulated, want 1 (the one to %s)", n, global.Addr())
	}
}

// TestEncapAddrsConfigured: configured encap addresses are used as they are.
func TestEncapAddrsConfigured(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	c.EncapAddresses = []string{"10.2.1.2"}
	a := startAgent(t, topo, be, c)
	if got := a.EncapAddrs(); !slices.Equal(got, []netip.Addr{topology.BackendIPv4(1)}) {
		t.Errorf("encap addresses %v, want the configured 10.2.1.2", got)
	}
}

func waitEncap(t *testing.T, a *Agent, addr netip.Addr, present bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for slices.Contains(a.EncapAddrs(), addr) != present {
		if time.Now().After(deadline) {
			t.Fatalf("encap addresses %v: %s present=%t after %s, want %t", a.EncapAddrs(), addr, !present, testTimeout, present)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		c := config.DefaultAgentConfig()
		c.Node.Name = "be1"
		c.Interface = "eth0"
		c.VIPs = []string{"10.100.0.1"}
		return Config{Agent: c}
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"generic", func(c *Config) { c.AttachMode = datapath.AttachGeneric }, ""},
		{"no interface", func(c *Config) { c.Agent.Interface = "" }, "interface"},
		{"bad VIP", func(c *Config) { c.Agent.VIPs = []string{"10.100.0"} }, "vips[0]"},
		{"bad attach mode", func(c *Config) { c.AttachMode = 7 }, "attach mode"},
		{"lo", func(c *Config) { c.Agent.Interface = "lo" }, "interface: lo cannot be the agent's interface"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(&c)
			a, err := New(c)
			if tc.want == "" {
				if err != nil || a == nil {
					t.Fatalf("New: %v", err)
				}
				if a.pinDir != datapath.DefaultAgentPinDir("eth0") {
					t.Errorf("pin dir %s, want the default %s", a.pinDir, datapath.DefaultAgentPinDir("eth0"))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error about %s", err, tc.want)
			}
		})
	}
}

// TestEncapAddrsOverLimit: an interface with more addresses than the
// decap program holds cannot be followed: Start says so, names the fix
// (encap_addresses) and leaves the host as it was. The limit the
// configuration checks encap_addresses against is the datapath's.
func TestEncapAddrsOverLimit(t *testing.T) {
	t.Parallel()
	if config.MaxEncapAddrs != datapath.MaxDecapAddrs {
		t.Fatalf("config.MaxEncapAddrs %d, datapath.MaxDecapAddrs %d", config.MaxEncapAddrs, datapath.MaxDecapAddrs)
	}
	topo := newTopology(t)
	be := topo.Backend(1)
	// With the interface's own IPv4 and IPv6 address: one too many.
	for i := range datapath.MaxDecapAddrs - 1 {
		if err := topo.AddAddr(be, topology.EthName, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, 3, byte(i + 1)}), 24)); err != nil {
			t.Fatal(err)
		}
	}
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	a := newAgent(t, c)
	err := topo.Do(be, a.Start)
	if !errors.Is(err, datapath.ErrTooManyDecapAddrs) || !strings.Contains(err.Error(), "encap_addresses") {
		t.Fatalf("Start: %v, want ErrTooManyDecapAddrs and the advice to list encap_addresses", err)
	}
	t.Logf("Start: %v", err)
	requireSame(t, before, snapshot(t, topo, be))
	requireNoPins(t, c.PinDir)
}

// TestInterfaceRemoved: an interface removed while the agent runs takes the
// decap program with it, and one created again under its name is another
// interface: the agent reports it on Lost (which makes `switchyard agent`
// stop, with an error), and its Stop then undoes the rest as usual. It
// used to go on as if nothing happened, decapsulating nothing.
func TestInterfaceRemoved(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	a := startAgent(t, topo, be, c)
	replaceEth(t, topo, be)
	select {
	case err := <-a.Lost():
		if !errors.Is(err, ErrInterfaceGone) || !strings.Contains(err.Error(), "start the agent again") {
			t.Errorf("Lost: %v, want ErrInterfaceGone and the advice to start the agent again", err)
		}
		t.Logf("Lost: %v", err)
	case <-time.After(testTimeout):
		t.Fatalf("the agent did not report its interface gone within %s", testTimeout)
	}
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// The new eth0 and its peer have settings of their own: the rest must
	// be as before.
	requireSameButEth(t, topo, be, before)
	requireNoPins(t, c.PinDir)
}

// TestInterfaceRemovedIndexReused: the watcher took the interface for
// gone only when no device had its index: deleted, and its index given
// to another device (`ip link add ... index N`, or one moved into the
// namespace) before the watcher looked, the agent never reported it on
// Lost, and ran on with no program attached, decapsulating nothing. The
// interface is now gone unless the device at its index has its name or
// the agent's pinned link drives it (a rename, which
// TestInterfaceRenamedWhileRunning covers, is no loss).
func TestInterfaceRemovedIndexReused(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	p4 := netip.PrefixFrom(vip4, 32)
	// The watcher is held where it takes note of a VIP removed from lo,
	// while the index is reused: it reads the deletion only then, as a
	// watcher behind on its messages would.
	held, goOn := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(goOn) })
	var logs logBuffer
	msg := "VIP removed from lo behind the agent's back: the host drops what the balancers send to it until it is back on lo (restart the agent to put it back); " +
		"the agent no longer counts it as its own, so one added again by someone else stays at stop"
	a := newAgentOnLog(t, testConfig(topo), &logs, msg, func(*Agent) {
		close(held)
		<-goOn
	})
	defer release()
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
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
	select {
	case <-held:
	case <-time.After(testTimeout):
		t.Fatalf("the watcher did not take note of %s removed from lo within %s", p4, testTimeout)
	}
	topo.ReuseEthIndex(t, be, "sywri0", "sywri1")
	release()
	select {
	case err := <-a.Lost():
		if !errors.Is(err, ErrInterfaceGone) {
			t.Errorf("Lost: %v, want ErrInterfaceGone", err)
		}
		t.Logf("Lost: %v", err)
	case <-time.After(testTimeout):
		t.Fatalf("the agent did not report its interface gone within %s: sywri0 took the index of the deleted eth0", testTimeout)
	}
}

// TestEncapAddrsSkipDADFailed: an IPv6 address whose duplicate address
// detection failed (the router holds it) belongs to another host, and one
// still tentative is not yet this host's: neither is followed, as the
// kernel accepts no packet to them; one that passes the detection joins
// then. The failed one used to be decapsulated from the moment it was
// added.
func TestEncapAddrsSkipDADFailed(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	dup := netip.MustParsePrefix("fd00:2:1::77/64")
	if err := topo.AddAddr(topo.Router(), topology.RouterBackendIf(1), dup); err != nil {
		t.Fatal(err)
	}
	// The topology turns duplicate address detection off; it takes a few
	// milliseconds instead of up to two seconds with these.
	for key, v := range map[string]string{"net.ipv6.conf.eth0.accept_dad": "1",
		"net.ipv6.conf.eth0.router_solicitation_delay": "0", "net.ipv6.neigh.eth0.retrans_time_ms": "50"} {
		if err := topo.Sysctl(be, key, v); err != nil {
			t.Fatal(err)
		}
	}
	a := startAgent(t, topo, be, testConfig(topo))
	// With duplicate address detection, unlike topo.AddAddr.
	changeEthAddr(t, topo, be, dup, true)
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(10 * time.Millisecond) {
		var flags int
		err := topo.Netlink(be, func(h *netlink.Handle) error {
			l, err := h.LinkByName(topology.EthName)
			if err != nil {
				return err
			}
			list, err := h.AddrList(l, netlink.FAMILY_V6)
			for _, ad := range list {
				if ad.IP.Equal(dup.Addr().AsSlice()) {
					flags = ad.Flags
				}
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if flags&unix.IFA_F_DADFAILED != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("duplicate address detection of %s did not fail within %s (flags %#x)", dup, testTimeout, flags)
		}
	}
	// The watcher lists every address at each change: once it has seen
	// this one added, it has seen the failed one too.
	global := netip.MustParsePrefix("10.2.1.99/24")
	if err := topo.AddAddr(be, topology.EthName, global); err != nil {
		t.Fatal(err)
	}
	waitEncap(t, a, global.Addr(), true)
	want := []netip.Addr{topology.BackendIPv4(1), global.Addr(), topology.BackendIPv6(1)}
	if got := a.EncapAddrs(); !slices.Equal(got, want) {
		t.Errorf("encap addresses %v, want %v (not %s, whose duplicate address detection failed)", got, want, dup.Addr())
	}
	// One that passes the detection joins once it has.
	fresh := netip.MustParsePrefix("fd00:2:1::78/64")
	changeEthAddr(t, topo, be, fresh, true)
	waitEncap(t, a, fresh.Addr(), true)
}

// TestInterfaceLeavesBridge: an interface taken out of a bridge stays, but
// the bridge announces it with a link deletion message of its own
// (AF_BRIDGE): the agent must not take that for the interface's removal.
// The test hands the kernel's message to the watcher itself, as the
// watcher may handle it after any other sign the test could wait for. It
// used to report the interface gone.
func TestInterfaceLeavesBridge(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	var ifindex int32
	err := topo.Netlink(be, func(h *netlink.Handle) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "hqbr0"}}
		if err := h.LinkAdd(br); err != nil {
			return err
		}
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		ifindex = int32(l.Attrs().Index)
		return h.LinkSetMaster(l, br)
	})
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, topo, be, testConfig(topo))
	ns := topo.NsHandle(be)
	updates, done := make(chan netlink.LinkUpdate, 64), make(chan struct{})
	defer func() {
		close(done)
		for range updates {
		}
	}()
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	err = topo.Netlink(be, func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		return h.LinkSetNoMaster(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	timeout := time.After(testTimeout)
	for {
		select {
		case u := <-updates:
			if u.Index != ifindex || u.Header.Type != unix.RTM_DELLINK {
				continue
			}
			a.watch.linkChanged(u)
			select {
			case err := <-a.Lost():
				t.Fatalf("Lost: %v, after the bridge's message (family %d); the interface is still there", err, u.Family)
			default:
			}
			return
		case <-timeout:
			t.Fatalf("no link deletion message for %s within %s after it left the bridge", topology.EthName, testTimeout)
		}
	}
}

// changeEthAddr adds p to node's eth0 (add) or deletes it from there,
// with netlink's defaults (duplicate address detection on, unlike
// topo.AddAddr).
func changeEthAddr(t *testing.T, topo *topology.Topology, node string, p netip.Prefix, add bool) {
	t.Helper()
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		if add {
			return h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p)})
		}
		return h.AddrDel(l, &netlink.Addr{IPNet: ipNet(p)})
	})
	if err != nil {
		t.Fatalf("%s: change %s on %s: %v", node, p, topology.EthName, err)
	}
}

// TestInterfaceReplacedDuringStart: an interface deleted and created again
// under its name (a driver reload) while the agent starts is another one,
// which the agent did not resolve: Start fails with ErrInterfaceGone and
// undoes what it did, for the service manager to start it again. The
// agent used to attach to the new interface by name and run on with the
// old index: it followed the addresses of no interface (decapsulating
// nothing, without a warning in its status) and never noticed the
// deletion, which happened before it subscribed. The test holds the
// agents' host lock, which the agent waits for after it resolved the
// interface, while it replaces eth0.
func TestInterfaceReplacedDuringStart(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	a := newAgent(t, c)
	lockPath := filepath.Join(filepath.Dir(a.StatePath()), hostLockName)
	holder, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- topo.Do(be, a.Start) }()
	// The agent holds its pin directory once it has resolved the interface.
	for deadline := time.Now().Add(testTimeout); !pinDirHeld(c.PinDir); time.Sleep(5 * time.Millisecond) {
		select {
		case err := <-started:
			t.Fatalf("Start returned before it waited for the host lock: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not take its pin directory within %s", testTimeout)
		}
	}
	replaceEth(t, topo, be)
	holder.Close() // releases the flock
	select {
	case err = <-started:
	case <-time.After(testTimeout):
		t.Fatalf("Start did not return within %s of the host lock's release", testTimeout)
	}
	if !errors.Is(err, ErrInterfaceGone) || !strings.Contains(err.Error(), "start the agent again") {
		t.Fatalf("Start: %v, want ErrInterfaceGone and the advice to start the agent again (encap addresses %v)", err, a.EncapAddrs())
	}
	t.Logf("Start: %v", err)
	requireSameButEth(t, topo, be, before)
	requireNoPins(t, c.PinDir)
}

// TestAgentOnLoRefused: lo cannot be the agent's interface. The balancers'
// packets arrive on a NIC, never on lo, where the agent keeps the VIPs:
// an agent on lo (generic mode, which lo takes) decapsulated nothing, took
// lo's addresses, the VIPs among them, for encap addresses, and took the
// removal of a VIP from lo for a change of its interface's addresses, so
// the VIP stayed the agent's to remove at stop. The configuration refuses
// it, saying what to name instead.
func TestAgentOnLoRefused(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	c.Interface = "lo"
	a, err := New(Config{Agent: c, Logger: testLogger(t), StateDir: testStateDir(t, c), AttachMode: datapath.AttachAuto})
	if err != nil {
		if !strings.Contains(err.Error(), "interface: lo cannot be the agent's interface") || !strings.Contains(err.Error(), "e.g. eth0") {
			t.Fatalf("New with interface lo: %v, want the interface named as wrong and what to name instead", err)
		}
		t.Logf("New: %v", err)
		return
	}
	// What an agent on lo did: it started, and decapsulated to lo's
	// addresses, the VIPs among them.
	t.Cleanup(func() {
		a.Stop()
		datapath.RemoveDecap(c.PinDir)
	})
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("New with interface lo: accepted; Start: %v", err)
	}
	t.Fatalf("New with interface lo: accepted; the agent started on lo and decapsulates to %v", a.EncapAddrs())
}

// replaceEth deletes node's eth0 and creates another under the name (a
// veth whose peer, hqpeer0, stays in node): what a driver reload does.
func replaceEth(t *testing.T, topo *topology.Topology, node string) {
	t.Helper()
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		if err := h.LinkDel(l); err != nil {
			return err
		}
		return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: topology.EthName}, PeerName: "hqpeer0"})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// requireSameButEth fails t unless node's state is before's, but for the
// settings of the eth0 and hqpeer0 that replaceEth made, which are new.
func requireSameButEth(t *testing.T, topo *topology.Topology, node string, before hostState) {
	t.Helper()
	after := snapshot(t, topo, node)
	for _, s := range []hostState{before, after} {
		maps.DeleteFunc(s.sysctls, func(k, _ string) bool {
			return strings.Contains(k, "/"+topology.EthName+"/") || strings.Contains(k, "/hqpeer0/")
		})
	}
	requireSame(t, before, after)
}

// renameEth renames node's eth0 to name (down, renamed, up: the kernel
// renames only a device that is down).
func renameEth(t *testing.T, topo *topology.Topology, node, name string) {
	t.Helper()
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		if err := h.LinkSetDown(l); err != nil {
			return err
		}
		if err := h.LinkSetName(l, name); err != nil {
			return err
		}
		return h.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}
}
