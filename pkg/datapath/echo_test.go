package datapath

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net/netip"
	"testing"
)

// withIPv4Options inserts opts (a multiple of 4 bytes) after the IPv4
// header at l2 of in, fixing its IHL, total length and checksum.
func withIPv4Options(in []byte, l2 int, opts []byte) []byte {
	out := append([]byte{}, in[:l2+20]...)
	out = append(out, opts...)
	out = append(out, in[l2+20:]...)
	out[l2] = 0x40 | byte((20+len(opts))/4)
	binary.BigEndian.PutUint16(out[l2+2:], binary.BigEndian.Uint16(in[l2+2:])+uint16(len(opts)))
	out[l2+10], out[l2+11] = 0, 0
	binary.BigEndian.PutUint16(out[l2+10:], inetChecksum(out[l2:l2+20+len(opts)], 0))
	return out
}

// TestEchoReplyLeavesOptionsOut: an echo request to a VIP with IPv4
// options (a completed loose source route, a full record route) is
// answered without them: echoed as they came, a source route
// would send the reply back along the client's route unreversed. (A
// source route with addresses left makes the VIP a waypoint, and the
// request the stack's: TestIPv4SourceRouteWaypoint.) The
// reply is the request less those bytes, its length fields and checksums
// right and its ICMP message (identifier, sequence, payload) unchanged.
// (An ICMPv6 echo request behind extension headers is the stack's:
// TestEchoBehindExtensionHeadersIsPassed.)
func TestEchoReplyLeavesOptionsOut(t *testing.T) {
	w := newWorld(t, Options{})
	// Loose source route through 192.0.2.1 and 192.0.2.2, completed (its
	// pointer past its length), then an end of options list; a record
	// route of nine empty slots filling all 40 bytes.
	lsrr := []byte{131, 11, 12, 192, 0, 2, 1, 192, 0, 2, 2, 0}
	rr := append([]byte{7, 39, 4}, make([]byte, 37)...)
	payload := []byte("switchyard ping payload")
	for _, c := range []struct {
		name  string
		spec  pktSpec
		extra func(in []byte, l2 int) []byte
	}{
		{"IPv4 loose source route", pktSpec{src: client4, dst: vip4}, func(in []byte, l2 int) []byte { return withIPv4Options(in, l2, lsrr) }},
		{"IPv4 record route, 40 bytes", pktSpec{src: client4, dst: vip4}, func(in []byte, l2 int) []byte { return withIPv4Options(in, l2, rr) }},
		{"IPv4 options, VLAN", pktSpec{src: client4, dst: vip4, vlan: 9}, func(in []byte, l2 int) []byte { return withIPv4Options(in, l2, lsrr) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.spec
			s.icmpType, s.icmpID, s.icmpSeq, s.icmpPayload = 8, 7, 3, payload
			plain, l2 := build(t, s)
			in := c.extra(plain, l2)
			before := w.stats(t)
			act, out := w.run(t, in)
			if act != xdpTX {
				t.Fatalf("echo request: %s, want TX", actionNames[act])
			}
			if d := statsDelta(before, w.stats(t)); !maps.Equal(d, map[string]uint64{"icmp_echo_reply": 1}) {
				t.Errorf("counters moved by %v, want icmp_echo_reply +1", d)
			}
			if len(out) != len(plain) {
				t.Fatalf("reply is %d bytes, want %d (the request without its %d bytes of options)", len(out), len(plain), len(in)-len(plain))
			}
			if !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) || !bytes.Equal(out[12:l2], in[12:l2]) {
				t.Errorf("L2 header %x, want the request's %x with MACs swapped", out[:l2], in[:l2])
			}
			ip := out[l2 : l2+20]
			if ip[0] != 0x45 || int(binary.BigEndian.Uint16(ip[2:])) != len(out)-l2 || ip[9] != 1 || ip[8] != 64 {
				t.Errorf("reply IPv4 header %x: want version 4, IHL 5, total length %d, ICMP, TTL 64", ip, len(out)-l2)
			}
			if netip.AddrFrom4([4]byte(ip[12:16])) != vip4 || netip.AddrFrom4([4]byte(ip[16:20])) != client4 {
				t.Errorf("reply %x -> %x, want %s -> %s", ip[12:16], ip[16:20], vip4, client4)
			}
			if inetChecksum(ip, 0) != 0 || inetChecksum(out[l2+20:], 0) != 0 {
				t.Errorf("bad IPv4 or ICMP checksum")
			}
			if icmp := out[l2+20:]; icmp[0] != 0 || !bytes.Equal(icmp[4:], plain[l2+24:]) {
				t.Errorf("reply ICMP %x, want type 0 and the request's id, sequence and payload", icmp)
			}
		})
	}
}

