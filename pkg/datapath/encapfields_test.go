package datapath

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// The outer header fields that the network and the backend act on: the GUE
// source port and the IPv6 flow label (load spreading), the TOS / traffic
// class (QoS and ECN), the TTL, and a source hashed inside a prefix. Each
// expected value comes from a Go mirror of bpf/encap.h, not from the
// program's own output.

// VIPs the fixture world lacks: IPv6 clients to IPv4 backends (6in4), and
// IPv6 VIPs with pure hashing and with source affinity.
var (
	vip6To4    = fixtureVIP{VIPKey{netip.MustParseAddr("fd00:100::2"), 80, ProtoTCP}, 20, 0, []uint32{1, 2, 3}}
	vipPure6   = fixtureVIP{VIPKey{netip.MustParseAddr("fd00:100::5"), 53, ProtoUDP}, 21, VIPNoConntrack, []uint32{11, 12, 13}}
	vipUDPSrc6 = fixtureVIP{VIPKey{netip.MustParseAddr("fd00:100::6"), 53, ProtoUDP}, 22, VIPHashSource, []uint32{11, 12, 13}}
)

// addVIPs installs vs, each with a table over its backends.
func (w *world) addVIPs(tb testing.TB, vs ...fixtureVIP) {
	tb.Helper()
	for _, v := range vs {
		if err := w.b.SetVIP(v.key, v.num, v.flags); err != nil {
			tb.Fatal(err)
		}
		w.publish(tb, v.key, v.backends...)
	}
}

// guePortOf mirrors encap.h: the GUE source port is the flow hash's low 15
// bits with the top bit set, so that the backend NIC's RSS spreads flows.
func guePortOf(f FlowKey) uint16 { return 0x8000 | uint16(FlowHash(f, false)&0x7fff) }

// flowLabelOf mirrors encap.h: the IPv6 outer flow label is the flow
// hash's low 20 bits (RFC 6438).
func flowLabelOf(f FlowKey) uint32 { return FlowHash(f, false) & 0xfffff }

// murmurFinal mirrors murmur_final in bpf/hash.h.
func murmurFinal(h, n uint32) uint32 {
	h ^= n
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// hostBits is the mask of the bits of an address of pfx's family that lie
// outside pfx, as 16 bytes (an IPv4 prefix: the last four).
func hostBits(pfx netip.Prefix) [16]byte {
	bits, first := pfx.Bits(), 0
	if pfx.Addr().Is4() {
		first = 96
	}
	var m [16]byte
	for i := first + bits; i < 128; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// hashedSourceOf mirrors outer_src_v4 and outer_src_v6 in bpf/encap.h: the
// prefix's network part, host bits from the client address's hash. An
// IPv6 address takes one 32-bit word of hash per word, each the previous
// one through murmur_final.
func hashedSourceOf(pfx netip.Prefix, client netip.Addr) netip.Addr {
	h := hashAddr(toAddr(client), flowHashSeed)
	mask := hostBits(pfx)
	out := pfx.Masked().Addr().As16()
	if pfx.Addr().Is4() {
		w := binary.BigEndian.Uint32(out[12:]) | h&binary.BigEndian.Uint32(mask[12:])
		return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, w)))
	}
	for i := range 4 {
		w := binary.BigEndian.Uint32(out[4*i:]) | h&binary.BigEndian.Uint32(mask[4*i:])
		binary.BigEndian.PutUint32(out[4*i:], w)
		h = murmurFinal(h, uint32(i+1))
	}
	return netip.AddrFrom16(out)
}

// outerHdr is what an encapsulated packet's outer headers say.
type outerHdr struct {
	v6           bool
	tos, ttl     uint8
	label        uint32 // IPv6 flow label
	proto        uint8
	src, dst     netip.Addr
	sport, dport uint16 // with proto UDP (GUE)
}

