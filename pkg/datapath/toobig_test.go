package datapath

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net/netip"
	"testing"
)

// TestTooBigShapes: the "too big" for packets the fixture's other cases
// do not send. An IPv4 header with options is quoted whole plus 8 bytes of
// what follows (RFC 792), and the message's lengths and checksums cover
// that quote; a VLAN-tagged packet's answer keeps the tag.
func TestTooBigShapes(t *testing.T) {
	w := newWorld(t, Options{})
	opts := pktSpec{src: client4, dst: vip4, sport: 45200, dport: 80, proto: ProtoTCP, ack: true, df: true, ipOptions: true, tos: 0x28, payload: make([]byte, 1456)}
	tagged4 := pktSpec{src: client4, dst: vip4, sport: 45201, dport: 80, proto: ProtoTCP, ack: true, df: true, vlan: 7, payload: make([]byte, 1460)}
	tagged6 := pktSpec{src: client6, dst: vip6, sport: 45202, dport: 80, proto: ProtoTCP, ack: true, vlan: 7, tos: 0x28, payload: make([]byte, 1440)}
	for _, c := range []struct {
		name    string
		spec    pktSpec
		quote   int // bytes of the offending packet quoted
		wantMTU uint32
	}{
		{"IPv4 with options", opts, 24 + 8, 1480},
		{"IPv4, VLAN-tagged", tagged4, 20 + 8, 1480},
		{"IPv6, VLAN-tagged", tagged6, 40 + 8, 1460},
	} {
		in, l2 := build(t, c.spec)
		act, out := w.run(t, in)
		if act != xdpTX {
			t.Fatalf("%s: %s, want TX of a too-big", c.name, actionNames[act])
		}
		if !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) || !bytes.Equal(out[12:l2], in[12:l2]) {
			t.Errorf("%s: L2 header %x, want the sender's MACs swapped and type/tag %x", c.name, out[:l2], in[12:l2])
		}
		if c.spec.dst.Is4() {
			ip, icmp := out[l2:l2+20], out[l2+20:]
			if ip[0] != 0x45 || ip[1] != 0 || int(binary.BigEndian.Uint16(ip[2:])) != 20+8+c.quote || binary.BigEndian.Uint16(ip[6:]) != 0x4000 ||
				ip[8] != 64 || ip[9] != 1 || inetChecksum(ip, 0) != 0 {
				t.Errorf("%s: IPv4 header %x, want IHL 5, TOS 0, total length %d, DF (ID 0: atomic, RFC 6864), TTL 64, ICMP, valid checksum", c.name, ip, 20+8+c.quote)
			}
			if icmp[0] != 3 || icmp[1] != 4 || uint32(binary.BigEndian.Uint16(icmp[6:])) != c.wantMTU {
				t.Errorf("%s: ICMP type %d code %d mtu %d, want 3/4/%d", c.name, icmp[0], icmp[1], binary.BigEndian.Uint16(icmp[6:]), c.wantMTU)
			}
			if len(icmp) != 8+c.quote || !bytes.Equal(icmp[8:], in[l2:l2+c.quote]) || inetChecksum(icmp, 0) != 0 {
				t.Errorf("%s: ICMP body %x, want a valid checksum over the first %d bytes of %x", c.name, icmp, c.quote, in[l2:])
			}
		} else {
			ip, icmp := out[l2:l2+40], out[l2+40:]
			if binary.BigEndian.Uint32(ip) != 6<<28 || int(binary.BigEndian.Uint16(ip[4:])) != 8+c.quote || ip[6] != 58 || ip[7] != 64 {
				t.Errorf("%s: IPv6 header %x, want traffic class and flow label 0, payload length %d, ICMPv6, hop limit 64", c.name, ip, 8+c.quote)
			}
			if icmp[0] != ICMPv6PacketTooBig || binary.BigEndian.Uint32(icmp[4:]) != c.wantMTU {
				t.Errorf("%s: ICMPv6 type %d mtu %d, want %d/%d", c.name, icmp[0], binary.BigEndian.Uint32(icmp[4:]), ICMPv6PacketTooBig, c.wantMTU)
			}
			if len(icmp) != 8+c.quote || !bytes.Equal(icmp[8:], in[l2:l2+c.quote]) || inetChecksum(icmp, pseudoSum(vip6, client6, uint32(len(icmp)), 58)) != 0 {
				t.Errorf("%s: ICMPv6 body %x, want a valid checksum over the first %d bytes of %x", c.name, icmp, c.quote, in[l2:])
			}
		}
	}
}

