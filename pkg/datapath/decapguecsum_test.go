package datapath

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// withUDPChecksum is a copy of frame with the checksum of the UDP
// datagram behind the IP header at ip set as its sender would set it: over
// the pseudo-header and the datagram's UDP length (over IPv6, a length of
// 0 is the rest of the payload), a sum of 0 sent as 0xffff.
func withUDPChecksum(frame []byte, ip int) []byte {
	f := append([]byte(nil), frame...)
	var pseudo []byte
	var udp, n int
	if f[ip]>>4 == 6 {
		udp = ip + 40
		n = int(binary.BigEndian.Uint16(f[udp+4:]))
		if n == 0 {
			n = int(binary.BigEndian.Uint16(f[ip+4:]))
		}
		pseudo = append(append([]byte(nil), f[ip+8:ip+40]...), 0, 0, byte(n>>8), byte(n), 0, 0, 0, 17)
	} else {
		udp = ip + int(f[ip]&0xf)*4
		n = int(binary.BigEndian.Uint16(f[udp+4:]))
		pseudo = append(append([]byte(nil), f[ip+12:ip+20]...), 0, 17, byte(n>>8), byte(n))
	}
	f[udp+6], f[udp+7] = 0, 0
	c := inetChecksum(append(pseudo, f[udp:udp+n]...), 0)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(f[udp+6:], c)
	return f
}

// flip is a copy of frame with the byte at off inverted.
func flip(frame []byte, off int) []byte {
	f := append([]byte(nil), frame...)
	f[off] ^= 0xff
	return f
}

