package datapath

import (
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