// TestTooBigIPv6NeverBelow1280: with a link MTU that leaves an IPv6
// client less than 1280 bytes after encapsulation, the "packet too big"
// announces 1280 (RFC 8200 §5: no IPv6 link is smaller), never the
// smaller figure a client would have to refuse.
func TestTooBigIPv6NeverBelow1280(t *testing.T) {
	w := newWorld(t, Options{})
	set := defaultSettings()
	set.MTU = 1300 // an IPv6 backend's outer header leaves 1260
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	in, l2 := build(t, pktSpec{src: client6, dst: vip6, sport: 45100, dport: 80, proto: ProtoTCP, ack: true, payload: make([]byte, 1240)})
	act, out := w.run(t, in)
	if act != xdpTX {
		t.Fatalf("1280-byte IPv6 packet over a 1300 MTU: %s, want TX of a too-big", actionNames[act])
	}
	icmp := out[l2+40:]
	if icmp[0] != ICMPv6PacketTooBig || binary.BigEndian.Uint32(icmp[4:]) != 1280 {
		t.Errorf("ICMPv6 type %d mtu %d, want %d/1280", icmp[0], binary.BigEndian.Uint32(icmp[4:]), ICMPv6PacketTooBig)
	}
	if inetChecksum(icmp, pseudoSum(vip6, client6, uint32(len(icmp)), 58)) != 0 {
		t.Errorf("bad ICMPv6 checksum")
	}
}

// TestOversizedTooBigIsDropped: a "too big" about a VIP flow that would
// itself exceed the MTU once encapsulated (an IPv6 router quotes as much
// as fits in 1280 bytes) is dropped and counted; it is never answered with
// a "too big" of its own (no ICMP error about an ICMP error).
func TestOversizedTooBigIsDropped(t *testing.T) {
	w := newWorld(t, Options{})
	s := pktSpec{src: client6, dst: vip6, sport: 44400, dport: 80, proto: ProtoTCP, syn: true}
	w.open(t, vipTCP6, s)
	set := defaultSettings()
	set.MTU = 1300 // leaves 1260 after an IPv6 backend's outer header
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	r := s
	r.src, r.dst, r.sport, r.dport, r.ack, r.payload = s.dst, s.src, s.dport, s.sport, true, make([]byte, 1400)
	reply, l2 := build(t, r)
	icmp, _ := build(t, pktSpec{src: netip.MustParseAddr("fd00:9::9"), dst: vip6, icmpType: ICMPv6PacketTooBig, icmpMTU: 1280,
		icmpPayload: reply[l2 : l2+1280-40-8]}) // a 1280-byte ICMPv6 packet
	before := w.stats(t)
	if act, _ := w.run(t, icmp); act != xdpDrop {
		t.Errorf("1280-byte too big over a 1300 MTU: %s, want DROP", actionNames[act])
	}
	after := w.stats(t)
	if after["drop_too_big"] != before["drop_too_big"]+1 || after["icmp_too_big_sent"] != before["icmp_too_big_sent"] {
		t.Errorf("drop_too_big %d -> %d, icmp_too_big_sent %d -> %d, want +1 and unchanged",
			before["drop_too_big"], after["drop_too_big"], before["icmp_too_big_sent"], after["icmp_too_big_sent"])
	}
}

