package datapath

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestNewAddressOfABackendIDClearsItsFlows: when every backend id is
// taken, the control loop gives the id of a removed backend to a new
// address. The flows pinned to the id are the removed machine's: their
// next packets must be placed by Maglev again, not sent to the new
// machine, which knows nothing of them (it would reset them). Flows of
// other ids keep their entries.
func TestNewAddressOfABackendIDClearsItsFlows(t *testing.T) {
	w := newWorld(t, Options{})
	idOf := func(a netip.Addr) uint32 {
		for id, ba := range backendAddrs {
			if ba == a {
				return id
			}
		}
		t.Fatalf("%s is no fixture backend", a)
		return 0
	}
	var gone, kept pktSpec
	var goneID, keptID uint32
	for sport := uint16(46000); goneID == keptID; sport++ {
		s := pktSpec{src: client4, dst: vip4, sport: sport, dport: 80, proto: ProtoTCP, syn: true}
		id := idOf(w.open(t, vipTCP4, s))
		if sport == 46000 {
			gone, goneID, keptID = s, id, id
		} else if id != goneID {
			kept, keptID = s, id
		}
	}
	// The backend is removed: the table goes on without it, its flows on
	// by their entries; then its id is given to another address.
	var rest []uint32
	for _, id := range vipTCP4.backends {
		if id != goneID {
			rest = append(rest, id)
		}
	}
	w.publish(t, vipTCP4.key, rest...)
	newAddr := netip.MustParseAddr("10.2.9.2")
	if err := w.b.SetBackend(goneID, newAddr); err != nil {
		t.Fatal(err)
	}
	if c, ok, err := w.b.LookupFlow(flowOf(gone)); err != nil || ok {
		t.Errorf("the removed backend's flow is still pinned to id %d (found %v, conn %+v, err %v), which is %s now", goneID, ok, c, err, newAddr)
	}
	want := w.expectBackend(vipTCP4, flowOf(gone))
	if want == newAddr {
		t.Fatal("Maglev gives the flow the new address; the test cannot tell")
	}
	w.expectSent(t, ackOf(gone), want)
	w.expectSent(t, ackOf(kept), backendAddrs[keptID])
	if c, ok, err := w.b.LookupFlow(flowOf(kept)); err != nil || !ok || c.BackendID != keptID {
		t.Errorf("a flow of another backend lost its entry: found %v, conn %+v, err %v", ok, c, err)
	}
}

