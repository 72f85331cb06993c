package datapath

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"testing"
)

// TCP header flag bits.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpECE = 0x40
	tcpCWR = 0x80
)

// withTCPFlags is the TCP packet in (IP header at l2, no options on IPv4)
// with its flags byte set to flags and its checksum fixed.
func withTCPFlags(in []byte, l2 int, src, dst netip.Addr, flags byte) []byte {
	out := append([]byte(nil), in...)
	hdr := 20
	if src.Is6() {
		hdr = 40
	}
	tcp := out[l2+hdr:]
	if src.Is6() {
		tcp = tcp[:binary.BigEndian.Uint16(out[l2+4:])]
	} else {
		tcp = tcp[:int(binary.BigEndian.Uint16(out[l2+2:]))-hdr]
	}
	tcp[13] = flags
	tcp[16], tcp[17] = 0, 0
	binary.BigEndian.PutUint16(tcp[16:], inetChecksum(tcp, pseudoSum(src, dst, uint32(len(tcp)), ProtoTCP)))
	return out
}

// TestSYNWithFINOrRSTFollowsTheEntry: a SYN carrying FIN or RST opens no
// connection (Linux discards both in LISTEN), so it is no new flow: it
// follows its flow's connection entry to the backend that holds the
// connection, and leaves the entry alone. Before, it counted as a SYN,
// went by the current Maglev table and rewrote the entry, so one stray or
// forged packet moved an established connection to another backend once
// the table had changed. A plain SYN, and one with ECN's ECE and CWR (how
// an ECN-capable client opens), still pick from the current table.
func TestSYNWithFINOrRSTFollowsTheEntry(t *testing.T) {
	w := newWorld(t, Options{})
	for _, c := range []struct {
		name   string
		vip    fixtureVIP
		flow   pktSpec
		flags  byte
		reopen bool // a SYN: goes by the current table, recorded again
	}{
		{"IPv4 SYN+FIN", vipTCP4, syn4(49000), tcpSYN | tcpFIN, false},
		{"IPv4 SYN+RST", vipTCP4, syn4(49001), tcpSYN | tcpRST, false},
		{"IPv4 SYN+FIN+RST+PSH", vipTCP4, syn4(49002), tcpSYN | tcpFIN | tcpRST | tcpPSH, false},
		{"IPv6 SYN+FIN", vipTCP6, pktSpec{src: client6, dst: vip6, sport: 49003, dport: 80, proto: ProtoTCP, syn: true}, tcpSYN | tcpFIN, false},
		{"IPv6 SYN+RST", vipTCP6, pktSpec{src: client6, dst: vip6, sport: 49004, dport: 80, proto: ProtoTCP, syn: true}, tcpSYN | tcpRST, false},
		// Controls.
		{"IPv4 SYN", vipTCP4, syn4(49010), tcpSYN, true},
		{"IPv4 SYN+ECE+CWR", vipTCP4, syn4(49011), tcpSYN | tcpECE | tcpCWR, true},
		{"IPv6 SYN", vipTCP6, pktSpec{src: client6, dst: vip6, sport: 49012, dport: 80, proto: ProtoTCP, syn: true}, tcpSYN, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			pinned := w.open(t, c.vip, c.flow)
			other := otherBackend(c.vip, pinned)
			w.publish(t, c.vip.key, other)
			t.Cleanup(func() { w.publish(t, c.vip.key, c.vip.backends...) })

			plain, l2 := build(t, c.flow)
			in := withTCPFlags(plain, l2, c.flow.src, c.flow.dst, c.flags)
			want, wantCounts := pinned, map[string]uint64{"conn_hit": 1}
			if c.reopen {
				want, wantCounts = backendAddrs[other], map[string]uint64{"conn_miss": 1, "conn_refreshed": 1}
			}
			before := w.stats(t)
			act, out := w.run(t, in)
			if act != xdpTX {
				t.Fatalf("flags %#02x: %s, want TX to %s", c.flags, actionNames[act], want)
			}
			checkEncap(t, in, l2, out, encapWant{backend: want})
			if d := statsDelta(before, w.stats(t)); !maps.Equal(d, wantCounts) {
				t.Errorf("flags %#02x: counters moved by %v, want %v", c.flags, d, wantCounts)
			}
			// The flow's next packet goes where the entry now says.
			w.expectSent(t, ackOf(c.flow), want)
		})
	}
}