// TestDecapChecksGUEChecksum: udp_rcv drops a datagram whose checksum is
// not 0 and wrong (UdpInCsumErrors), and so the decap program must not
// strip a GUE header whose checksum is wrong: it passes the packet
// untouched, for the stack to drop, counted as bad_outer_udp_csum. The
// checksum covers the pseudo-header and the whole datagram, its UDP
// length and no more: a wrong byte anywhere in it (the last of an odd
// length, one far into a 1400-byte datagram) is found, bytes of the IP
// packet behind the datagram are not summed, and the datagram is found
// behind outer IPv4 options and a VLAN tag. A checksum of 0 is none, over
// IPv6 too (RFC 6935, as the kernel's own GUE sockets accept and the
// balancer sends); a sum of 0 is sent as 0xffff (RFC 768) and is right.
func TestDecapChecksGUEChecksum(t *testing.T) {
	requireRoot(t)
	d := loadFixtureDecap(t)
	ours4, ours6 := backendAddrs[1], backendAddrs[11]
	b, l2 := build(t, syn4(53300))
	inner := ipPacket(b[l2:])
	const ip = 14
	udp4, udp6 := ip+20, ip+40
	decapped := func(p []byte) []byte {
		e := append(append([]byte(nil), ourMAC...), nextHopMAC...)
		return append(binary.BigEndian.AppendUint16(e, 0x0800), p...)
	}

	gue4 := encapFrame(t, lbV4, ours4, 0, 6080, inner)
	gue6 := encapFrame(t, lbV6, ours6, 0, 6080, inner)
	if gue4[udp4+6]|gue4[udp4+7] == 0 || gue6[udp6+6]|gue6[udp6+7] == 0 {
		t.Fatal("fixture: the GUE frames carry no UDP checksum")
	}
	zero4 := set16(gue4, udp4+6, 0, -1)
	zero6 := set16(gue6, udp6+6, 0, -1)
	badCsum4 := set16(gue4, udp4+6, binary.BigEndian.Uint16(gue4[udp4+6:])+1, -1)
	badCsum6 := set16(gue6, udp6+6, binary.BigEndian.Uint16(gue6[udp6+6:])+1, -1)

	// Odd lengths: the inner packet and 1, 2 or 3 bytes after it.
	odd := func(n int) []byte {
		p := append(append([]byte(nil), inner...), []byte{0x5a, 0xa5, 0x3c}[:n]...)
		return encapFrame(t, lbV4, ours4, 0, 6080, p)
	}
	// big is a 1400-byte inner packet: the sum takes several steps.
	bigIP := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: client4.AsSlice(), DstIP: vip4.AsSlice()}
	bigUDP := &layers.UDP{SrcPort: 5000, DstPort: 53}
	bigUDP.SetNetworkLayerForChecksum(bigIP)
	bigPayload := make([]byte, 1400-28)
	for i := range bigPayload {
		bigPayload[i] = byte(i * 7)
	}
	bigInner := serialize(t, bigIP, bigUDP, gopacket.Payload(bigPayload))
	big4 := encapFrame(t, lbV4, ours4, 0, 6080, bigInner)
	big6 := encapFrame(t, lbV6, ours6, 0, 6080, bigInner)
	// The datagram ends 10 bytes before the IP packet: those are not
	// its, and a wrong one of them is none of its checksum's business.
	shortUDP := withUDPChecksum(set16(gue4, udp4+4, uint16(8+len(inner)-10), -1), ip)
	// The inner packet's last two bytes chosen so that the datagram sums
	// to 0, sent as 0xffff.
	sumZero := func() []byte {
		f := append([]byte(nil), gue4...)
		n := len(f)
		f[n-2], f[n-1] = 0, 0
		f = withUDPChecksum(f, ip)
		copy(f[n-2:], f[udp4+6:udp4+8])
		f = withUDPChecksum(f, ip)
		if f[udp4+6] != 0xff || f[udp4+7] != 0xff {
			t.Fatalf("fixture: checksum %x, want ffff", f[udp4+6:udp4+8])
		}
		return f
	}()
	// Outer IPv4 options (IHL 15) behind a VLAN tag: the datagram starts
	// 40 bytes later.
	optsIP := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: lbV4.AsSlice(), DstIP: ours4.AsSlice(),
		Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 7, OptionLength: 39, OptionData: make([]byte, 37)}}}
	optsUDP := &layers.UDP{SrcPort: 0x8123, DstPort: 6080}
	optsUDP.SetNetworkLayerForChecksum(optsIP)
	opts := serialize(t, &layers.Ethernet{SrcMAC: nextHopMAC, DstMAC: ourMAC, EthernetType: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 300, Type: layers.EthernetTypeIPv4}, optsIP, optsUDP, gopacket.Payload(inner))
	if opts[18]&0xf != 15 || opts[18+60+6]|opts[18+60+7] == 0 {
		t.Fatalf("fixture: IHL %d, UDP checksum %x; want 15 and a checksum", opts[18]&0xf, opts[18+60+6:18+60+8])
	}
	optsWant := append(append([]byte(nil), opts[:18]...), inner...)

	runDecapCases(t, d, []decapCase{
		{"GUE, UDP checksum 1 off", badCsum4, xdpPass, nil, []string{"bad_outer_udp_csum"}},
		{"GUE over IPv6, UDP checksum 1 off", badCsum6, xdpPass, nil, []string{"bad_outer_udp_csum"}},
		{"GUE, a byte of the inner packet wrong", flip(gue4, len(gue4)-1), xdpPass, nil, []string{"bad_outer_udp_csum"}},
		{"GUE, the outer source wrong (pseudo-header)", set16(gue4, ip+12, 0x0a09, ip), xdpPass, nil, []string{"bad_outer_udp_csum"}},
		{"GUE over IPv6, the outer source wrong (pseudo-header)", flip(gue6, ip+8+15), xdpPass, nil, []string{"bad_outer_udp_csum"}},
		{"GUE, 1 byte after the inner packet, wrong", flip(withUDPChecksum(odd(1), ip), len(odd(1))-1), xdpPass, nil, []string{"bad_outer_udp_csum"}},
		{"GUE, 3 bytes after the inner packet, the last wrong", flip(withUDPChecksum(odd(3), ip), len(odd(3))-1), xdpPass, nil, []string{"bad_outer_udp_csum"}},
		{"GUE, 1400-byte inner packet, byte 1000 wrong", flip(big4, udp4+8+1000), xdpPass, nil, []string{"bad_outer_udp_csum"}},
		{"GUE over IPv6, 1400-byte inner packet, its last byte wrong", flip(big6, len(big6)-1), xdpPass, nil, []string{"bad_outer_udp_csum"}},
		{"GUE behind options and a tag, UDP checksum wrong", flip(opts, 18+60+6), xdpPass, nil, []string{"bad_outer_udp_csum"}},

		{"GUE, UDP checksum right", gue4, xdpPass, decapped(inner), []string{"decap_ipv4_outer", "decap_gue"}},
		{"GUE over IPv6, UDP checksum right", gue6, xdpPass, decapped(inner), []string{"decap_ipv6_outer", "decap_gue"}},
		{"GUE, UDP checksum 0", zero4, xdpPass, decapped(inner), []string{"decap_ipv4_outer", "decap_gue"}},
		{"GUE over IPv6, UDP checksum 0", zero6, xdpPass, decapped(inner), []string{"decap_ipv6_outer", "decap_gue"}},
		{"GUE, 1 byte after the inner packet", withUDPChecksum(odd(1), ip), xdpPass, decapped(odd(1)[udp4+8:]), []string{"decap_ipv4_outer", "decap_gue"}},
		{"GUE, 2 bytes after the inner packet", withUDPChecksum(odd(2), ip), xdpPass, decapped(odd(2)[udp4+8:]), []string{"decap_ipv4_outer", "decap_gue"}},
		{"GUE, 3 bytes after the inner packet", withUDPChecksum(odd(3), ip), xdpPass, decapped(odd(3)[udp4+8:]), []string{"decap_ipv4_outer", "decap_gue"}},
		{"GUE, 1400-byte inner packet", big4, xdpPass, decapped(bigInner), []string{"decap_ipv4_outer", "decap_gue"}},
		{"GUE over IPv6, 1400-byte inner packet", big6, xdpPass, decapped(bigInner), []string{"decap_ipv6_outer", "decap_gue"}},
		{"GUE, the IP packet holds 10 bytes after the datagram, one of them wrong", flip(shortUDP, len(shortUDP)-1), xdpPass, decapped(inner[:len(inner)-10]), []string{"decap_ipv4_outer", "decap_gue"}},
		{"GUE, checksum 0xffff for a sum of 0", sumZero, xdpPass, decapped(sumZero[udp4+8:]), []string{"decap_ipv4_outer", "decap_gue"}},
		{"GUE behind options and a tag, UDP checksum right", opts, xdpPass, optsWant, []string{"decap_ipv4_outer", "decap_gue"}},
	})
}

