package datapath

import (
	"net/netip"
	"strings"
	"testing"
)

// collidingVIPs returns n TCP VIPs on port 80 whose VIP-index home slot is
// one and the same, with the n+vipIndexProbes slots from it free in the
// index w has published: the first vipIndexProbes of them fill the probe
// window, and one more finds no slot.
func collidingVIPs(tb testing.TB, w *world, n int) []VIPKey {
	tb.Helper()
	used := w.indexSlots(tb)
	byHome := map[uint32][]VIPKey{}
	for i := range 1 << 20 {
		k := VIPKey{netip.AddrFrom4([4]byte{10, 150, byte(i >> 8), byte(i)}), uint16(80 + i>>16), ProtoTCP}
		vk := toVIPKey(k)
		home := vipIndexHash(vk.Addr, uint32(vk.Port)|uint32(vk.Proto)<<16)
		free := true
		for s := range uint32(n + vipIndexProbes) {
			if _, ok := used[(home+s)&(vipIndexSlots-1)]; ok {
				free = false
				break
			}
		}
		if !free {
			continue
		}
		byHome[home] = append(byHome[home], k)
		if len(byHome[home]) == n {
			return byHome[home]
		}
	}
	tb.Fatalf("no %d VIPs with one home slot found", n)
	return nil
}

