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
	topo, pin, old, d := decapUpgradeRig(t, "hAdu", "upfail")
	defer d.Close()
	err := topo.Do(topo.Backend(1), func() error {
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
		if err := pinnedFor(oldID, pin, "conns", legacyMaglevStdPin, statsPin); err != nil {
			return fmt.Errorf("after the failed upgrade: %w", err)
		}

		if res, err := b.Attach("eth0", AttachNative); err != nil || !res.Replaced {
			return fmt.Errorf("upgrade retried: %+v, %v; want the pinned link updated", res, err)
		}
		newID, err := xdpProgID("eth0")
		if err != nil {
			return err
		}
		if err := pinnedFor(newID, pin, "conns", maglevStdPin, statsPin); err != nil {
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
// its Maglev tables under their earlier pin, inner maps not mappable, its
// counters one drop reason short (Stats cannot read them). The
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
	// One drop reason fewer: drop_invalid_source is this release's.
	spec.Maps[statsPin].MaxEntries = uint32(len(statNames) - 1)
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
		staleAddrs: map[netip.Addr]bool{}, indexed: map[uint32]balancerVipMeta{},
		backendCopies: map[uint32]balancerBackend{}, epochCopies: map[uint32]uint32{}}
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

// TestUpgradeInterruptedAfterTheSwap: the process of an upgrade stops
// (crashes, is killed) after the swap into the pinned link and before it
// moves the pins: the new program runs on a connection table no pin
// holds, records flows there and reads maglev_std_mm, whose tables the
// daemon keeps writing, while the previous release's maps keep their pins.
// The next start must adopt what runs: the flows recorded since the swap,
// the tables published since. Before, it copied the previous release's
// connection table again and swapped its own program in with that copy:
// the flows recorded after the swap lost their entries, and went by a
// table that may have changed.
func TestUpgradeInterruptedAfterTheSwap(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: topology.RandomPrefix("hAus"), Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-upswap-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })

	prev := loadPrevRelease(t, pin)
	w := setUpWorld(t, prev)
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
		// Attach up to the swap: the process ends before the commit.
		l, res, err := attachProgram(b.objs.XdpBalancer, "eth0", AttachNative, pin, balancerHints, b.log)
		if err != nil {
			return err
		}
		l.Close()
		if !res.Replaced {
			return fmt.Errorf("attach: %+v, want the pinned link updated", res)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The new program records a flow, then the daemon publishes a table
	// that sends new flows elsewhere.
	w.b = b
	s := syn4(45000)
	backend := w.open(t, vipTCP4, s)
	var other uint32
	for _, id := range vipTCP4.backends {
		if backendAddrs[id] != backend {
			other = id
		}
	}
	gen := w.publishSized(t, vipTCP4.key, 1021, other)
	b.Close()

	b2, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	w2 := &world{b: b2, tables: w.tables}
	if c, found, err := b2.LookupFlow(flowOf(s)); err != nil || !found || backendAddrs[c.BackendID] != backend {
		t.Errorf("the flow recorded after the swap, at the next start: %+v, found %v (%v); want its entry, to %s", c, found, err, backend)
	}
	if got, err := b2.Table(vipTCP4.key, gen); err != nil || !slices.Equal(got, w.tables[vipTCP4.key]) {
		t.Errorf("generation %d at the next start is not the table published after the swap (%v)", gen, err)
	}
	err = topo.Do(topo.Balancer(1), func() error {
		running, err := xdpProgID("eth0")
		if err != nil {
			return err
		}
		// Before the next start's own swap, the pins are the running
		// program's maps, for a `switchyard remove` or another start.
		if err := pinnedFor(running, pin, "conns", maglevStdPin, statsPin); err != nil {
			return fmt.Errorf("at the next start, before its swap: %w", err)
		}
		if _, err := os.Stat(filepath.Join(pin, legacyMaglevStdPin)); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the previous release's Maglev tables are still pinned: %v", err)
		}
		if res, err := b2.Attach("eth0", AttachNative); err != nil || !res.Replaced {
			return fmt.Errorf("attach at the next start: %+v, %v; want the pinned link updated", res, err)
		}
		running, err = xdpProgID("eth0")
		if err != nil {
			return err
		}
		return pinnedFor(running, pin, "conns", maglevStdPin, statsPin)
	})
	if err != nil {
		t.Fatal(err)
	}
	w2.expectSentByEntry(t, vipTCP4, ackOf(s), backend)
}

