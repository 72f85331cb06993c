package datapath

import (
	"bytes"
	"testing"
)

// IPv4 options (RFC 791 section 3.1).
const (
	ipoptEnd  = 0
	ipoptNoop = 1
	ipoptRR   = 7
	ipoptLSRR = 131
	ipoptSSRR = 137
)

// sourceRoute is a loose (ipoptLSRR) or strict (ipoptSSRR) source route
// option through hops addresses with pointer ptr (4: none used yet; past
// the option's length: the route is complete).
func sourceRoute(typ byte, hops int, ptr byte) []byte {
	o := []byte{typ, byte(3 + 4*hops), ptr}
	for i := 0; i < hops; i++ {
		o = append(o, 192, 0, 2, byte(1+i))
	}
	return o
}

// padOptions pads IPv4 options to a multiple of 4 bytes with end-of-list.
func padOptions(o []byte) []byte {
	for len(o)%4 != 0 {
		o = append(o, ipoptEnd)
	}
	return o
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// TestIPv4SourceRouteWaypoint: an IPv4 packet to a VIP whose loose or
// strict source route has addresses left (its pointer not past its length)
// is on its way through the VIP address to another destination (RFC 791
// section 3.1), as an IPv6 packet whose routing header has segments left
// is (TestRoutingHeaderWaypoint): no VIP's packet, so it passes to the
// stack untouched, counting nothing and recording no flow, even a packet
// of a flow the connection table holds, and an echo request is not
// answered. Before, the balancer sent it to a backend, whose stack would
// route it on if it accepts source routes. With the route complete, or
// with other options, the VIP is the packet's destination: it is balanced
// (or answered) as before.
func TestIPv4SourceRouteWaypoint(t *testing.T) {
	w := newWorld(t, Options{})
	rr := []byte{ipoptRR, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0}
	port := uint16(47600)
	for _, c := range []struct {
		name     string
		opts     []byte
		waypoint bool
	}{
		{"loose route, none used", sourceRoute(ipoptLSRR, 2, 4), true},
		{"strict route, one of two used", sourceRoute(ipoptSSRR, 2, 8), true},
		{"loose route after NOPs and a record route", concat([]byte{ipoptNoop, ipoptNoop}, rr, sourceRoute(ipoptLSRR, 1, 4)), true},
		{"strict route of 9 hops, last one left (IHL 15)", sourceRoute(ipoptSSRR, 9, 36), true},
		// Controls: the VIP is the final destination.
		{"loose route complete", sourceRoute(ipoptLSRR, 2, 12), false},
		{"strict route complete (IHL 15)", sourceRoute(ipoptSSRR, 9, 40), false},
		{"record route", rr, false},
		{"NOPs", []byte{ipoptNoop, ipoptNoop, ipoptNoop, ipoptNoop}, false},
		{"a loose route behind end of list", concat([]byte{ipoptEnd}, sourceRoute(ipoptLSRR, 1, 4)), false},
	} {
		opts := padOptions(c.opts)
		if len(opts) > 40 {
			t.Fatalf("%s: %d bytes of options", c.name, len(opts))
		}
		port++
		for _, s := range []pktSpec{
			{src: client4, dst: vip4, sport: port, dport: 80, proto: ProtoTCP, syn: true},
			{src: client4, dst: vip4, sport: port, dport: 53, proto: ProtoUDP, payload: []byte("abcd"), vlan: 7},
			{src: client4, dst: vip4, icmpType: 8, icmpID: 7, icmpSeq: port, icmpPayload: []byte("ping")},
		} {
			plain, l2 := build(t, s)
			in := withIPv4Options(plain, l2, opts)
			before := w.stats(t)
			act, out := w.run(t, bytes.Clone(in))
			_, recorded, err := w.b.LookupFlow(flowOf(s))
			if err != nil {
				t.Fatal(err)
			}
			d := statsDelta(before, w.stats(t))
			switch {
			case c.waypoint:
				if act != xdpPass || !bytes.Equal(out[:len(in)], in) {
					t.Errorf("%s, %v: %s (changed: %v), want PASS untouched", c.name, flowOf(s), actionNames[act], !bytes.Equal(out[:len(in)], in))
				}
				if len(d) != 0 || recorded {
					t.Errorf("%s, %v: counters moved by %v, flow recorded %v; want neither", c.name, flowOf(s), d, recorded)
				}
			case s.proto == 0:
				if act != xdpTX || d["icmp_echo_reply"] != 1 {
					t.Errorf("%s: echo request %s, counters moved by %v, want TX answered", c.name, actionNames[act], d)
				}
			default:
				if act != xdpTX || !recorded {
					t.Errorf("%s, %v: %s, recorded %v, want TX and recorded", c.name, flowOf(s), actionNames[act], recorded)
					continue
				}
				v := vipTCP4
				if s.proto == ProtoUDP {
					v = vipUDPSrc
				}
				checkEncap(t, in, l2, out, encapWant{backend: w.expectBackend(v, flowOf(s)), vlan: s.vlan})
			}
		}
	}

	// A recorded flow's packet through the VIP address as a waypoint is
	// not sent on by the entry either.
	s := syn4(47700)
	w.open(t, vipTCP4, s)
	plain, l2 := build(t, ackOf(s))
	in := withIPv4Options(plain, l2, padOptions(sourceRoute(ipoptLSRR, 1, 4)))
	before := w.stats(t)
	if act, out := w.run(t, bytes.Clone(in)); act != xdpPass || !bytes.Equal(out[:len(in)], in) {
		t.Errorf("recorded flow's packet through a waypoint: %s, want PASS untouched", actionNames[act])
	}
	if d := statsDelta(before, w.stats(t)); len(d) != 0 {
		t.Errorf("recorded flow's packet through a waypoint: counters moved by %v", d)
	}
}
