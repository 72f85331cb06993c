package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// groTest is a generic-mode balancer over eth0 of a test topology whose
// runs find GRO on and turn it off, with its GRO record.
type groTest struct {
	topo                        *topology.Topology
	lb, pinDir, cfgPath, record string
}

func newGROTest(t *testing.T, prefix string) *groTest {
	t.Helper()
	g := &groTest{}
	g.topo, g.lb, g.pinDir, g.cfgPath = linkTestSetup(t, prefix)
	g.record = groFile(filepath.Join(filepath.Dir(g.cfgPath), "switchyard.sock"), g.pinDir)
	return g
}

// groOn reports whether GRO is on on ifname of the balancer's namespace.
func (g *groTest) groOn(t *testing.T, ifname string) bool {
	t.Helper()
	on, err := g.topo.GRO(g.lb, ifname)
	if err != nil {
		t.Fatal(err)
	}
	return on
}

func (g *groTest) recorded() bool { _, err := os.Stat(g.record); return err == nil }

// runAndStop runs the balancer until it is up, stops it with SIGTERM and
// returns its log.
func (g *groTest) runAndStop(t *testing.T) string {
	t.Helper()
	d := startRun(t, g.topo, g.lb, g.cfgPath)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-d.exited; err != nil {
		t.Fatalf("switchyard run exited with %v on SIGTERM:\n%s", err, d.stderr.String())
	}
	return d.stderr.String()
}

// genericRun runs and stops a generic-mode balancer over eth0 with GRO
// on, and checks that it turned GRO off and recorded it.
func (g *groTest) genericRun(t *testing.T) {
	t.Helper()
	if err := g.topo.SetGRO(g.lb, topology.EthName, true); err != nil {
		t.Fatal(err)
	}
	out := g.runAndStop(t)
	if g.groOn(t, topology.EthName) || !strings.Contains(out, "generic receive offload (GRO) turned off") {
		t.Fatalf("the generic-mode run did not turn GRO off, so the test proves nothing:\n%s", out)
	}
	if !g.recorded() {
		t.Errorf("a generic-mode run that turned GRO off wrote no record at %s:\n%s", g.record, out)
	}
}

// waitDetached waits until eth0 runs no XDP program, which the kernel
// takes off once the last reference to its link is gone (when, being
// deferred work, is not known).
func (g *groTest) waitDetached(t *testing.T, after string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		id := g.topo.EthXDPProgID(t, g.lb)
		if id == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("eth0 still runs XDP program %d 10 s after %s, so the test proves nothing", id, after)
		}
	}
}

// remove runs `switchyard remove` with args in the balancer's namespace.
func (g *groTest) remove(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runSwitchyardIn(t, g.topo, g.lb, append([]string{"remove"}, args...)...)
}

