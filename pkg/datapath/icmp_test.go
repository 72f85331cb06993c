package datapath

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestEchoReply(t *testing.T) {
	w := newWorld(t, Options{})
	for _, s := range []pktSpec{
		{src: client4, dst: vip4, icmpType: 8, icmpID: 7, icmpSeq: 3, icmpPayload: []byte("switchyard ping payload")},
		{src: client6, dst: vip6, icmpType: 128, icmpID: 7, icmpSeq: 3, icmpPayload: []byte("switchyard ping payload")},
		{src: client4, dst: vip4, vlan: 9, icmpType: 8, icmpID: 7, icmpSeq: 3, icmpPayload: []byte("switchyard ping payload")},
		{src: client6, dst: vip6, vlan: 9, icmpType: 128, icmpID: 7, icmpSeq: 3, icmpPayload: []byte("switchyard ping payload")},
	} {
		in, l2 := build(t, s)
		act, out := w.run(t, in)
		if act != xdpTX {
			t.Fatalf("%s echo: %s, want TX", s.dst, actionNames[act])
		}
		if len(out) != len(in) {
			t.Fatalf("reply is %d bytes, request %d", len(out), len(in))
		}
		if !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) {
			t.Errorf("MACs not swapped")
		}
		if !bytes.Equal(out[12:l2], in[12:l2]) {
			t.Errorf("EtherType/tag %x, want %x", out[12:l2], in[12:l2])
		}
		pkt := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
		if s.dst.Is4() {
			ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			ic := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if netip.MustParseAddr(ip.SrcIP.String()) != vip4 || netip.MustParseAddr(ip.DstIP.String()) != client4 || ip.TTL != 64 {
				t.Errorf("reply %s -> %s ttl %d", ip.SrcIP, ip.DstIP, ip.TTL)
			}
			if ic.TypeCode.Type() != 0 || ic.Id != 7 || ic.Seq != 3 || !bytes.Equal(ic.Payload, s.icmpPayload) {
				t.Errorf("reply ICMP %v id %d seq %d payload %q", ic.TypeCode, ic.Id, ic.Seq, ic.Payload)
			}
			if inetChecksum(out[l2:l2+20], 0) != 0 || inetChecksum(out[l2+20:], 0) != 0 {
				t.Errorf("bad IPv4 or ICMP checksum")
			}
		} else {
			ip := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			ic := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
			if netip.MustParseAddr(ip.SrcIP.String()) != vip6 || netip.MustParseAddr(ip.DstIP.String()) != client6 || ip.HopLimit != 64 {
				t.Errorf("reply %s -> %s hop limit %d", ip.SrcIP, ip.DstIP, ip.HopLimit)
			}
			if ic.TypeCode.Type() != 129 {
				t.Errorf("reply type %v", ic.TypeCode)
			}
			body := out[l2+40:]
			if inetChecksum(body, pseudoSum(vip6, client6, uint32(len(body)), 58)) != 0 {
				t.Errorf("bad ICMPv6 checksum")
			}
		}
	}
	if got := w.stats(t)["icmp_echo_reply"]; got != 4 {
		t.Errorf("icmp_echo_reply = %d, want 4", got)
	}
}

// quotedReply builds the start of a reply a backend sent from the VIP to the
// client (what a router quotes in a "too big").
func quotedReply(t testing.TB, s pktSpec) []byte {
	r := s
	r.src, r.dst, r.sport, r.dport = s.dst, s.src, s.dport, s.sport
	r.syn, r.ack, r.payload = true, true, make([]byte, 64)
	b, l2 := build(t, r)
	if r.dst.Is4() {
		return b[l2 : l2+28]
	}
	return b[l2 : l2+48]
}

