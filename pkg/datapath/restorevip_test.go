package datapath

import (
	"net/netip"
	"testing"
)

// TestRestoredVIPKeepsItsFlows: a reload at the limit of VIPs deletes a
// VIP and gives its number to a new one, then fails and is rolled back:
// the VIP comes back (RestoreVIP) with its number and epoch, and its
// established flows go on by their entries, to their backends, though its
// table changed meanwhile. The entries that the number's other VIP
// recorded in between are emptied: its epoch is over for good, and an
// entry of it would otherwise serve again when the number's epoch comes
// round to it.
func TestRestoredVIPKeepsItsFlows(t *testing.T) {
	w := newWorld(t, Options{})
	s := pktSpec{src: client4, dst: vip4, sport: 47000, dport: 80, proto: ProtoTCP, syn: true}
	first := w.open(t, vipTCP4, s)
	epoch, err := w.b.VIPEpoch(vipTCP4.num)
	if err != nil {
		t.Fatal(err)
	}

	other := fixtureVIP{VIPKey{netip.MustParseAddr("10.100.0.9"), 80, ProtoTCP}, vipTCP4.num, 0, []uint32{1, 2, 3}}
	err = w.b.Batch(func() error {
		if err := w.b.DeleteVIP(vipTCP4.key); err != nil {
			return err
		}
		if err := w.b.SetVIP(other.key, other.num, 0); err != nil {
			return err
		}
		w.publish(t, other.key, other.backends...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ospec := pktSpec{src: client4, dst: other.key.Addr, sport: 47001, dport: 80, proto: ProtoTCP, syn: true}
	w.open(t, other, ospec)

	next := otherBackend(vipTCP4, first)
	err = w.b.Batch(func() error {
		if err := w.b.DeleteVIP(other.key); err != nil {
			return err
		}
		if err := w.b.RestoreVIP(vipTCP4.key, vipTCP4.num, 0, epoch); err != nil {
			return err
		}
		w.publish(t, vipTCP4.key, next)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if iv, ok, err := w.b.LookupVIP(vipTCP4.key); err != nil || !ok || iv.Num != vipTCP4.num || iv.Epoch != epoch {
		t.Fatalf("the VIP index has the restored VIP as %+v (found %v, err %v), want number %d, epoch %d", iv, ok, err, vipTCP4.num, epoch)
	}
	w.expectSent(t, ackOf(s), first)
	// New options: the epoch moves on to the one the other VIP's entry
	// carries.
	if err := w.b.SetVIP(vipTCP4.key, vipTCP4.num, VIPHashSource); err != nil {
		t.Fatal(err)
	}
	if e, err := w.b.VIPEpoch(vipTCP4.num); err != nil || e != epoch+2 {
		t.Fatalf("epoch %d after new options (err %v), want %d: the test cannot tell", e, err, epoch+2)
	}
	if c, ok, err := w.b.LookupFlow(flowOf(ospec)); err != nil || ok {
		t.Errorf("the entry the number's other VIP recorded serves again: %+v (found %v, err %v)", c, ok, err)
	}
	if err := w.b.RestoreVIP(vipTCP4.key, vipTCP4.num+1, 0, epoch); err == nil {
		t.Error("RestoreVIP of a VIP that has another number: no error")
	}
}

// TestRestoredOptionsKeepTheirFlows: a reload gives a VIP new options,
// which moves its epoch on, then fails and is rolled back: RestoreVIP puts
// the options and the epoch back, and the VIP's established flows go on
// by their entries, to their backends, though its table changed. Before,
// RestoreVIP refused a VIP that was not deleted, and the rollback's SetVIP
// moved the epoch on once more: every flow of the VIP was placed by Maglev
// again. The entries recorded under the failed options are emptied: the
// epoch comes round to them at the next change of options.
func TestRestoredOptionsKeepTheirFlows(t *testing.T) {
	w := newWorld(t, Options{})
	s := pktSpec{src: client4, dst: vip4, sport: 47100, dport: 80, proto: ProtoTCP, syn: true}
	first := w.open(t, vipTCP4, s)
	epoch, err := w.b.VIPEpoch(vipTCP4.num)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.b.Batch(func() error { return w.b.SetVIP(vipTCP4.key, vipTCP4.num, VIPHashSource) }); err != nil {
		t.Fatal(err)
	}
	failed := pktSpec{src: client4, dst: vip4, sport: 47101, dport: 80, proto: ProtoTCP, syn: true}
	w.open(t, vipTCP4, failed)

	next := otherBackend(vipTCP4, first)
	err = w.b.Batch(func() error {
		if err := w.b.RestoreVIP(vipTCP4.key, vipTCP4.num, 0, epoch); err != nil {
			return err
		}
		w.publish(t, vipTCP4.key, next)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	iv, ok, err := w.b.LookupVIP(vipTCP4.key)
	if err != nil || !ok || iv.Epoch != epoch || iv.Flags != 0 {
		t.Fatalf("the VIP index has the restored VIP as %+v (found %v, err %v), want epoch %d, no options", iv, ok, err, epoch)
	}
	w.expectSent(t, ackOf(s), first)
	if err := w.b.SetVIP(vipTCP4.key, vipTCP4.num, VIPHashSource); err != nil {
		t.Fatal(err)
	}
	if e, err := w.b.VIPEpoch(vipTCP4.num); err != nil || e != epoch+2 {
		t.Fatalf("epoch %d after new options (err %v), want %d: the test cannot tell", e, err, epoch+2)
	}
	if c, ok, err := w.b.LookupFlow(flowOf(failed)); err != nil || ok {
		t.Errorf("the entry recorded under the failed options serves again: %+v (found %v, err %v)", c, ok, err)
	}
}
