package datapath

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"testing"
)

// reframe builds s, lets edit change the frame from the IP header on, and
// pads the frame with zeros to at least minLen bytes, as a NIC pads a short
// frame. The IPv4 header checksum is made right again after edit: the
// program must judge the packet by its lengths, which TestTruncation never
// gets to (its cuts leave the IP length claiming the whole packet).
func reframe(t *testing.T, s pktSpec, minLen int, edit func(ip []byte)) []byte {
	t.Helper()
	in, l2 := build(t, s)
	if edit != nil {
		ip := in[l2:]
		edit(ip)
		if ip[0]>>4 == 4 && len(ip) >= 20 {
			ip[10], ip[11] = 0, 0
			binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip[:20], 0))
		}
	}
	if len(in) < minLen {
		in = append(in, make([]byte, minLen-len(in))...)
	}
	return in
}

// ipLen sets the IP header's length field: the IPv4 total length or the
// IPv6 payload length.
func ipLen(n uint16) func(ip []byte) {
	return func(ip []byte) {
		if ip[0]>>4 == 6 {
			binary.BigEndian.PutUint16(ip[4:], n)
		} else {
			binary.BigEndian.PutUint16(ip[2:], n)
		}
	}
}

// statsDelta is what moved between two Stats readings.
func statsDelta(before, after map[string]uint64) map[string]uint64 {
	d := map[string]uint64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

// TestMalformedLengths sends VIP packets whose headers are whole in the
// frame but whose IP header declares less (or more) than they need: the
// program must judge the packet by what its IP header declares, not by the
// frame (which may carry Ethernet padding), on the fast path (untagged
// IPv4 TCP/UDP without options) and the full parser alike. A VIP packet
// shorter than its headers say is dropped as drop_truncated; an IP header
// that cannot be parsed at all is left to the stack as pass_malformed.
// Each case checks the verdict and exactly which counters moved.
func TestMalformedLengths(t *testing.T) {
	w := newWorld(t, Options{})
	udp4 := func(sport uint16, payload string) pktSpec {
		return pktSpec{src: client4, dst: vip4, sport: sport, dport: 53, proto: ProtoUDP, payload: []byte(payload)}
	}
	syn6 := func(sport uint16) pktSpec {
		return pktSpec{src: client6, dst: vip6, sport: sport, dport: 80, proto: ProtoTCP, syn: true}
	}
	withOptions := func(s pktSpec) pktSpec { s.ipOptions = true; return s }
	echo4 := pktSpec{src: client4, dst: vip4, icmpType: 8, icmpID: 1, icmpSeq: 1, icmpPayload: []byte("ping")}
	echo6 := pktSpec{src: client6, dst: vip6, icmpType: 128, icmpID: 1, icmpSeq: 1, icmpPayload: []byte("ping")}
	setProto := func(p byte) func(ip []byte) { return func(ip []byte) { ip[9] = p } }
	firstByte := func(b byte) func(ip []byte) { return func(ip []byte) { ip[0] = b } }
	const gre = 47
	truncated := map[string]uint64{"drop_truncated": 1}
	malformed := map[string]uint64{"pass_malformed": 1}
	newFlow := map[string]uint64{"conn_miss": 1, "conn_filled": 1}

	cases := []struct {
		name   string
		spec   pktSpec
		pad    int             // the frame padded with zeros to this length
		edit   func(ip []byte) // applied from the IP header on
		action uint32
		counts map[string]uint64
		vip    fixtureVIP // for TX: whose backend it must go to
	}{
		// Controls: the same packets with honest lengths in padded
		// frames go through, so the drops below are the lengths' doing.
		{name: "padded SYN (fast path)", spec: syn4(47000), pad: 60,
			action: xdpTX, counts: newFlow, vip: vipTCP4},
		{name: "padded UDP with 4 bytes of payload", spec: udp4(47001, "abcd"), pad: 60,
			action: xdpTX, counts: newFlow, vip: vipUDPSrc},
		{name: "IPv6 SYN followed by trailer bytes", spec: syn6(47002), pad: 80,
			action: xdpTX, counts: newFlow, vip: vipTCP6},
		{name: "GRE to a VIP address", spec: syn4(47003), pad: 60, edit: setProto(gre),
			action: xdpPass, counts: map[string]uint64{}},

		// The L4 header runs past the IP length (parse_l4).
		{name: "TCP with 8 bytes of header inside the IP length", spec: syn4(47010), pad: 60, edit: ipLen(28),
			action: xdpDrop, counts: truncated},
		{name: "UDP with 4 bytes of header inside the IP length", spec: udp4(47011, "abcdefghijklmnop"), pad: 60, edit: ipLen(24),
			action: xdpDrop, counts: truncated},
		{name: "ICMP echo with 4 bytes of header inside the IP length", spec: echo4, pad: 60, edit: ipLen(24),
			action: xdpDrop, counts: truncated},
		{name: "IPv6 TCP with 8 bytes of header inside the payload length", spec: syn6(47012), edit: ipLen(8),
			action: xdpDrop, counts: truncated},
		{name: "IPv6 UDP with 4 bytes of header inside the payload length",
			spec: pktSpec{src: client6, dst: vip6, sport: 47013, dport: 80, proto: ProtoUDP, payload: []byte("abcd")}, edit: ipLen(4),
			action: xdpDrop, counts: truncated},
		{name: "ICMPv6 echo with 4 bytes of header inside the payload length", spec: echo6, edit: ipLen(4),
			action: xdpDrop, counts: truncated},

		// The IP length runs past the frame. These SYN and UDP packets
		// are otherwise what the fast path takes (parse_common).
		{name: "fast-path SYN declaring 100 bytes in a 60-byte frame", spec: syn4(47020), pad: 60, edit: ipLen(100),
			action: xdpDrop, counts: truncated},
		{name: "fast-path UDP declaring 100 bytes in a 60-byte frame", spec: udp4(47021, "abcdefghijklmnop"), pad: 60, edit: ipLen(100),
			action: xdpDrop, counts: truncated},

		// The IPv4 header's own length (IHL) against the total length
		// and the frame (parse_ipv4). Behind a TCP header the L4 check
		// would catch it too; behind GRE only the IHL check can.
		{name: "IHL 6 over a total length of 20 (TCP)", spec: withOptions(syn4(47030)), pad: 60, edit: ipLen(20),
			action: xdpDrop, counts: truncated},
		{name: "IHL 6 over a total length of 20 (GRE)", spec: withOptions(syn4(47031)), pad: 60,
			edit:   func(ip []byte) { setProto(gre)(ip); ipLen(20)(ip) },
			action: xdpDrop, counts: truncated},
		{name: "IHL 15 in a 60-byte frame", spec: syn4(47032), pad: 60, edit: firstByte(0x4f),
			action: xdpDrop, counts: truncated},

		// IP headers that are not IP headers (parse_ipv4, parse_ipv6).
		{name: "IHL 4", spec: syn4(47040), pad: 60, edit: firstByte(0x44),
			action: xdpPass, counts: malformed},
		{name: "version 6 behind the IPv4 EtherType", spec: syn4(47041), pad: 60, edit: firstByte(0x65),
			action: xdpPass, counts: malformed},
		{name: "version 4 behind the IPv6 EtherType", spec: syn6(47042), edit: func(ip []byte) { ip[0] = 0x40 | ip[0]&0x0f },
			action: xdpPass, counts: malformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := reframe(t, c.spec, c.pad, c.edit)
			before := w.stats(t)
			act, out := w.run(t, in)
			got := statsDelta(before, w.stats(t))
			if act != c.action {
				t.Errorf("action %s, want %s", actionNames[act], actionNames[c.action])
			}
			if !maps.Equal(got, c.counts) {
				t.Errorf("counters moved by %v, want %v", got, c.counts)
			}
			if act == xdpTX && c.action == xdpTX {
				checkEncap(t, in, 14, out, encapWant{backend: w.expectBackend(c.vip, flowOf(c.spec))})
			}
		})
	}
}