func TestTooBigReachesTheFlowsBackend(t *testing.T) {
	w := newWorld(t, Options{})
	for _, c := range []struct {
		flow pktSpec
		vip  fixtureVIP
		icmp func(quote []byte) pktSpec
	}{
		{syn4(44000), vipTCP4, func(q []byte) pktSpec {
			return pktSpec{src: netip.MustParseAddr("10.9.9.9"), dst: vip4, icmpType: 3, icmpCode: 4, icmpMTU: 1400, icmpPayload: q}
		}},
		{pktSpec{src: client6, dst: vip6, sport: 44001, dport: 80, proto: ProtoTCP, syn: true}, vipTCP6, func(q []byte) pktSpec {
			return pktSpec{src: netip.MustParseAddr("fd00:9::9"), dst: vip6, icmpType: ICMPv6PacketTooBig, icmpMTU: 1400, icmpPayload: q}
		}},
	} {
		// The flow is established on the old table...
		in, _ := build(t, c.flow)
		if act, _ := w.run(t, in); act != xdpTX {
			t.Fatalf("SYN: %s", actionNames[act])
		}
		pinned := w.expectBackend(c.vip, flowOf(c.flow))
		// ...then the table moves everything elsewhere: only the
		// connection table still knows the flow's backend.
		var other uint32
		for _, id := range c.vip.backends {
			if backendAddrs[id] != pinned {
				other = id
			}
		}
		w.publish(t, c.vip.key, other)

		icmp, l2 := build(t, c.icmp(quotedReply(t, c.flow)))
		act, out := w.run(t, icmp)
		if act != xdpTX {
			t.Fatalf("too big: %s, want TX", actionNames[act])
		}
		checkEncap(t, icmp, l2, out, encapWant{backend: pinned})
		w.publish(t, c.vip.key, c.vip.backends...)
	}
	if got := w.stats(t)["icmp_too_big_forwarded"]; got != 2 {
		t.Errorf("icmp_too_big_forwarded = %d, want 2", got)
	}

	// A "too big" quoting a flow of no VIP is dropped and counted.
	stray := syn4(1)
	stray.dst = vip4
	stray.dport = 9999
	icmp, _ := build(t, pktSpec{src: netip.MustParseAddr("10.9.9.9"), dst: vip4, icmpType: 3, icmpCode: 4, icmpMTU: 1400, icmpPayload: quotedReply(t, stray)})
	if act, _ := w.run(t, icmp); act != xdpDrop || w.stats(t)["drop_icmp_invalid"] != 1 {
		t.Errorf("stray too big: %s, want DROP counted as drop_icmp_invalid", actionNames[act])
	}
}

// checkTooBig sends s, which exceeds the MTU once encapsulated, and checks
// that it is answered with a "fragmentation needed" / "packet too big"
// announcing wantMTU: back to the sender's MAC, from the VIP to the
// client, quoting the packet's first 28 / 48 bytes, lengths and checksums
// right.
func checkTooBig(t *testing.T, w *world, s pktSpec, wantMTU uint32) {
	t.Helper()
	in, l2 := build(t, s)
	act, out := w.run(t, in)
	if act != xdpTX {
		t.Fatalf("oversized packet: %s, want TX of a too-big", actionNames[act])
	}
	if !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) {
		t.Errorf("too-big not addressed back to the sender's MAC")
	}
	pkt := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
	if s.dst.Is4() {
		ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !ok || len(out) < l2+20+8 {
			t.Fatalf("the answer to an oversized IPv4 packet is no IPv4 ICMP message: %x", out)
		}
		if netip.MustParseAddr(ip.SrcIP.String()) != s.dst || netip.MustParseAddr(ip.DstIP.String()) != s.src || ip.Protocol != layers.IPProtocolICMPv4 {
			t.Errorf("too-big %s -> %s proto %v", ip.SrcIP, ip.DstIP, ip.Protocol)
		}
		icmp := out[l2+20:]
		if icmp[0] != 3 || icmp[1] != 4 || uint32(binary.BigEndian.Uint16(icmp[6:])) != wantMTU {
			t.Errorf("ICMP type %d code %d mtu %d, want 3/4/%d", icmp[0], icmp[1], binary.BigEndian.Uint16(icmp[6:]), wantMTU)
		}
		if len(icmp) != 8+28 || !bytes.Equal(icmp[8:], in[l2:l2+28]) {
			t.Errorf("quote is not the offending packet's first 28 bytes: %x", icmp[8:])
		}
		if ip.Flags != layers.IPv4DontFragment || ip.FragOffset != 0 {
			t.Errorf("the too-big has flags %v, offset %d; want DF alone: its ID is 0, so it must be atomic (RFC 6864)", ip.Flags, ip.FragOffset)
		}
		if inetChecksum(out[l2:l2+20], 0) != 0 || inetChecksum(icmp, 0) != 0 || int(ip.Length) != 20+8+28 {
			t.Errorf("bad checksum or length %d", ip.Length)
		}
	} else {
		ip, ok := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if !ok || len(out) < l2+40+8 {
			t.Fatalf("the answer to an oversized IPv6 packet is no IPv6 ICMP message: %x", out)
		}
		if netip.MustParseAddr(ip.SrcIP.String()) != s.dst || netip.MustParseAddr(ip.DstIP.String()) != s.src || ip.NextHeader != layers.IPProtocolICMPv6 {
			t.Errorf("too-big %s -> %s next %v", ip.SrcIP, ip.DstIP, ip.NextHeader)
		}
		icmp := out[l2+40:]
		if icmp[0] != 2 || binary.BigEndian.Uint32(icmp[4:]) != wantMTU {
			t.Errorf("ICMPv6 type %d mtu %d, want 2/%d", icmp[0], binary.BigEndian.Uint32(icmp[4:]), wantMTU)
		}
		if len(icmp) != 8+48 || !bytes.Equal(icmp[8:], in[l2:l2+48]) {
			t.Errorf("quote is not the offending packet's first 48 bytes")
		}
		if int(ip.Length) != 8+48 {
			t.Errorf("IPv6 payload length %d, want %d", ip.Length, 8+48)
		}
		if inetChecksum(icmp, pseudoSum(s.dst, s.src, uint32(len(icmp)), 58)) != 0 {
			t.Errorf("bad ICMPv6 checksum")
		}
	}
}

