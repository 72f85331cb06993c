package balancer

import (
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

// slotsConfig is a file of VIP web, whose backends are first and the
// addresses 10.3.0.1 on (rest of them), and, if spare > 0, VIP big of
// spare addresses of its own (10.4.0.1 on).
func slotsConfig(first string, rest, spare int) string {
	var sb strings.Builder
	sb.WriteString("datapath:\n  interface: lo\n  conn_table_size: 4096\napi:\n  socket: /tmp/unused.sock\nmetrics:\n  listen: \"\"\nvips:\n")
	sb.WriteString("  - name: web\n    address: 10.100.0.1\n    port: 80\n    table_size: 4093\n    health: {type: none}\n    backends:\n")
	fmt.Fprintf(&sb, "      - {name: first, address: %s}\n", first)
	for i := range rest {
		fmt.Fprintf(&sb, "      - {name: w%d, address: 10.3.%d.%d}\n", i, i/250, 1+i%250)
	}
	if spare > 0 {
		sb.WriteString("  - name: big\n    address: 10.100.0.2\n    port: 80\n    table_size: 4093\n    health: {type: none}\n    backends:\n")
		for i := range spare {
			fmt.Fprintf(&sb, "      - {name: b%d, address: 10.4.%d.%d}\n", i, i/250, 1+i%250)
		}
	}
	return sb.String()
}

// TestFailedReloadGivesRecycledSlotsBack: with every backend slot taken, a
// reload that brings a new address takes the slot of one no longer
// configured, and fails later (a table publish). The rollback must give
// the slot back to its address, in the datapath and in the control loop:
// before, the address was forgotten as soon as its slot was picked, and
// its slot kept the new address, to which its remaining flows would go.
// And the slot taken is not that of the address the reload removes: its
// table is still the running one until the reload's is published, and
// sends that table's new flows to the slot's address.
func TestFailedReloadGivesRecycledSlotsBack(t *testing.T) {
	const half = datapath.MaxBackends / 2
	fp := &failingPublishes{}
	r := newWrappedRig(t, slotsConfig("10.2.0.1", half-1, half), datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		fp.Balancer = dp
		return fp
	})
	// big goes: its addresses keep their slots (for their flows), and
	// every slot stays taken.
	r.write(slotsConfig("10.2.0.1", half-1, 0))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	backendIDs := func() map[netip.Addr]uint32 {
		var m map[netip.Addr]uint32
		if err := r.b.do(r.ctx, func() { m = maps.Clone(r.b.backendIDs) }); err != nil {
			t.Fatal(err)
		}
		return m
	}
	dpBefore, idsBefore := r.backends(), backendIDs()
	if len(dpBefore) != datapath.MaxBackends {
		t.Fatalf("%d backend slots taken, want all %d", len(dpBefore), datapath.MaxBackends)
	}

	// web's first backend is replaced; web's table fails to publish.
	newAddr, removed := netip.MustParseAddr("10.2.0.2"), netip.MustParseAddr("10.2.0.1")
	r.write(slotsConfig(newAddr.String(), half-1, 0))
	fp.armed.Store(1)
	if _, err := r.b.Reload(r.ctx); err == nil || !strings.Contains(err.Error(), "the running configuration stays in force") {
		t.Fatalf("reload with a failing publish: %v, want it rolled back", err)
	}
	dpAfter, idsAfter := r.backends(), backendIDs()
	for id, be := range dpBefore {
		if dpAfter[id] != be {
			t.Errorf("after the rollback backend slot %d holds %s, want %s as before", id, dpAfter[id].Addr, be.Addr)
		}
	}
	if !maps.Equal(idsBefore, idsAfter) {
		for a, id := range idsBefore {
			if got, ok := idsAfter[a]; !ok || got != id {
				t.Errorf("after the rollback the control loop has %s at slot %d (known: %v), want %d", a, got, ok, id)
			}
		}
		if id, ok := idsAfter[newAddr]; ok {
			t.Errorf("after the rollback the control loop has the failed file's %s at slot %d", newAddr, id)
		}
	}

	// Applied, the file gives the new address a slot, not the removed
	// address's.
	fp.armed.Store(0)
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	bes := r.backends()
	if be := bes[idsBefore[removed]]; be.Addr != removed {
		t.Errorf("the removed backend's slot %d was given to %s: its table was still in force", idsBefore[removed], be.Addr)
	}
	found := false
	for _, be := range bes {
		found = found || be.Addr == newAddr
	}
	if !found {
		t.Errorf("the new backend %s has no slot", newAddr)
	}
	if len(bes) != datapath.MaxBackends {
		t.Errorf("%d backend slots taken, want all %d", len(bes), datapath.MaxBackends)
	}
}

