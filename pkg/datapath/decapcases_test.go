package datapath

import (
	"bytes"
	"maps"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// encapFrame is an Ethernet frame whose IP header (dst's family) from src
// to dst carries payload as protocol proto; with gue != 0 the payload is
// in a UDP datagram to port gue instead.
func encapFrame(tb testing.TB, src, dst netip.Addr, proto layers.IPProtocol, gue uint16, payload []byte) []byte {
	tb.Helper()
	eth := &layers.Ethernet{SrcMAC: nextHopMAC, DstMAC: ourMAC, EthernetType: layers.EthernetTypeIPv4}
	if gue != 0 {
		proto = layers.IPProtocolUDP
	}
	var netl gopacket.NetworkLayer
	if dst.Is6() {
		eth.EthernetType = layers.EthernetTypeIPv6
		netl = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	} else {
		netl = &layers.IPv4{Version: 4, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	}
	ls := []gopacket.SerializableLayer{eth, netl.(gopacket.SerializableLayer)}
	if gue != 0 {
		udp := &layers.UDP{SrcPort: 0x8123, DstPort: layers.UDPPort(gue)}
		udp.SetNetworkLayerForChecksum(netl)
		ls = append(ls, udp)
	}
	return serialize(tb, append(ls, gopacket.Payload(payload))...)
}

// TestDecapCases: what the decap program must leave alone (another UDP
// port than the GUE one, an outer header not addressed to this host) it
// passes byte for byte, counted as passed; an encapsulated packet for this
// host whose inner packet is not IP it drops, counted as such. The frames
// it must decapsulate, built the same way, show that the others differ
// only in what the case says.
func TestDecapCases(t *testing.T) {
	requireRoot(t)
	d := loadFixtureDecap(t)
	ours4, ours6 := backendAddrs[1], backendAddrs[11]
	other4, other6 := netip.MustParseAddr("10.2.9.9"), netip.MustParseAddr("fd00:2:9::9")
	ipFrame := func(s pktSpec) []byte {
		b, l2 := build(t, s)
		return b[l2:]
	}
	inner4 := ipFrame(syn4(53000))
	inner6 := ipFrame(pktSpec{src: client6, dst: vip6, sport: 53001, dport: 80, proto: ProtoTCP, syn: true})
	notIP := append([]byte{0x55}, inner4[1:]...) // IP version 5
	gueV0 := append([]byte{0x00, 0x04, 0x00, 0x00}, inner4...)
	decapped := func(inner []byte) []byte {
		eth := append(append(append([]byte(nil), ourMAC...), nextHopMAC...), 0x08, 0x00)
		if inner[0]>>4 == 6 {
			eth[12], eth[13] = 0x86, 0xdd
		}
		return append(eth, inner...)
	}
	cases := []decapCase{
		{"IPIP", encapFrame(t, lbV4, ours4, layers.IPProtocolIPv4, 0, inner4), xdpPass, decapped(inner4), []string{"decap_ipv4_outer"}},
		{"IPv6 in IPv6", encapFrame(t, lbV6, ours6, layers.IPProtocolIPv6, 0, inner6), xdpPass, decapped(inner6), []string{"decap_ipv6_outer"}},
		{"GUE", encapFrame(t, lbV4, ours4, 0, 6080, inner4), xdpPass, decapped(inner4), []string{"decap_ipv4_outer", "decap_gue"}},
		{"GUE over IPv6", encapFrame(t, lbV6, ours6, 0, 6080, inner6), xdpPass, decapped(inner6), []string{"decap_ipv6_outer", "decap_gue"}},

		{"IPIP, inner IP version 5", encapFrame(t, lbV4, ours4, layers.IPProtocolIPv4, 0, notIP), xdpDrop, nil, []string{"drop_inner_not_ip"}},
		{"IPv6 outer, inner IP version 0", encapFrame(t, lbV6, ours6, layers.IPProtocolIPv6, 0, make([]byte, 40)), xdpDrop, nil, []string{"drop_inner_not_ip"}},
		{"GUE, a variant 0 header", encapFrame(t, lbV4, ours4, 0, 6080, gueV0), xdpDrop, nil, []string{"drop_inner_not_ip"}},
		{"GUE over IPv6, inner IP version 5", encapFrame(t, lbV6, ours6, 0, 6080, notIP), xdpDrop, nil, []string{"drop_inner_not_ip"}},
		{"IPIP carrying IPv6", encapFrame(t, lbV4, ours4, layers.IPProtocolIPv4, 0, inner6), xdpDrop, nil, []string{"drop_inner_not_ip"}},
		{"IPv6 outer, protocol 41, carrying IPv4", encapFrame(t, lbV6, ours6, layers.IPProtocolIPv6, 0, inner4), xdpDrop, nil, []string{"drop_inner_not_ip"}},
		{"IPIP, nothing after the outer header", encapFrame(t, lbV4, ours4, layers.IPProtocolIPv4, 0, nil), xdpDrop, nil, []string{"drop_inner_not_ip"}},
		{"GUE over IPv6, nothing after the UDP header", encapFrame(t, lbV6, ours6, 0, 6080, nil), xdpDrop, nil, []string{"drop_inner_not_ip"}},

		{"GUE to another UDP port", encapFrame(t, lbV4, ours4, 0, 6081, inner4), xdpPass, nil, []string{"pass"}},
		{"GUE over IPv6 to another UDP port", encapFrame(t, lbV6, ours6, 0, 6081, inner6), xdpPass, nil, []string{"pass"}},
		{"IPv6 outer to another host", encapFrame(t, lbV6, other6, layers.IPProtocolIPv6, 0, inner6), xdpPass, nil, []string{"pass"}},
		{"IPv6 outer to another host, IPv4 inside", encapFrame(t, lbV6, other6, layers.IPProtocolIPv4, 0, inner4), xdpPass, nil, []string{"pass"}},
		{"IPv6 outer GUE to another host", encapFrame(t, lbV6, other6, 0, 6080, inner6), xdpPass, nil, []string{"pass"}},
		{"IPv4 outer to another host", encapFrame(t, lbV4, other4, layers.IPProtocolIPv4, 0, inner4), xdpPass, nil, []string{"pass"}},
		{"IPv4 outer to another host, IPv6 inside", encapFrame(t, lbV4, other4, layers.IPProtocolIPv6, 0, inner6), xdpPass, nil, []string{"pass"}},
		{"IPv4 outer GUE to another host", encapFrame(t, lbV4, other4, 0, 6080, inner4), xdpPass, nil, []string{"pass"}},
		{"IPv4 outer to another host, inner not IP", encapFrame(t, lbV4, other4, layers.IPProtocolIPv4, 0, notIP), xdpPass, nil, []string{"pass"}},
	}
	runDecapCases(t, d, cases)
}

// decapCase is one frame through the decap program: the action it must
// get, the output of a pass (nil: the frame untouched) and the counters
// it must move.
type decapCase struct {
	name     string
	frame    []byte
	action   uint32
	want     []byte
	counters []string
}

// runDecapCases runs each case through d's program and checks its action,
// its output and its counters.
func runDecapCases(t *testing.T, d *Decap, cases []decapCase) {
	t.Helper()
	for _, c := range cases {
		before, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		act, out := runProg(t, d.objs.XdpDecap, append([]byte(nil), c.frame...))
		if act != c.action {
			t.Errorf("%s: %s, want %s", c.name, actionNames[act], actionNames[c.action])
		}
		if want := c.want; c.action == xdpPass {
			if want == nil {
				want = c.frame
			}
			if !bytes.Equal(out, want) {
				t.Errorf("%s: output\n got %x\nwant %x", c.name, out, want)
			}
		}
		expectDecapCounters(t, d, c.name, before, c.counters)
	}
}

// expectDecapCounters checks that of d's counters exactly those named went
// up by one each since before.
func expectDecapCounters(t *testing.T, d *Decap, name string, before map[string]uint64, counters []string) {
	t.Helper()
	after, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(before)
	for _, k := range counters {
		want[k]++
	}
	if !maps.Equal(after, want) {
		t.Errorf("%s: counters %v -> %v, want only %v up by 1", name, before, after, counters)
	}
}