func TestMTUExceededSendsTooBig(t *testing.T) {
	w := newWorld(t, Options{})
	for _, c := range []struct {
		spec    pktSpec
		wantMTU uint32
	}{
		// 1500-byte packets; IPIP adds 20 (v4 backend), IPv6 outer adds 40.
		{pktSpec{src: client4, dst: vip4, sport: 45000, dport: 80, proto: ProtoTCP, ack: true, df: true, payload: make([]byte, 1460)}, 1480},
		{pktSpec{src: client6, dst: vip6, sport: 45001, dport: 80, proto: ProtoTCP, ack: true, payload: make([]byte, 1440)}, 1460},
		// Without DF too: XDP cannot fragment, and the client learns
		// the MTU all the same.
		{pktSpec{src: client4, dst: vip4, sport: 45004, dport: 80, proto: ProtoTCP, ack: true, payload: make([]byte, 1460)}, 1480},
		// A new UDP flow (of a VIP with a connection table).
		{pktSpec{src: client4, dst: vip4, sport: 45005, dport: 53, proto: ProtoUDP, payload: make([]byte, 1472)}, 1480},
	} {
		checkTooBig(t, w, c.spec, c.wantMTU)
	}
	st := w.stats(t)
	if st["icmp_too_big_sent"] != 4 {
		t.Errorf("icmp_too_big_sent = %d, want 4", st["icmp_too_big_sent"])
	}
	// A packet answered with a too-big was not forwarded: no flow was
	// recorded, and no VIP counted one.
	if st["conn_filled"] != 0 {
		t.Errorf("conn_filled = %d after packets answered with too-big, want 0", st["conn_filled"])
	}
	for _, v := range []fixtureVIP{vipTCP4, vipTCP6, vipUDPSrc} {
		c, err := w.b.VIPCounters(v.num)
		if err != nil {
			t.Fatal(err)
		}
		if c.NewFlows != 0 || c.Packets != 0 {
			t.Errorf("VIP %v counted %d packets, %d new flows for packets it answered with too-big, want 0", v.key, c.Packets, c.NewFlows)
		}
	}

	// With "too big" disabled the packet is dropped, and counted.
	set := defaultSettings()
	set.ICMPTooBig = false
	w.b.SetSettings(set)
	in, _ := build(t, pktSpec{src: client4, dst: vip4, sport: 45002, dport: 80, proto: ProtoTCP, ack: true, df: true, payload: make([]byte, 1460)})
	if act, _ := w.run(t, in); act != xdpDrop || w.stats(t)["drop_too_big"] != 1 {
		t.Errorf("oversized without too-big: %s, want DROP counted as drop_too_big", actionNames[act])
	}
	// Exactly at the MTU still goes through.
	w.b.SetSettings(defaultSettings())
	at := pktSpec{src: client4, dst: vip4, sport: 45003, dport: 80, proto: ProtoTCP, ack: true, df: true, payload: make([]byte, 1440)}
	in, l2 := build(t, at)
	act, out := w.run(t, in)
	if act != xdpTX {
		t.Fatalf("1480-byte packet: %s, want TX", actionNames[act])
	}
	// Forwarded, not answered with a too-big (also an XDP_TX).
	checkEncap(t, in, l2, out, encapWant{backend: w.expectBackend(vipTCP4, flowOf(at))})
}

