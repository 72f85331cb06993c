package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzBalancer feeds arbitrary frames to the balancer program through the
// kernel, with GUE off or on (gue): it must always return a valid verdict,
// never fail to run, and pass every frame it passes untouched (host
// traffic, malformed packets). A frame it sends back out is one of two:
//   - an ICMP answer it made itself (an echo reply, a "too big"), which
//     goes back to the frame's source (checkAnswer);
//   - the frame's IP packet encapsulated to one of the fixture's backends,
//     which the decap program configured for that backend alone (and the
//     GUE port, with GUE on) must give back byte for byte (checkRoundTrip).
func FuzzBalancer(f *testing.F) {
	w := newWorld(f, Options{})
	decaps := map[netip.Addr]*Decap{}
	for _, a := range backendAddrs {
		decaps[a] = loadDecapFor(f, a, fuzzGUEPort)
	}
	// What the balancer must do with each seed: without seeds it sends
	// out, the run of the seeds (CI runs those only) would check no
	// output at all.
	const (
		other  = iota // passed or dropped
		encap         // encapsulated to a backend
		answer        // answered with ICMP
	)
	seeds := []struct {
		s    pktSpec
		sent int
	}{
		{syn4(1), encap},
		{pktSpec{src: client6, dst: vip6, sport: 2, dport: 80, proto: ProtoTCP, syn: true}, encap},
		{pktSpec{src: client4, dst: vip4, sport: 3, dport: 53, proto: ProtoUDP, payload: []byte("q")}, encap},
		{pktSpec{src: client4, dst: vip4, icmpType: 8, icmpPayload: []byte("ping")}, answer},
		{pktSpec{src: client4, dst: vip4, icmpType: 3, icmpCode: 4, icmpMTU: 1400, icmpPayload: make([]byte, 28)}, other},
		{pktSpec{src: client6, dst: vip6, icmpType: ICMPv6PacketTooBig, icmpMTU: 1400, icmpPayload: make([]byte, 48)}, other},
		{func() pktSpec { s := syn4(4); s.vlan = 5; s.ipOptions = true; return s }(), encap},
		// To IPv6 backends.
		{pktSpec{src: client4, dst: vip4to6, sport: 5, dport: 80, proto: ProtoTCP, syn: true, payload: []byte("x")}, encap},
		{pktSpec{src: client6, dst: vip6, icmpType: 128, icmpID: 7, icmpSeq: 1, icmpPayload: []byte("ping6")}, answer},
		// Over the MTU once encapsulated: "too big" back.
		{func() pktSpec { s := syn4(6); s.payload = make([]byte, 1470); return s }(), answer},
		{pktSpec{src: client6, dst: vip6, sport: 7, dport: 80, proto: ProtoTCP, ack: true, payload: make([]byte, 1450)}, answer},
		// A router's "too big" about the flow of the first seed: to
		// that flow's backend.
		{pktSpec{src: netip.MustParseAddr("10.9.9.9"), dst: vip4, icmpType: 3, icmpCode: 4, icmpMTU: 1400, icmpPayload: quotedReply(f, syn4(1))}, encap},
	}
	for _, gue := range []bool{false, true} {
		w.setGUE(f, map[bool]uint16{false: 0, true: fuzzGUEPort}[gue])
		for _, sd := range seeds {
			in, _ := build(f, sd.s)
			f.Add(in, gue)
			if sd.sent == other {
				continue
			}
			if act, out := w.run(f, in); act != xdpTX || isAnswer(in, out) != (sd.sent == answer) {
				f.Fatalf("seed %v (GUE %v): %s, answered %v; want TX, answered %v", flowOf(sd.s), gue, actionNames[act], act == xdpTX && isAnswer(in, out), sd.sent == answer)
			}
		}
	}
	// IPv6 behind extension headers (a chain the mutator can lengthen,
	// cut and reorder).
	v6, l2 := build(f, seeds[1].s)
	f.Add(withExtHeaders(v6, l2, [2]int{extHopByHop, 8}, [2]int{extRouting, 24}), false)
	// IPv4 options the parser walks: a source route behind NOPs (IHL 15).
	v4, l2 := build(f, seeds[0].s)
	f.Add(withIPv4Options(v4, l2, padOptions(concat([]byte{ipoptNoop, ipoptNoop}, sourceRoute(ipoptLSRR, 8, 4)))), false)
	// A trailer behind the IP packet (Ethernet padding), and an 802.1ad
	// tag, which the balancer keeps as it keeps an 802.1Q one.
	tagged, _ := build(f, seeds[6].s)
	f.Add(concat(tagged, make([]byte, 6)), true)
	tagged[12], tagged[13] = 0x88, 0xa8
	f.Add(tagged, false)
	gue := false
	w.setGUE(f, 0)
	f.Fuzz(func(t *testing.T, in []byte, withGUE bool) {
		if len(in) < 14 || len(in) > 3000 {
			t.Skip("the kernel takes 14..~3500-byte XDP test frames")
		}
		if withGUE != gue {
			w.setGUE(t, map[bool]uint16{false: 0, true: fuzzGUEPort}[withGUE])
			gue = withGUE
		}
		act, out := w.run(t, append([]byte(nil), in...))
		switch act {
		case xdpDrop:
		case xdpPass:
			if !bytes.Equal(out, in) {
				t.Fatalf("passed frame changed:\n in %x\nout %x", in, out)
			}
		case xdpTX:
			if isAnswer(in, out) {
				checkAnswer(t, in, out)
			} else {
				checkRoundTrip(t, decaps, withGUE, in, out)
			}
		default:
			t.Fatalf("verdict %d for %x", act, in)
		}
	})
}

