package datapath

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
)

// vipUDP6 is a UDP VIP on the IPv6 VIP address, for the tests that need
// both protocols there; addVIPUDP6 installs it.
var vipUDP6 = fixtureVIP{VIPKey{vip6, 53, ProtoUDP}, 6, 0, []uint32{11, 12, 13}}

func addVIPUDP6(tb testing.TB, w *world) {
	tb.Helper()
	if err := w.b.SetVIP(vipUDP6.key, vipUDP6.num, vipUDP6.flags); err != nil {
		tb.Fatal(err)
	}
	w.publish(tb, vipUDP6.key, vipUDP6.backends...)
}

// routingHeaderAt is the offset of the first routing header in the IPv6
// frame in (IPv6 header at l2), as withExtHeaders builds it.
func routingHeaderAt(tb testing.TB, in []byte, l2 int) int {
	tb.Helper()
	next, off := in[l2+6], l2+40
	for next != extRouting {
		if next != extHopByHop && next != extDestOpts {
			tb.Fatalf("no routing header in the chain (next header %d)", next)
		}
		next, off = in[off], off+(int(in[off+1])+1)*8
	}
	return off
}

// withSegmentsLeft is in with the Segments Left field of its first
// routing header set to left.
func withSegmentsLeft(tb testing.TB, in []byte, l2 int, left byte) []byte {
	tb.Helper()
	out := slices.Clone(in)
	out[routingHeaderAt(tb, out, l2)+3] = left
	return out
}

// TestRoutingHeaderWaypoint: a VIP packet whose routing header has
// segments left is on its way through the VIP address to another
// destination (RFC 8200 section 4.4): it is no VIP's, and passes to the
// stack untouched, counting nothing and recording no flow, even a packet
// of a flow the connection table holds. With no segments left the VIP is
// its final destination, and it is balanced as any other.
func TestRoutingHeaderWaypoint(t *testing.T) {
	w := newWorld(t, Options{})
	addVIPUDP6(t, w)
	chains := []struct {
		name string
		exts [][2]int
	}{
		{"routing", [][2]int{{extRouting, 8}}},
		{"hop-by-hop, routing", [][2]int{{extHopByHop, 8}, {extRouting, 24}}},
		{"routing, destination options", [][2]int{{extRouting, 8}, {extDestOpts, 8}}},
	}
	port := uint16(47000)
	for _, c := range chains {
		for _, v := range []fixtureVIP{vipTCP6, vipUDP6} {
			for _, left := range []byte{0, 1, 255} {
				port++
				s := pktSpec{src: client6, dst: vip6, sport: port, dport: v.key.Port, proto: v.key.Proto, syn: true, payload: []byte("abcd")}
				plain, l2 := build(t, s)
				in := withSegmentsLeft(t, withExtHeaders(plain, l2, c.exts...), l2, left)
				before := w.stats(t)
				vc, err := w.b.VIPCounters(v.num)
				if err != nil {
					t.Fatal(err)
				}
				act, out := w.run(t, in)
				_, recorded, err := w.b.LookupFlow(flowOf(s))
				if err != nil {
					t.Fatal(err)
				}
				if left == 0 {
					if act != xdpTX {
						t.Errorf("%s, proto %d, no segments left: %s, want TX", c.name, v.key.Proto, actionNames[act])
						continue
					}
					checkEncap(t, in, l2, out, encapWant{backend: w.expectBackend(v, flowOf(s))})
					if !recorded {
						t.Errorf("%s, proto %d, no segments left: flow not recorded", c.name, v.key.Proto)
					}
					continue
				}
				if act != xdpPass || !bytes.Equal(out[:len(in)], in) {
					t.Errorf("%s, proto %d, %d segments left: %s (changed: %v), want PASS untouched",
						c.name, v.key.Proto, left, actionNames[act], !bytes.Equal(out[:len(in)], in))
				}
				if d := statsDelta(before, w.stats(t)); len(d) != 0 {
					t.Errorf("%s, proto %d, %d segments left: counters moved by %v", c.name, v.key.Proto, left, d)
				}
				if after, _ := w.b.VIPCounters(v.num); after != vc {
					t.Errorf("%s, proto %d, %d segments left: VIP counters moved: %+v -> %+v", c.name, v.key.Proto, left, vc, after)
				}
				if recorded {
					t.Errorf("%s, proto %d, %d segments left: flow %v recorded", c.name, v.key.Proto, left, flowOf(s))
				}
			}
		}
	}

	// A flow the connection table holds: its packets through a waypoint
	// are not sent to its backend by the entry either.
	s := pktSpec{src: client6, dst: vip6, sport: 47500, dport: 80, proto: ProtoTCP, syn: true}
	w.open(t, vipTCP6, s)
	plain, l2 := build(t, ackOf(s))
	in := withSegmentsLeft(t, withExtHeaders(plain, l2, [2]int{extRouting, 8}), l2, 1)
	if act, out := w.run(t, in); act != xdpPass || !bytes.Equal(out[:len(in)], in) {
		t.Errorf("recorded flow's packet with a segment left: %s, want PASS untouched", actionNames[act])
	}
}

