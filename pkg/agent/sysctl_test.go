package agent

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/topology"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestRPFilterRelaxedOnlyOnInterface: the decapsulated packets arrive on
// the agent's interface, so only its reverse-path filter needs to be
// loose. The kernel applies the larger of "all" and the device's value, so
// the device's 2 makes it loose whatever "all" says, and "all" stays: the
// agent used to set all.rp_filter=2 as well, which turned off strict
// anti-spoofing on every other interface of the host (an uplink, say).
func TestRPFilterRelaxedOnlyOnInterface(t *testing.T) {
	t.Parallel()
	const other = "aAother0"
	for _, tc := range []struct{ all, dev, wantDev string }{
		{all: "1", dev: "1", wantDev: "2"},
		{all: "1", dev: "0", wantDev: "2"}, // strict through "all"
		{all: "0", dev: "1", wantDev: "2"},
		{all: "2", dev: "0", wantDev: "0"}, // loose already
		{all: "0", dev: "0", wantDev: "0"}, // off
	} {
		t.Run(fmt.Sprintf("all=%s,eth0=%s", tc.all, tc.dev), func(t *testing.T) {
			t.Parallel()
			topo := newTopology(t)
			be := topo.Backend(1)
			err := topo.Netlink(be, func(h *netlink.Handle) error {
				return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: other}, PeerName: other + "p"})
			})
			if err != nil {
				t.Fatal(err)
			}
			setSysctl(t, topo, be, "net.ipv4.conf.all.rp_filter", tc.all)
			setSysctl(t, topo, be, "net.ipv4.conf."+topology.EthName+".rp_filter", tc.dev)
			setSysctl(t, topo, be, "net.ipv4.conf."+other+".rp_filter", "1")
			before := snapshot(t, topo, be)
			a := startAgent(t, topo, be, testConfig(topo))

			all := sysctlValue(t, topo, be, "net.ipv4.conf.all.rp_filter")
			if all != tc.all {
				t.Errorf("all.rp_filter = %s while running, want %s (left alone)", all, tc.all)
			}
			if got := sysctlValue(t, topo, be, "net.ipv4.conf.eth0.rp_filter"); got != tc.wantDev {
				t.Errorf("eth0.rp_filter = %s while running, want %s", got, tc.wantDev)
			}
			// What the kernel applies on the other interface.
			if eff, want := max(all, sysctlValue(t, topo, be, "net.ipv4.conf."+other+".rp_filter")), max(tc.all, "1"); eff != want {
				t.Errorf("rp_filter in force on %s: %s while the agent runs, want %s, as the admin set it", other, eff, want)
			}
			if err := a.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			requireSame(t, before, snapshot(t, topo, be))
		})
	}
}

// TestSysctlChangedMeanwhileKept: a setting the admin changes while the
// agent runs is the admin's newest choice, and Stop leaves it; the agent
// used to write back the value it had found at Start over it. Settings
// still as the agent set them are restored.
func TestSysctlChangedMeanwhileKept(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "0")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_ignore", "0")
	a := startAgent(t, topo, be, testConfig(topo))
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "1")
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := sysctlValue(t, topo, be, "net.ipv4.conf.eth0.arp_announce"); got != "1" {
		t.Errorf("eth0.arp_announce = %s after Stop, want 1, as the admin set it while the agent ran", got)
	}
	if got := sysctlValue(t, topo, be, "net.ipv4.conf.eth0.arp_ignore"); got != "0" {
		t.Errorf("eth0.arp_ignore = %s after Stop, want 0, as found at Start", got)
	}
}