// TestMTUExceededOnEstablishedFlow: the packets that exceed the MTU are
// mostly an established flow's (a handshake's are small), which its
// connection entry sends without a VIP lookup. Such a packet is answered
// with a "too big" announcing the usable MTU of the flow's backend, as a
// new flow's is, counts only icmp_too_big_sent (it was not forwarded: no
// hit, no VIP packet), and leaves the entry for the flow's next packets,
// which still go to its backend when the table no longer would.
func TestMTUExceededOnEstablishedFlow(t *testing.T) {
	w := newWorld(t, Options{})
	for _, c := range []struct {
		name    string
		first   pktSpec // records the flow
		vip     fixtureVIP
		big     int // payload bytes that make a packet of the flow 1500 bytes of IP
		wantMTU uint32
	}{
		{"IPv4 TCP to an IPv4 backend", syn4(45100), vipTCP4, 1460, 1480},
		{"IPv6 TCP to an IPv6 backend", pktSpec{src: client6, dst: vip6, sport: 45101, dport: 80, proto: ProtoTCP, syn: true}, vipTCP6, 1440, 1460},
		{"IPv4 TCP to an IPv6 backend", pktSpec{src: client4, dst: vip4to6, sport: 45102, dport: 80, proto: ProtoTCP, syn: true, df: true}, vip4To6, 1460, 1460},
		{"IPv4 UDP", pktSpec{src: client4, dst: vip4, sport: 45103, dport: 53, proto: ProtoUDP, payload: []byte("q")}, vipUDPSrc, 1472, 1480},
	} {
		t.Run(c.name, func(t *testing.T) {
			pinned := w.open(t, c.vip, c.first)
			// Only the connection entry still names the flow's backend.
			w.publish(t, c.vip.key, otherBackend(c.vip, pinned))
			defer w.publish(t, c.vip.key, c.vip.backends...)
			small := c.first
			if small.proto == ProtoTCP {
				small = ackOf(small)
			}
			big := small
			big.payload = make([]byte, c.big)

			before := w.stats(t)
			vc, err := w.b.VIPCounters(c.vip.num)
			if err != nil {
				t.Fatal(err)
			}
			checkTooBig(t, w, big, c.wantMTU)
			if d := statsDelta(before, w.stats(t)); !maps.Equal(d, map[string]uint64{"icmp_too_big_sent": 1}) {
				t.Errorf("counters moved by %v, want icmp_too_big_sent +1", d)
			}
			if after, _ := w.b.VIPCounters(c.vip.num); after != vc {
				t.Errorf("VIP counters moved for a packet answered with a too-big: %+v -> %+v", vc, after)
			}

			before = w.stats(t)
			w.expectSent(t, small, pinned)
			if d := statsDelta(before, w.stats(t)); d["conn_hit"] != 1 {
				t.Errorf("the flow's next packet moved counters by %v, want conn_hit +1: the entry is gone", d)
			}
		})
	}
}