// parseOuter reads the outer IP header (and UDP header, for GUE) at l2.
func parseOuter(tb testing.TB, out []byte, l2 int) outerHdr {
	tb.Helper()
	b := out[l2:]
	var h outerHdr
	switch b[0] >> 4 {
	case 4:
		h.tos, h.ttl, h.proto = b[1], b[8], b[9]
		h.src, h.dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		b = b[int(b[0]&0xf)*4:]
	case 6:
		vtf := binary.BigEndian.Uint32(b)
		h.v6, h.tos, h.label = true, uint8(vtf>>20), vtf&0xfffff
		h.proto, h.ttl = b[6], b[7]
		h.src, h.dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		b = b[40:]
	default:
		tb.Fatalf("output is not IP at offset %d: %x", l2, out)
	}
	if h.proto == ProtoUDP {
		h.sport, h.dport = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
	}
	return h
}

// encapCase is a client packet and the VIP that must forward it.
type encapCase struct {
	name string
	spec pktSpec
	vip  fixtureVIP
}

// encapKinds is one packet of each kind the balancer encapsulates, on both
// of its parsing paths (untagged IPv4 TCP/UDP without options takes the
// fast one).
func encapKinds() []encapCase {
	tagged, opts := syn4(50010), syn4(50011)
	tagged.vlan, opts.ipOptions = 7, true
	return []encapCase{
		{"IPv4 in IPv4, TCP", syn4(50000), vipTCP4},
		{"IPv4 in IPv4, UDP without conntrack", pktSpec{src: client4, dst: vip4pure, sport: 50001, dport: 53, proto: ProtoUDP, payload: []byte("q")}, vipPure},
		{"IPv4 in IPv4, source affinity", pktSpec{src: client4, dst: vip4, sport: 50002, dport: 53, proto: ProtoUDP, payload: []byte("q")}, vipUDPSrc},
		{"IPv4 in IPv4, VLAN-tagged", tagged, vipTCP4},
		{"IPv4 in IPv4, IP options", opts, vipTCP4},
		{"IPv4 in IPv6", pktSpec{src: client4, dst: vip4to6, sport: 50003, dport: 80, proto: ProtoTCP, syn: true}, vip4To6},
		{"IPv6 in IPv6", pktSpec{src: client6, dst: vip6, sport: 50004, dport: 80, proto: ProtoTCP, syn: true}, vipTCP6},
		{"IPv6 in IPv4", pktSpec{src: client6, dst: vip6To4.key.Addr, sport: 50005, dport: 80, proto: ProtoTCP, syn: true}, vip6To4},
	}
}

// TestGUESourcePortAndFlowLabel: the GUE source port and the IPv6 outer
// flow label carry the flow hash, exactly as encap.h computes it, for new
// flows, for packets a connection entry sends, and for every
// encapsulation; different flows get different ports, also the flows of
// one client to a source-affinity VIP, which all go to one backend.
func TestGUESourcePortAndFlowLabel(t *testing.T) {
	w := newWorld(t, Options{})
	w.addVIPs(t, vip6To4)
	for _, gue := range []uint16{0, 6080} {
		w.setGUE(t, gue)
		ports := map[uint16]FlowKey{} // observed GUE source port -> flow
		for _, c := range encapKinds() {
			for i := range uint16(4) {
				s := c.spec
				s.sport += 100 * i
				f := flowOf(s)
				pkts := []pktSpec{s}
				if s.syn {
					pkts = append(pkts, ackOf(s)) // sent by its connection entry
				}
				for j, p := range pkts {
					in, l2 := build(t, p)
					act, out := w.run(t, in)
					if act != xdpTX {
						t.Fatalf("gue=%d %s %v: %s, want TX", gue, c.name, f, actionNames[act])
					}
					checkEncap(t, in, l2, out, encapWant{backend: w.expectBackend(c.vip, f), gue: gue, vlan: s.vlan})
					h := parseOuter(t, out, l2)
					if h.v6 && h.label != flowLabelOf(f) {
						t.Errorf("gue=%d %s %v: outer flow label %#05x, want %#05x (the flow hash's low 20 bits)", gue, c.name, f, h.label, flowLabelOf(f))
					}
					if gue == 0 {
						continue
					}
					if h.proto != ProtoUDP || h.dport != gue || h.sport != guePortOf(f) {
						t.Errorf("gue=%d %s %v: outer proto %d, UDP %#x -> %d, want UDP %#x -> %d (0x8000 | flow hash & 0x7fff)",
							gue, c.name, f, h.proto, h.sport, h.dport, guePortOf(f), gue)
					}
					if prev, ok := ports[h.sport]; ok && j == 0 {
						t.Errorf("flows %v and %v share GUE source port %#x", prev, f, h.sport)
					}
					ports[h.sport] = f
				}
			}
		}
	}
}