// TestInterfaceRenamedWhileRunning: an interface renamed while the agent
// runs (down, `ip link set eth0 name ...`, up) keeps the decap program,
// and the agent's settings stay on it under its new name. The kernel
// registers a renamed device's settings anew, so the files the agent had
// opened read "no such file": its status failed (and with it every
// metrics scrape), and its stop took the settings for gone with the
// device and left them changed.
func TestInterfaceRenamedWhileRunning(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	a := startAgent(t, topo, be, testConfig(topo))
	const renamed = "ethrn0"
	renameEth(t, topo, be, renamed)
	want := api.AgentSysctl{Name: "net.ipv4.conf." + renamed + ".rp_filter", Old: "1", Set: "2", Now: "2"}
	if st, err := a.AgentStatus(context.Background()); err != nil {
		t.Errorf("AgentStatus after the rename: %v", err)
	} else {
		if !slices.Contains(st.Sysctls, want) {
			t.Errorf("status sysctls %+v, want %+v among them", st.Sysctls, want)
		}
		// The decap program stays on the renamed interface: the status
		// names it as it is now, and the name it was configured under.
		if st.Interface != renamed || st.ConfiguredInterface != topology.EthName {
			t.Errorf("status interface %q (configured %q), want %q (configured %q)", st.Interface, st.ConfiguredInterface, renamed, topology.EthName)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.Collector())
	info := fmt.Sprintf(`switchyard_agent_info{attach_mode="native",interface=%q,node="be1",program_tag=%q}`, renamed, a.attached.NewTag)
	if v, ok := gather(t, reg)[info]; !ok || v != 1 {
		t.Errorf("%s = %v (exported: %v), want 1; series: %v", info, v, ok, slices.Sorted(maps.Keys(gather(t, reg))))
	}
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for key, want := range map[string]string{"rp_filter": "1", "arp_ignore": "0", "arp_announce": "0"} {
		key = "net.ipv4.conf." + renamed + "." + key
		if got := sysctlValue(t, topo, be, key); got != want {
			t.Errorf("%s = %s after Stop, want %s as found at Start", key, got, want)
		}
	}
}

// TestScrapeInterfaceRenamedNotUTF8: an interface name may hold any byte
// but '/', ':' and spaces, and switchyard_agent_info carries the current
// one. Renamed to a name that is not UTF-8 while the agent ran, the next
// scrape panicked (prometheus.MustNewConstMetric refuses such a label
// value) in the registry's own goroutine, which ended the agent: a rename
// took decapsulation down with the first scrape. The scrape now leaves
// that series out (logged), as the balancer's does, and keeps the rest.
func TestScrapeInterfaceRenamedNotUTF8(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	a := startAgent(t, topo, be, testConfig(topo))
	renameEth(t, topo, be, "eth\xff")
	ch := make(chan prometheus.Metric, 100)
	func() {
		// Collect in this goroutine: a panic in the registry's would
		// end the test binary, namespaces and all.
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("scrape with the interface renamed to a name that is not UTF-8 panicked: %v", p)
			}
		}()
		a.Collector().Collect(ch)
	}()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.Collector())
	got := gather(t, reg)
	for series := range got {
		if strings.HasPrefix(series, "switchyard_agent_info") {
			t.Errorf("%s exported, want the series with a label that is not UTF-8 left out", series)
		}
	}
	if v, ok := got[`switchyard_agent_decap_attached`]; !ok || v != 1 {
		t.Errorf("switchyard_agent_decap_attached = %v (exported: %v), want 1: the other series stay; series: %v", v, ok, slices.Sorted(maps.Keys(got)))
	}
}

// TestSysctlOverriddenMetric: a setting changed behind the agent's back
// (here eth0.arp_announce, which the agent set to 2, put back to 0) puts
// the backend at risk of answering ARP for its VIPs, and used to show only
// in the NOW column of status --agent, which nobody alerts on. It now
// counts in switchyard_agent_sysctls_overridden, and no longer once the
// setting is back to what the agent set.
func TestSysctlOverriddenMetric(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "0")
	a := startAgent(t, topo, be, testConfig(topo))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.Collector())
	overridden := func() float64 {
		t.Helper()
		v, ok := gather(t, reg)["switchyard_agent_sysctls_overridden"]
		if !ok {
			t.Fatal("no switchyard_agent_sysctls_overridden")
		}
		return v
	}
	if v := overridden(); v != 0 {
		t.Errorf("switchyard_agent_sysctls_overridden = %v right after the start, want 0", v)
	}
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "0")
	if v := overridden(); v != 1 {
		t.Errorf("switchyard_agent_sysctls_overridden = %v with eth0.arp_announce changed behind the agent's back, want 1", v)
	}
	// test/e2e's TestMetricsLint lints a whole scrape; this one the
	// collector's own series.
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %+v", err, problems)
	}
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "2")
	if v := overridden(); v != 0 {
		t.Errorf("switchyard_agent_sysctls_overridden = %v with eth0.arp_announce back at 2, want 0", v)
	}
}

// startReadOnlyProcSys starts a in node on a thread whose mount namespace
// has /proc/sys read-only, as a container that is not privileged has it.
// The thread ends with the start (topology.Do never unlocks it).
func startReadOnlyProcSys(topo *topology.Topology, node string, a *Agent) error {
	return inReadOnlyProcSys(topo, node, a.Start)
}

// inReadOnlyProcSys runs fn in node on a thread whose mount namespace has
// /proc/sys read-only (see startReadOnlyProcSys).
func inReadOnlyProcSys(topo *topology.Topology, node string, fn func() error) error {
	return topo.Do(node, func() error {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("unshare the mount namespace: %w", err)
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
			return fmt.Errorf("make / a slave mount: %w", err)
		}
		if err := unix.Mount(procSys, procSys, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", procSys, err)
		}
		if err := unix.Mount("", procSys, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", procSys, err)
		}
		return fn()
	})
}