// fuzzGUEPort is FuzzBalancer's GUE port, when GUE is on.
const fuzzGUEPort = 6080

// loadDecapFor loads the decap program for the single address a, with GUE
// on port gue (0: off); closed at the test's end.
func loadDecapFor(tb testing.TB, a netip.Addr, gue uint16) *Decap {
	tb.Helper()
	d, err := LoadDecap("", nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	if err := d.SetAddrs([]netip.Addr{a}); err != nil {
		tb.Fatal(err)
	}
	if err := d.SetGUEPort(gue); err != nil {
		tb.Fatal(err)
	}
	return d
}

// frameL2 is the length of frame in's L2 header as the balancer parses it:
// Ethernet, and one 802.1Q or 802.1ad tag if there is one.
func frameL2(in []byte) int {
	if len(in) >= 18 && (in[12] == 0x81 && in[13] == 0x00 || in[12] == 0x88 && in[13] == 0xa8) {
		return 18
	}
	return 14
}

// isAnswer: out, sent for the frame in, is an ICMP message (its IP header
// where in's is: the balancer keeps the tag), not an encapsulation, whose
// outer protocol is IPIP, IPv6 or UDP (GUE).
func isAnswer(in, out []byte) bool {
	l2 := frameL2(in)
	if len(out) < l2+20 {
		return false
	}
	ip := out[l2:]
	return ip[0]>>4 == 4 && ip[9] == 1 || ip[0]>>4 == 6 && len(ip) >= 40 && ip[6] == 58
}

// checkAnswer: out, an ICMP message the balancer made for the frame in,
// goes back where in came from: to its source MAC from its destination
// MAC (with its tag), from the address in was sent to, to in's source
// address, in in's family.
func checkAnswer(t *testing.T, in, out []byte) {
	t.Helper()
	l2 := frameL2(in)
	fail := func(why string) {
		t.Helper()
		t.Fatalf("ICMP answer %s:\n in %x\nout %x", why, in, out)
	}
	if !bytes.Equal(out[:6], in[6:12]) || !bytes.Equal(out[6:12], in[:6]) {
		fail("not addressed back to the sender's MAC")
	}
	if !bytes.Equal(out[12:l2], in[12:l2]) {
		fail("with another EtherType or tag than the frame's")
	}
	ip, qi := out[l2:], in[l2:]
	if ip[0]>>4 != qi[0]>>4 {
		fail("in another IP family")
	}
	if ip[0]>>4 == 4 {
		if !bytes.Equal(ip[16:20], qi[12:16]) || !bytes.Equal(ip[12:16], qi[16:20]) {
			fail("not from the frame's destination back to its source")
		}
		return
	}
	if !bytes.Equal(ip[24:40], qi[8:24]) || !bytes.Equal(ip[8:24], qi[24:40]) {
		fail("not from the frame's destination back to its source")
	}
}

// checkRoundTrip: out is the frame in encapsulated to a fixture backend,
// its GUE port if gue. What the balancer changes is exactly the L2
// header (to the next hop, from us, the frame's tag kept with its TPID and
// TCI, the EtherType the outer family's) and the outer headers put in front
// of in's IP packet, which follows unchanged with the frame's trailer (the
// balancer carries it along); the decap program of that backend gives
// back in's IP packet byte for byte, without the trailer.
func checkRoundTrip(t *testing.T, decaps map[netip.Addr]*Decap, gue bool, in, out []byte) {
	t.Helper()
	l2 := frameL2(in)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("encapsulation: "+format+":\n in %x\nout %x", append(args, in, out)...)
	}
	if len(out) < l2+20 {
		fail("frame too short for an outer header")
	}
	outer := out[l2:]
	var be netip.Addr
	var overhead int
	var proto uint8
	switch outer[0] >> 4 {
	case 4:
		be, overhead, proto = netip.AddrFrom4([4]byte(outer[16:20])), 20, outer[9]
	case 6:
		if len(outer) < 40 {
			fail("frame too short for an outer IPv6 header")
		}
		be, overhead, proto = netip.AddrFrom16([16]byte(outer[24:40])), 40, outer[6]
	default:
		fail("outer IP version %d", outer[0]>>4)
	}
	d := decaps[be]
	if d == nil {
		fail("outer destination %s is none of the fixture's backends", be)
	}
	if gue {
		overhead += 8
		if proto != 17 || len(outer) < overhead-8+4 || binary.BigEndian.Uint16(outer[overhead-8+2:]) != fuzzGUEPort {
			fail("GUE on, but not UDP to port %d", fuzzGUEPort)
		}
	}
	if len(out) != len(in)+overhead {
		fail("%d bytes, want the frame's %d and %d of outer headers", len(out), len(in), overhead)
	}
	wantL2 := concat(nextHopMAC, ourMAC, in[12:l2-2], []byte{0x08, 0x00})
	if be.Is6() {
		wantL2[l2-1] = 0xdd
		wantL2[l2-2] = 0x86
	}
	if !bytes.Equal(out[:l2], wantL2) {
		fail("L2 header %x, want %x", out[:l2], wantL2)
	}
	if !bytes.Equal(out[l2+overhead:], in[l2:]) {
		fail("the frame's IP packet and trailer changed behind the outer headers")
	}
	act, dec := runProg(t, d.objs.XdpDecap, append([]byte(nil), out...))
	if act != xdpPass {
		fail("the decap program of backend %s says %s", be, actionNames[act])
	}
	if want := concat(out[:12], in[12:l2], ipPacket(in[l2:])); !bytes.Equal(dec, want) {
		fail("decapsulated by backend %s:\n got %x\nwant %x", be, dec, want)
	}
}