// A balancer in generic mode turns GRO off on its interface, which stays
// off with the attachment, after the daemon too. Nothing recorded that it
// had been on: after `switchyard remove`, or a restart in native mode
// (which runs before GRO), it stayed off, and the operator had to turn it
// on by hand. The balancer now records it beside its API socket, and
// both turn it on again and remove the record. A native-mode run writes
// none.
func TestRunGROIsRestored(t *testing.T) {
	t.Parallel()
	g := newGROTest(t, "sygro")
	yaml, err := os.ReadFile(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	setMode := func(t *testing.T, mode string) {
		t.Helper()
		cfg := strings.Replace(string(yaml), "attach_mode: generic", "attach_mode: "+mode, 1)
		if err := os.WriteFile(g.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("remove", func(t *testing.T) {
		g.genericRun(t)
		out, err := g.remove(t, "--config", g.cfgPath)
		if err != nil {
			t.Fatalf("switchyard remove: %v\n%s", err, out)
		}
		if !g.groOn(t, topology.EthName) {
			t.Errorf("GRO is off on eth0 after `switchyard remove` of the generic-mode balancer that turned it off; remove said:\n%s", out)
		}
		if !strings.Contains(out, "turned on again") {
			t.Errorf("switchyard remove does not say it turned GRO on again:\n%s", out)
		}
		if g.recorded() {
			t.Errorf("switchyard remove left the GRO record %s", g.record)
		}
	})
	t.Run("restart in native mode", func(t *testing.T) {
		setMode(t, "generic")
		g.genericRun(t)
		setMode(t, "native")
		out := g.runAndStop(t)
		if !strings.Contains(out, "pinned XDP link runs in another mode than asked") {
			t.Fatalf("the native-mode restart did not take over the generic-mode link, so the test proves nothing:\n%s", out)
		}
		if !g.groOn(t, topology.EthName) {
			t.Errorf("GRO is off on eth0 after a native-mode restart over the generic-mode run that turned it off; its log:\n%s", out)
		}
		if g.recorded() {
			t.Errorf("the native-mode restart left the GRO record %s", g.record)
		}
		// Another native run: GRO stays on, and nothing is recorded.
		out = g.runAndStop(t)
		if on := g.groOn(t, topology.EthName); !on || g.recorded() {
			t.Errorf("a native-mode run: GRO on %v, record written %v; want on, none; its log:\n%s", on, g.recorded(), out)
		}
	})
}

// collidingVIPs are seventeen TCP VIPs on port 80 that share one home slot
// (3238) of the VIP index, found with pkg/datapath's vipIndexHash: the
// index probes sixteen slots from a VIP's home, so the seventeenth finds
// none, and the kernel-side index cannot be built (`no free slot`).
var collidingVIPs = []string{"10.100.54.34", "10.100.61.104", "10.100.68.174", "10.100.75.244", "10.100.82.58", "10.100.137.181",
	"10.100.144.251", "10.100.151.65", "10.100.158.135", "10.100.165.205", "10.100.172.19", "10.100.227.142", "10.100.234.212",
	"10.100.241.26", "10.100.248.96", "10.100.255.166", "10.101.0.0"}

// A first start in generic mode that fails after its attach (its first
// apply, here: a configuration whose VIPs the VIP index cannot place)
// takes its program and pins off, turns GRO on again, and removes the
// GRO record it wrote. (The test of a file at api.socket no longer gets
// that far: the socket is taken before the attach.)
func TestRunFailedFirstStartTurnsGROBackOn(t *testing.T) {
	t.Parallel()
	topo, lb, pinDir, cfgPath := linkTestSetup(t, "sygrf")
	yaml, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var vips []string
	for i, a := range collidingVIPs {
		vips = append(vips, "{name: v"+string(rune('a'+i))+", address: "+a+", port: 80, protocol: tcp, table_size: 251, health: {type: none}, backends: [{name: be1, address: 10.2.1.2}]}")
	}
	cfg, _, ok := strings.Cut(string(yaml), "vips: [")
	if !ok {
		t.Fatal("the configuration has no vips line to change")
	}
	if err := os.WriteFile(cfgPath, []byte(cfg+"vips: ["+strings.Join(vips, ", ")+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := topo.SetGRO(lb, topology.EthName, true); err != nil {
		t.Fatal(err)
	}
	// 17 VIPs of one index slot: the start's apply is refused.
	out := runFailing(t, topo, lb, cfgPath, "apply the configuration at start: ", "no free slot")
	if !strings.Contains(out, "generic receive offload (GRO) turned off") || !strings.Contains(out, "XDP balancer attached") {
		t.Fatalf("the failed first start did not attach and turn GRO off, so the test proves nothing:\n%s", out)
	}
	if on, err := topo.GRO(lb, topology.EthName); err != nil || !on {
		t.Errorf("a failed first start in generic mode left GRO off on eth0 (%v); its log:\n%s", err, out)
	}
	record := groFile(filepath.Join(filepath.Dir(cfgPath), "switchyard.sock"), pinDir)
	if _, err := os.Stat(record); err == nil {
		t.Errorf("a failed first start that turned GRO back on left its GRO record %s", record)
	}
	if id := topo.EthXDPProgID(t, lb); id != 0 {
		t.Errorf("a failed first start left its program %d attached to eth0", id)
	}
	if _, err := os.Stat(pinDir); err == nil {
		t.Errorf("a failed first start left its pins in %s", pinDir)
	}
}

// `switchyard remove --pin-dir DIR --config FILE` looked for the GRO
// record beside the default socket, not beside FILE's api.socket, where
// the balancer wrote it: GRO stayed off. The configuration's socket now
// decides, and --pin-dir only the pins.
func TestRemoveGROPinDirWithConfig(t *testing.T) {
	t.Parallel()
	g := newGROTest(t, "sygrc")
	g.genericRun(t)
	out, err := g.remove(t, "--pin-dir", g.pinDir, "--config", g.cfgPath)
	if err != nil {
		t.Fatalf("switchyard remove --pin-dir --config: %v\n%s", err, out)
	}
	if !g.groOn(t, topology.EthName) {
		t.Errorf("GRO is off on eth0 after `switchyard remove --pin-dir DIR --config FILE`; remove said:\n%s", out)
	}
	if g.recorded() {
		t.Errorf("switchyard remove --pin-dir --config left the GRO record %s beside the configuration's socket", g.record)
	}
}

// `switchyard remove` stopped at "nothing pinned" when the pin directory
// was gone (removed by hand, or by an earlier remove that then failed to
// turn GRO on), before it looked at the GRO record: GRO stayed off for
// good, though the record and the README promised that the next remove
// tries again. It now turns GRO on from the record first, and only then
// says that nothing is pinned; but not under a generic-mode program that
// still runs (a daemon whose pin directory was removed while it ran),
// which needs GRO off.
func TestRemoveGROPinDirGone(t *testing.T) {
	t.Parallel()
	g := newGROTest(t, "sygrp")

	t.Run("daemon still running", func(t *testing.T) {
		if err := g.topo.SetGRO(g.lb, topology.EthName, true); err != nil {
			t.Fatal(err)
		}
		d := startRun(t, g.topo, g.lb, g.cfgPath)
		if g.groOn(t, topology.EthName) || !g.recorded() {
			t.Fatalf("the generic-mode run did not turn GRO off and record it, so the test proves nothing:\n%s", d.stderr.String())
		}
		if err := os.RemoveAll(g.pinDir); err != nil {
			t.Fatal(err)
		}
		out, err := g.remove(t, "--config", g.cfgPath)
		if err == nil || !strings.Contains(out, "nothing pinned at "+g.pinDir) {
			t.Errorf("switchyard remove of a removed pin directory: %v, want it to say nothing is pinned:\n%s", err, out)
		}
		if !strings.Contains(out, "a generic-mode XDP program runs on "+topology.EthName) {
			t.Errorf("switchyard remove does not say why it left GRO off under the running generic-mode program:\n%s", out)
		}
		if g.groOn(t, topology.EthName) {
			t.Errorf("switchyard remove turned GRO on under the generic-mode program of a running daemon; it said:\n%s", out)
		}
		if !g.recorded() {
			t.Errorf("switchyard remove dropped the GRO record %s though it left GRO off", g.record)
		}
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		<-d.exited
		g.waitDetached(t, "the daemon whose pins were removed stopped")
	})
	t.Run("removed by hand", func(t *testing.T) {
		g.genericRun(t)
		if err := os.RemoveAll(g.pinDir); err != nil {
			t.Fatal(err)
		}
		g.waitDetached(t, "its pins removed")
		out, err := g.remove(t, "--config", g.cfgPath)
		if err == nil || !strings.Contains(out, "nothing pinned at "+g.pinDir) {
			t.Errorf("switchyard remove of a removed pin directory: %v, want it to say nothing is pinned:\n%s", err, out)
		}
		if !g.groOn(t, topology.EthName) {
			t.Errorf("GRO is off on eth0 after `switchyard remove` with the pin directory gone and the GRO record there; remove said:\n%s", out)
		}
		if !strings.Contains(out, "turned on again") {
			t.Errorf("switchyard remove does not say it turned GRO on again:\n%s", out)
		}
		if g.recorded() {
			t.Errorf("switchyard remove left the GRO record %s", g.record)
		}
	})
}

// The GRO record names the interface and its index, but restoring went by
// the index alone: with the interface deleted and its index given to
// another device (`ip link add ... index N`, or a device moved into the
// namespace, which keeps its index), remove turned GRO on on that device,
// whose GRO the balancer never touched. A device of another name at the
// recorded index now counts as the recorded one gone.
func TestRemoveGROIndexReused(t *testing.T) {
	t.Parallel()
	g := newGROTest(t, "sygri")
	g.genericRun(t)
	const other = "syci0"
	index := g.topo.ReuseEthIndex(t, g.lb, other, "syci1")
	out, err := g.remove(t, "--config", g.cfgPath)
	if err != nil {
		t.Fatalf("switchyard remove: %v\n%s", err, out)
	}
	if g.groOn(t, other) {
		t.Errorf("switchyard remove turned GRO on on %s, which took the index of the deleted eth0 the record names; it said:\n%s", other, out)
	}
	if !strings.Contains(out, "is gone: its GRO record") || !strings.Contains(out, fmt.Sprintf("index %d is %s now", index, other)) {
		t.Errorf("switchyard remove does not say the recorded interface is gone:\n%s", out)
	}
	if g.recorded() {
		t.Errorf("switchyard remove left the GRO record %s of the deleted interface", g.record)
	}
}

// A generic-mode start first turns GRO on again on another interface its
// record names (the configuration's interface changed, say), then
// records its own. When that restore failed, here under another
// balancer's generic-mode program on eth0, the start recorded its own
// interface all the same, over eth0's record: once that program was
// gone, nothing turned eth0's GRO on again. The start now keeps the
// record and leaves its interface's GRO on, saying so; `switchyard
// remove` later turns eth0's GRO on from it.
func TestRunGROKeepsARecordItCannotRestore(t *testing.T) {
	t.Parallel()
	g := newGROTest(t, "sygrk")
	yaml, err := os.ReadFile(g.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	// What an earlier generic-mode run of this configuration on eth0
	// left: eth0's GRO off, and its record.
	eth, err := g.topo.Link(g.lb, topology.EthName)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.topo.SetGRO(g.lb, topology.EthName, false); err != nil {
		t.Fatal(err)
	}
	if err := writeGRORecord(g.record, topology.EthName, eth.Attrs().Index); err != nil {
		t.Fatal(err)
	}
	// Another balancer (a pin directory and socket of its own) runs on
	// eth0 in generic mode, which needs GRO off.
	otherPins := filepath.Join(filepath.Dir(g.pinDir), "other")
	t.Cleanup(func() { datapath.RemoveBalancer(otherPins) })
	otherDir := t.TempDir()
	otherCfg := filepath.Join(otherDir, "switchyard.yaml")
	cfg := strings.Replace(string(yaml), "pin_dir: "+g.pinDir, "pin_dir: "+otherPins, 1)
	cfg = strings.Replace(cfg, filepath.Join(filepath.Dir(g.cfgPath), "switchyard.sock"), filepath.Join(otherDir, "switchyard.sock"), 1)
	if err := os.WriteFile(otherCfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	other := startRun(t, g.topo, g.lb, otherCfg)

	// This configuration now runs on syc0, whose GRO is on.
	const iface = "syc0"
	err = g.topo.Netlink(g.lb, func(h *netlink.Handle) error {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: iface}, PeerName: "syc1"}); err != nil {
			return err
		}
		for _, n := range []string{iface, "syc1"} {
			if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: n}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.topo.SetGRO(g.lb, iface, true); err != nil {
		t.Fatal(err)
	}
	cfg = strings.Replace(string(yaml), "interface: "+topology.EthName, "interface: "+iface, 1)
	if err := os.WriteFile(g.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out := g.runAndStop(t)
	if !strings.Contains(out, "a generic-mode XDP program runs on "+topology.EthName) {
		t.Fatalf("the start did not fail to restore eth0's GRO under the other balancer's program, so the test proves nothing:\n%s", out)
	}
	rec, err := readGRORecord(g.record)
	if err != nil || rec == nil || rec.Dev != topology.EthName {
		t.Errorf("GRO record after the start on %s: %+v (%v), want eth0's kept", iface, rec, err)
	}
	if !g.groOn(t, iface) || !strings.Contains(out, "generic receive offload (GRO) left on for generic-mode XDP") {
		t.Errorf("the start turned GRO off on %s without a record of it, or did not say it left it on:\n%s", iface, out)
	}

	// Once the other balancer is gone, remove turns eth0's GRO on.
	if err := other.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-other.exited; err != nil {
		t.Fatalf("the other balancer exited with %v on SIGTERM:\n%s", err, other.stderr.String())
	}
	rm, err := runSwitchyardIn(t, g.topo, g.lb, "remove", "--config", otherCfg)
	if err != nil {
		t.Fatalf("switchyard remove of the other balancer: %v\n%s", err, rm)
	}
	g.waitDetached(t, "the other balancer was removed")
	rm, err = g.remove(t, "--config", g.cfgPath)
	if err != nil {
		t.Fatalf("switchyard remove: %v\n%s", err, rm)
	}
	if !g.groOn(t, topology.EthName) {
		t.Errorf("GRO is off on eth0 after `switchyard remove`, whose record the start on %s lost; remove said:\n%s", iface, rm)
	}
	if g.recorded() {
		t.Errorf("switchyard remove left the GRO record %s", g.record)
	}
}