// TestNoEchoReplyToNonUnicastSources: an echo request to a VIP from a
// source that names no single host (unspecified, loopback, multicast,
// broadcast, class E) is dropped and counted as drop_icmp_invalid, never
// answered: a host discards such datagrams (RFC 1122 §3.2.1.3), and a
// reply to a multicast or broadcast address would reach every host on it.
func TestNoEchoReplyToNonUnicastSources(t *testing.T) {
	w := newWorld(t, Options{})
	for _, c := range []struct {
		src  string
		want uint32
	}{
		{"10.0.0.9", xdpTX}, // control: answered
		{"0.0.0.0", xdpDrop},
		{"127.0.0.1", xdpDrop},
		{"224.0.0.1", xdpDrop},
		{"240.0.0.1", xdpDrop},
		{"255.255.255.255", xdpDrop},
		{"fd00::9", xdpTX}, // control
		{"::", xdpDrop},
		{"::1", xdpDrop},
		{"ff02::1", xdpDrop},
		{"::ffff:10.0.0.9", xdpDrop}, // an IPv4 host's name, on no IPv6 packet
	} {
		src := netip.MustParseAddr(c.src)
		s := pktSpec{src: src, dst: vip4, icmpType: 8, icmpID: 1, icmpSeq: 1, icmpPayload: []byte("ping")}
		if src.Is6() {
			s.dst, s.icmpType = vip6, 128
		}
		in, _ := build(t, s)
		before := w.stats(t)
		act, _ := w.run(t, in)
		if act != c.want {
			t.Errorf("echo request from %s: %s, want %s", src, actionNames[act], actionNames[c.want])
		}
		want := map[string]uint64{"drop_icmp_invalid": 1}
		if c.want == xdpTX {
			want = map[string]uint64{"icmp_echo_reply": 1}
		}
		if d := statsDelta(before, w.stats(t)); !maps.Equal(d, want) {
			t.Errorf("echo request from %s: counters moved by %v, want %v", src, d, want)
		}
	}
}

// TestEchoBehindExtensionHeadersIsPassed: ICMPv6 behind extension headers
// is left to the stack, untouched and counting nothing, as the README
// says.
func TestEchoBehindExtensionHeadersIsPassed(t *testing.T) {
	w := newWorld(t, Options{})
	plain, l2 := build(t, pktSpec{src: client6, dst: vip6, icmpType: 128, icmpID: 7, icmpSeq: 3, icmpPayload: []byte("ping")})
	in := withExtHeaders(plain, l2, [2]int{extHopByHop, 8}, [2]int{extDestOpts, 16})
	before := w.stats(t)
	act, out := w.run(t, append([]byte(nil), in...))
	if act != xdpPass || !bytes.Equal(out, in) {
		t.Errorf("echo request behind extension headers: %s (changed %v), want PASS untouched", actionNames[act], !bytes.Equal(out, in))
	}
	if after := w.stats(t); !maps.Equal(after, before) {
		t.Errorf("counters moved %v -> %v", before, after)
	}
}
