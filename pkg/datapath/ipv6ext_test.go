package datapath

import (
	"bytes"
	"net/netip"
	"testing"
)

// withExtHeaders returns the IPv6 frame in (IPv6 header at l2) with the
// extension headers exts inserted after its fixed header, each given as
// (type, total length in bytes, a multiple of 8), chained in order to the
// original next header. The L4 checksum stays valid: its pseudo-header
// holds the upper-layer length, which does not change. A routing header
// is of type 4 (segment routing) with no segments left: the VIP is the
// packet's final destination (see withSegmentsLeft).
func withExtHeaders(in []byte, l2 int, exts ...[2]int) []byte {
	var chain []byte
	next := in[l2+6]
	for i := len(exts) - 1; i >= 0; i-- {
		typ, n := exts[i][0], exts[i][1]
		h := make([]byte, n)
		h[0], h[1] = next, byte(n/8-1)
		if typ == extRouting {
			h[2] = 4
		} else if n >= 8 {
			h[2], h[3] = 1, byte(n-4) // a PadN option filling the rest
		}
		chain = append(h, chain...)
		next = byte(typ)
	}
	out := append([]byte{}, in[:l2+40]...)
	out[l2+6] = next
	plen := int(out[l2+4])<<8 | int(out[l2+5])
	plen += len(chain)
	out[l2+4], out[l2+5] = byte(plen>>8), byte(plen)
	out = append(out, chain...)
	return append(out, in[l2+40:]...)
}

const (
	extHopByHop = 0
	extRouting  = 43
	extFragment = 44
	extDestOpts = 60
)

