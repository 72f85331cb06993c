package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// refusedByLink is an XDP program that an XDP link on a device refuses
// to take in (link.Update: EINVAL), as it is built for devmap entries: it
// makes the swap of an upgrade fail for real.
func refusedByLink(tb testing.TB) *ebpf.Program {
	tb.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.XDP, AttachType: ebpf.AttachXDPDevMap, License: "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// pinnedFor returns an error unless every pin in names under pin is a map
// that program id uses: the pins of a running program are what it reads,
// so that a restart or `switchyard remove` finds its state.
func pinnedFor(id uint32, pin string, names ...string) error {
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return fmt.Errorf("open program %d: %w", id, err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return err
	}
	uses, _ := info.MapIDs()
	for _, name := range names {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pin, name), nil)
		if err != nil {
			return fmt.Errorf("pin %s: %w", name, err)
		}
		mi, err := m.Info()
		m.Close()
		if err != nil {
			return err
		}
		mid, _ := mi.ID()
		if !slices.Contains(uses, mid) {
			return fmt.Errorf("pin %s is map %d, which program %d (maps %v) does not use", name, mid, id, uses)
		}
	}
	return nil
}

// TestDecapFailedUpgradeKeepsItsPins: an upgrade whose program the pinned
// link refuses leaves the previous program running with the maps it uses
// still pinned: decap_stats, which the upgrade replaces by a larger map,
// is replaced only once the new program runs. Before, the pin was moved
// at load, and the running program counted into a map no pin held.
func TestDecapFailedUpgradeKeepsItsPins(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: topology.RandomPrefix("hAdu"), Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-decap-upfail-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })

	spec, err := loadDecap()
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps[decapStatsPin].MaxEntries = uint32(len(decapStatNames) - 1)
	old := &Decap{pinDir: pin, log: slog.New(slog.DiscardHandler)}
	if err := loadCollection(spec, pin, nil, &old.objs, ""); err != nil {
		t.Fatal(err)
	}
	d, err := LoadDecap(pin, nil)
	if err != nil {
		old.Close()
		t.Fatal(err)
	}
	defer d.Close()
	err = topo.Do(topo.Backend(1), func() error {
		_, err := old.Attach("eth0", AttachNative)
		old.Close()
		if err != nil {
			return err
		}
		oldID, err := xdpProgID("eth0")
		if err != nil {
			return err
		}
		good := d.objs.XdpDecap
		d.objs.XdpDecap = refusedByLink(t)
		_, err = d.Attach("eth0", AttachNative)
		d.objs.XdpDecap = good
		if err == nil {
			return errors.New("the link took a program built for devmaps")
		}
		if id, err := xdpProgID("eth0"); err != nil || id != oldID {
			return fmt.Errorf("after the failed upgrade program %d runs (%v), want the previous one, %d", id, err, oldID)
		}
		if err := pinnedFor(oldID, pin, decapStatsPin); err != nil {
			return fmt.Errorf("after the failed upgrade: %w", err)
		}

		// Once the link takes the program, its map is pinned.
		if res, err := d.Attach("eth0", AttachNative); err != nil || !res.Replaced {
			return fmt.Errorf("upgrade retried: %+v, %v; want the pinned link updated", res, err)
		}
		newID, err := xdpProgID("eth0")
		if err != nil {
			return err
		}
		return pinnedFor(newID, pin, decapStatsPin)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pin, decapStatsPin+"_new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary pin is left behind: %v", err)
	}
}

