package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// TestAttachUpgradeRemove drives the pinned lifecycle on a real interface in
// a namespace of its own: attach, restart with a different program (the
// pinned link is updated in place and the maps are reused), remove.
func TestAttachUpgradeRemove(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: "sydp", Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-attach-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })

	err := topo.Do(topo.Balancer(1), func() error {
		b1, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
		if err != nil {
			return err
		}
		res, err := b1.Attach("eth0", AttachNative)
		if err != nil {
			return err
		}
		if res.Replaced || res.Mode != AttachNative {
			return fmt.Errorf("first attach: %+v", res)
		}
		if err := b1.SetVIP(VIPKey{vip4, 80, ProtoTCP}, 3, 0); err != nil {
			return err
		}
		if err := b1.SetSettings(defaultSettings()); err != nil {
			return err
		}
		cfg1, filter1, err := readGlobals(b1)
		if err != nil {
			return err
		}
		pins1, err := mapPins(pin)
		if err != nil {
			return err
		}
		b1.Close()
		if id, err := xdpProgID("eth0"); err != nil || id == 0 {
			return fmt.Errorf("closing the daemon's handles detached the program (%v)", err)
		}

		// A newer program: swapped into the pinned link, state kept.
		b2, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096, ProgramVariant: 1})
		if err != nil {
			return err
		}
		defer b2.Close()
		res, err = b2.Attach("eth0", AttachNative)
		if err != nil {
			return err
		}
		if !res.Replaced || res.OldTag == res.NewTag || res.OldTag == "" {
			return fmt.Errorf("upgrade: %+v, want an in-place replacement with a new tag", res)
		}
		vips, err := b2.VIPs()
		if err != nil || vips[VIPKey{vip4, 80, ProtoTCP}].Num != 3 {
			return fmt.Errorf("pinned VIP lost across the upgrade: %v %v", vips, err)
		}
		// The globals the running program reads (config, vip_filter)
		// are pinned maps too: loading must not reset them.
		cfg2, filter2, err := readGlobals(b2)
		if err != nil {
			return err
		}
		if cfg2 != cfg1 || cfg1.Flags == 0 || filter2 != filter1 {
			return fmt.Errorf("settings or VIP filter reset by the upgrade: config %+v -> %+v", cfg1, cfg2)
		}
		// Every map, the connection table among them, is the one the
		// first program used: the upgrade keeps flows.
		pins2, err := mapPins(pin)
		if err != nil {
			return err
		}
		if !maps.Equal(pins1, pins2) {
			return fmt.Errorf("map pins across the upgrade: %v -> %v, want every map kept", pins1, pins2)
		}
		if err := usesOnlyPinned(b2.objs.XdpBalancer, pins2); err != nil {
			return err
		}
		if err := runsProgram(b2.objs.XdpBalancer, "eth0"); err != nil {
			return err
		}

		// A pinned table of another size cannot be reused: a clear error.
		// Its advice is a command line remove takes: alone it asks
		// which datapath to remove.
		if _, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 8192}); !errors.Is(err, ErrPinnedIncompatible) ||
			!strings.Contains(err.Error(), "`switchyard remove --config FILE`") {
			return fmt.Errorf("resized connection table: %v, want ErrPinnedIncompatible naming `switchyard remove --config FILE`", err)
		}

		// A missing interface is refused with the fix in the message.
		if _, err := b2.Attach("nosuch0", AttachNative); !errors.Is(err, ErrNoInterface) {
			return fmt.Errorf("missing interface: %v, want ErrNoInterface", err)
		}

		if err := RemoveBalancer(pin); err != nil {
			return err
		}
		if id, err := xdpProgID("eth0"); err != nil || id != 0 {
			return fmt.Errorf("program %d still attached after remove (%v)", id, err)
		}
		if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pins left behind: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// usesOnlyPinned returns an error unless every map p uses (but its
