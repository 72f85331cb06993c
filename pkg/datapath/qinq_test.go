package datapath

import (
	"bytes"
	"testing"
)

// TestQinQTaggedVIPPacket: a frame tagged 802.1ad (TPID 0x88a8, as a
// provider bridge delivers it) is parsed like an 802.1Q one, for a new flow
// and for its pinned packets, and its encapsulation keeps the TPID and the
// tag; so does the "too big" a too-large one earns.
func TestQinQTaggedVIPPacket(t *testing.T) {
	w := newWorld(t, Options{})
	qinq := func(s pktSpec) ([]byte, int) {
		s.vlan = 300
		in, l2 := build(t, s)
		in[12], in[13] = 0x88, 0xa8
		return in, l2
	}
	s := syn4(44300)
	be := w.expectBackend(vipTCP4, flowOf(s))
	big := ackOf(s)
	big.payload = make([]byte, 1460)
	for _, p := range []pktSpec{s, ackOf(s), big} {
		in, l2 := qinq(p)
		act, out := w.run(t, in)
		if act != xdpTX {
			t.Fatalf("802.1ad-tagged %v: %s, want TX", flowOf(p), actionNames[act])
		}
		if !bytes.Equal(out[12:16], in[12:16]) {
			t.Errorf("802.1ad-tagged %v: tag %x, want %x", flowOf(p), out[12:16], in[12:16])
		}
		if len(p.payload) > 1000 {
			if out[l2] != 0x45 || out[l2+9] != 1 || out[l2+20] != 3 || out[l2+21] != 4 {
				t.Errorf("oversized 802.1ad-tagged packet: %x, want a fragmentation needed", out[l2:l2+22])
			}
			continue
		}
		checkEncap(t, in, l2, out, encapWant{backend: be, vlan: 300})
	}
}

// TestTaggedToIPv6Backends: a VLAN-tagged packet encapsulated in an IPv6
// outer header (IPv4 and IPv6 clients, with and without GUE) keeps its tag,
// has its outer header behind the tag, and decapsulates back to itself.
func TestTaggedToIPv6Backends(t *testing.T) {
	w := newWorld(t, Options{})
	d := loadFixtureDecap(t)
	for _, gue := range []uint16{0, 6080} {
		w.setGUE(t, gue)
		for _, c := range []struct {
			spec pktSpec
			vip  fixtureVIP
		}{
			{pktSpec{src: client4, dst: vip4to6, sport: 44500, dport: 80, proto: ProtoTCP, syn: true, vlan: 21, payload: []byte("hello")}, vip4To6},
			{pktSpec{src: client6, dst: vip6, sport: 44501, dport: 80, proto: ProtoTCP, syn: true, vlan: 21, payload: []byte("hello")}, vipTCP6},
		} {
			in, l2 := build(t, c.spec)
			act, out := w.run(t, in)
			if act != xdpTX {
				t.Fatalf("gue=%d tagged %v: %s, want TX", gue, flowOf(c.spec), actionNames[act])
			}
			checkEncap(t, in, l2, out, encapWant{backend: w.expectBackend(c.vip, flowOf(c.spec)), gue: gue, vlan: 21})
			act, dec := runProg(t, d.objs.XdpDecap, out)
			if act != xdpPass || !bytes.Equal(dec[12:], in[12:]) {
				t.Errorf("gue=%d tagged %v: decap %s\n got %x\nwant %x", gue, flowOf(c.spec), actionNames[act], dec[12:], in[12:])
			}
		}
	}
}