// TestTooBigQuotingMappedIPv6: an ICMPv6 "packet too big" whose quoted
// IPv6 packet runs between ::ffff:a.b.c.d addresses rebuilds, reversed,
// exactly the flow key of an IPv4 flow (the key writes IPv4 so). No IPv6
// packet comes from an IPv4 VIP: the message belongs to no VIP flow and
// is dropped as drop_icmp_invalid, not sent by the IPv4 flow's connection
// entry to its backend and counted as that VIP's packet.
func TestTooBigQuotingMappedIPv6(t *testing.T) {
	w := newWorld(t, Options{})
	s := syn4(44300)
	w.open(t, vipTCP4, s)
	// The quote: the backend's reply of s, as if it were IPv6 between
	// the mapped addresses (ports and flags as quotedReply builds them).
	r := pktSpec{src: vip6, dst: client6, sport: s.dport, dport: s.sport, proto: ProtoTCP, syn: true, ack: true}
	b, l2 := build(t, r)
	quote := append([]byte(nil), b[l2:l2+48]...)
	src, dst := netip.AddrFrom16(vip4.As16()).As16(), netip.AddrFrom16(client4.As16()).As16()
	copy(quote[8:], src[:])
	copy(quote[24:], dst[:])
	icmp, _ := build(t, pktSpec{src: netip.MustParseAddr("fd00:9::9"), dst: vip6, icmpType: ICMPv6PacketTooBig, icmpMTU: 1400, icmpPayload: quote})
	before := w.stats(t)
	vc, err := w.b.VIPCounters(vipTCP4.num)
	if err != nil {
		t.Fatal(err)
	}
	if act, _ := w.run(t, icmp); act != xdpDrop {
		t.Errorf("too big quoting %s -> %s: %s, want DROP", netip.AddrFrom16(src), netip.AddrFrom16(dst), actionNames[act])
	}
	if d := statsDelta(before, w.stats(t)); !maps.Equal(d, map[string]uint64{"drop_icmp_invalid": 1}) {
		t.Errorf("counters moved by %v, want drop_icmp_invalid +1", d)
	}
	if after, _ := w.b.VIPCounters(vipTCP4.num); after != vc {
		t.Errorf("IPv4 VIP counters moved: %+v -> %+v", vc, after)
	}
}

// TestTooBigQuotingNoIPHeader: a "too big" to a VIP whose quote does not
// start with an IP header of the message's family (another version, or
// an IPv4 IHL below 5) quotes no reply of ours: it is dropped as
// drop_icmp_invalid, even though the bytes where the quoted ports would
// be name an established flow, whose backend it must not reach.
func TestTooBigQuotingNoIPHeader(t *testing.T) {
	w := newWorld(t, Options{})
	// A client whose address reads as its flow's ports (VIP port 80,
	// client port 258): behind an IHL of 4 the quoted destination
	// address is where the ports would be, and names the flow all the
	// same.
	ihl4 := syn4(0x0102)
	ihl4.src = netip.AddrFrom4([4]byte{0, 80, 1, 2})
	for i, c := range []struct {
		name  string
		v6    bool
		first byte     // the quote's first byte: version and, for IPv4, IHL
		flow  *pktSpec // nil: a flow of the test's own
	}{
		{"IPv4 quoting version 6", false, 0x65, nil},
		{"IPv4 quoting version 0", false, 0x05, nil},
		{"IPv4 quoting IHL 4", false, 0x44, &ihl4},
		{"IPv6 quoting version 4", true, 0x40, nil},
		{"IPv6 quoting version 0", true, 0x00, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, v := syn4(uint16(44700+i)), vipTCP4
			if c.flow != nil {
				s = *c.flow
			}
			icmp := pktSpec{src: netip.MustParseAddr("10.9.9.9"), dst: vip4, icmpType: 3, icmpCode: 4, icmpMTU: 1400}
			if c.v6 {
				s = pktSpec{src: client6, dst: vip6, sport: uint16(44700 + i), dport: 80, proto: ProtoTCP, syn: true}
				v = vipTCP6
				icmp = pktSpec{src: netip.MustParseAddr("fd00:9::9"), dst: vip6, icmpType: ICMPv6PacketTooBig, icmpMTU: 1400}
			}
			w.open(t, v, s)
			quote := quotedReply(t, s)
			// Only the version (and IPv4's IHL) changed: the addresses
			// and ports still name s. (IPv6 keeps its traffic class's
			// high bits.)
			if c.v6 {
				quote[0] = c.first | quote[0]&0x0f
			} else {
				quote[0] = c.first
			}
			icmp.icmpPayload = quote
			in, _ := build(t, icmp)
			before := w.stats(t)
			vc, err := w.b.VIPCounters(v.num)
			if err != nil {
				t.Fatal(err)
			}
			if act, _ := w.run(t, in); act != xdpDrop {
				t.Errorf("too big quoting %x: %s, want DROP", quote[:4], actionNames[act])
			}
			if d := statsDelta(before, w.stats(t)); !maps.Equal(d, map[string]uint64{"drop_icmp_invalid": 1}) {
				t.Errorf("counters moved by %v, want drop_icmp_invalid +1", d)
			}
			if after, _ := w.b.VIPCounters(v.num); after != vc {
				t.Errorf("VIP counters moved: %+v -> %+v", vc, after)
			}
		})
	}
}