// TestFailedBatchKeepsAMovedBackendsFlows: a batch that gives a backend id
// a new address and then fails (a reload whose table publish failed) is
// put back by its caller (the reload's rollback gives the id its address
// back). The id's flows must keep their entries meanwhile and after: they
// are the running configuration's. Before, the failed batch's end wrote
// the new address and emptied them, and the rollback found them gone. The
// new address still goes in, its previous flows emptied first, with the
// next batch that succeeds.
func TestFailedBatchKeepsAMovedBackendsFlows(t *testing.T) {
	w := newWorld(t, Options{})
	s := pktSpec{src: client4, dst: vip4, sport: 46500, dport: 80, proto: ProtoTCP, syn: true}
	old := w.open(t, vipTCP4, s)
	c, ok, err := w.b.LookupFlow(flowOf(s))
	if err != nil || !ok {
		t.Fatalf("the SYN left no entry (found %v, err %v)", ok, err)
	}
	id := c.BackendID
	newAddr := netip.MustParseAddr("10.2.9.2")
	failed := errors.New("injected failure")
	moveAndFail := func() {
		t.Helper()
		err := w.b.Batch(func() error {
			if err := w.b.SetBackend(id, newAddr); err != nil {
				return err
			}
			return failed
		})
		if !errors.Is(err, failed) {
			t.Fatalf("failing batch: %v, want the injected failure", err)
		}
	}
	moveAndFail()
	if c, ok, err := w.b.LookupFlow(flowOf(s)); err != nil || !ok || c.BackendID != id {
		t.Fatalf("after the failed batch the flow's entry is gone (found %v, conn %+v, err %v)", ok, c, err)
	}
	w.expectSent(t, ackOf(s), old)

	// The rollback gives the id its address back.
	if err := w.b.Batch(func() error { return w.b.SetBackend(id, old) }); err != nil {
		t.Fatal(err)
	}
	if c, ok, err := w.b.LookupFlow(flowOf(s)); err != nil || !ok || c.BackendID != id {
		t.Fatalf("after the rollback the flow's entry is gone (found %v, conn %+v, err %v)", ok, c, err)
	}
	w.expectSent(t, ackOf(s), old)

	// Not put back: the next batch that succeeds writes the new address,
	// and the flow of the previous one loses its entry first.
	moveAndFail()
	if err := w.b.Batch(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if c, ok, err := w.b.LookupFlow(flowOf(s)); err != nil || ok {
		t.Errorf("the previous address's flow is still pinned to id %d (found %v, conn %+v, err %v), which is %s now", id, ok, c, err, newAddr)
	}
	if bes, err := w.b.Backends(); err != nil || bes[id].Addr != newAddr {
		t.Errorf("backend %d is %v (err %v), want %s", id, bes[id], err, newAddr)
	}
	var bt backendTable
	if err := w.b.data.BackendTable.Lookup(uint32(0), &bt); err != nil {
		t.Fatal(err)
	}
	if got := fromAddr(bt[id].Addr); got != newAddr || bt[id].Flags&uint32(balancerBackendFlagsBACKEND_F_VALID) == 0 {
		t.Errorf("backend_table[%d] holds %s (flags %#x), want %s valid", id, got, bt[id].Flags, newAddr)
	}
}

// TestBatchFailingAtItsEndKeepsAMovedBackendsFlows: a batch whose own
// changes all went in but whose end fails to write the VIP address filter
// (vip_addrs full, here with addresses of no VIP) fails as one whose fn
// failed does, and its caller puts it back the same way: the id it gave a
// new address keeps the previous one, with its flows' entries. Before, the
// moves were held only when fn failed: this batch's end wrote the new
// address, the flow's entry emptied, and then reported its failure.
func TestBatchFailingAtItsEndKeepsAMovedBackendsFlows(t *testing.T) {
	w := newWorld(t, Options{})
	s := pktSpec{src: client4, dst: vip4, sport: 46600, dport: 80, proto: ProtoTCP, syn: true}
	old := w.open(t, vipTCP4, s)
	c, ok, err := w.b.LookupFlow(flowOf(s))
	if err != nil || !ok {
		t.Fatalf("the SYN left no entry (found %v, err %v)", ok, err)
	}
	id := c.BackendID
	for i := 0; ; i++ {
		if i > MaxVIPs {
			t.Fatalf("vip_addrs took %d addresses, more than its %d", i, MaxVIPs)
		}
		a := toAddr(netip.AddrFrom4([4]byte{10, 250, byte(i >> 8), byte(i)}))
		if err := w.b.objs.VipAddrs.Put(&a, uint32(1)); err != nil {
			break
		}
	}
	newAddr := netip.MustParseAddr("10.2.9.2")
	newVIP := VIPKey{netip.MustParseAddr("10.100.9.9"), 80, ProtoTCP}
	err = w.b.Batch(func() error {
		if err := w.b.SetBackend(id, newAddr); err != nil {
			return err
		}
		return w.b.SetVIP(newVIP, uint32(len(allVIPs)), 0)
	})
	if err == nil || !strings.Contains(err.Error(), "write VIP address 10.100.9.9") {
		t.Fatalf("batch with vip_addrs full: %v, want the address write's failure", err)
	}
	if c, ok, err := w.b.LookupFlow(flowOf(s)); err != nil || !ok || c.BackendID != id {
		t.Fatalf("after the batch that failed at its end the flow's entry is gone (found %v, conn %+v, err %v)", ok, c, err)
	}
	w.expectSent(t, ackOf(s), old)
}