// TestBalancerFailedUpgradeKeepsItsPins: as for the decap program, with
// the two maps a balancer upgrade moves: the connection table (copied into
// a table of this release's layout) and the previous release's Maglev
// tables (copied into maglev_std_mm, their pin removed). A failed swap
// leaves both pins to the program that runs; a good one moves them.
func TestBalancerFailedUpgradeKeepsItsPins(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: topology.RandomPrefix("hAbu"), Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-upfail-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })

	prev := loadPrevRelease(t, pin)
	b, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
	if err != nil {
		prev.Close()
		t.Fatal(err)
	}
	defer b.Close()
	err = topo.Do(topo.Balancer(1), func() error {
		_, err := prev.Attach("eth0", AttachNative)
		prev.Close()
		if err != nil {
			return err
		}
		oldID, err := xdpProgID("eth0")
		if err != nil {
			return err
		}
		good := b.objs.XdpBalancer
		b.objs.XdpBalancer = refusedByLink(t)
		_, err = b.Attach("eth0", AttachNative)
		b.objs.XdpBalancer = good
		if err == nil {
			return errors.New("the link took a program built for devmaps")
		}
		if id, err := xdpProgID("eth0"); err != nil || id != oldID {
			return fmt.Errorf("after the failed upgrade program %d runs (%v), want the previous one, %d", id, err, oldID)
		}
		if err := pinnedFor(oldID, pin, "conns", legacyMaglevStdPin); err != nil {
			return fmt.Errorf("after the failed upgrade: %w", err)
		}

		if res, err := b.Attach("eth0", AttachNative); err != nil || !res.Replaced {
			return fmt.Errorf("upgrade retried: %+v, %v; want the pinned link updated", res, err)
		}
		newID, err := xdpProgID("eth0")
		if err != nil {
			return err
		}
		if err := pinnedFor(newID, pin, "conns", maglevStdPin); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(pin, legacyMaglevStdPin)); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the previous release's Maglev tables are still pinned once the new program runs: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// loadPrevRelease loads the previous release over the pins under pin (a
// connection table of 4096 entries): its connection table not mappable,
// its Maglev tables under their earlier pin, inner maps not mappable. The
// Balancer's methods write its maps as that release did.
func loadPrevRelease(tb testing.TB, pin string) *Balancer {
	tb.Helper()
	spec, err := loadBalancer()
	if err != nil {
		tb.Fatal(err)
	}
	sets := connSets(4096)
	spec.Maps["conns"].Flags, spec.Maps["conns"].MaxEntries = 0, sets
	if err := spec.Variables["conn_sets"].Set(sets); err != nil {
		tb.Fatal(err)
	}
	clock, err := getClock()
	if err != nil {
		tb.Fatal(err)
	}
	if err := spec.Variables["jiffy_ns"].Set(clock.jiffyNs); err != nil {
		tb.Fatal(err)
	}
	spec.Maps["maglev_std"].Name, spec.Maps["maglev_std"].InnerMap.Flags = legacyMaglevStdPin, 0
	for sec, name := range dataMapNames {
		spec.Maps[sec].Name, spec.Maps[sec].Contents = name, nil
		delete(spec.Variables, name)
	}
	var old struct {
		balancerPrograms
		balancerMaps
		balancerDataMaps
	}
	if err := loadCollection(spec, pin, nil, &old, ""); err != nil {
		tb.Fatal(err)
	}
	return &Balancer{objs: balancerObjects{balancerPrograms: old.balancerPrograms, balancerMaps: old.balancerMaps},
		data: old.balancerDataMaps, pinDir: pin, log: slog.New(slog.DiscardHandler), clock: clock,
		vipIndexSpec: spec.Maps["vip_index"].InnerMap.Copy(), stdTableSpec: spec.Maps["maglev_std"].InnerMap.Copy(),
		tables: map[tableKey]*ebpf.Map{}, pending: map[tableKey]*ebpf.Map{}, removed: map[tableKey]bool{},
		standIn: map[bool]*ebpf.Map{}, deletedNums: map[uint32]bool{}, repurge: map[uint32]bool{},
		staleAddrs: map[netip.Addr]bool{}, indexed: map[uint32]balancerVipMeta{}}
}

// TestUpgradeAfterRollbackCopiesTheRunningTables: an upgrade that does not
// go through (its program never runs: the swap failed, or the process
// stopped before it) has copied the previous release's Maglev tables into
// maglev_std_mm. The operator rolls back to the previous release, which
// publishes a new table into its own maglev_std; then upgrades again.
// That upgrade must copy the table the previous release runs with, not
// keep its first attempt's copy. Before, it kept any table maglev_std_mm
// held: the upgraded program sent new flows by a table two publications old.
func TestUpgradeAfterRollbackCopiesTheRunningTables(t *testing.T) {
	requireRoot(t)
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-rollback-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })

	prev := loadPrevRelease(t, pin)
	w := setUpWorld(t, prev)
	// Both generations hold a table, so the rollback's table overwrites
	// one that the failed upgrade copied.
	w.publish(t, vipTCP4.key, 2, 3)
	prev.Close()

	failed, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	failed.Close()

	rolledBack := loadPrevRelease(t, pin)
	w.b = rolledBack
	gen := w.publishSized(t, vipTCP4.key, 1021, 1)
	rolledBack.Close()

	b, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := b.Table(vipTCP4.key, gen)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, w.tables[vipTCP4.key]) {
		t.Errorf("after the second upgrade, generation %d is not the table the previous release published last", gen)
	}
	w2 := &world{b: b, tables: w.tables}
	for port := range uint16(64) {
		w2.expectSent(t, syn4(44000+port), backendAddrs[1])
	}
}