// TestIPv6ExtensionHeaders: a VIP packet behind extension headers is
// balanced by its L4 header like any other and sent whole, headers
// included; a fragment header anywhere in the chain is a fragment; a chain
// cut short is truncated; one too long to follow goes to the stack, counted.
func TestIPv6ExtensionHeaders(t *testing.T) {
	w := newWorld(t, Options{})
	forwarded := []struct {
		name string
		exts [][2]int
	}{
		{"hop-by-hop", [][2]int{{extHopByHop, 8}}},
		{"hop-by-hop, destination options, routing", [][2]int{{extHopByHop, 8}, {extDestOpts, 16}, {extRouting, 24}}},
		{"four headers", [][2]int{{extHopByHop, 8}, {extDestOpts, 8}, {extRouting, 8}, {extDestOpts, 8}}},
		{"L4 header at byte 254, the furthest followed", [][2]int{{extHopByHop, 200}}},
	}
	for i, c := range forwarded {
		t.Run(c.name, func(t *testing.T) {
			s := pktSpec{src: client6, dst: vip6, sport: uint16(46000 + i), dport: 80, proto: ProtoTCP, syn: true}
			plain, l2 := build(t, s)
			in := withExtHeaders(plain, l2, c.exts...)
			before := w.stats(t)
			act, out := w.run(t, in)
			if act != xdpTX {
				t.Fatalf("action %s, want TX", actionNames[act])
			}
			// checkEncap compares the whole inner packet, extension
			// headers included, with what came in.
			checkEncap(t, in, l2, out, encapWant{backend: w.expectBackend(vipTCP6, flowOf(s))})
			if _, ok, err := w.b.LookupFlow(flowOf(s)); err != nil || !ok {
				t.Errorf("flow %v not recorded by its ports (%v)", flowOf(s), err)
			}
			if after := w.stats(t); after["pass_malformed"] != before["pass_malformed"] {
				t.Errorf("pass_malformed moved")
			}
		})
	}

	for _, c := range []struct {
		name   string
		exts   [][2]int
		cut    int // bytes cut off the end of the frame (and its IPv6 length)
		act    uint32
		reason string
	}{
		{"fragment behind destination options", [][2]int{{extDestOpts, 8}, {extFragment, 8}}, 0, xdpDrop, "drop_fragment"},
		{"fragment after four headers", [][2]int{{extHopByHop, 8}, {extDestOpts, 8}, {extRouting, 8}, {extDestOpts, 8}, {extFragment, 8}}, 0, xdpDrop, "drop_fragment"},
		{"five headers", [][2]int{{extHopByHop, 8}, {extDestOpts, 8}, {extRouting, 8}, {extDestOpts, 8}, {extDestOpts, 8}}, 0, xdpPass, "pass_malformed"},
		{"L4 header beyond 255 bytes", [][2]int{{extHopByHop, 208}}, 0, xdpPass, "pass_malformed"},
		{"chain cut inside a header", [][2]int{{extHopByHop, 8}, {extRouting, 24}}, 20 + 24 - 4, xdpDrop, "drop_truncated"},
		{"TCP header cut behind a header", [][2]int{{extHopByHop, 8}}, 4, xdpDrop, "drop_truncated"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := pktSpec{src: client6, dst: vip6, sport: 46100, dport: 80, proto: ProtoTCP, syn: true}
			plain, l2 := build(t, s)
			in := withExtHeaders(plain, l2, c.exts...)
			if c.cut > 0 {
				in = in[:len(in)-c.cut]
				plen := len(in) - l2 - 40
				in[l2+4], in[l2+5] = byte(plen>>8), byte(plen)
			}
			before := w.stats(t)
			act, out := w.run(t, in)
			if act != c.act {
				t.Fatalf("action %s, want %s", actionNames[act], actionNames[c.act])
			}
			if got := w.stats(t)[c.reason] - before[c.reason]; got != 1 {
				t.Errorf("%s rose by %d, want 1", c.reason, got)
			}
			if act == xdpPass && string(out[:len(in)]) != string(in) {
				t.Errorf("passed frame changed")
			}
		})
	}

	// ICMPv6 behind an extension header is the stack's, even an echo
	// request to the VIP.
	echo := pktSpec{src: client6, dst: vip6, icmpType: 128, icmpID: 1, icmpSeq: 1, icmpPayload: []byte("ping")}
	plain, l2 := build(t, echo)
	in := withExtHeaders(plain, l2, [2]int{extHopByHop, 8})
	if act, _ := w.run(t, in); act != xdpPass {
		t.Errorf("echo request behind hop-by-hop: %s, want PASS", actionNames[act])
	}
	// But a header that the IPv6 length cuts short is truncated whatever
	// it names next: here 4 of the hop-by-hop header's 8 bytes.
	cut := append([]byte(nil), in[:l2+40+4]...)
	cut[l2+4], cut[l2+5] = 0, 4
	before := w.stats(t)
	if act, _ := w.run(t, cut); act != xdpDrop {
		t.Errorf("echo request behind a cut hop-by-hop header: %s, want DROP", actionNames[act])
	}
	if got := w.stats(t)["drop_truncated"] - before["drop_truncated"]; got != 1 {
		t.Errorf("drop_truncated rose by %d for a cut hop-by-hop header, want 1", got)
	}
}