// FuzzDecap feeds arbitrary frames to the decap program, seeded with the
// balancer's encapsulations (also of ECN-capable and Not-ECT packets whose
// outer header a router marked CE, or ECT(1)): it passes or drops, and a frame it
// passes is either untouched or the inner packet behind an Ethernet header
// (with the frame's 802.1Q or 802.1ad tag, if any): the bytes between the
// outer headers and the end of the outer packet (outerEnd; a trailer
// beyond is trimmed), unchanged but for the ECN field RFC 6040 gives it
// (ecnDecapped): a CE mark on the outer header is never lost, the inner
// packet passed carries it (a Not-ECT one is dropped instead), and an
// outer ECT(1) turns an inner ECT(0) into ECT(1).
func FuzzDecap(f *testing.F) {
	w := newWorld(f, Options{})
	d := loadFixtureDecap(f)
	for _, gue := range []uint16{0, 6080} {
		w.setGUE(f, gue)
		for _, s := range encapSpecs {
			in, l2 := build(f, s)
			// A seed not encapsulated is a broken fixture, not one to
			// leave out: without the seeds, the run (CI runs the seeds
			// only) would check a plain SYN and nothing else.
			act, enc := w.run(f, in)
			if act != xdpTX {
				f.Fatalf("seed %v with GUE port %d: balancer %s, want TX", flowOf(s), gue, actionNames[act])
			}
			f.Add(enc)
			s.tos |= 2 // ECT(0)
			in, _ = build(f, s)
			act, enc = w.run(f, in)
			if act != xdpTX {
				f.Fatalf("ECT(0) seed %v with GUE port %d: balancer %s, want TX", flowOf(s), gue, actionNames[act])
			}
			ect1 := append([]byte(nil), enc...)
			setECN(ect1[l2:], 1) // an AQM's ECT(1) signal
			f.Add(ect1)
			setECN(enc[l2:], 3)
			f.Add(enc)
			s.tos &^= 3 // Not-ECT, outer CE: to be dropped
			in, _ = build(f, s)
			act, enc = w.run(f, in)
			if act != xdpTX {
				f.Fatalf("Not-ECT seed %v with GUE port %d: balancer %s, want TX", flowOf(s), gue, actionNames[act])
			}
			setECN(enc[l2:], 3)
			f.Add(enc)
		}
	}
	plain, _ := build(f, syn4(9))
	f.Add(plain)
	// An 802.1ad (QinQ) tag, which decap keeps as it keeps an 802.1Q one.
	w.setGUE(f, 0)
	qinq := syn4(9)
	qinq.vlan = 300
	in, _ := build(f, qinq)
	in[12], in[13] = 0x88, 0xa8
	if act, enc := w.run(f, in); act == xdpTX {
		f.Add(enc)
	}
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
			l2 := 14 // the Ethernet header, with its 802.1Q or 802.1ad tag if any
			if len(out) >= 18 && (out[12] == 0x81 && out[13] == 0x00 || out[12] == 0x88 && out[13] == 0xa8) {
				l2 = 18
			}
			end := outerEnd(in, l2)
			if len(out) < l2 || len(out) >= len(in) || end-(len(out)-l2) < l2+20 {
				t.Fatalf("passed frame is neither untouched nor its inner packet:\n in %x\nout %x", in, out)
			}
			if inner := in[end-(len(out)-l2) : end]; !ecnDecapped(ipECN(in[l2:]), inner, out[l2:]) {
				t.Fatalf("passed frame is neither untouched nor its inner packet with the ECN field of RFC 6040:\n in %x\nout %x", in, out)
			}
			if why := outerRefused(in, l2, end); why != "" {
				t.Fatalf("decapsulated a frame whose outer header the kernel refuses (%s):\n in %x\nout %x", why, in, out)
			}
		}
	})
}

