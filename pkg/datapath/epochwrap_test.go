package datapath

import (
	"net/netip"
	"testing"
)

// setEpoch writes VIP num's epoch, record and copy, as 32,766 deletions
// and re-creations that cross no 65,536 boundary would leave it, and
// rebuilds the index (new flows record the index's epoch).
func (w *world) setEpoch(tb testing.TB, num, e uint32) {
	tb.Helper()
	if err := w.b.objs.VipEpochs.Put(num, e); err != nil {
		tb.Fatal(err)
	}
	if err := w.b.putEpochCopy(num, e); err != nil {
		tb.Fatal(err)
	}
	if err := w.b.syncVIPIndex(); err != nil {
		tb.Fatal(err)
	}
}

// TestEpochWrapForgetsOldEntries records a flow, moves its VIP's epoch on
// until the 16 bits that entries carry come round to the flow's again
// (deleted and re-created, with another backend), and sends the flow's
// next packet: it must follow the new VIP's table, not the entry of the
// VIP deleted 65,536 epochs ago. Entries of other VIP numbers stay.
func TestEpochWrapForgetsOldEntries(t *testing.T) {
	w := newWorld(t, Options{})
	var e uint32
	if err := w.b.objs.VipEpochs.Lookup(vipTCP4.num, &e); err != nil {
		t.Fatal(err)
	}
	s := pktSpec{src: client4, dst: vip4, sport: 45000, dport: 80, proto: ProtoTCP, syn: true}
	first := w.open(t, vipTCP4, s)
	other := pktSpec{src: client6, dst: vip6, sport: 45001, dport: 80, proto: ProtoTCP, syn: true}
	otherBE := w.open(t, vipTCP6, other)

	// As after 32,767 cycles: the last live epoch before the 16 bits wrap.
	w.setEpoch(t, vipTCP4.num, e+1<<16-2)
	if err := w.b.DeleteVIP(vipTCP4.key); err != nil {
		t.Fatal(err)
	}
	if err := w.b.SetVIP(vipTCP4.key, vipTCP4.num, 0); err != nil {
		t.Fatal(err)
	}
	var now uint32
	if err := w.b.objs.VipEpochs.Lookup(vipTCP4.num, &now); err != nil {
		t.Fatal(err)
	}
	if uint16(now) != uint16(e) {
		t.Fatalf("epoch %d does not repeat the flow's %d in its low 16 bits", now, e)
	}
	next := otherBackend(vipTCP4, first)
	w.publish(t, vipTCP4.key, next)

	w.expectSent(t, ackOf(s), backendAddrs[next])
	if _, ok, err := w.b.LookupFlow(flowOf(other)); err != nil || !ok {
		t.Fatalf("flow of another VIP lost in the purge: found %v, %v", ok, err)
	}
	w.expectSent(t, ackOf(other), otherBE)
}

// TestEpochWrapForgetsEntriesRecordedInTheBatch: the purge when a VIP
// number's epoch crosses a 65,536 boundary must also catch the entries
// that packets record after it under the epoch the published index still
// carries (until the batch ends, the index is not rebuilt). Such an entry
// carries the old epoch's low 16 bits; 32,768 cycles later, with no purge
// in between, the epoch comes round to them and the entry would send the
// flow to the backend of a VIP long changed.
func TestEpochWrapForgetsEntriesRecordedInTheBatch(t *testing.T) {
	w := newWorld(t, Options{})
	var e uint32
	if err := w.b.objs.VipEpochs.Lookup(vipTCP4.num, &e); err != nil {
		t.Fatal(err)
	}
	last := e | 0xffff // the last live epoch before the 16 bits wrap
	w.setEpoch(t, vipTCP4.num, last)
	s := pktSpec{src: client4, dst: vip4, sport: 45100, dport: 80, proto: ProtoTCP, syn: true}
	var first netip.Addr
	err := w.b.Batch(func() error {
		// New options: the epoch crosses the boundary now, the index
		// follows at the batch's end.
		if err := w.b.SetVIP(vipTCP4.key, vipTCP4.num, VIPHashSource); err != nil {
			return err
		}
		first = w.open(t, vipTCP4, s) // recorded under the index's epoch
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// As after 32,766 more option changes, none crossing a boundary: the
	// last one makes the epoch's low 16 bits those of the entry.
	w.setEpoch(t, vipTCP4.num, last+1<<16-2)
	if err := w.b.SetVIP(vipTCP4.key, vipTCP4.num, 0); err != nil {
		t.Fatal(err)
	}
	var now uint32
	if err := w.b.objs.VipEpochs.Lookup(vipTCP4.num, &now); err != nil {
		t.Fatal(err)
	}
	if uint16(now) != uint16(last) {
		t.Fatalf("epoch %#x does not repeat the entry's %#x in its low 16 bits", now, uint16(last))
	}
	next := otherBackend(vipTCP4, first)
	w.publish(t, vipTCP4.key, next)
	if _, ok, err := w.b.LookupFlow(flowOf(s)); err != nil || ok {
		t.Errorf("LookupFlow finds the entry of 65,536 epochs ago (err %v)", err)
	}
	w.expectSent(t, ackOf(s), backendAddrs[next])
}
