package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// TestDecapStatsAdoptedFromEarlierPins: the previous release pinned
// decap_stats smaller (the reasons from ce_not_ect on are new) and left its program
// attached through the pinned link. An agent upgraded in place must load
// over those pins without manual steps: its counters start from the
// earlier ones, per CPU, the new reasons from zero, and its program is
// swapped into the pinned link (no detach, so decapsulation goes on). A
// second load finds the map moved already, and no temporary pin is left.
func TestDecapStatsAdoptedFromEarlierPins(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: "sydu", Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-decap-upgrade-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })
	earlier := uint32(decapDecapStatDECAP_STAT_DROP_CE_NOT_ECT) // the previous release's reasons

	// The previous release: this program with its smaller counter map,
	// pinned and attached, its counters already counting.
	spec, err := loadDecap()
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps[decapStatsPin].MaxEntries = earlier
	old := &Decap{pinDir: pin, log: slog.New(slog.DiscardHandler)}
	if err := loadCollection(spec, pin, nil, &old.objs, ""); err != nil {
		t.Fatal(err)
	}
	var oldID uint32
	err = topo.Do(topo.Backend(1), func() error {
		if _, err := old.Attach("eth0", AttachNative); err != nil {
			return err
		}
		oldID, err = xdpProgID("eth0")
		return err
	})
	if err != nil {
		old.Close()
		t.Fatal(err)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{}
	for _, name := range decapStatNames[earlier:] {
		want[name] = 0 // the new reasons start from zero
	}
	for i := range earlier {
		perCPU := make([]uint64, cpus)
		for c := range perCPU {
			perCPU[c] = uint64(i+1)*1000 + uint64(c)
			want[decapStatNames[i]] += perCPU[c]
		}
		if err := old.objs.DecapStats.Put(i, perCPU); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()

	d, err := LoadDecap(pin, nil)
	if err != nil {
		t.Fatalf("load over the previous release's pins: %v", err)
	}
	defer d.Close()
	if got := d.objs.DecapStats.MaxEntries(); got != uint32(len(decapStatNames)) {
		t.Fatalf("decap_stats has %d entries after the load, want %d", got, len(decapStatNames))
	}
	expectStats(t, "after the upgrade", d, want)
	err = topo.Do(topo.Backend(1), func() error {
		res, err := d.Attach("eth0", AttachNative)
		if err != nil {
			return err
		}
		if !res.Replaced {
			return fmt.Errorf("attach after the upgrade: %+v, want the pinned link updated in place", res)
		}
		if id, err := xdpProgID("eth0"); err != nil || id == oldID {
			return fmt.Errorf("the previous program %d is still attached (%v)", id, err)
		}
		return runsProgram(d.objs.XdpDecap, "eth0")
	})
	if err != nil {
		t.Fatal(err)
	}

	// The new reasons count into the pinned map.
	if err := d.SetAddrs([]netip.Addr{backendAddrs[1]}); err != nil {
		t.Fatal(err)
	}
	inner, l2 := build(t, syn4(53100))
	frame := encapFrame(t, lbV4, backendAddrs[1], layers.IPProtocolIPv4, 0, inner[l2:])
	setECN(frame[14:], 3)
	if act, _ := runProg(t, d.objs.XdpDecap, frame); act != xdpDrop {
		t.Fatalf("outer CE over Not-ECT after the upgrade: %s, want DROP", actionNames[act])
	}
	want["drop_ce_not_ect"] = 1
	// So does the last of them: an outer header from a martian source.
	martian := encapFrame(t, netip.MustParseAddr("127.0.0.1"), backendAddrs[1], layers.IPProtocolIPv4, 0, inner[l2:])
	if act, out := runProg(t, d.objs.XdpDecap, append([]byte(nil), martian...)); act != xdpPass || !bytes.Equal(out, martian) {
		t.Fatalf("IPIP from 127.0.0.1 after the upgrade: %s, want PASS untouched", actionNames[act])
	}
	want["bad_outer_src"] = 1
	d.Close()

	again, err := LoadDecap(pin, nil)
	if err != nil {
		t.Fatalf("second load: %v", err)
	}
	defer again.Close()
	expectStats(t, "second load", again, want)
	if _, err := os.Stat(filepath.Join(pin, decapStatsPin+"_new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary pin is left behind: %v", err)
	}
}

// expectStats fails the test unless d's counters are want: exactly, but
// for "pass", which may be more. The program runs attached to a live
// interface, and what the network sends it (IPv6 neighbour discovery,
// MLD reports) is passed and counted.
func expectStats(t *testing.T, when string, d *Decap, want map[string]uint64) {
	t.Helper()
	got, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got["pass"] >= want["pass"] {
		got = maps.Clone(got)
		got["pass"] = want["pass"]
	}
	if !maps.Equal(got, want) {
		t.Errorf("%s: counters %v, want %v (pass at least)", when, got, want)
	}
}