// outerEnd is where the outer packet of frame in, its IP header at l2,
// ends as its length fields say (or the GUE datagram in it, if it is
// UDP); 0 if in is too short for them.
func outerEnd(in []byte, l2 int) int {
	ip := in[l2:]
	if len(ip) < 20 {
		return 0
	}
	hl, end, proto := int(ip[0]&0xf)*4, l2+int(binary.BigEndian.Uint16(ip[2:])), ip[9]
	if ip[0]>>4 == 6 {
		if len(ip) < 40 {
			return 0
		}
		hl, end, proto = 40, l2+40+int(binary.BigEndian.Uint16(ip[4:])), ip[6]
	}
	if proto != 17 {
		return end
	}
	if len(ip) < hl+8 {
		return 0
	}
	if ulen := int(binary.BigEndian.Uint16(ip[hl+4:])); ulen != 0 {
		return l2 + hl + ulen
	}
	return end
}

// outerRefused says why the kernel's receive path would refuse the outer
// header of the frame in, its IP header at l2 and its outer packet (or GUE
// datagram) ending at end, which the decap program stripped: a wrong IPv4
// header checksum, a martian source, a UDP checksum neither 0 nor right.
// "" if none of these.
func outerRefused(in []byte, l2, end int) string {
	ip := in[l2:]
	v6 := ip[0]>>4 == 6
	hl, proto := int(ip[0]&0xf)*4, ip[9]
	if v6 {
		hl, proto = 40, ip[6]
	}
	if !v6 && inetChecksum(ip[:hl], 0) != 0 {
		return "IPv4 header checksum"
	}
	if v6 {
		src := netip.AddrFrom16([16]byte(ip[8:24]))
		if src.IsMulticast() || src.IsLoopback() {
			return "source " + src.String()
		}
	} else if a := ip[12]; a == 0 || a == 127 || a>>4 == 0xe || binary.BigEndian.Uint32(ip[12:]) == 0xffffffff {
		return "source " + netip.AddrFrom4([4]byte(ip[12:16])).String()
	}
	if proto == 17 && binary.BigEndian.Uint16(ip[hl+6:]) != 0 {
		if f := withUDPChecksum(in[:end], l2); !bytes.Equal(f[l2+hl+6:l2+hl+8], ip[hl+6:hl+8]) {
			return "UDP checksum"
		}
	}
	return ""
}