// read-only data, fixed at load) is one of pins: a map without a pin is
// made afresh by the next load, and what it held is lost to an upgrade.
func usesOnlyPinned(p *ebpf.Program, pins map[string]ebpf.MapID) error {
	info, err := p.Info()
	if err != nil {
		return err
	}
	ids, ok := info.MapIDs()
	if !ok || len(ids) == 0 {
		return errors.New("the kernel names no map of the program: the check proves nothing")
	}
	pinned := map[ebpf.MapID]bool{}
	for _, id := range pins {
		pinned[id] = true
	}
	for _, id := range ids {
		if pinned[id] {
			continue
		}
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			return fmt.Errorf("open map %d of the program: %w", id, err)
		}
		mi, err := m.Info()
		m.Close()
		if err != nil {
			return err
		}
		if !strings.HasSuffix(mi.Name, ".rodata") {
			return fmt.Errorf("the program uses map %d (%q), which has no pin (pins %v)", id, mi.Name, pins)
		}
	}
	return nil
}

// readGlobals reads the balancer's config and vip_filter globals.
func readGlobals(b *Balancer) (cfg balancerLbConfig, filter balancerVipFilter, err error) {
	if err = b.data.Config.Lookup(uint32(0), &cfg); err == nil {
		err = b.data.VipFilter.Lookup(uint32(0), &filter)
	}
	return cfg, filter, err
}