// TestTooBigFollowsThePinnedFlow: a flow recorded under an all-ports VIP
// keeps its backend when a VIP for its port is added on the same address
// (its packets follow their connection entry), and so must the "too big"
// a router sends about it: the backend that holds the connection is the
// one whose path MTU it corrects.
func TestTooBigFollowsThePinnedFlow(t *testing.T) {
	w := newWorld(t, Options{})
	s := syn4(44100)
	s.dst = vip4all
	pinned := w.open(t, vipAll, s)
	port80 := fixtureVIP{VIPKey{vip4all, 80, ProtoTCP}, 23, 0, []uint32{otherBackend(vipAll, pinned)}}
	w.addVIPs(t, port80)
	// The flow's packets still go to its backend...
	w.expectSent(t, ackOf(s), pinned)
	// ...and so does a "too big" about it.
	icmp, l2 := build(t, pktSpec{src: netip.MustParseAddr("10.9.9.9"), dst: vip4all, icmpType: 3, icmpCode: 4, icmpMTU: 1400, icmpPayload: quotedReply(t, s)})
	act, out := w.run(t, icmp)
	if act != xdpTX {
		t.Fatalf("too big: %s, want TX", actionNames[act])
	}
	checkEncap(t, icmp, l2, out, encapWant{backend: pinned})
	// A new flow to the port goes to the new VIP.
	n := syn4(44101)
	n.dst = vip4all
	w.expectSent(t, n, backendAddrs[port80.backends[0]])
}

// TestTooBigQuotesExtensionHeaders: the "packet too big" for an IPv6
// packet behind extension headers quotes the headers and 8 bytes of its L4
// header, not only the first 48 bytes. A receiver finds the socket to
// correct by the quoted ports: Linux (icmpv6_notify) skips the quoted
// extension headers and needs 8 bytes after them, or it drops the message
// and the client never learns the MTU.
func TestTooBigQuotesExtensionHeaders(t *testing.T) {
	w := newWorld(t, Options{})
	for i, c := range []struct {
		name string
		exts [][2]int
		vlan uint16
	}{
		{"destination options", [][2]int{{extDestOpts, 16}}, 0},
		{"hop-by-hop, destination options, routing, VLAN-tagged", [][2]int{{extHopByHop, 8}, {extDestOpts, 16}, {extRouting, 24}}, 7},
		{"L4 header at byte 254, the furthest followed", [][2]int{{extHopByHop, 200}}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := pktSpec{src: client6, dst: vip6, sport: uint16(45300 + i), dport: 80, proto: ProtoTCP, ack: true, vlan: c.vlan, payload: make([]byte, 1440)}
			plain, l2 := build(t, s)
			in := withExtHeaders(plain, l2, c.exts...)
			ext := len(in) - len(plain)
			quote := 40 + ext + 8
			before := w.stats(t)
			act, out := w.run(t, in)
			if act != xdpTX {
				t.Fatalf("%d-byte IPv6 packet: %s, want TX of a too-big", len(in)-l2, actionNames[act])
			}
			if !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) || !bytes.Equal(out[12:l2], in[12:l2]) {
				t.Errorf("L2 header %x, want the sender's MACs swapped and type/tag %x", out[:l2], in[12:l2])
			}
			ip, icmp := out[l2:l2+40], out[l2+40:]
			if binary.BigEndian.Uint32(ip) != 6<<28 || int(binary.BigEndian.Uint16(ip[4:])) != 8+quote || ip[6] != 58 || ip[7] != 64 ||
				!bytes.Equal(ip[8:24], vip6.AsSlice()) || !bytes.Equal(ip[24:40], client6.AsSlice()) {
				t.Errorf("IPv6 header %x, want %s -> %s, payload length %d, ICMPv6, hop limit 64", ip, vip6, client6, 8+quote)
			}
			if icmp[0] != ICMPv6PacketTooBig || icmp[1] != 0 || binary.BigEndian.Uint32(icmp[4:]) != 1460 {
				t.Errorf("ICMPv6 type %d code %d mtu %d, want %d/0/1460", icmp[0], icmp[1], binary.BigEndian.Uint32(icmp[4:]), ICMPv6PacketTooBig)
			}
			if len(icmp) != 8+quote || !bytes.Equal(icmp[8:], in[l2:l2+quote]) {
				t.Fatalf("quote of %d bytes %x, want the packet's first %d (its %d bytes of extension headers and 8 of TCP)", len(icmp)-8, icmp[8:], quote, ext)
			}
			if inetChecksum(icmp, pseudoSum(vip6, client6, uint32(len(icmp)), 58)) != 0 {
				t.Errorf("bad ICMPv6 checksum")
			}
			// What the client's stack reads from the quote: the flow's ports.
			if sp, dp := binary.BigEndian.Uint16(icmp[8+40+ext:]), binary.BigEndian.Uint16(icmp[8+40+ext+2:]); sp != s.sport || dp != s.dport {
				t.Errorf("quoted ports %d -> %d, want %d -> %d", sp, dp, s.sport, s.dport)
			}
			if d := statsDelta(before, w.stats(t)); !maps.Equal(d, map[string]uint64{"conn_miss": 1, "icmp_too_big_sent": 1}) {
				t.Errorf("counters moved by %v, want conn_miss and icmp_too_big_sent +1", d)
			}
		})
	}
}