// TestReadOnlyProcSys: in a container that is not privileged /proc/sys is
// read-only, and the agent failed on its first sysctl with `open sysctl
// net.ipv4.conf.all.arp_ignore: read-only file system`, which says nothing
// of the fix, even when the admin had given every setting the value direct
// server return needs (in the container runtime's sysctl settings). Settings as wanted need no
// write now, and the agent starts; one that needs a change fails the start
// with the value to give it and how, and leaves the host as it was.
func TestReadOnlyProcSys(t *testing.T) {
	t.Parallel()
	t.Run("settings to change", func(t *testing.T) {
		t.Parallel()
		topo := newTopology(t)
		be := topo.Backend(1)
		setSysctl(t, topo, be, "net.ipv4.conf.all.arp_ignore", "0")
		before := snapshot(t, topo, be)
		a := newAgent(t, testConfig(topo))
		err := startReadOnlyProcSys(topo, be, a)
		if err == nil || !strings.Contains(err.Error(), "`sysctl -w net.ipv4.conf.all.arp_ignore=1`") {
			t.Fatalf("Start with /proc/sys read-only and arp_ignore 0: %v, want an error naming the value to give it and how", err)
		}
		t.Logf("Start: %v", err)
		requireSame(t, before, snapshot(t, topo, be))
		requireNoState(t, a)
	})
	t.Run("settings given beforehand", func(t *testing.T) {
		t.Parallel()
		topo := newTopology(t)
		be := topo.Backend(1)
		for key, v := range map[string]string{
			"net.ipv4.conf.all.arp_ignore":    "1",
			"net.ipv4.conf.all.arp_announce":  "2",
			"net.ipv4.conf.eth0.arp_ignore":   "1",
			"net.ipv4.conf.eth0.arp_announce": "2",
			"net.ipv4.conf.eth0.rp_filter":    "2",
		} {
			setSysctl(t, topo, be, key, v)
		}
		before := snapshot(t, topo, be)
		a := newAgent(t, testConfig(topo))
		if err := startReadOnlyProcSys(topo, be, a); err != nil {
			t.Fatalf("Start with /proc/sys read-only and the settings as direct server return needs them: %v", err)
		}
		for _, p := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
			if !loHas(t, topo, be, p) {
				t.Errorf("VIP %s not on lo while the agent runs", p)
			}
		}
		if err := a.Stop(); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		requireSame(t, before, snapshot(t, topo, be))
		requireNoState(t, a)
	})
}

// TestStopSysctlIndexReused: the agent's interface deleted while it runs,
// and its index given to another device before the agent stops (`ip link
// add ... index N`, or a device moved into the namespace, which keeps its
// index). The stop, and a status call before it, found the interface's
// settings by the index alone: the stop set the new device's arp_ignore,
// arp_announce and rp_filter back to the values the agent had found on
// the deleted one, whenever the new device had the values the agent sets
// (the admin's, or net.ipv4.conf.default's). They are the new device's
// own, and stay, with the line that the interface is gone; the settings
// of a renamed interface, which the agent's pinned link still drives,
// are followed as before (TestInterfaceRenamedWhileRunning).
func TestStopSysctlIndexReused(t *testing.T) {
	t.Parallel()
	const other = "sysr0"
	keys := []string{"arp_ignore", "arp_announce", "rp_filter"}
	found := map[string]string{"arp_ignore": "0", "arp_announce": "0", "rp_filter": "1"}
	admin := map[string]string{"arp_ignore": "1", "arp_announce": "2", "rp_filter": "2"}
	for _, tc := range []struct {
		name   string
		status bool // a status call between the reuse and the stop
	}{
		{"stop", false},
		{"status, then stop", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topo := newTopology(t)
			be := topo.Backend(1)
			for _, key := range keys {
				setSysctl(t, topo, be, "net.ipv4.conf.eth0."+key, found[key])
			}
			c := testConfig(topo)
			var logs logBuffer
			a := newAgentLogs(t, c, &logs)
			if err := topo.Do(be, a.Start); err != nil {
				t.Fatalf("Start: %v", err)
			}
			index := topo.ReuseEthIndex(t, be, other, "sysr1")
			for _, key := range keys {
				setSysctl(t, topo, be, "net.ipv4.conf."+other+"."+key, admin[key])
			}
			if tc.status {
				st, err := a.AgentStatus(context.Background())
				t.Logf("AgentStatus after the reuse: %v", err)
				for _, s := range st.Sysctls {
					if strings.Contains(s.Name, "."+other+".") {
						t.Errorf("status shows %s's setting %+v as the agent's: it took the index of the deleted eth0", other, s)
					}
				}
			}
			if err := a.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			for _, key := range keys {
				if got := sysctlValue(t, topo, be, "net.ipv4.conf."+other+"."+key); got != admin[key] {
					t.Errorf("%s.%s = %s after Stop, want %s as the admin set it: it took the index of the deleted eth0, and its settings were never the agent's", other, key, got, admin[key])
				}
			}
			for _, key := range keys {
				want := fmt.Sprintf("interface eth0 (index %d), whose sysctl net.ipv4.conf.eth0.%s the agent set, is gone: ", index, key)
				if !strings.Contains(logs.String(), want) {
					t.Errorf("the agent did not say %q; it logged:\n%s", want, logs.String())
				}
			}
			if want := fmt.Sprintf("index %d is %s now, left as it is", index, other); logs.count(want) != len(keys) {
				t.Errorf("the agent did not say once for each of its %d settings of eth0 that %q; it logged:\n%s", len(keys), want, logs.String())
			}
		})
	}
}