// TestDecapUpgradeInterruptedAfterTheSwap: as
// TestUpgradeInterruptedAfterTheSwap, for the agent: the new decap program
// counts into a decap_stats no pin holds. The next start must adopt it.
// Before, it copied the previous release's counters again: what the new
// program counted since the swap was lost.
func TestDecapUpgradeInterruptedAfterTheSwap(t *testing.T) {
	topo, pin, old, d := decapUpgradeRig(t, "hAds", "upswap")
	defer d.Close()
	err := topo.Do(topo.Backend(1), func() error {
		_, err := old.Attach("eth0", AttachNative)
		old.Close()
		if err != nil {
			return err
		}
		// Attach up to the swap: the process ends before the commit.
		l, res, err := attachProgram(d.objs.XdpDecap, "eth0", AttachNative, pin, decapHints, d.log)
		if err != nil {
			return err
		}
		l.Close()
		if !res.Replaced {
			return fmt.Errorf("attach: %+v, want the pinned link updated", res)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The new program passes packets that are not for it, and counts them.
	const passed = 5
	in, _ := build(t, syn4(46000))
	for range passed {
		if act, _ := runProg(t, d.objs.XdpDecap, in); act != xdpPass {
			t.Fatalf("decap of a packet not encapsulated: %s, want PASS", actionNames[act])
		}
	}
	counted, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	d.Close()

	d2, err := LoadDecap(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	st, err := d2.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// The topology's own packets may count on meanwhile.
	if st["pass"] < counted["pass"] {
		t.Errorf("pass at the next start: %d, want at least the %d counted by the program that runs (%d of them after the swap)", st["pass"], counted["pass"], passed)
	}
	err = topo.Do(topo.Backend(1), func() error {
		running, err := xdpProgID("eth0")
		if err != nil {
			return err
		}
		if err := pinnedFor(running, pin, decapStatsPin); err != nil {
			return fmt.Errorf("at the next start, before its swap: %w", err)
		}
		if res, err := d2.Attach("eth0", AttachNative); err != nil || !res.Replaced {
			return fmt.Errorf("attach at the next start: %+v, %v; want the pinned link updated", res, err)
		}
		running, err = xdpProgID("eth0")
		if err != nil {
			return err
		}
		return pinnedFor(running, pin, decapStatsPin)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// decapUpgradeRig pins the previous release's decap maps (a decap_stats one
// reason shorter) under a new pin directory, loads that program as old
// (not attached) and this release's over its pins as d, in a topology of
// its own. The caller closes d; old is the caller's to attach and close.
func decapUpgradeRig(t *testing.T, nsPrefix, name string) (topo *topology.Topology, pin string, old, d *Decap) {
	t.Helper()
	requireRoot(t)
	topo = topology.NewForTest(t, topology.Config{Prefix: topology.RandomPrefix(nsPrefix), Balancers: 1, Backends: 1})
	pin = filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-decap-%s-test-%d", name, time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })

	spec, err := loadDecap()
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps[decapStatsPin].MaxEntries = uint32(len(decapStatNames) - 1)
	old = &Decap{pinDir: pin, log: slog.New(slog.DiscardHandler)}
	if err := loadCollection(spec, pin, nil, &old.objs, ""); err != nil {
		t.Fatal(err)
	}
	d, err = LoadDecap(pin, nil)
	if err != nil {
		old.Close()
		t.Fatal(err)
	}
	return topo, pin, old, d
}

// TestStatsAdoptedFromEarlierPins: the previous release pinned the global
// counters one drop reason short (drop_invalid_source is new) and left
// its program attached. The upgrade must load over those pins without
// manual steps: every earlier counter goes on from its count, per CPU,
// the new reason from zero, and the larger map takes the pin once the new
// program runs. Before, the load refused the pinned map as incompatible.
func TestStatsAdoptedFromEarlierPins(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: topology.RandomPrefix("hAst"), Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-stats-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })

	prev := loadPrevRelease(t, pin)
	setUpWorld(t, prev)
	earlier := prev.objs.Stats.MaxEntries()
	if earlier != uint32(len(statNames)-1) {
		t.Fatalf("the previous release's counters have %d entries, want %d", earlier, len(statNames)-1)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	written := make([][]uint64, earlier)
	for i := range earlier {
		written[i] = make([]uint64, cpus)
		for c := range written[i] {
			written[i][c] = uint64(i+1)*1000 + uint64(c)
		}
		if err := prev.objs.Stats.Put(i, written[i]); err != nil {
			t.Fatal(err)
		}
	}
	// readRaw checks b's counters: the earlier ones as written, the new
	// reason at want.
	readRaw := func(when string, b *Balancer, want uint64) {
		t.Helper()
		if got := b.objs.Stats.MaxEntries(); got != uint32(len(statNames)) {
			t.Fatalf("%s: the counters have %d entries, want %d", when, got, len(statNames))
		}
		var perCPU []uint64
		for i := range earlier {
			if err := b.objs.Stats.Lookup(i, &perCPU); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(perCPU, written[i]) {
				t.Errorf("%s: counter %d (%q) is %v, want %v", when, i, statNames[i], perCPU, written[i])
			}
		}
		if st, err := b.Stats(); err != nil || st["drop_invalid_source"] != want {
			t.Errorf("%s: drop_invalid_source %d (%v), want %d", when, st["drop_invalid_source"], err, want)
		}
	}

	b, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
	if err != nil {
		prev.Close()
		t.Fatalf("load over the previous release's pins: %v", err)
	}
	defer b.Close()
	readRaw("after the load", b, 0)
	err = topo.Do(topo.Balancer(1), func() error {
		_, err := prev.Attach("eth0", AttachNative)
		prev.Close()
		if err != nil {
			return err
		}
		if res, err := b.Attach("eth0", AttachNative); err != nil || !res.Replaced {
			return fmt.Errorf("attach after the upgrade: %+v, %v; want the pinned link updated", res, err)
		}
		running, err := xdpProgID("eth0")
		if err != nil {
			return err
		}
		return pinnedFor(running, pin, statsPin)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The new reason counts into the pinned map.
	in, _ := build(t, pktSpec{src: netip.MustParseAddr("ff02::1"), dst: vip6, sport: 47800, dport: 80, proto: ProtoTCP, syn: true})
	if act, _ := runProg(t, b.objs.XdpBalancer, in); act != xdpDrop {
		t.Fatalf("SYN from ff02::1 after the upgrade: %s, want DROP", actionNames[act])
	}
	b.Close()

	again, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
	if err != nil {
		t.Fatalf("second load: %v", err)
	}
	defer again.Close()
	readRaw("second load", again, 1)
	if _, err := os.Stat(filepath.Join(pin, statsPin+"_new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary pin is left behind: %v", err)
	}
}
