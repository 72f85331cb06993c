package datapath

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestGoldenPlacement sends fixed packets and expects literal backends, GUE
// source ports and hashed outer sources. Every other test computes its expectation with the Go
// mirrors (FlowHash, MaglevSlot) of the BPF code, so a change made to both
// would pass them. These literals pin the flow hash (hash_flow, hash_addr,
// FLOW_HASH_SEED), the Maglev table pkg/maglev builds for the fixture's
// backends and the hash's scaling to a slot: a change to any of them moves
// flows that no connection table holds, between balancers of different
// versions too, so it must be a deliberate, visible change to this table.
// The literals were taken from the code as it was when this test was added.
func TestGoldenPlacement(t *testing.T) {
	w := newWorld(t, Options{})
	w.setGUE(t, 6080)
	for _, g := range []struct {
		name    string
		spec    pktSpec
		vip     fixtureVIP
		backend netip.Addr
		port    uint16 // GUE source port: 0x8000 | 15 bits of the flow hash
	}{
		{"IPv4 TCP SYN", syn4(50000), vipTCP4,
			netip.MustParseAddr("10.2.3.2"), 0x9362},
		{"IPv6 TCP SYN", pktSpec{src: client6, dst: vip6, sport: 50001, dport: 80, proto: ProtoTCP, syn: true}, vipTCP6,
			netip.MustParseAddr("fd00:2:3::2"), 0xac60},
		{"UDP without connection table", pktSpec{src: client4, dst: vip4pure, sport: 50002, dport: 53, proto: ProtoUDP, payload: []byte("q")}, vipPure,
			netip.MustParseAddr("10.2.2.2"), 0xc2d1},
		// Source affinity: the backend follows the client address alone
		// (hash_addr), hence three clients; the GUE port still follows
		// the whole flow.
		{"source affinity, client 10.0.0.2", pktSpec{src: client4, dst: vip4, sport: 50003, dport: 53, proto: ProtoUDP, payload: []byte("q")}, vipUDPSrc,
			netip.MustParseAddr("10.2.2.2"), 0xe127},
		{"source affinity, client 10.0.0.3", pktSpec{src: netip.MustParseAddr("10.0.0.3"), dst: vip4, sport: 50006, dport: 53, proto: ProtoUDP, payload: []byte("q")}, vipUDPSrc,
			netip.MustParseAddr("10.2.1.2"), 0xbb81},
		{"source affinity, client 10.0.7.9", pktSpec{src: netip.MustParseAddr("10.0.7.9"), dst: vip4, sport: 50007, dport: 53, proto: ProtoUDP, payload: []byte("q")}, vipUDPSrc,
			netip.MustParseAddr("10.2.3.2"), 0xd4ae},
		{"all-ports VIP", pktSpec{src: client4, dst: vip4all, sport: 50004, dport: 8443, proto: ProtoTCP, syn: true}, vipAll,
			netip.MustParseAddr("10.2.2.2"), 0xfc51},
		{"IPv4 VIP to IPv6 backend", pktSpec{src: client4, dst: vip4to6, sport: 50005, dport: 80, proto: ProtoTCP, syn: true}, vip4To6,
			netip.MustParseAddr("fd00:2:1::2"), 0x8777},
	} {
		t.Run(g.name, func(t *testing.T) {
			in, l2 := build(t, g.spec)
			act, out := w.run(t, in)
			if act != xdpTX {
				t.Fatalf("action %s, want TX", actionNames[act])
			}
			checkEncap(t, in, l2, out, encapWant{backend: g.backend, gue: 6080})
			udp := l2 + 20
			if g.backend.Is6() {
				udp = l2 + 40
			}
			if got := binary.BigEndian.Uint16(out[udp:]); got != g.port {
				t.Errorf("GUE source port %#04x, want %#04x", got, g.port)
			}
			// The Go mirrors, which the cluster places flows by, agree.
			f := flowOf(g.spec)
			if got := w.expectBackend(g.vip, f); got != g.backend {
				t.Errorf("FlowHash and MaglevSlot place the flow on %s, want %s", got, g.backend)
			}
			if got := uint16(0x8000 | FlowHash(f, false)&0x7fff); got != g.port {
				t.Errorf("FlowHash gives GUE source port %#04x, want %#04x", got, g.port)
			}
		})
	}

	// The outer source hashed from the client inside a prefix carries
	// hash_addr itself (16 bits of it in an IPv4 /16, 64 in an IPv6 /64),
	// where a Maglev table of three backends tells only a third of
	// changes apart. Routers and firewalls may hold these addresses.
	t.Run("outer source inside a prefix", func(t *testing.T) {
		set := defaultSettings()
		set.SourcePrefixV4 = netip.MustParsePrefix("172.16.0.0/16")
		set.SourcePrefixV6 = netip.MustParsePrefix("fd00:5::/64")
		if err := w.b.SetSettings(set); err != nil {
			t.Fatal(err)
		}
		for _, g := range []struct {
			spec pktSpec
			src  netip.Addr
		}{
			{syn4(50010), netip.MustParseAddr("172.16.88.13")},
			{pktSpec{src: netip.MustParseAddr("10.0.7.9"), dst: vip4, sport: 50011, dport: 80, proto: ProtoTCP, syn: true}, netip.MustParseAddr("172.16.62.89")},
			{pktSpec{src: client6, dst: vip6, sport: 50012, dport: 80, proto: ProtoTCP, syn: true}, netip.MustParseAddr("fd00:5::2d6e:cb2b:82b7:fc7a")},
		} {
			in, l2 := build(t, g.spec)
			act, out := w.run(t, in)
			if act != xdpTX {
				t.Fatalf("%v: action %s, want TX", flowOf(g.spec), actionNames[act])
			}
			var got netip.Addr
			if g.src.Is4() {
				got = netip.AddrFrom4([4]byte(out[l2+12 : l2+16]))
			} else {
				got = netip.AddrFrom16([16]byte(out[l2+8 : l2+24]))
			}
			if got != g.src {
				t.Errorf("%v: outer source %s, want %s", flowOf(g.spec), got, g.src)
			}
		}
	})
}
