package datapath

import (
	"encoding/binary"
	"maps"
	"testing"
)

// fragmentHeaderAt is the offset of the first fragment header in the IPv6
// frame in (IPv6 header at l2), as withExtHeaders builds it.
func fragmentHeaderAt(tb testing.TB, in []byte, l2 int) int {
	tb.Helper()
	next, off := in[l2+6], l2+40
	for next != extFragment {
		if next != extHopByHop && next != extDestOpts && next != extRouting {
			tb.Fatalf("no fragment header in the chain (next header %d)", next)
		}
		next, off = in[off], off+(int(in[off+1])+1)*8
	}
	return off
}

// TestIPv6AtomicFragment: an IPv6 packet whose fragment header says
// offset 0 and no more fragments is an atomic fragment, the whole packet
// (RFC 6946: processed as any other; Linux does). Its ports are behind the
// fragment header, so it is balanced by them like any VIP packet and sent
// whole, the header included; before, it was dropped as drop_fragment,
// which left such flows (from stacks and translators that add the header
// to every packet) with no service at all. A fragment header with an
// offset or the M flag is a fragment as before, as is one whose reserved
// byte is set (then its length is not known for certain); the two
// reserved bits beside the M flag are ignored, as RFC 8200 says. A
// fragment header cut short is drop_truncated, as any header cut short.
func TestIPv6AtomicFragment(t *testing.T) {
	w := newWorld(t, Options{})
	addVIPUDP6(t, w)
	port := uint16(47800)
	for _, c := range []struct {
		name     string
		exts     [][2]int
		fragOff  uint16 // offset and flags, as on the wire
		reserved byte
		balanced bool
	}{
		{"atomic", [][2]int{{extFragment, 8}}, 0, 0, true},
		{"atomic, reserved bits set", [][2]int{{extFragment, 8}}, 0x0006, 0, true},
		{"atomic behind destination options", [][2]int{{extDestOpts, 16}, {extFragment, 8}}, 0, 0, true},
		{"atomic, then destination options and routing", [][2]int{{extFragment, 8}, {extDestOpts, 8}, {extRouting, 24}}, 0, 0, true},
		// Fragments.
		{"first fragment", [][2]int{{extFragment, 8}}, 0x0001, 0, false},
		{"last fragment", [][2]int{{extFragment, 8}}, 1480, 0, false},
		{"atomic, reserved byte set", [][2]int{{extFragment, 8}}, 0, 1, false},
	} {
		for _, v := range []fixtureVIP{vipTCP6, vipUDP6} {
			port++
			s := pktSpec{src: client6, dst: vip6, sport: port, dport: v.key.Port, proto: v.key.Proto, syn: true, payload: []byte("abcd")}
			plain, l2 := build(t, s)
			in := withExtHeaders(plain, l2, c.exts...)
			fh := fragmentHeaderAt(t, in, l2)
			in[fh+1] = c.reserved
			binary.BigEndian.PutUint16(in[fh+2:], c.fragOff)
			binary.BigEndian.PutUint32(in[fh+4:], 0x5eed)
			before := w.stats(t)
			act, out := w.run(t, in)
			d := statsDelta(before, w.stats(t))
			_, recorded, err := w.b.LookupFlow(flowOf(s))
			if err != nil {
				t.Fatal(err)
			}
			if !c.balanced {
				if act != xdpDrop || !maps.Equal(d, map[string]uint64{"drop_fragment": 1}) || recorded {
					t.Errorf("%s, proto %d: %s, counters moved by %v, recorded %v; want DROP, drop_fragment +1", c.name, v.key.Proto, actionNames[act], d, recorded)
				}
				continue
			}
			if act != xdpTX {
				t.Errorf("%s, proto %d: %s (counters moved by %v), want TX", c.name, v.key.Proto, actionNames[act], d)
				continue
			}
			// The whole packet, fragment header included, to the
			// backend that Maglev gives its ports.
			checkEncap(t, in, l2, out, encapWant{backend: w.expectBackend(v, flowOf(s))})
			if !recorded {
				t.Errorf("%s, proto %d: flow %v not recorded by its ports", c.name, v.key.Proto, flowOf(s))
			}
		}
	}

	// A fragment header that the IPv6 length cuts short is truncated,
	// as any other header cut short is.
	plain, l2 := build(t, pktSpec{src: client6, dst: vip6, sport: 47900, dport: 80, proto: ProtoTCP, syn: true})
	in := withExtHeaders(plain, l2, [2]int{extFragment, 8})
	in = in[:l2+40+4]
	binary.BigEndian.PutUint16(in[l2+4:], 4)
	before := w.stats(t)
	if act, _ := w.run(t, in); act != xdpDrop {
		t.Errorf("cut fragment header: %s, want DROP", actionNames[act])
	}
	if d := statsDelta(before, w.stats(t)); !maps.Equal(d, map[string]uint64{"drop_truncated": 1}) {
		t.Errorf("cut fragment header: counters moved by %v, want drop_truncated +1", d)
	}
}
