package datapath

import (
	"net/netip"
	"testing"
)

// TestBatchReplacingVIPsAtTheLimit: with the datapath's full count of VIPs,
// each on an address of its own, a batch that deletes some and adds as
// many on new addresses (a reload at the limit) fits: vip_addrs, which
// holds one entry per address and no more than MaxVIPs, must drop the
// batch's gone addresses before it takes the new ones. It wrote them in
// map order, and a new address before a gone one found the map full.
func TestBatchReplacingVIPsAtTheLimit(t *testing.T) {
	w := newWorld(t, Options{})
	filler := func(i int) VIPKey {
		return VIPKey{netip.AddrFrom4([4]byte{10, 160, byte(i >> 8), byte(i)}), 80, ProtoTCP}
	}
	first := len(allVIPs)
	err := w.b.Batch(func() error {
		for num := first; num < MaxVIPs; num++ {
			if err := w.b.SetVIP(filler(num), uint32(num), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Enough replaced that the map's order puts a new address before the
	// gone ones all but once in replaced+1 runs (a ballot sequence).
	const replaced = 100
	err = w.b.Batch(func() error {
		for num := first; num < first+replaced; num++ {
			if err := w.b.DeleteVIP(filler(num)); err != nil {
				return err
			}
		}
		for num := first; num < first+replaced; num++ {
			if err := w.b.SetVIP(filler(MaxVIPs+num), uint32(num), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("a batch replacing %d of %d VIPs: %v", replaced, MaxVIPs, err)
	}
	for num := first; num < first+replaced; num++ {
		var n uint32
		gone, added := toAddr(filler(num).Addr), toAddr(filler(MaxVIPs+num).Addr)
		if err := w.b.objs.VipAddrs.Lookup(&gone, &n); err == nil {
			t.Errorf("vip_addrs still has %s, whose VIP is gone", filler(num).Addr)
		}
		if err := w.b.objs.VipAddrs.Lookup(&added, &n); err != nil || n != 1 {
			t.Errorf("vip_addrs[%s] = %d (%v), want 1 VIP", filler(MaxVIPs+num).Addr, n, err)
		}
	}
}