// TestTooBigQuotingExtensionHeaders: a "packet too big" about a reply
// the backend sent from an IPv6 VIP behind extension headers reaches the
// flow's backend like any other: the quote's headers are followed to its
// ports (as the VIP's own packets' are). A quote that ends inside them is
// truncated; one whose chain is too long to follow goes to the stack.
func TestTooBigQuotingExtensionHeaders(t *testing.T) {
	w := newWorld(t, Options{})
	for i, c := range []struct {
		name   string
		exts   [][2]int
		cut    int // bytes of the quote's L4 header left out
		act    uint32
		counts map[string]uint64
	}{
		{"destination options", [][2]int{{extDestOpts, 16}}, 0, xdpTX, map[string]uint64{"conn_hit": 1, "icmp_too_big_forwarded": 1}},
		{"hop-by-hop, destination options, routing", [][2]int{{extHopByHop, 8}, {extDestOpts, 8}, {extRouting, 24}}, 0, xdpTX, map[string]uint64{"conn_hit": 1, "icmp_too_big_forwarded": 1}},
		{"ports cut off", [][2]int{{extDestOpts, 16}}, 6, xdpDrop, map[string]uint64{"drop_truncated": 1}},
		{"five headers", [][2]int{{extHopByHop, 8}, {extDestOpts, 8}, {extRouting, 8}, {extDestOpts, 8}, {extDestOpts, 8}}, 0, xdpPass, map[string]uint64{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := pktSpec{src: client6, dst: vip6, sport: uint16(44400 + i), dport: 80, proto: ProtoTCP, syn: true}
			pinned := w.open(t, vipTCP6, s)
			// Only the connection table knows the flow's backend.
			w.publish(t, vipTCP6.key, otherBackend(vipTCP6, pinned))
			defer w.publish(t, vipTCP6.key, vipTCP6.backends...)
			r := pktSpec{src: vip6, dst: client6, sport: s.dport, dport: s.sport, proto: ProtoTCP, syn: true, ack: true, payload: make([]byte, 64)}
			b, l2 := build(t, r)
			reply := withExtHeaders(b, l2, c.exts...)
			ext := len(reply) - len(b)
			quote := reply[l2 : l2+40+ext+8-c.cut]
			icmp, il2 := build(t, pktSpec{src: netip.MustParseAddr("fd00:9::9"), dst: vip6, icmpType: ICMPv6PacketTooBig, icmpMTU: 1400, icmpPayload: quote})
			before := w.stats(t)
			act, out := w.run(t, icmp)
			if act != c.act {
				t.Fatalf("action %s, want %s", actionNames[act], actionNames[c.act])
			}
			if d := statsDelta(before, w.stats(t)); !maps.Equal(d, c.counts) {
				t.Errorf("counters moved by %v, want %v", d, c.counts)
			}
			if act == xdpTX {
				checkEncap(t, icmp, il2, out, encapWant{backend: pinned})
			}
		})
	}
}

