package datapath

import (
	"bytes"
	"testing"
)

// FuzzBalancer feeds arbitrary frames to the balancer program through the
// kernel: it must always return a valid verdict, never fail to run, and
// pass every frame it passes untouched (host traffic, malformed packets).
func FuzzBalancer(f *testing.F) {
	w := newWorld(f, Options{})
	seeds := []pktSpec{
		syn4(1),
		{src: client6, dst: vip6, sport: 2, dport: 80, proto: ProtoTCP, syn: true},
		{src: client4, dst: vip4, sport: 3, dport: 53, proto: ProtoUDP, payload: []byte("q")},
		{src: client4, dst: vip4, icmpType: 8, icmpPayload: []byte("ping")},
		{src: client4, dst: vip4, icmpType: 3, icmpCode: 4, icmpMTU: 1400, icmpPayload: make([]byte, 28)},
		{src: client6, dst: vip6, icmpType: ICMPv6PacketTooBig, icmpMTU: 1400, icmpPayload: make([]byte, 48)},
		func() pktSpec { s := syn4(4); s.vlan = 5; s.ipOptions = true; return s }(),
	}
	for _, s := range seeds {
		in, _ := build(f, s)
		f.Add(in)
	}
	// IPv6 behind extension headers (a chain the mutator can lengthen,
	// cut and reorder).
	v6, l2 := build(f, seeds[1])
	f.Add(withExtHeaders(v6, l2, [2]int{extHopByHop, 8}, [2]int{extRouting, 24}))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 3000 {
			t.Skip("the kernel takes 14..~3500-byte XDP test frames")
		}
		act, out := w.run(t, in)
		if act != xdpPass && act != xdpDrop && act != xdpTX {
			t.Fatalf("verdict %d for %x", act, in)
		}
		if act == xdpPass && !bytes.Equal(out, in) {
			t.Fatalf("passed frame changed:\n in %x\nout %x", in, out)
		}
	})
}

// FuzzDecap feeds arbitrary frames to the decap program, seeded with the
// balancer's encapsulations: it passes or drops, and a frame it passes is
// either untouched or its own tail behind an Ethernet header (with the
// frame's 802.1Q tag, if any): the outer headers stripped, the inner
// packet's bytes never changed.
func FuzzDecap(f *testing.F) {
	w := newWorld(f, Options{})
	d := loadFixtureDecap(f)
	for _, gue := range []uint16{0, 6080} {
		w.setGUE(f, gue)
		for _, s := range encapSpecs {
			in, _ := build(f, s)
			if act, enc := w.run(f, in); act == xdpTX {
				f.Add(enc)
			}
		}
	}
	plain, _ := build(f, syn4(9))
	f.Add(plain)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 3000 {
			t.Skip("the kernel takes 14..~3500-byte XDP test frames")
		}
		act, out := runProg(t, d.objs.XdpDecap, append([]byte(nil), in...))
		switch {
		case act == xdpDrop:
		case act != xdpPass:
			t.Fatalf("verdict %d for %x", act, in)
		case bytes.Equal(out, in):
		default:
			l2 := 14 // the Ethernet header, with its 802.1Q tag if any
			if len(out) >= 18 && out[12] == 0x81 && out[13] == 0x00 {
				l2 = 18
			}
			if len(out) < l2 || len(out) >= len(in) || !bytes.Equal(out[l2:], in[len(in)-len(out)+l2:]) {
				t.Fatalf("passed frame is neither untouched nor its inner packet:\n in %x\nout %x", in, out)
			}
		}
	})
}
