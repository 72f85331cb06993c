package datapath

import (
	"bytes"
	"maps"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// TestICMPTheBalancerLeavesAlone: of the destination unreachables only
// "fragmentation needed" is the balancer's to route; a net, host, port or
// administratively prohibited unreachable about a VIP flow is left to the
// stack. So is an IPv4 packet to a VIP that names ICMPv6 as its protocol,
// even if its first bytes read like an echo request. Untouched, counting
// nothing.
func TestICMPTheBalancerLeavesAlone(t *testing.T) {
	w := newWorld(t, Options{})
	s := syn4(44200)
	w.open(t, vipTCP4, s)
	var frames [][]byte
	for _, code := range []uint8{0, 1, 3, 13} {
		f, _ := build(t, pktSpec{src: netip.MustParseAddr("10.9.9.9"), dst: vip4, icmpType: 3, icmpCode: code, icmpPayload: quotedReply(t, s)})
		frames = append(frames, f)
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv6, SrcIP: client4.AsSlice(), DstIP: vip4.AsSlice()}
	echoLike := []byte{8, 0, 0xf7, 0xf8, 0, 7, 0, 0}
	frames = append(frames, serialize(t, &layers.Ethernet{SrcMAC: clientMAC, DstMAC: ourMAC, EthernetType: layers.EthernetTypeIPv4}, ip, gopacket.Payload(echoLike)))
	for _, f := range frames {
		before := w.stats(t)
		act, out := w.run(t, append([]byte(nil), f...))
		if act != xdpPass || !bytes.Equal(out, f) {
			t.Errorf("%x: %s (changed %v), want PASS untouched", f[14:38], actionNames[act], !bytes.Equal(out, f))
		}
		if after := w.stats(t); !maps.Equal(after, before) {
			t.Errorf("%x moved counters %v -> %v", f[14:38], before, after)
		}
	}
}