// TestNoTooBigToNonUnicastSources: an over-MTU packet whose source names
// no single host (unspecified, loopback, multicast, broadcast, class E) is
// dropped, never answered: an ICMP error must not go to such an address
// (RFC 1122 §3.2.2, RFC 4443 §2.4 (e.6)). IPv4's is counted as
// drop_too_big; IPv6's is dropped before, whatever its size, as
// drop_invalid_source (TestInvalidIPv6SourcesDropped).
func TestNoTooBigToNonUnicastSources(t *testing.T) {
	w := newWorld(t, Options{})
	for i, c := range []struct {
		src  string
		want uint32
	}{
		{"10.0.0.9", xdpTX}, // control: answered
		{"0.0.0.0", xdpDrop},
		{"0.1.2.3", xdpDrop},
		{"127.0.0.1", xdpDrop},
		{"224.0.0.1", xdpDrop},
		{"239.255.255.255", xdpDrop},
		{"240.0.0.1", xdpDrop},
		{"255.255.255.255", xdpDrop},
		{"fd00::9", xdpTX}, // control
		{"::", xdpDrop},
		{"::1", xdpDrop},
		{"ff02::1", xdpDrop},
		{"ff0e::1:2", xdpDrop},
		{"::ffff:10.0.0.9", xdpDrop}, // an IPv4 host's name, on no IPv6 packet
	} {
		src := netip.MustParseAddr(c.src)
		s := pktSpec{src: src, dst: vip4, sport: uint16(45400 + i), dport: 80, proto: ProtoTCP, ack: true, df: true, payload: make([]byte, 1460)}
		if src.Is6() {
			s.dst, s.payload = vip6, make([]byte, 1440)
		}
		in, _ := build(t, s)
		before := w.stats(t)
		act, _ := w.run(t, in)
		if act != c.want {
			t.Errorf("over-MTU packet from %s: %s, want %s", src, actionNames[act], actionNames[c.want])
		}
		want := map[string]uint64{"conn_miss": 1, "drop_too_big": 1}
		if c.want == xdpTX {
			want = map[string]uint64{"conn_miss": 1, "icmp_too_big_sent": 1}
		} else if src.Is6() {
			want = map[string]uint64{"drop_invalid_source": 1}
		}
		if d := statsDelta(before, w.stats(t)); !maps.Equal(d, want) {
			t.Errorf("over-MTU packet from %s: counters moved by %v, want %v", src, d, want)
		}
	}
}
