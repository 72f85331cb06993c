package datapath

import (
	"net/netip"
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