// ipECN is the ECN field of the IP header that ip starts with (0 if
// ip is too short to hold it).
func ipECN(ip []byte) uint8 {
	switch {
	case len(ip) < 2:
		return 0
	case ip[0]>>4 == 6:
		return ip[1] >> 4 & 3
	default:
		return ip[1] & 3
	}
}

// ecnDecapped: got is the IP packet want with its ECN field as RFC 6040
// section 4.2 makes it under an outer field outer (an outer CE over an
// ECN-capable packet, an outer ECT(1) over ECT(0); see decap_ecn) and
// nothing else changed but an IPv4 header's checksum, updated
// incrementally (RFC 1624 eqn. 3) as decap.bpf.c does. An outer CE over a
// Not-ECT packet asks for a CE mark it cannot carry: that packet must be
// dropped, not passed. A header too short to hold its ECN field (an IPv4
// one too short for its checksum) is left alone.
func ecnDecapped(outer uint8, want, got []byte) bool {
	if len(want) != len(got) {
		return false
	}
	if len(want) < 2 || want[0]>>4 != 6 && len(want) < 20 {
		return bytes.Equal(got, want)
	}
	inner := ipECN(want)
	ecn := inner
	switch {
	case outer == 3:
		ecn = 3
	case outer == 1 && inner == 2:
		ecn = 1
	}
	exp := append([]byte(nil), want...)
	if want[0]>>4 == 6 {
		exp[1] = exp[1]&^0x30 | ecn<<4
		return bytes.Equal(got, exp)
	}
	exp[1] = exp[1]&^3 | ecn
	if ecn != inner {
		sum := uint32(^binary.BigEndian.Uint16(want[10:])) + uint32(^binary.BigEndian.Uint16(want)) + uint32(binary.BigEndian.Uint16(exp))
		sum = sum&0xffff + sum>>16
		sum = sum&0xffff + sum>>16
		binary.BigEndian.PutUint16(exp[10:], ^uint16(sum))
	}
	return bytes.Equal(got, exp)
}