func TestAttachGeneric(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: "sydg", Balancers: 1, Backends: 1})
	err := topo.Do(topo.Balancer(1), func() error {
		d, err := LoadDecap("", nil)
		if err != nil {
			return err
		}
		defer d.Close()
		res, err := d.Attach("eth0", AttachGeneric)
		if err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if res.Mode != AttachGeneric || l.Attrs().Xdp == nil || l.Attrs().Xdp.AttachMode != 2 /* XDP_ATTACHED_SKB */ {
			return fmt.Errorf("generic attach: %+v, link %+v", res, l.Attrs().Xdp)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAttachAutoFallsBackToGeneric: auto mode on a driver without native
// XDP (a bridge here: no driver hook for XDP) attaches in generic mode and says so in a
// warning, the one README's Troubleshooting explains; the pinned link runs
// generic. Native mode asked for explicitly is refused there with the
// advice, and nothing is attached: the fallback is auto's alone.
func TestAttachAutoFallsBackToGeneric(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: "syfb", Balancers: 1, Backends: 1})
	const dev = "syfb0"
	err := topo.Netlink(topo.Balancer(1), func(h *netlink.Handle) error {
		d := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: dev}}
		if err := h.LinkAdd(d); err != nil {
			return fmt.Errorf("add bridge %s: %w", dev, err)
		}
		return h.LinkSetUp(d)
	})
	if err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(BPFFSRoot, topo.Prefix()+"-fallback")
	t.Cleanup(func() {
		if err := RemoveBalancer(pin); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	const warning = "native XDP attach failed, falling back to generic (skb) mode: expect lower performance"
	err = topo.Do(topo.Balancer(1), func() error {
		var logs strings.Builder
		b, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			return err
		}
		defer b.Close()

		if _, err := b.Attach(dev, AttachNative); err == nil || !strings.Contains(err.Error(), "in native mode") ||
			!strings.Contains(err.Error(), "the driver may not support native XDP") {
			return fmt.Errorf("native on a bridge: %v, want a refusal saying the driver may lack native XDP", err)
		}
		if id, err := xdpProgID(dev); err != nil || id != 0 {
			return fmt.Errorf("a refused native attach left program %d on %s (%v)", id, dev, err)
		}
		if strings.Contains(logs.String(), warning) {
			return fmt.Errorf("native asked for explicitly fell back:\n%s", logs.String())
		}

		res, err := b.Attach(dev, AttachAuto)
		if err != nil {
			return fmt.Errorf("auto on a bridge: %w", err)
		}
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		if res.Mode != AttachGeneric || l.Attrs().Xdp == nil || l.Attrs().Xdp.AttachMode != nl.XDP_ATTACHED_SKB {
			return fmt.Errorf("auto on a bridge: %+v, link XDP %+v, want generic (skb) mode", res, l.Attrs().Xdp)
		}
		if err := runsProgram(b.objs.XdpBalancer, dev); err != nil {
			return err
		}
		if !linkRuns(pin, b.objs.XdpBalancer) {
			return fmt.Errorf("the link pinned under %s does not run the program", pin)
		}
		if !strings.Contains(logs.String(), warning) || !strings.Contains(logs.String(), "interface="+dev) {
			return fmt.Errorf("auto fell back without the warning %q naming %s; log:\n%s", warning, dev, logs.String())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// xdpProgID is the id of the XDP program on ifname, 0 if none. A failed
// lookup is an error, not 0: "no program after remove" must not pass on it.
func xdpProgID(ifname string) (uint32, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return 0, err
	}
	if l.Attrs().Xdp == nil {
		return 0, nil
	}
	return l.Attrs().Xdp.ProgId, nil
}

// runsProgram returns an error unless p is the XDP program on ifname.
func runsProgram(p *ebpf.Program, ifname string) error {
	info, err := p.Info()
	if err != nil {
		return err
	}
	id, ok := info.ID()
	if !ok {
		return errors.New("the kernel gives no id for the new program")
	}
	on, err := xdpProgID(ifname)
	if err != nil {
		return err
	}
	if uint32(id) != on {
		return fmt.Errorf("%s runs program %d, not the new program %d", ifname, on, id)
	}
	return nil
}

// TestAttachHonoursAnExplicitMode: a pinned link left in generic mode (an
// earlier run asked for it, or fell back to it) does not hold a restart
// that explicitly asks for native mode there: native is what runs (the
// kernel runs one mode at a time, so the link is made afresh), and the
// pinned maps, with them the VIPs, carry over.
func TestAttachHonoursAnExplicitMode(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: topology.RandomPrefix("sydm"), Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-mode-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { RemoveBalancer(pin) })

	err := topo.Do(topo.Balancer(1), func() error {
		b1, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
		if err != nil {
			return err
		}
		if _, err := b1.Attach("eth0", AttachGeneric); err != nil {
			b1.Close()
			return err
		}
		if err := b1.SetVIP(VIPKey{vip4, 80, ProtoTCP}, 3, 0); err != nil {
			b1.Close()
			return err
		}
		b1.Close()

		b2, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
		if err != nil {
			return err
		}
		defer b2.Close()
		res, err := b2.Attach("eth0", AttachNative)
		if err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if res.Mode != AttachNative || l.Attrs().Xdp == nil || l.Attrs().Xdp.AttachMode != 1 /* XDP_ATTACHED_DRV */ {
			return fmt.Errorf("native asked over a generic pinned link: %+v, link %+v", res, l.Attrs().Xdp)
		}
		if err := runsProgram(b2.objs.XdpBalancer, "eth0"); err != nil {
			return err
		}
		if vips, err := b2.VIPs(); err != nil || vips[VIPKey{vip4, 80, ProtoTCP}].Num != 3 {
			return fmt.Errorf("pinned VIP lost across the mode change: %v %v", vips, err)
		}
		// The pin holds the new link: a later restart updates it in place.
		b2.Close()
		b3, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
		if err != nil {
			return err
		}
		defer b3.Close()
		if res, err := b3.Attach("eth0", AttachNative); err != nil || !res.Replaced || res.Mode != AttachNative {
			return fmt.Errorf("restart after the mode change: %+v %v, want an in-place native replacement", res, err)
		}
		return RemoveBalancer(pin)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAttachAgainKeepsOneLink: attaching again (the same program, or
// after the interface came back) replaces the handle the balancer holds;
// the one it replaces is closed, not leaked.
func TestAttachAgainKeepsOneLink(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: topology.RandomPrefix("sydl"), Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-again-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { RemoveBalancer(pin) })
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	err := topo.Do(topo.Balancer(1), func() error {
		b, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
		if err != nil {
			return err
		}
		defer b.Close()
		if _, err := b.Attach("eth0", AttachNative); err != nil {
			return err
		}
		before := fds()
		for range 3 {
			if res, err := b.Attach("eth0", AttachNative); err != nil || !res.Replaced {
				return fmt.Errorf("attach again: %+v %v", res, err)
			}
		}
		if after := fds(); after != before {
			return fmt.Errorf("%d file descriptors after attaching 3 times again, %d before", after, before)
		}
		return RemoveBalancer(pin)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAttachKeepsTheOldModeWhenTheAskedOneFails: asking explicitly for
// native mode over a pinned generic link takes the generic one down
// first (the kernel runs one mode at a time). If native then fails (a
// driver without native XDP: loopback), the program must run in generic
// mode again, pinned, not leave the interface with none until someone
// fixes the mode: every packet would reach the host stack unbalanced.
func TestAttachKeepsTheOldModeWhenTheAskedOneFails(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: topology.RandomPrefix("aDam"), Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("aD-switchyard-mode-fail-%d", time.Now().UnixNano()))
	t.Cleanup(func() { RemoveBalancer(pin) })

	err := topo.Do(topo.Balancer(1), func() error {
		// The namespace's own loopback: a device without native XDP.
		const dev = "lo"
		b1, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
		if err != nil {
			return err
		}
		if _, err := b1.Attach(dev, AttachGeneric); err != nil {
			b1.Close()
			return err
		}
		b1.Close()

		b2, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096, ProgramVariant: 7})
		if err != nil {
			return err
		}
		defer b2.Close()
		_, err = b2.Attach(dev, AttachNative)
		if err == nil {
			return errors.New("native attach to loopback succeeded; the test needs a device without native XDP")
		}
		if !strings.Contains(err.Error(), "stays attached in generic mode") {
			return fmt.Errorf("error %q does not say the program stays attached in generic mode", err)
		}
		l, lerr := netlink.LinkByName(dev)
		if lerr != nil {
			return lerr
		}
		if l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached || l.Attrs().Xdp.AttachMode != 2 /* XDP_ATTACHED_SKB */ {
			return fmt.Errorf("after the failed native attach, %s has XDP %+v, want a generic attachment", dev, l.Attrs().Xdp)
		}
		if err := runsProgram(b2.objs.XdpBalancer, dev); err != nil {
			return err
		}
		// Pinned: a later start in generic mode updates it in place.
		b2.Close()
		b3, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
		if err != nil {
			return err
		}
		defer b3.Close()
		if res, err := b3.Attach(dev, AttachGeneric); err != nil || !res.Replaced {
			return fmt.Errorf("restart in generic mode: %+v %v, want an in-place replacement", res, err)
		}
		return RemoveBalancer(pin)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// An interface that already runs another XDP program is refused with
// whose it is and how to take it off. A Switchyard program (another pin
// directory's balancer, say, seen from an agent) is attached through a
// link, which `ip link set dev IF xdp off` cannot remove: the advice was
// that, and `switchyard remove --agent` for a balancer's program. Now it
// names the program and the remove of its kind; for a foreign program,
// its ID and name, and the `ip link` command that takes off a program of
// its mode.
func TestAttachOverAnotherSaysWhose(t *testing.T) {
	onAttachedBalancer(t, "aRwh", func(b *Balancer, pin string) error {
		d, err := LoadDecap("", nil)
		if err != nil {
			return err
		}
		defer d.Close()
		_, err = d.Attach("eth0", AttachNative)
		if err == nil || !strings.Contains(err.Error(), "another XDP program is already attached") ||
			!strings.Contains(err.Error(), "is a switchyard balancer's") || !strings.Contains(err.Error(), "`switchyard remove --config FILE`") ||
			strings.Contains(err.Error(), "xdp off") || strings.Contains(err.Error(), "--agent") {
			return fmt.Errorf("decap over a balancer: %v, want it named a switchyard balancer's, with the balancer's remove and no `ip link ... xdp off`", err)
		}
		if err := RemoveBalancer(pin); err != nil {
			return err
		}

		var objs testprogsObjects
		if err := loadTestprogsObjects(&objs, nil); err != nil {
			return err
		}
		defer objs.Close()
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		// In generic mode: `ip link set dev eth0 xdp off` would take off
		// a program of the driver's mode, and leave this one.
		if err := netlink.LinkSetXdpFdWithFlags(eth, objs.XdpPass.FD(), nl.XDP_FLAGS_SKB_MODE); err != nil {
			return err
		}
		defer netlink.LinkSetXdpFdWithFlags(eth, -1, nl.XDP_FLAGS_SKB_MODE)
		id, err := xdpProgID("eth0")
		if err != nil {
			return err
		}
		_, err = d.Attach("eth0", AttachNative)
		if want := fmt.Sprintf(`program ID %d "xdp_pass"`, id); err == nil || !strings.Contains(err.Error(), want) ||
			!strings.Contains(err.Error(), "`ip link set dev eth0 xdpgeneric off`") {
			return fmt.Errorf("decap over a foreign program: %v, want %q and the `ip link` to remove it", err, want)
		}
		return nil
	})
}

// TestCheckAttached: CheckAttached tells a program that runs on its
// interface from one whose link was made to run another program or was
// detached (`bpftool link detach`), and says what the interface runs then;
// RestoreLinkPin pins a link whose pin was removed again, at its place.
func TestCheckAttached(t *testing.T) {
	onAttachedBalancer(t, "sybdca", func(b *Balancer, pin string) error {
		if err := b.CheckAttached(); err != nil {
			return fmt.Errorf("attached: %w", err)
		}

		linkPath := filepath.Join(pin, linkPinName)
		if err := os.Remove(linkPath); err != nil {
			return err
		}
		if restored, err := b.RestoreLinkPin(); !restored || err != nil {
			return fmt.Errorf("RestoreLinkPin with the pin removed: %v, %v; want restored", restored, err)
		}
		if restored, err := b.RestoreLinkPin(); restored || err != nil {
			return fmt.Errorf("RestoreLinkPin with the pin back: %v, %v; want nothing to do", restored, err)
		}

		var pass testprogsObjects
		if err := loadTestprogsObjects(&pass, nil); err != nil {
			return err
		}
		defer pass.Close()
		l, err := link.LoadPinnedLink(linkPath, nil)
		if err != nil {
			return fmt.Errorf("the restored pin: %w", err)
		}
		defer l.Close()
		if err := l.Update(pass.XdpPass); err != nil {
			return err
		}
		if err := b.CheckAttached(); !errors.Is(err, ErrDetached) || !strings.Contains(err.Error(), "instead of the balancer's") {
			return fmt.Errorf("with the link updated to xdp_pass: %v, want ErrDetached naming the other program", err)
		}
		if err := l.Update(b.objs.XdpBalancer); err != nil {
			return err
		}
		if err := b.CheckAttached(); err != nil {
			return fmt.Errorf("with the link updated back: %w", err)
		}
		if err := l.Detach(); err != nil {
			return err
		}
		if err := b.CheckAttached(); !errors.Is(err, ErrDetached) || !strings.Contains(err.Error(), "was detached") ||
			!strings.Contains(err.Error(), "runs no XDP program now") {
			return fmt.Errorf("with the link detached: %v, want ErrDetached saying so and that eth0 runs none", err)
		}
		return RemoveBalancer(pin)
	})
}

// RestoreLinkPin removes nothing in the pin directory but what it pinned
// itself: before, it removed whatever was at PIN_DIR/link_restore, its
// temporary name, at every restore. Its temporary name is now the
// process's (link_restore_PID); a pin at it that is not its own is left
// alone, the restore reported as failed until it is gone.
func TestRestoreLinkPinLeavesOthersPins(t *testing.T) {
	onAttachedBalancer(t, "sybfrl", func(b *Balancer, pin string) error {
		linkPath := filepath.Join(pin, linkPinName)
		// Not pinMap: t.Fatal is not for this goroutine.
		pinOther := func(path string) (ebpf.MapID, error) {
			m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
			if err != nil {
				return 0, err
			}
			defer m.Close()
			if err := m.Pin(path); err != nil {
				return 0, err
			}
			return mapID(path)
		}

		// Another's pin at the name restores used before.
		other := filepath.Join(pin, "link_restore")
		otherID, err := pinOther(other)
		if err != nil {
			return err
		}
		if err := os.Remove(linkPath); err != nil {
			return err
		}
		if restored, err := b.RestoreLinkPin(); !restored || err != nil {
			return fmt.Errorf("RestoreLinkPin with the pin removed: %v, %v; want restored", restored, err)
		}
		if id, err := mapID(other); err != nil || id != otherID {
			return fmt.Errorf("%s after a restore: map %d, %v; want map %d kept", other, id, err, otherID)
		}
		if _, err := os.Stat(filepath.Join(pin, restoreTempName(os.Getpid()))); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the restore's temporary pin after it: %v, want it gone", err)
		}

		// Another's pin at this process's temporary name: kept, and the
		// restore fails until it is gone.
		mine := filepath.Join(pin, restoreTempName(os.Getpid()))
		mineID, err := pinOther(mine)
		if err != nil {
			return err
		}
		if err := os.Remove(linkPath); err != nil {
			return err
		}
		if restored, err := b.RestoreLinkPin(); restored || !errors.Is(err, ErrBalancerLinkNotPinned) || !strings.Contains(err.Error(), mine) {
			return fmt.Errorf("RestoreLinkPin with %s taken: %v, %v; want ErrBalancerLinkNotPinned naming it", mine, restored, err)
		}
		if id, err := mapID(mine); err != nil || id != mineID {
			return fmt.Errorf("%s after a failed restore: map %d, %v; want map %d kept", mine, id, err, mineID)
		}
		if _, err := os.Stat(linkPath); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s after a failed restore: %v, want none", linkPath, err)
		}
		if err := os.Remove(mine); err != nil {
			return err
		}
		if restored, err := b.RestoreLinkPin(); !restored || err != nil {
			return fmt.Errorf("RestoreLinkPin once %s is free: %v, %v; want restored", mine, restored, err)
		}
		if err := b.CheckAttached(); err != nil {
			return err
		}
		// remove takes what a crash leaves at either name.
		if _, err := pinOther(mine); err != nil {
			return err
		}
		return RemoveBalancer(pin)
	})
}

// mapID is the id of the map pinned at path.
func mapID(path string) (ebpf.MapID, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		return 0, err
	}
	id, _ := info.ID()
	return id, nil
}

// deadAndLivePIDs returns the PID of a child process that ran and was
// waited for (no process runs under it, unless the kernel gave it again
// meanwhile), and of one that runs until the test ends: a foreign process.
func deadAndLivePIDs(t *testing.T) (dead, live int) {
	t.Helper()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	runs := exec.Command("sleep", "600")
	if err := runs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runs.Process.Kill(); runs.Wait() })
	return gone.Process.Pid, runs.Process.Pid
}

// A crash between restoreLinkPin's pin at link_restore_PID and its rename
// left that pin for good (only `switchyard remove` took it away), and, if
// the daemon's link pin had been removed, the link pinned only there: the
// next start found no link to take over and the interface busy. A start
// (and each restore) now takes away the temporary pins of processes that
// no longer run, logging it, and keeps those of a process that runs; a
// start takes over a link pinned only there, as it would at PIN_DIR/link.
func TestStaleRestorePinsSwept(t *testing.T) {
	requireRoot(t)
	dead, live := deadAndLivePIDs(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: "sybjsw", Balancers: 1, Backends: 1})
	for _, kind := range []string{"balancer", "decap"} {
		t.Run(kind, func(t *testing.T) {
			pin := filepath.Join(BPFFSRoot, fmt.Sprintf("sybj-stalepins-%s-%d", kind, time.Now().UnixNano()))
			t.Cleanup(func() {
				if err := removePinned(pin, false); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
			deadPin := filepath.Join(pin, restoreTempName(dead))
			livePin := filepath.Join(pin, restoreTempName(live))
			var logs strings.Builder
			log := slog.New(slog.NewTextHandler(&logs, nil))
			// start loads and attaches the kind's program, as a daemon
			// does; its close closes the handles (the pins stay).
			start := func() (restore func() (bool, error), closeIt func(), res AttachResult, err error) {
				err = topo.Do(topo.Balancer(1), func() error {
					switch kind {
					case "balancer":
						b, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096, Logger: log})
						if err != nil {
							return err
						}
						restore, closeIt = b.RestoreLinkPin, func() { b.Close() }
						res, err = b.Attach(topology.EthName, AttachNative)
						return err
					default:
						d, err := LoadDecap(pin, log)
						if err != nil {
							return err
						}
						restore, closeIt = d.RestoreLinkPin, func() { d.Close() }
						res, err = d.Attach(topology.EthName, AttachNative)
						return err
					}
				})
				return restore, closeIt, res, err
			}
			_, closeFirst, _, err := start()
			if err != nil {
				t.Fatal(err)
			}
			closeFirst()
			pinMap(t, deadPin)
			pinMap(t, livePin)

			// A start.
			_, closeSecond, _, err := start()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(deadPin); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after a start, %s (of a process that no longer runs) is still there: %v", deadPin, err)
			}
			if _, err := os.Stat(livePin); err != nil {
				t.Errorf("a start took away %s, of a process that runs: %v", livePin, err)
			}
			if !strings.Contains(logs.String(), "removed the temporary link pin of a process that no longer runs") || !strings.Contains(logs.String(), deadPin) {
				t.Errorf("the start did not log the pin it removed:\n%s", logs.String())
			}
			closeSecond()

			// A crash mid-restore with the link pin removed: the link
			// is pinned at the temporary name only.
			if err := os.Rename(filepath.Join(pin, linkPinName), deadPin); err != nil {
				t.Fatal(err)
			}
			restore, closeThird, res, err := start()
			if err != nil {
				t.Fatalf("start with the link pinned only at %s: %v", deadPin, err)
			}
			defer closeThird()
			if !res.Replaced {
				t.Errorf("start with the link pinned only at %s: attached afresh, want the link taken over", deadPin)
			}
			if _, err := os.Stat(deadPin); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after taking it over, %s is still there: %v", deadPin, err)
			}

			// A restore.
			pinMap(t, deadPin)
			if err := os.Remove(filepath.Join(pin, linkPinName)); err != nil {
				t.Fatal(err)
			}
			if restored, err := restore(); !restored || err != nil {
				t.Fatalf("restore: %v, %v; want restored", restored, err)
			}
			if _, err := os.Stat(deadPin); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after a restore, %s (of a process that no longer runs) is still there: %v", deadPin, err)
			}
			if _, err := os.Stat(livePin); err != nil {
				t.Errorf("a restore took away %s, of a process that runs: %v", livePin, err)
			}
		})
	}
}