// TestVIPIndexFullRefusesTheVIP fills the probe window of one home slot
// and adds one VIP more: SetVIP refuses it with an error that says what
// to do, takes it out again (it is not listed, its number is free), and
// the VIPs already there stay served. Before, the refused VIP stayed in
// the VIP list and every later index rebuild failed until it was removed.
func TestVIPIndexFullRefusesTheVIP(t *testing.T) {
	w := newWorld(t, Options{})
	keys := collidingVIPs(t, w, vipIndexProbes+1)
	num := uint32(len(allVIPs))
	for _, k := range keys[:vipIndexProbes] {
		if err := w.b.SetVIP(k, num, 0); err != nil {
			t.Fatalf("VIP %s: %v", k, err)
		}
		w.publish(t, k, 1, 2, 3)
		num++
	}
	extra := keys[vipIndexProbes]
	err := w.b.SetVIP(extra, num, 0)
	if err == nil {
		t.Fatalf("VIP %s accepted with its home slot's %d probes taken", extra, vipIndexProbes)
	}
	for _, want := range []string{"no free slot", "another address or port", "not added"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	vips, err := w.b.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := vips[extra]; ok {
		t.Errorf("refused VIP %s is still listed", extra)
	}
	var e uint32
	if err := w.b.objs.VipEpochs.Lookup(num, &e); err != nil {
		t.Fatal(err)
	}
	if e%2 != 0 {
		t.Errorf("refused VIP's number %d has a live epoch %d", num, e)
	}

	// Every VIP still works, and the index takes changes again: the
	// number is free for another VIP.
	for i, k := range append(keys[:vipIndexProbes:vipIndexProbes], vipTCP4.key) {
		v := fixtureVIP{key: k, num: vips[k].Num, backends: []uint32{1, 2, 3}}
		s := pktSpec{src: client4, dst: k.Addr, sport: uint16(30000 + i), dport: k.Port, proto: ProtoTCP, syn: true}
		w.expectSent(t, s, w.expectBackend(v, flowOf(s)))
	}
	other := fixtureVIP{key: VIPKey{nonVIP, 8080, ProtoTCP}, num: num, backends: []uint32{2}}
	w.addVIPs(t, other)
	s := pktSpec{src: client4, dst: other.key.Addr, sport: 40000, dport: 8080, proto: ProtoTCP, syn: true}
	w.expectSent(t, s, backendAddrs[2])

	// With one of the window's VIPs gone, the refused one fits.
	if err := w.b.DeleteVIP(keys[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.b.SetVIP(extra, num+1, 0); err != nil {
		t.Fatalf("VIP %s after a slot came free: %v", extra, err)
	}
}

// TestDeleteVIPFailingIndexKeepsTheVIP makes the index rebuild of a
// DeleteVIP fail (a batch left a VIP the index cannot place) and checks
// that the VIP is put back, still served, and that a retry, once the
// index can be built, deletes it whole. Before, the VIP was gone from the
// list but still in the published index, and the retry returned at once
// with nothing done.
func TestDeleteVIPFailingIndexKeepsTheVIP(t *testing.T) {
	w := newWorld(t, Options{})
	keys := collidingVIPs(t, w, vipIndexProbes+1)
	err := w.b.Batch(func() error {
		for i, k := range keys {
			if err := w.b.SetVIP(k, uint32(len(allVIPs)+i), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "no free slot") {
		t.Fatalf("batch of %d VIPs with one home slot: %v, want an error about the index", len(keys), err)
	}

	err = w.b.DeleteVIP(vipTCP4.key)
	if err == nil {
		t.Fatal("DeleteVIP succeeded while the index cannot be built")
	}
	if !strings.Contains(err.Error(), "not deleted") {
		t.Errorf("error %q does not say the VIP was not deleted", err)
	}
	vips, err := w.b.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := vips[vipTCP4.key]; !ok {
		t.Fatal("VIP taken out of the list although the index still has it")
	}
	s := pktSpec{src: client4, dst: vip4, sport: 41000, dport: 80, proto: ProtoTCP, syn: true}
	w.expectSent(t, s, w.expectBackend(vipTCP4, flowOf(s)))

	// The index can be built again once the extra VIP is gone; the
	// retried delete then finishes.
	if err := w.b.DeleteVIP(keys[vipIndexProbes]); err != nil {
		t.Fatal(err)
	}
	if err := w.b.DeleteVIP(vipTCP4.key); err != nil {
		t.Fatalf("retried delete: %v", err)
	}
	vips, err = w.b.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := vips[vipTCP4.key]; ok {
		t.Fatal("VIP still listed after the retried delete")
	}
	var e uint32
	if err := w.b.objs.VipEpochs.Lookup(vipTCP4.num, &e); err != nil {
		t.Fatal(err)
	}
	if e%2 != 0 {
		t.Errorf("deleted VIP's epoch %d is still live", e)
	}
	// vip4 keeps its UDP VIP: a TCP SYN to port 80 is for no VIP now.
	in, _ := build(t, pktSpec{src: client4, dst: vip4, sport: 41001, dport: 80, proto: ProtoTCP, syn: true})
	if act, _ := w.run(t, in); act != xdpPass {
		t.Errorf("SYN to the deleted VIP: %s, want PASS", actionNames[act])
	}
}

// TestSetVIPRetryPublishesItsOptions: new options for a VIP move its
// epoch and then rebuild the index; when the rebuild fails (a batch left
// a VIP the index cannot place), a retry with the same options must not
// report success while the published index still carries the old ones
// (and the old epoch, so every packet of the VIP misses its entry).
func TestSetVIPRetryPublishesItsOptions(t *testing.T) {
	w := newWorld(t, Options{})
	keys := collidingVIPs(t, w, vipIndexProbes+1)
	err := w.b.Batch(func() error {
		for i, k := range keys {
			if err := w.b.SetVIP(k, uint32(len(allVIPs)+i), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		t.Fatal("batch of VIPs the index cannot place succeeded")
	}
	err = w.b.SetVIP(vipTCP4.key, vipTCP4.num, VIPHashSource)
	if err == nil || !strings.Contains(err.Error(), "not in effect until the index can be built") {
		t.Fatalf("SetVIP with new options while the index cannot be built: %v, want an error saying they are not in effect", err)
	}
	published := func() VIPFlags {
		for _, s := range w.indexSlots(t) {
			if s.Meta.VipNum == vipTCP4.num {
				return VIPFlags(s.Meta.Flags)
			}
		}
		t.Fatalf("VIP number %d is not in the index", vipTCP4.num)
		return 0
	}
	err = w.b.SetVIP(vipTCP4.key, vipTCP4.num, VIPHashSource)
	if got := published(); err == nil && got != VIPHashSource {
		t.Errorf("retried SetVIP succeeded, but the index carries options %#x, want %#x", got, VIPHashSource)
	}
	if err := w.b.DeleteVIP(keys[vipIndexProbes]); err != nil {
		t.Fatal(err)
	}
	if err := w.b.SetVIP(vipTCP4.key, vipTCP4.num, VIPHashSource); err != nil {
		t.Fatalf("SetVIP once the index can be built: %v", err)
	}
	if got := published(); got != VIPHashSource {
		t.Errorf("index carries options %#x, want %#x", got, VIPHashSource)
	}
}
