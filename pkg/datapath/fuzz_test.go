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