// TestV4MappedIPv6 sends IPv6 packets to ::ffff:a.b.c.d, the way the flow
// key and the decap address table write IPv4: they are not an IPv4 VIP's
// nor an IPv4 encap address's, and pass untouched, recording nothing.
func TestV4MappedIPv6(t *testing.T) {
	w := newWorld(t, Options{})
	mapped := func(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }
	// Built as IPv6 packets, then given the mapped addresses (the
	// program checks no L4 checksum).
	syn := pktSpec{src: client6, dst: vip6, sport: 777, dport: 80, proto: ProtoTCP, syn: true}
	echo := pktSpec{src: client6, dst: vip6, icmpType: 128, icmpID: 1, icmpSeq: 1, icmpPayload: []byte("ping")}
	before, err := w.b.VIPCounters(vipTCP4.num)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []pktSpec{syn, echo} {
		in, l2 := build(t, s)
		src, dst := mapped(client4).As16(), mapped(vip4).As16()
		copy(in[l2+8:], src[:])
		copy(in[l2+24:], dst[:])
		if act, out := w.run(t, in); act != xdpPass || !bytes.Equal(out[:len(in)], in) {
			t.Errorf("IPv6 to %s: %s (changed: %v), want PASS untouched", mapped(vip4), actionNames[act], !bytes.Equal(out[:len(in)], in))
		}
	}
	v4 := syn4(777)
	if _, ok, err := w.b.LookupFlow(flowOf(v4)); err != nil || ok {
		t.Errorf("the IPv4 flow %v was recorded by an IPv6 packet (%v)", flowOf(v4), err)
	}
	if after, _ := w.b.VIPCounters(vipTCP4.num); after != before {
		t.Errorf("IPv4 VIP counters moved: %+v -> %+v", before, after)
	}

	// Decap: an IPv6 outer header to a backend's IPv4 address, mapped,
	// carrying IPIP.
	d := loadFixtureDecap(t)
	inner, l2 := build(t, syn4(778))
	be := w.expectBackend(vipTCP4, flowOf(syn4(778)))
	frame := append([]byte{}, inner[:12]...)
	frame = append(frame, 0x86, 0xdd, 0x60, 0, 0, 0, byte((len(inner)-l2)>>8), byte(len(inner)-l2), 4, 64)
	src, dst := lbV6.As16(), mapped(be).As16()
	frame = append(append(append(frame, src[:]...), dst[:]...), inner[l2:]...)
	before2, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if act, out := runProg(t, d.objs.XdpDecap, frame); act != xdpPass || !bytes.Equal(out[:len(frame)], frame) {
		t.Errorf("decap of an IPv6 outer to %s: %s, want PASS untouched", mapped(be), actionNames[act])
	}
	after2, _ := d.Stats()
	if after2["decap_ipv6_outer"] != before2["decap_ipv6_outer"] || after2["pass"] != before2["pass"]+1 {
		t.Errorf("decap counters %v -> %v, want one more pass and no IPv6 decap", before2, after2)
	}
}

// TestLongChainToHostAddress: an IPv6 packet with a chain of extension
// headers too long to follow, to an address that is no VIP's but shares
// a VIP address's bit in vip_filter, is host traffic: passed untouched and
// not counted as pass_malformed, which counts such VIP packets (its
// neighbour in the filter decided the count before).
func TestLongChainToHostAddress(t *testing.T) {
	w := newWorld(t, Options{})
	want := vipFilterBit(toAddr(vip6))
	var host netip.Addr
	for i := uint32(1); i < 1<<24 && !host.IsValid(); i++ {
		a := netip.AddrFrom16([16]byte{0xfd, 0, 0x02, 0, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		if vipFilterBit(toAddr(a)) == want {
			host = a
		}
	}
	if !host.IsValid() {
		t.Fatal("no address shares the VIP's filter bit")
	}
	five := [][2]int{{extHopByHop, 8}, {extDestOpts, 8}, {extRouting, 8}, {extDestOpts, 8}, {extDestOpts, 8}}
	for _, c := range []struct {
		dst     netip.Addr
		counted uint64
	}{
		{vip6, 1}, // the control: a VIP packet's chain is counted
		{host, 0},
	} {
		plain, l2 := build(t, pktSpec{src: client6, dst: c.dst, sport: 46200, dport: 80, proto: ProtoTCP, syn: true})
		in := withExtHeaders(plain, l2, five...)
		before := w.stats(t)
		act, out := w.run(t, in)
		if act != xdpPass || !bytes.Equal(out[:len(in)], in) {
			t.Errorf("five extension headers to %s: %s, want PASS untouched", c.dst, actionNames[act])
		}
		if got := statsDelta(before, w.stats(t)); got["pass_malformed"] != c.counted || len(got) > int(c.counted) {
			t.Errorf("five extension headers to %s: counters moved by %v, want pass_malformed +%d only", c.dst, got, c.counted)
		}
	}
}