// TestDecapOuterCutOrMartian: a GUE packet whose frame ends inside its
// UDP header is malformed, not someone else's: ip_rcv drops it as
// truncated if its IP length runs past the frame, else udp_rcv drops it
// for a header beyond the IP packet, and the decap program counts it so
// (bad_outer_ip_len, bad_outer_udp_len), unless the port it can read is
// not the GUE port. An outer source the kernel refuses before any tunnel
// sees the packet (an IPv4 martian: 0/8, 127/8, multicast, the limited
// broadcast; an IPv6 multicast or loopback source) is passed untouched and
// counted as bad_outer_src, after the IPv4 header's own checks and before
// the IPv6 length's, in the kernel's order. 240/4 is no martian to Linux.
func TestDecapOuterCutOrMartian(t *testing.T) {
	requireRoot(t)
	d := loadFixtureDecap(t)
	ours4, ours6 := backendAddrs[1], backendAddrs[11]
	b, l2 := build(t, syn4(53400))
	inner := ipPacket(b[l2:])
	const ip = 14
	decapped := func(p []byte) []byte {
		e := append(append([]byte(nil), ourMAC...), nextHopMAC...)
		return append(binary.BigEndian.AppendUint16(e, 0x0800), p...)
	}
	gue4 := encapFrame(t, lbV4, ours4, 0, 6080, inner)
	gue6 := encapFrame(t, lbV6, ours6, 0, 6080, inner)
	other := encapFrame(t, lbV4, ours4, 0, 6081, inner)
	// cut4 is gue4 cut n bytes into its UDP header, its total length
	// saying so.
	cut4 := func(n int) []byte {
		return set16(gue4[:ip+20+n], ip+2, uint16(20+n), ip)
	}
	from := func(src string, proto layers.IPProtocol, gue uint16) []byte {
		a := netip.MustParseAddr(src)
		dst := ours4
		if a.Is6() {
			dst = ours6
		}
		return encapFrame(t, a, dst, proto, gue, inner)
	}
	badCsum := from("127.0.0.1", layers.IPProtocolIPv4, 0)
	badCsum[ip+10] ^= 1
	multicast6Long := set16(from("ff02::1", layers.IPProtocolIPv4, 0), ip+4, 1000, -1)

	cases := []decapCase{
		{"GUE, frame cut 4 bytes into the UDP header", gue4[:ip+20+4], xdpPass, nil, []string{"bad_outer_ip_len"}},
		{"GUE over IPv6, frame cut 6 bytes into the UDP header", gue6[:ip+40+6], xdpPass, nil, []string{"bad_outer_ip_len"}},
		{"GUE, frame and IP packet cut 2 bytes into the UDP header (no port)", cut4(2), xdpPass, nil, []string{"bad_outer_udp_len"}},
		{"GUE, frame and IP packet cut 6 bytes into the UDP header", cut4(6), xdpPass, nil, []string{"bad_outer_udp_len"}},
		{"UDP to another port, frame cut 6 bytes into the UDP header", other[:ip+20+6], xdpPass, nil, []string{"pass"}},

		{"IPIP from 0.0.0.0", from("0.0.0.0", layers.IPProtocolIPv4, 0), xdpPass, nil, []string{"bad_outer_src"}},
		{"IPIP from 0.1.2.3", from("0.1.2.3", layers.IPProtocolIPv4, 0), xdpPass, nil, []string{"bad_outer_src"}},
		{"IPIP from 127.0.0.1", from("127.0.0.1", layers.IPProtocolIPv4, 0), xdpPass, nil, []string{"bad_outer_src"}},
		{"IPIP from 224.0.0.1", from("224.0.0.1", layers.IPProtocolIPv4, 0), xdpPass, nil, []string{"bad_outer_src"}},
		{"IPIP from 239.255.255.255", from("239.255.255.255", layers.IPProtocolIPv4, 0), xdpPass, nil, []string{"bad_outer_src"}},
		{"IPIP from 255.255.255.255", from("255.255.255.255", layers.IPProtocolIPv4, 0), xdpPass, nil, []string{"bad_outer_src"}},
		{"GUE from 127.1.2.3", from("127.1.2.3", 0, 6080), xdpPass, nil, []string{"bad_outer_src"}},
		{"IPv6 outer from ff02::1", from("ff02::1", layers.IPProtocolIPv4, 0), xdpPass, nil, []string{"bad_outer_src"}},
		{"IPv6 outer GUE from ::1", from("::1", 0, 6080), xdpPass, nil, []string{"bad_outer_src"}},
		{"IPIP from 127.0.0.1, outer checksum wrong: the checksum first", badCsum, xdpPass, nil, []string{"bad_outer_csum"}},
		{"IPv6 outer from ff02::1, payload length beyond the frame: the source first", multicast6Long, xdpPass, nil, []string{"bad_outer_src"}},

		{"IPIP from 240.0.0.1", from("240.0.0.1", layers.IPProtocolIPv4, 0), xdpPass, decapped(inner), []string{"decap_ipv4_outer"}},
		{"IPIP from 1.0.0.0", from("1.0.0.0", layers.IPProtocolIPv4, 0), xdpPass, decapped(inner), []string{"decap_ipv4_outer"}},
		{"IPIP from 223.255.255.255", from("223.255.255.255", layers.IPProtocolIPv4, 0), xdpPass, decapped(inner), []string{"decap_ipv4_outer"}},
		{"IPv6 outer from ::2", from("::2", layers.IPProtocolIPv4, 0), xdpPass, decapped(inner), []string{"decap_ipv6_outer"}},
		{"IPv6 outer from fe80::1", from("fe80::1", layers.IPProtocolIPv4, 0), xdpPass, decapped(inner), []string{"decap_ipv6_outer"}},
	}
	runDecapCases(t, d, cases)

	// With GUE off, a UDP header the frame cuts short is nobody's here.
	if err := d.SetGUEPort(0); err != nil {
		t.Fatal(err)
	}
	runDecapCases(t, d, []decapCase{
		{"GUE off, frame cut 2 bytes into the UDP header", cut4(2), xdpPass, nil, []string{"pass"}},
	})
}
