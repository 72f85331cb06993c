package datapath

import (
	"bytes"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// TestDecapOuterVariants: outer headers the fixture's other cases do not
// send. An IPv4 outer header with options is stripped whole (the inner
// packet starts after the options); an 802.1ad (QinQ) tagged frame is
// decapsulated with its tag kept; a tagged frame whose inner family is not
// the outer one gets the inner family's EtherType behind its tag; an outer
// IPv4 fragment or an outer header with IHL < 5 is left to the stack,
// untouched, counted as passed; and with GUE off, a UDP datagram to port 0
// is not GUE.
func TestDecapOuterVariants(t *testing.T) {
	requireRoot(t)
	d := loadFixtureDecap(t)
	ours4, ours6 := backendAddrs[1], backendAddrs[11]
	b, l2 := build(t, syn4(53100))
	inner := b[l2:]
	// frame is an IPIP packet to ours4 in an Ethernet frame with the
	// given tag (TPID 0: untagged).
	frame := func(tpid layers.EthernetType, ip *layers.IPv4) []byte {
		eth := &layers.Ethernet{SrcMAC: nextHopMAC, DstMAC: ourMAC, EthernetType: layers.EthernetTypeIPv4}
		ls := []gopacket.SerializableLayer{eth}
		if tpid != 0 {
			eth.EthernetType = tpid
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: 300, Priority: 5, Type: layers.EthernetTypeIPv4})
		}
		ip.Version, ip.TTL, ip.Protocol = 4, 64, layers.IPProtocolIPv4
		ip.SrcIP, ip.DstIP = lbV4.AsSlice(), ours4.AsSlice()
		return serialize(t, append(ls, ip, gopacket.Payload(inner))...)
	}
	// decapped is f's L2 header (through the tag) followed by inner.
	decapped := func(f []byte, l2 int) []byte {
		return append(append([]byte(nil), f[:l2]...), inner...)
	}
	opts := frame(0, &layers.IPv4{Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}})
	qinq := frame(layers.EthernetTypeQinQ, &layers.IPv4{})
	// An IPv4 client of an IPv6 backend, VLAN-tagged: the tag's
	// EtherType must turn from IPv6 to IPv4.
	tagged6 := serialize(t, &layers.Ethernet{SrcMAC: nextHopMAC, DstMAC: ourMAC, EthernetType: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 300, Type: layers.EthernetTypeIPv6},
		&layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv4, SrcIP: lbV6.AsSlice(), DstIP: ours6.AsSlice()},
		gopacket.Payload(inner))
	tagged6Want := decapped(tagged6, 18)
	tagged6Want[16], tagged6Want[17] = 0x08, 0x00
	ihl4 := frame(0, &layers.IPv4{})
	ihl4[14] = 0x44 // IHL 4: shorter than any IPv4 header
	frag := frame(0, &layers.IPv4{Flags: layers.IPv4MoreFragments})
	fragOff := frame(0, &layers.IPv4{FragOffset: 100})
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: lbV4.AsSlice(), DstIP: ours4.AsSlice()}
	udp := &layers.UDP{SrcPort: 0x8123, DstPort: 0}
	udp.SetNetworkLayerForChecksum(ip)
	port0 := serialize(t, &layers.Ethernet{SrcMAC: nextHopMAC, DstMAC: ourMAC, EthernetType: layers.EthernetTypeIPv4}, ip, udp, gopacket.Payload(inner))
	for _, c := range []struct {
		name     string
		frame    []byte
		want     []byte
		counters []string
	}{
		{"IPIP, outer IPv4 options", opts, decapped(opts, 14), []string{"decap_ipv4_outer"}},
		{"IPIP, 802.1ad tag", qinq, decapped(qinq, 18), []string{"decap_ipv4_outer"}},
		{"IPv4 in IPv6, VLAN-tagged", tagged6, tagged6Want, []string{"decap_ipv6_outer"}},
		{"IPIP, outer first fragment", frag, frag, []string{"pass"}},
		{"IPIP, outer later fragment", fragOff, fragOff, []string{"pass"}},
		{"outer IPv4 header with IHL 4", ihl4, ihl4, []string{"pass"}},
		{"GUE off, UDP to port 0", port0, port0, []string{"pass"}},
	} {
		if c.name == "GUE off, UDP to port 0" {
			if err := d.SetGUEPort(0); err != nil {
				t.Fatal(err)
			}
		}
		before, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		act, out := runProg(t, d.objs.XdpDecap, append([]byte(nil), c.frame...))
		if act != xdpPass || !bytes.Equal(out, c.want) {
			t.Errorf("%s: %s\n got %x\nwant PASS %x", c.name, actionNames[act], out, c.want)
		}
		expectDecapCounters(t, d, c.name, before, c.counters)
	}
}