// TestTooBigQuotingFragments: a "too big" quoting a fragment of the
// VIP's reply reaches the flow's backend when the fragment is the first
// (its ports follow the IPv4 header, or the IPv6 fragment header and any
// extension headers); a later fragment has no ports to find the flow by,
// so its "too big" goes to the stack like any quote of no TCP/UDP header,
// untouched and counting nothing (it was routed by payload bytes read as
// ports).
func TestTooBigQuotingFragments(t *testing.T) {
	w := newWorld(t, Options{})
	const more, offset = 0x2000, 0x00b9 // IPv4: MF; a fragment offset of 1480 bytes
	for i, c := range []struct {
		name   string
		v6     bool
		frag   uint16 // IPv4 flags and offset; IPv6 offset and M flag
		exts   [][2]int
		routed bool
	}{
		{"IPv4 first fragment", false, more, nil, true},
		{"IPv4 later fragment", false, more | offset, nil, false},
		{"IPv4 last fragment", false, offset, nil, false},
		{"IPv6 first fragment", true, 1, [][2]int{{extFragment, 8}}, true},
		{"IPv6 first fragment after destination options", true, 1, [][2]int{{extDestOpts, 16}, {extFragment, 8}}, true},
		{"IPv6 later fragment", true, 1480 | 1, [][2]int{{extFragment, 8}}, false},
		{"IPv6 last fragment", true, 1480, [][2]int{{extFragment, 8}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := pktSpec{src: client4, dst: vip4, sport: uint16(44600 + i), dport: 80, proto: ProtoTCP, syn: true}
			v := vipTCP4
			if c.v6 {
				s.src, s.dst, v = client6, vip6, vipTCP6
			}
			pinned := w.open(t, v, s)
			// Only the connection table knows the flow's backend.
			w.publish(t, v.key, otherBackend(v, pinned))
			defer w.publish(t, v.key, v.backends...)
			r := pktSpec{src: s.dst, dst: s.src, sport: s.dport, dport: s.sport, proto: ProtoTCP, syn: true, ack: true, payload: make([]byte, 64)}
			b, l2 := build(t, r)
			var quote []byte
			var icmpSpec pktSpec
			if !c.v6 {
				quote = append([]byte(nil), b[l2:l2+28]...)
				binary.BigEndian.PutUint16(quote[6:], c.frag)
				quote[10], quote[11] = 0, 0
				binary.BigEndian.PutUint16(quote[10:], inetChecksum(quote[:20], 0))
				icmpSpec = pktSpec{src: netip.MustParseAddr("10.9.9.9"), dst: vip4, icmpType: 3, icmpCode: 4, icmpMTU: 1400}
			} else {
				reply := withExtHeaders(b, l2, c.exts...)
				ext := len(reply) - len(b)
				fh := l2 + 40 + ext - 8 // the fragment header is the last
				binary.BigEndian.PutUint16(reply[fh+2:], c.frag)
				binary.BigEndian.PutUint32(reply[fh+4:], 0x1234)
				quote = reply[l2 : l2+40+ext+8]
				icmpSpec = pktSpec{src: netip.MustParseAddr("fd00:9::9"), dst: vip6, icmpType: ICMPv6PacketTooBig, icmpMTU: 1400}
			}
			icmpSpec.icmpPayload = quote
			icmp, il2 := build(t, icmpSpec)
			before := w.stats(t)
			act, out := w.run(t, append([]byte(nil), icmp...))
			d := statsDelta(before, w.stats(t))
			if !c.routed {
				if act != xdpPass || !bytes.Equal(out, icmp) || len(d) != 0 {
					t.Errorf("too big quoting a later fragment: %s (changed %v, counters %v), want PASS untouched, counting nothing", actionNames[act], !bytes.Equal(out, icmp), d)
				}
				return
			}
			if act != xdpTX {
				t.Fatalf("too big quoting a first fragment: %s, want TX to the flow's backend", actionNames[act])
			}
			if want := map[string]uint64{"conn_hit": 1, "icmp_too_big_forwarded": 1}; !maps.Equal(d, want) {
				t.Errorf("counters moved by %v, want %v", d, want)
			}
			checkEncap(t, icmp, il2, out, encapWant{backend: pinned})
		})
	}
}
