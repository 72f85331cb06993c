package datapath

import (
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// set16 writes v at off of a copy of frame; with ip >= 0 it then fixes
// the checksum of the IPv4 header at ip, as a router that rewrote the
// field would (so that only the field is wrong, not the checksum).
func set16(frame []byte, off int, v uint16, ip int) []byte {
	f := append([]byte(nil), frame...)
	binary.BigEndian.PutUint16(f[off:], v)
	if ip >= 0 {
		hl := int(f[ip]&0xf) * 4
		f[ip+10], f[ip+11] = 0, 0
		binary.BigEndian.PutUint16(f[ip+10:], inetChecksum(f[ip:ip+hl], 0))
	}
	return f
}

// TestDecapChecksOuterHeader: XDP runs before ip_rcv, so the decap
// program is the only one to look at the outer header it strips. An outer
// header for this host that ip_rcv, ipv6_rcv or udp_rcv would refuse (a
// wrong IPv4 checksum; an IP header or length beyond the frame; a total
// length short of the IPv4 header; a GUE UDP header or length beyond the
// IP packet, or a UDP length below 8) is passed untouched, for the stack
// to drop and count in its own counters, and counted by its reason in
// the decap program's. A frame longer than its outer packet (Ethernet
// padding of a short packet, a kept FCS) is decapsulated without the
// trailer, as the kernel trims it before a tunnel sees the packet: an
// inner packet that the outer one cuts short reaches the stack short,
// which drops it, not made whole by the trailer; an inner packet shorter
// than what the outer one holds keeps what follows it, for the stack to
// trim. The stack delivers packets with a TTL or hop limit of 0 to the
// host, and so does the decap program.
func TestDecapChecksOuterHeader(t *testing.T) {
	requireRoot(t)
	d := loadFixtureDecap(t)
	ours4, ours6 := backendAddrs[1], backendAddrs[11]
	b, l2 := build(t, syn4(53200))
	inner := ipPacket(b[l2:]) // 40 bytes: IPv4 and TCP SYN
	// short is a 24-byte IPv4 packet, a last fragment of 4 bytes: in
	// IPIP, 44 bytes in a frame padded to 60.
	short := serialize(t, &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, FragOffset: 100,
		SrcIP: client4.AsSlice(), DstIP: vip4.AsSlice()}, gopacket.Payload{1, 2, 3, 4})
	if len(short) != 24 {
		t.Fatalf("fixture: short inner packet of %d bytes, want 24", len(short))
	}
	eth := func(ethType uint16) []byte {
		e := append(append([]byte(nil), ourMAC...), nextHopMAC...)
		return binary.BigEndian.AppendUint16(e, ethType)
	}
	decapped := func(p []byte) []byte { return append(eth(0x0800), p...) }

	ipip := encapFrame(t, lbV4, ours4, layers.IPProtocolIPv4, 0, inner)
	ip6 := encapFrame(t, lbV6, ours6, layers.IPProtocolIPv4, 0, inner)
	gue4 := encapFrame(t, lbV4, ours4, 0, 6080, inner)
	gue4[14+20+6], gue4[14+20+7] = 0, 0 // no UDP checksum: its length can change
	gue6 := encapFrame(t, lbV6, ours6, 0, 6080, inner)
	const ip4, ip6Len, udp4Len, udp6Len = 14, 14 + 4, 14 + 20 + 4, 14 + 40 + 4

	badCsum := append([]byte(nil), ipip...)
	badCsum[ip4+10] ^= 0x01
	// A header of 24 bytes (IHL 6) in a frame of 20 after the Ethernet
	// header: its checksum cannot be summed.
	hdrBeyond := encapFrame(t, lbV4, ours4, layers.IPProtocolIPv4, 0, nil)[:ip4+20] // without its padding
	hdrBeyond[ip4] = 0x46
	fcs := []byte{0xde, 0xad, 0xbe, 0xef}
	padded := encapFrame(t, lbV4, ours4, layers.IPProtocolIPv4, 0, short)
	if len(padded) != 60 {
		t.Fatalf("fixture: padded IPIP frame of %d bytes, want 60", len(padded))
	}
	// The inner packet claims 2 bytes more than the outer one holds: the
	// frame's padding would make it whole.
	cutShort := set16(padded, ip4+20+2, 26, ip4+20)
	// The outer packet holds the inner one and 6 bytes after it.
	innerPadded := encapFrame(t, lbV6, ours6, layers.IPProtocolIPv4, 0, append(append([]byte(nil), inner...), 0, 0, 0, 0, 0, 0))
	ttl0 := set16(ipip, ip4+8, uint16(ipip[ip4+9]), ip4) // TTL 0, protocol kept
	hop0 := append([]byte(nil), ip6...)
	hop0[14+7] = 0

	runDecapCases(t, d, []decapCase{
		{"IPIP, outer IPv4 checksum wrong", badCsum, xdpPass, nil, []string{"bad_outer_csum"}},
		{"GUE, outer IPv4 checksum wrong", set16(gue4, ip4+10, 0x1234, -1), xdpPass, nil, []string{"bad_outer_csum"}},
		{"IPIP, outer header (IHL 6) beyond the frame", hdrBeyond, xdpPass, nil, []string{"bad_outer_ip_len"}},
		{"IPIP, outer total length 1 beyond the frame", set16(ipip, ip4+2, 61, ip4), xdpPass, nil, []string{"bad_outer_ip_len"}},
		{"IPIP, outer total length short of its header", set16(ipip, ip4+2, 19, ip4), xdpPass, nil, []string{"bad_outer_ip_len"}},
		{"IPIP, outer total length 0", set16(ipip, ip4+2, 0, ip4), xdpPass, nil, []string{"bad_outer_ip_len"}},
		{"IPv6 outer, payload length 1 beyond the frame", set16(ip6, ip6Len, 41, -1), xdpPass, nil, []string{"bad_outer_ip_len"}},
		{"GUE over IPv6, payload length 1 beyond the frame", set16(gue6, ip6Len, 49, -1), xdpPass, nil, []string{"bad_outer_ip_len"}},
		{"GUE, UDP length 1 beyond the IP packet", set16(gue4, udp4Len, 49, -1), xdpPass, nil, []string{"bad_outer_udp_len"}},
		{"GUE, UDP length 7", set16(gue4, udp4Len, 7, -1), xdpPass, nil, []string{"bad_outer_udp_len"}},
		{"GUE, UDP length 0", set16(gue4, udp4Len, 0, -1), xdpPass, nil, []string{"bad_outer_udp_len"}},
		{"GUE, IP packet ends inside the UDP header", set16(gue4, ip4+2, 24, ip4), xdpPass, nil, []string{"bad_outer_udp_len"}},
		{"GUE over IPv6, UDP length 1 beyond the IP packet", set16(gue6, udp6Len, 49, -1), xdpPass, nil, []string{"bad_outer_udp_len"}},
		{"GUE over IPv6, payload length ends inside the UDP header", set16(gue6, ip6Len, 4, -1), xdpPass, nil, []string{"bad_outer_udp_len"}},

		{"IPIP, outer total length leaves the inner packet out", set16(ipip, ip4+2, 20, ip4), xdpDrop, nil, []string{"drop_inner_not_ip"}},
		{"IPv6 outer, payload length 0", set16(ip6, ip6Len, 0, -1), xdpDrop, nil, []string{"drop_inner_not_ip"}},

		{"IPIP in a frame padded to 60 bytes", padded, xdpPass, decapped(short), []string{"decap_ipv4_outer"}},
		{"IPIP, padded, inner packet cut short by the outer one", cutShort, xdpPass, decapped(cutShort[ip4+20 : ip4+44]), []string{"decap_ipv4_outer"}},
		{"IPIP, FCS kept", append(append([]byte(nil), ipip...), fcs...), xdpPass, decapped(inner), []string{"decap_ipv4_outer"}},
		{"IPv6 outer, FCS kept", append(append([]byte(nil), ip6...), fcs...), xdpPass, decapped(inner), []string{"decap_ipv6_outer"}},
		{"GUE over IPv6, FCS kept", append(append([]byte(nil), gue6...), fcs...), xdpPass, decapped(inner), []string{"decap_ipv6_outer", "decap_gue"}},
		{"GUE, UDP length shorter than the IP packet", set16(gue4, udp4Len, 8+30, -1), xdpPass, decapped(inner[:30]), []string{"decap_ipv4_outer", "decap_gue"}},
		{"GUE over IPv6, UDP length 0: the rest of the payload", append(withUDPChecksum(set16(gue6, udp6Len, 0, -1), ip4), fcs...), xdpPass, decapped(inner), []string{"decap_ipv6_outer", "decap_gue"}},
		{"IPv6 outer, inner packet shorter than the outer payload", innerPadded, xdpPass, decapped(innerPadded[14+40:]), []string{"decap_ipv6_outer"}},
		{"IPIP, outer TTL 0", ttl0, xdpPass, decapped(inner), []string{"decap_ipv4_outer"}},
		{"IPv6 outer, hop limit 0", hop0, xdpPass, decapped(inner), []string{"decap_ipv6_outer"}},
	})
}