// TestTooBigQuoteCut sends a "too big" about an established flow whose
// quote is cut at every byte, with the IP length saying so (a frame cut
// short is caught earlier, by the IP length: see TestTruncation). The quote
// must hold the quoted IP header and the ports (parse_too_big_quote): any
// shorter and the message is dropped as drop_truncated; from there on it
// goes to the flow's backend, which only the connection table knows (the
// Maglev table has moved on). A frame shorter than 60 bytes is also sent
// padded to 60, as it would arrive from the wire.
func TestTooBigQuoteCut(t *testing.T) {
	w := newWorld(t, Options{})
	router4, router6 := netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("fd00:9::9")
	for _, c := range []struct {
		name    string
		flow    pktSpec
		vip     fixtureVIP
		options bool // the quoted IPv4 header has options (IHL 6)
	}{
		{"IPv4", syn4(48000), vipTCP4, false},
		{"IPv4 quoting options", syn4(48001), vipTCP4, true},
		{"IPv6", pktSpec{src: client6, dst: vip6, sport: 48002, dport: 80, proto: ProtoTCP, syn: true}, vipTCP6, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			pinned := w.open(t, c.vip, c.flow)
			w.publish(t, c.vip.key, otherBackend(c.vip, pinned))
			t.Cleanup(func() { w.publish(t, c.vip.key, c.vip.backends...) })

			// What the backend sent the client, as a router quotes it.
			r := c.flow
			r.src, r.dst, r.sport, r.dport = c.flow.dst, c.flow.src, c.flow.dport, c.flow.sport
			r.syn, r.ack, r.ipOptions, r.payload = true, true, c.options, make([]byte, 64)
			reply, l2 := build(t, r)
			hdr := 20
			if c.options {
				hdr = 24
			}
			if r.dst.Is6() {
				hdr = 40
			}
			quote := reply[l2 : l2+hdr+8]

			for k := 0; k <= len(quote); k++ {
				icmp := pktSpec{src: router4, dst: c.vip.key.Addr, icmpType: 3, icmpCode: 4, icmpMTU: 1400, icmpPayload: quote[:k]}
				if r.dst.Is6() {
					icmp = pktSpec{src: router6, dst: c.vip.key.Addr, icmpType: ICMPv6PacketTooBig, icmpMTU: 1400, icmpPayload: quote[:k]}
				}
				frames := [][]byte{reframe(t, icmp, 0, nil)}
				if len(frames[0]) < 60 {
					frames = append(frames, reframe(t, icmp, 60, nil))
				}
				if k < hdr+4 {
					// The rest of the quote as a trailer behind the
					// IP packet: still cut, by the IP length.
					frames = append(frames, append(reframe(t, icmp, 0, nil), quote[k:]...))
				}
				for _, in := range frames {
					before := w.stats(t)
					act, out := w.run(t, in)
					got := statsDelta(before, w.stats(t))
					want := map[string]uint64{"drop_truncated": 1}
					if k >= hdr+4 {
						want = map[string]uint64{"icmp_too_big_forwarded": 1, "conn_hit": 1}
					}
					switch {
					case k < hdr+4 && act != xdpDrop:
						t.Errorf("quote of %d bytes (frame %d): %s, want DROP", k, len(in), actionNames[act])
					case k >= hdr+4 && act != xdpTX:
						t.Errorf("quote of %d bytes (frame %d): %s, want TX to %s", k, len(in), actionNames[act], pinned)
					case act == xdpTX:
						checkEncap(t, in, 14, out, encapWant{backend: pinned})
					}
					if !maps.Equal(got, want) {
						t.Errorf("quote of %d bytes (frame %d): counters moved by %v, want %v", k, len(in), got, want)
					}
				}
			}
		})
	}
}