// TestAttachAutoOverGenericSaysSo: auto mode over a link pinned in
// generic mode (an earlier start fell back to it, or asked for it) keeps
// it, so that the restart has no gap; it said nothing of it, though the
// warning that auto fell back came only at the earlier start: a driver
// that gained native XDP since (here a veth, which has it) stayed in
// generic mode, slower, with nothing in the log to say why or what to do.
func TestAttachAutoOverGenericSaysSo(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: "sybo", Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("sybo-auto-generic-%d", time.Now().UnixNano()))
	t.Cleanup(func() {
		if err := RemoveBalancer(pin); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	const warning = "pinned XDP link runs in generic (skb) mode: kept, so that the restart has no gap, and native mode is not tried"
	err := topo.Do(topo.Balancer(1), func() error {
		b1, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
		if err != nil {
			return err
		}
		_, err = b1.Attach(topology.EthName, AttachGeneric)
		b1.Close()
		if err != nil {
			return err
		}
		var logs strings.Builder
		b2, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			return err
		}
		defer b2.Close()
		res, err := b2.Attach(topology.EthName, AttachAuto)
		if err != nil {
			return err
		}
		if !res.Replaced || res.Mode != AttachGeneric {
			return fmt.Errorf("auto over a generic pinned link: %+v, want it replaced in place, in generic mode", res)
		}
		if !strings.Contains(logs.String(), warning) || !strings.Contains(logs.String(), "set datapath.attach_mode to native and restart") {
			return fmt.Errorf("auto kept the generic pinned link without the warning %q and how to try native mode; log:\n%s", warning, logs.String())
		}
		// Native kept, or asked for, says nothing.
		logs.Reset()
		if _, err := b2.Attach(topology.EthName, AttachGeneric); err != nil {
			return err
		}
		if strings.Contains(logs.String(), warning) {
			return fmt.Errorf("generic asked for explicitly warned:\n%s", logs.String())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// onAttachedBalancer runs fn inside a fresh topology's balancer namespace,
// with a balancer (4096-entry connection table) loaded at a pin directory
// of its own and attached natively to eth0; the pins go at the end.
func onAttachedBalancer(t *testing.T, prefix string, fn func(b *Balancer, pin string) error) {
	t.Helper()
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: topology.RandomPrefix(prefix), Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, topo.Prefix()+"-attached")
	t.Cleanup(func() { RemoveBalancer(pin) })
	err := topo.Do(topo.Balancer(1), func() error {
		b, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
		if err != nil {
			return err
		}
		defer b.Close()
		if _, err := b.Attach("eth0", AttachNative); err != nil {
			return err
		}
		return fn(b, pin)
	})
	if err != nil {
		t.Fatal(err)
	}
}