// TestOuterTOSAndTTL: the outer header copies the client packet's TOS /
// traffic class (DSCP and ECN bits) whatever the two families, with GUE or
// without, on both parsing paths; the outer IPv4 checksum still verifies,
// the inner packet is unchanged, and the outer TTL / hop limit is
// DEFAULT_TTL (64) whatever the inner one.
func TestOuterTOSAndTTL(t *testing.T) {
	w := newWorld(t, Options{})
	w.addVIPs(t, vip6To4)
	for _, gue := range []uint16{0, 6080} {
		w.setGUE(t, gue)
		for _, tos := range []uint8{0xb8, 0x03, 0xff} {
			for _, ttl := range []uint8{1, 255} {
				for _, c := range encapKinds() {
					s := c.spec
					s.tos, s.hopLimitOrTTL = tos, ttl
					s.sport += uint16(tos) + uint16(ttl)
					in, l2 := build(t, s)
					act, out := w.run(t, in)
					if act != xdpTX {
						t.Fatalf("gue=%d %s tos %#x: %s, want TX", gue, c.name, tos, actionNames[act])
					}
					// Checks the outer IPv4 checksum, that the outer
					// TOS equals the inner one as it arrived, and
					// that the inner bytes are unchanged.
					checkEncap(t, in, l2, out, encapWant{backend: w.expectBackend(c.vip, flowOf(s)), gue: gue, vlan: s.vlan})
					if h := parseOuter(t, out, l2); h.tos != tos || h.ttl != 64 {
						t.Errorf("gue=%d %s, inner tos %#x ttl %d: outer tos %#x ttl %d, want %#x and 64",
							gue, c.name, tos, ttl, h.tos, h.ttl, tos)
					}
				}
			}
		}
	}
}

// TestHashedSourceMatchesMirror: with a source prefix, the outer source is
// the prefix's network part with host bits from the client address's
// hash, exactly as encap.h computes them, for IPv4 and IPv6 outer headers
// and clients of either family; stable across a client's flows, spread
// over clients. A family without a prefix keeps its fixed source.
func TestHashedSourceMatchesMirror(t *testing.T) {
	w := newWorld(t, Options{})
	w.addVIPs(t, vip6To4)
	for _, p := range []struct{ v4, v6 string }{
		{"172.16.0.0/16", "fd00:5::/64"},
		{"192.168.240.0/20", "fd00:6:7:8:9:a000::/84"},
		{"172.17.0.0/16", ""},
		{"", "fd00:7::/48"},
	} {
		set := defaultSettings()
		if p.v4 != "" {
			set.SourcePrefixV4 = netip.MustParsePrefix(p.v4)
		}
		if p.v6 != "" {
			set.SourcePrefixV6 = netip.MustParsePrefix(p.v6)
		}
		if err := w.b.SetSettings(set); err != nil {
			t.Fatal(err)
		}
		for _, c := range []encapCase{
			{"IPv4 in IPv4", syn4(0), vipTCP4},
			{"IPv4 in IPv6", pktSpec{src: client4, dst: vip4to6, dport: 80, proto: ProtoTCP, syn: true}, vip4To6},
			{"IPv6 in IPv6", pktSpec{src: client6, dst: vip6, dport: 80, proto: ProtoTCP, syn: true}, vipTCP6},
			{"IPv6 in IPv4", pktSpec{src: client6, dst: vip6To4.key.Addr, dport: 80, proto: ProtoTCP, syn: true}, vip6To4},
		} {
			pfx, fixed := set.SourcePrefixV4, lbV4
			if backendAddrs[c.vip.backends[0]].Is6() {
				pfx, fixed = set.SourcePrefixV6, lbV6
			}
			seen := map[netip.Addr]bool{}
			for i := range 16 {
				client := c.spec.src.As16()
				client[13] = byte(i)
				s := c.spec
				s.src = netip.AddrFrom16(client).Unmap()
				want := fixed
				if pfx.IsValid() {
					want = hashedSourceOf(pfx, s.src)
				}
				for port := uint16(51000); port < 51003; port++ {
					s.sport = port
					in, l2 := build(t, s)
					act, out := w.run(t, in)
					if act != xdpTX {
						t.Fatalf("%s from %s: %s, want TX", c.name, s.src, actionNames[act])
					}
					h := parseOuter(t, out, l2)
					if h.dst != w.expectBackend(c.vip, flowOf(s)) {
						t.Errorf("%s from %s: outer destination %s, want %s", c.name, s.src, h.dst, w.expectBackend(c.vip, flowOf(s)))
					}
					if h.src != want {
						t.Errorf("prefixes %q and %q, %s from %s port %d: outer source %s, want %s", p.v4, p.v6, c.name, s.src, port, h.src, want)
					}
					if pfx.IsValid() && !pfx.Contains(h.src) {
						t.Errorf("%s from %s: outer source %s outside %s", c.name, s.src, h.src, pfx)
					}
					seen[h.src] = true
				}
			}
			if pfx.IsValid() && len(seen) != 16 {
				t.Errorf("%s inside %s: 16 clients got %d outer sources, want one each", c.name, pfx, len(seen))
			}
		}
	}
}