// TestTruncatedRoutingHeader: a routing header cut short is truncated,
// whatever its Segments Left says and even when that byte is past the
// frame's end: dropped, counted, never read out of bounds (the verifier
// would refuse the program) nor passed as a waypoint.
func TestTruncatedRoutingHeader(t *testing.T) {
	w := newWorld(t, Options{})
	s := pktSpec{src: client6, dst: vip6, sport: 47600, dport: 80, proto: ProtoTCP, syn: true}
	plain, l2 := build(t, s)
	full := withSegmentsLeft(t, withExtHeaders(plain, l2, [2]int{extHopByHop, 8}, [2]int{extRouting, 24}), l2, 1)
	rh := routingHeaderAt(t, full, l2)
	for _, c := range []struct {
		name        string
		frame, ipv6 int // bytes of the routing header in the frame, and as the IPv6 length declares
	}{
		{"Segments Left past the frame's end", 3, 3},
		{"Segments Left in, the rest cut", 4, 4},
		{"frame whole, IPv6 length cutting the header", 24 + 20, 4},
		{"IPv6 length whole, frame cut before Segments Left", 3, 24 + 20},
	} {
		in := slices.Clone(full[:rh+c.frame])
		plen := rh + c.ipv6 - l2 - 40
		in[l2+4], in[l2+5] = byte(plen>>8), byte(plen)
		before := w.stats(t)
		act, _ := w.run(t, in)
		if act != xdpDrop {
			t.Errorf("%s: %s, want DROP", c.name, actionNames[act])
		}
		if d := statsDelta(before, w.stats(t)); len(d) != 1 || d["drop_truncated"] != 1 {
			t.Errorf("%s: counters moved by %v, want drop_truncated +1", c.name, d)
		}
	}
}

// TestInvalidIPv6SourcesDropped: TCP and UDP to an IPv6 VIP from a source
// that is no single host's (IPv4-mapped, multicast, unspecified, loopback:
// RFC 4291 section 2.5.5.2, RFC 6890) are dropped, counted as
// drop_invalid_source, and reach neither a backend nor the connection
// table. Before, they were balanced like any flow. Packets from those
// sources that are no VIP's (another port, a waypoint) still pass.
func TestInvalidIPv6SourcesDropped(t *testing.T) {
	w := newWorld(t, Options{})
	addVIPUDP6(t, w)
	specs := []pktSpec{
		{dst: vip6, sport: 47700, dport: 80, proto: ProtoTCP, syn: true},
		{dst: vip6, sport: 47701, dport: 80, proto: ProtoTCP, ack: true, payload: []byte("data")},
		{dst: vip6, sport: 47702, dport: 53, proto: ProtoUDP, payload: []byte("query")},
	}
	for _, src := range []string{"::ffff:10.0.0.9", "::ffff:0.0.0.0", "ff02::1", "ff0e::1:2", "ff00::", "::", "::1"} {
		for _, s := range specs {
			s.src = netip.MustParseAddr(src)
			v := vipTCP6
			if s.proto == ProtoUDP {
				v = vipUDP6
			}
			in, _ := build(t, s)
			before := w.stats(t)
			vc, err := w.b.VIPCounters(v.num)
			if err != nil {
				t.Fatal(err)
			}
			if act, _ := w.run(t, in); act != xdpDrop {
				t.Errorf("%v from %s: %s, want DROP", flowOf(s), src, actionNames[act])
			}
			if d := statsDelta(before, w.stats(t)); len(d) != 1 || d["drop_invalid_source"] != 1 {
				t.Errorf("%v from %s: counters moved by %v, want drop_invalid_source +1", flowOf(s), src, d)
			}
			if after, _ := w.b.VIPCounters(v.num); after != vc {
				t.Errorf("%v from %s: VIP counters moved: %+v -> %+v", flowOf(s), src, vc, after)
			}
			if _, ok, err := w.b.LookupFlow(flowOf(s)); err != nil || ok {
				t.Errorf("%v from %s recorded (%v)", flowOf(s), src, err)
			}
		}
	}

	// Controls: a unicast source is balanced; an invalid source's packet
	// to a port no VIP serves, or through the VIP address as a waypoint,
	// is the stack's.
	w.open(t, vipTCP6, pktSpec{src: netip.MustParseAddr("fd00::9"), dst: vip6, sport: 47710, dport: 80, proto: ProtoTCP, syn: true})
	multicast := netip.MustParseAddr("ff02::1")
	other, _ := build(t, pktSpec{src: multicast, dst: vip6, sport: 47711, dport: 81, proto: ProtoTCP, syn: true})
	plain, l2 := build(t, pktSpec{src: multicast, dst: vip6, sport: 47712, dport: 80, proto: ProtoTCP, syn: true})
	waypoint := withSegmentsLeft(t, withExtHeaders(plain, l2, [2]int{extRouting, 8}), l2, 1)
	for name, in := range map[string][]byte{"to port 81": other, "through a waypoint": waypoint} {
		before := w.stats(t)
		if act, out := w.run(t, in); act != xdpPass || !bytes.Equal(out[:len(in)], in) {
			t.Errorf("from %s %s: %s, want PASS untouched", multicast, name, actionNames[act])
		}
		if d := statsDelta(before, w.stats(t)); len(d) != 0 {
			t.Errorf("from %s %s: counters moved by %v", multicast, name, d)
		}
	}
}
