package datapath

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// TestDecapAddrsOverLimit: an address set larger than the decap program's
// map is refused with ErrTooManyDecapAddrs before anything changes, so the
// addresses in force are still decapsulated (the agent keeps showing them
// as its set); a set of exactly MaxDecapAddrs fits. It used to delete the
// addresses in force, fill the map and fail on the 65th, leaving a partial
// set that decapsulated none of the old addresses.
func TestDecapAddrsOverLimit(t *testing.T) {
	requireRoot(t)
	spec, err := loadDecap()
	if err != nil {
		t.Fatal(err)
	}
	if n := spec.Maps["decap_addrs"].MaxEntries; n != MaxDecapAddrs {
		t.Fatalf("decap_addrs holds %d entries, MaxDecapAddrs says %d", n, MaxDecapAddrs)
	}
	d := loadFixtureDecap(t)
	ours4 := backendAddrs[1]
	b, l2 := build(t, syn4(53200))
	frame := encapFrame(t, lbV4, ours4, layers.IPProtocolIPv4, 0, b[l2:])

	many := make([]netip.Addr, MaxDecapAddrs+1)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
	}
	err = d.SetAddrs(many)
	if !errors.Is(err, ErrTooManyDecapAddrs) {
		t.Fatalf("SetAddrs(%d addresses): %v, want ErrTooManyDecapAddrs", len(many), err)
	}
	t.Logf("error: %v", err)
	before, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if act, _ := runProg(t, d.objs.XdpDecap, append([]byte(nil), frame...)); act != xdpPass {
		t.Fatalf("IPIP to %s after a refused set: %s, want PASS", ours4, actionNames[act])
	}
	expectDecapCounters(t, d, "IPIP to an address in force after a refused set", before, []string{"decap_ipv4_outer"})

	if err := d.SetAddrs(many[:MaxDecapAddrs]); err != nil {
		t.Fatalf("SetAddrs(%d addresses): %v", MaxDecapAddrs, err)
	}
}