// TestRollbackAtTheVIPLimitKeepsNumbersAndEpochs: at the datapath's limit
// of VIPs, a reload that replaces a VIP deletes it first, for its number;
// when the reload then fails, the rollback must bring the VIP back with
// the number and the epoch it had: its flows' connection entries carry
// both, and with new ones they no longer serve (Maglev places every
// established flow again, on a table that may have changed since they
// began). Before, it came back as a new VIP. The epoch the published VIP
// index carries is the one the datapath checks entries against.
func TestRollbackAtTheVIPLimitKeepsNumbersAndEpochs(t *testing.T) {
	full := manyVIPsConfig(datapath.MaxVIPs-2, 1, 251)
	zzKey := datapath.VIPKey{Addr: netip.MustParseAddr("10.100.0.9"), Port: 80, Proto: datapath.ProtoTCP}
	r := newWrappedRig(t, full, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return &failingPublish{dp, &zzKey}
	})
	dnsKey := vipKeyOf(t, r.b.cfg.VIPByName("dns"))
	before, ok, err := r.dp.LookupVIP(dnsKey)
	if err != nil || !ok {
		t.Fatalf("dns is not in the VIP index: %v %v", ok, err)
	}

	// dns goes, zz comes and takes its number; zz's table fails.
	dnsAt, xAt := strings.Index(full, "  - name: dns"), strings.Index(full, "  - name: x0")
	r.write(full[:dnsAt] + full[xAt:] +
		"  - name: zz\n    address: 10.100.0.9\n    port: 80\n    table_size: 251\n    health: {type: none}\n    backends:\n      - {name: be1, address: 10.2.1.2}\n")
	if _, err := r.b.Reload(r.ctx); err == nil || !strings.Contains(err.Error(), "the running configuration stays in force") {
		t.Fatalf("reload with a failing publish: %v, want it rolled back", err)
	}
	after, ok, err := r.dp.LookupVIP(dnsKey)
	if err != nil || !ok {
		t.Fatalf("after the rollback dns is not in the VIP index: %v %v", ok, err)
	}
	if after.Num != before.Num || after.Epoch != before.Epoch {
		t.Errorf("after the rollback dns has number %d and epoch %d, want %d and %d as before: its flows' entries no longer serve",
			after.Num, after.Epoch, before.Num, before.Epoch)
	}
	if _, ok, err := r.dp.LookupVIP(zzKey); err != nil || ok {
		t.Errorf("after the rollback the VIP index finds zz (%v, %v)", ok, err)
	}
	if vips := r.vips(); len(vips) != datapath.MaxVIPs || vips[dnsKey].Num != before.Num {
		t.Errorf("after the rollback %d VIPs, dns number %d; want %d, %d", len(vips), vips[dnsKey].Num, datapath.MaxVIPs, before.Num)
	}
}