// quotedReplyWithOptions is quotedReply with a 4-byte option in the quoted
// IPv4 header (IHL 6).
func quotedReplyWithOptions(t *testing.T, s pktSpec) []byte {
	r := s
	r.src, r.dst, r.sport, r.dport = s.dst, s.src, s.dport, s.sport
	r.syn, r.ack, r.ipOptions, r.payload = true, true, true, make([]byte, 64)
	b, l2 := build(t, r)
	return b[l2 : l2+int(b[l2]&0xf)*4+8]
}

// TestTooBigRoutedByMaglev: a "too big" about a flow that has no
// connection entry (its VIP keeps none, or the flow was never seen here)
// goes where Maglev sends the client's flow, which icmp.h rebuilds from
// the quoted reply, reversed: hashed whole, or by the client address for
// source affinity, also when the quoted IPv4 header carries options. The
// ICMP packet is encapsulated unchanged, its GUE port and flow label are
// the client flow's, and it records no connection entry.
func TestTooBigRoutedByMaglev(t *testing.T) {
	w := newWorld(t, Options{})
	w.addVIPs(t, vip6To4, vipPure6, vipUDPSrc6)
	clientN := func(c netip.Addr, i int) netip.Addr {
		a := c.As16()
		a[13] = byte(i)
		return netip.AddrFrom16(a).Unmap()
	}
	cases := []struct {
		name    string
		vip     fixtureVIP
		flow    func(i int) pktSpec // the client's flow
		seen    bool                // the client's packet went through first
		options bool                // quoted IPv4 header with options
	}{
		{"IPv4, VIP without conntrack", vipPure, func(i int) pktSpec {
			return pktSpec{src: client4, dst: vip4pure, sport: uint16(52000 + i), dport: 53, proto: ProtoUDP}
		}, true, false},
		{"IPv4, flow never seen", vipTCP4, func(i int) pktSpec { return syn4(uint16(52100 + i)) }, false, false},
		{"IPv4, source affinity", vipUDPSrc, func(i int) pktSpec {
			return pktSpec{src: clientN(client4, i), dst: vip4, sport: 52200, dport: 53, proto: ProtoUDP}
		}, false, false},
		{"IPv4, quoted header with options", vipTCP4, func(i int) pktSpec { return syn4(uint16(52300 + i)) }, false, true},
		{"IPv4, IPv6 backends", vip4To6, func(i int) pktSpec {
			return pktSpec{src: client4, dst: vip4to6, sport: uint16(52400 + i), dport: 80, proto: ProtoTCP, syn: true}
		}, false, false},
		{"IPv6, VIP without conntrack", vipPure6, func(i int) pktSpec {
			return pktSpec{src: client6, dst: vipPure6.key.Addr, sport: uint16(52500 + i), dport: 53, proto: ProtoUDP}
		}, true, false},
		{"IPv6, flow never seen", vipTCP6, func(i int) pktSpec {
			return pktSpec{src: client6, dst: vip6, sport: uint16(52600 + i), dport: 80, proto: ProtoTCP, syn: true}
		}, false, false},
		{"IPv6, source affinity", vipUDPSrc6, func(i int) pktSpec {
			return pktSpec{src: clientN(client6, i), dst: vipUDPSrc6.key.Addr, sport: 52700, dport: 53, proto: ProtoUDP}
		}, false, false},
		{"IPv6, IPv4 backends", vip6To4, func(i int) pktSpec {
			return pktSpec{src: client6, dst: vip6To4.key.Addr, sport: uint16(52800 + i), dport: 80, proto: ProtoTCP, syn: true}
		}, false, false},
	}
	for _, gue := range []uint16{0, 6080} {
		w.setGUE(t, gue)
		for _, c := range cases {
			before := w.stats(t)
			vcBefore, err := w.b.VIPCounters(c.vip.num)
			if err != nil {
				t.Fatal(err)
			}
			backends := map[netip.Addr]bool{}
			const flows = 8
			for i := range flows {
				s := c.flow(i)
				f := flowOf(s)
				want := w.expectBackend(c.vip, f)
				backends[want] = true
				if c.seen {
					in, l2 := build(t, s)
					act, out := w.run(t, in)
					if act != xdpTX {
						t.Fatalf("gue=%d %s: %v: %s, want TX", gue, c.name, f, actionNames[act])
					}
					checkEncap(t, in, l2, out, encapWant{backend: want, gue: gue})
				}
				var quote []byte
				if c.options {
					quote = quotedReplyWithOptions(t, s)
				} else {
					quote = quotedReply(t, s)
				}
				icmp := pktSpec{src: netip.MustParseAddr("10.9.9.9"), dst: s.dst, icmpType: 3, icmpCode: 4, icmpMTU: 1400, icmpPayload: quote}
				if s.dst.Is6() {
					icmp = pktSpec{src: netip.MustParseAddr("fd00:9::9"), dst: s.dst, icmpType: ICMPv6PacketTooBig, icmpMTU: 1400, icmpPayload: quote}
				}
				in, l2 := build(t, icmp)
				act, out := w.run(t, in)
				if act != xdpTX {
					t.Fatalf("gue=%d %s: too big about %v: %s, want TX", gue, c.name, f, actionNames[act])
				}
				checkEncap(t, in, l2, out, encapWant{backend: want, gue: gue})
				h := parseOuter(t, out, l2)
				if gue != 0 && h.sport != guePortOf(f) {
					t.Errorf("gue=%d %s: too big about %v: GUE source port %#x, want the client flow's %#x", gue, c.name, f, h.sport, guePortOf(f))
				}
				if h.v6 && h.label != flowLabelOf(f) {
					t.Errorf("gue=%d %s: too big about %v: flow label %#05x, want the client flow's %#05x", gue, c.name, f, h.label, flowLabelOf(f))
				}
				if _, ok, err := w.b.LookupFlow(f); err != nil || ok {
					t.Errorf("gue=%d %s: the too big recorded flow %v (err %v)", gue, c.name, f, err)
				}
			}
			if len(backends) < 2 {
				t.Fatalf("%s: Maglev sends all %d flows to one backend: the case cannot tell a wrong hash", c.name, flows)
			}
			if got := w.stats(t)["icmp_too_big_forwarded"] - before["icmp_too_big_forwarded"]; got != flows {
				t.Errorf("gue=%d %s: icmp_too_big_forwarded rose by %d, want %d", gue, c.name, got, flows)
			}
			vc, err := w.b.VIPCounters(c.vip.num)
			if err != nil {
				t.Fatal(err)
			}
			wantPkts := uint64(flows)
			if c.seen {
				wantPkts *= 2
			}
			if vc.Packets-vcBefore.Packets != wantPkts || vc.NewFlows != vcBefore.NewFlows || vc.ConnHits != vcBefore.ConnHits {
				t.Errorf("gue=%d %s: VIP counters %+v -> %+v, want %d more packets, no new flow, no hit", gue, c.name, vcBefore, vc, wantPkts)
			}
		}
	}
}