// TestRollbackKeepsTheEpochOfChangedOptions: a reload that gives a VIP new
// options (here source hashing) moves its epoch on, and when it then fails
// (a table publish) the rollback must put the epoch back with the options:
// its flows' connection entries carry the epoch, and with a new one they
// no longer serve though the running configuration never changed. Before,
// the rollback's SetVIP moved it on once more.
func TestRollbackKeepsTheEpochOfChangedOptions(t *testing.T) {
	fp := &failingPublishes{}
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		fp.Balancer = dp
		return fp
	})
	webKey := vipKeyOf(t, r.b.cfg.VIPByName("web"))
	before, ok, err := r.dp.LookupVIP(webKey)
	if err != nil || !ok {
		t.Fatalf("web is not in the VIP index: %v %v", ok, err)
	}
	changed := strings.Replace(baseConfig, "    protocol: tcp\n", "    protocol: tcp\n    hash: source\n", 1)
	changed = strings.Replace(changed, "      - {name: be3, address: 10.2.3.2, weight: 2}\n", "", 1)
	r.write(changed)
	fp.armed.Store(1)
	if _, err := r.b.Reload(r.ctx); err == nil || !strings.Contains(err.Error(), "the running configuration stays in force") {
		t.Fatalf("reload with a failing publish: %v, want it rolled back", err)
	}
	after, ok, err := r.dp.LookupVIP(webKey)
	if err != nil || !ok {
		t.Fatalf("after the rollback web is not in the VIP index: %v %v", ok, err)
	}
	if after.Epoch != before.Epoch || after.Flags != before.Flags {
		t.Errorf("after the rollback web has epoch %d and options %#x, want %d and %#x as before: its flows' entries no longer serve",
			after.Epoch, after.Flags, before.Epoch, before.Flags)
	}
	if e, err := r.dp.VIPEpoch(before.Num); err != nil || e != before.Epoch {
		t.Errorf("web's epoch record is %d (%v), want %d", e, err, before.Epoch)
	}
}

// A reload is not failed once its datapath batch took the file: the batch
// gave recycled slots their new addresses, their previous addresses'
// flows emptied, which no rollback brings back. Before, the health
// checks' change came after it and could fail the reload, which was then
// reported failed and rolled back with those flows lost. Set now fails
// only on a closed monitor (its targets are checked before the batch),
// which the test closes: the reload is in force, and the failure logged.
func TestReloadIsInForceOnceItsBatchTookIt(t *testing.T) {
	const half = datapath.MaxBackends / 2
	r := newRig(t, slotsConfig("10.2.0.1", half-1, half), datapath.Options{})
	// big goes: its addresses keep their slots, and every slot stays
	// taken, so that a new address takes one of theirs.
	r.write(slotsConfig("10.2.0.1", half-1, 0))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.b.do(r.ctx, r.b.health.Close); err != nil {
		t.Fatal(err)
	}
	before := r.backends()
	newAddr := netip.MustParseAddr("10.2.0.2")
	r.write(slotsConfig(newAddr.String(), half-1, 0))
	resp, err := r.b.Reload(r.ctx)
	if err != nil {
		t.Fatalf("reload that recycled a slot, its health checks' change failing: %v; want it in force", err)
	}
	if resp.Generation != 3 {
		t.Errorf("generation %d, want 3", resp.Generation)
	}
	var id uint32
	var known bool
	if err := r.b.do(r.ctx, func() { id, known = r.b.backendIDs[newAddr] }); err != nil {
		t.Fatal(err)
	}
	if be := r.backends()[id]; !known || be.Addr != newAddr {
		t.Errorf("the new backend %s: slot %d (known %v) holding %s; want a slot of its own", newAddr, id, known, be.Addr)
	}
	if prev := before[id].Addr; !netip.MustParsePrefix("10.4.0.0/16").Contains(prev) {
		t.Errorf("the new backend took slot %d from %s, want one of big's removed addresses (the test shows nothing)", id, prev)
	}
	if got := r.logs.matching(slog.LevelError, "health checks not changed to the new configuration"); len(got) != 1 {
		t.Errorf("logged %q, want one error saying the health checks did not change", got)
	}
}
