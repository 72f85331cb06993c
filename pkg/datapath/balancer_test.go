package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// encapWant describes the packet a forwarding fixture must produce.
type encapWant struct {
	backend netip.Addr
	gue     uint16 // GUE destination port, 0 for plain IP-in-IP
	vlan    uint16
}

// checkEncap decodes out field by field: L2 rewritten to the next hop, the
// outer header right (addresses, length, TTL, TOS, protocol, checksum), and
// the inner packet byte-for-byte the packet that came in.
func checkEncap(t *testing.T, in []byte, l2 int, out []byte, want encapWant) {
	t.Helper()
	inner := in[l2:]
	innerV6 := inner[0]>>4 == 6
	innerLen := len(inner)
	var innerTOS uint8
	if innerV6 {
		innerTOS = inner[0]<<4 | inner[1]>>4
		innerLen = 40 + int(binary.BigEndian.Uint16(inner[4:]))
	} else {
		innerTOS = inner[1]
		innerLen = int(binary.BigEndian.Uint16(inner[2:]))
	}
	inner = inner[:innerLen]

	pkt := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth == nil {
		t.Fatalf("output has no Ethernet header: %x", out)
	}
	if !bytes.Equal(eth.DstMAC, nextHopMAC) || !bytes.Equal(eth.SrcMAC, ourMAC) {
		t.Errorf("L2 %s -> %s, want %s -> %s", eth.SrcMAC, eth.DstMAC, ourMAC, nextHopMAC)
	}
	off := 14
	if want.vlan != 0 {
		dq, _ := pkt.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q)
		if dq == nil || dq.VLANIdentifier != want.vlan {
			t.Fatalf("VLAN tag lost: %v", pkt)
		}
		off = 18
	}
	outerProto := layers.IPProtocolIPv4
	if innerV6 {
		outerProto = layers.IPProtocolIPv6
	}
	if want.gue != 0 {
		outerProto = layers.IPProtocolUDP
	}
	hdr := 20
	if want.backend.Is6() {
		hdr = 40
		ip, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if ip == nil {
			t.Fatalf("no outer IPv6 header: %v", pkt)
		}
		if got := netip.MustParseAddr(ip.DstIP.String()); got != want.backend {
			t.Errorf("outer destination %s, want backend %s", got, want.backend)
		}
		if got := netip.MustParseAddr(ip.SrcIP.String()); got != lbV6 {
			t.Errorf("outer source %s, want %s", got, lbV6)
		}
		if ip.HopLimit != 64 || ip.TrafficClass != innerTOS || ip.NextHeader != outerProto {
			t.Errorf("outer hop limit %d tclass %#x next %v, want 64 %#x %v", ip.HopLimit, ip.TrafficClass, ip.NextHeader, innerTOS, outerProto)
		}
		wantPayload := innerLen
		if want.gue != 0 {
			wantPayload += 8
		}
		if int(ip.Length) != wantPayload {
			t.Errorf("outer payload length %d, want %d", ip.Length, wantPayload)
		}
	} else {
		ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ip == nil {
			t.Fatalf("no outer IPv4 header: %v", pkt)
		}
		if got := netip.MustParseAddr(ip.DstIP.String()); got != want.backend {
			t.Errorf("outer destination %s, want backend %s", got, want.backend)
		}
		if got := netip.MustParseAddr(ip.SrcIP.String()); got != lbV4 {
			t.Errorf("outer source %s, want %s", got, lbV4)
		}
		if ip.TTL != 64 || ip.TOS != innerTOS || ip.Protocol != outerProto || ip.IHL != 5 || ip.Flags != layers.IPv4DontFragment {
			t.Errorf("outer ttl %d tos %#x proto %v ihl %d flags %v", ip.TTL, ip.TOS, ip.Protocol, ip.IHL, ip.Flags)
		}
		wantLen := innerLen + 20
		if want.gue != 0 {
			wantLen += 8
		}
		if int(ip.Length) != wantLen {
			t.Errorf("outer total length %d, want %d", ip.Length, wantLen)
		}
		if c := inetChecksum(out[off:off+20], 0); c != 0 {
			t.Errorf("outer IPv4 header checksum invalid (residue %#x)", c)
		}
	}
	if want.gue != 0 {
		udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if udp == nil || uint16(udp.DstPort) != want.gue || udp.SrcPort < 0x8000 || int(udp.Length) != innerLen+8 {
			t.Errorf("GUE header wrong: %+v", udp)
		}
		hdr += 8
	}
	got := out[off+hdr:]
	if len(got) < innerLen || !bytes.Equal(got[:innerLen], inner) {
		t.Errorf("inner packet changed:\n got %x\nwant %x", got[:min(len(got), innerLen)], inner)
	}
}

func TestForwardingFixtures(t *testing.T) {
	w := newWorld(t, Options{})

	type fixture struct {
		name   string
		spec   pktSpec
		vip    fixtureVIP
		action uint32
		want   encapWant
	}
	fixtures := []fixture{
		{name: "TCP SYN v4 VIP to v4 backend", spec: syn4(40000), vip: vipTCP4, action: xdpTX},
		{name: "TCP SYN v6 VIP to v6 backend", spec: pktSpec{src: client6, dst: vip6, sport: 40001, dport: 80, proto: ProtoTCP, syn: true, tos: 0xb8}, vip: vipTCP6, action: xdpTX},
		{name: "TCP SYN v4 VIP to v6 backend", spec: pktSpec{src: client4, dst: vip4to6, sport: 40002, dport: 80, proto: ProtoTCP, syn: true, tos: 0x10}, vip: vip4To6, action: xdpTX},
		{name: "UDP v4 with source affinity", spec: pktSpec{src: client4, dst: vip4, sport: 5353, dport: 53, proto: ProtoUDP, payload: []byte("query")}, vip: vipUDPSrc, action: xdpTX},
		{name: "VLAN-tagged SYN keeps its tag", spec: func() pktSpec { s := syn4(40003); s.vlan = 42; return s }(), vip: vipTCP4, action: xdpTX, want: encapWant{vlan: 42}},
		{name: "IPv4 with options", spec: func() pktSpec { s := syn4(40004); s.ipOptions = true; return s }(), vip: vipTCP4, action: xdpTX},
		{name: "all-ports VIP", spec: pktSpec{src: client4, dst: vip4all, sport: 40005, dport: 8443, proto: ProtoTCP, syn: true}, vip: vipAll, action: xdpTX},
		{name: "UDP without connection table", spec: pktSpec{src: client4, dst: vip4pure, sport: 5000, dport: 53, proto: ProtoUDP, payload: []byte("x")}, vip: vipPure, action: xdpTX},
		{name: "TCP data v6 with payload", spec: pktSpec{src: client6, dst: vip6, sport: 40006, dport: 80, proto: ProtoTCP, ack: true, payload: bytes.Repeat([]byte("a"), 1000)}, vip: vipTCP6, action: xdpTX},
	}
	// The counters each fixture should move: its VIP's and its backend's,
	// once, by the frame's length.
	wantVIP := map[uint32]VIPCounters{}
	wantBackend := map[uint32]BackendCounters{}
	backendID := map[netip.Addr]uint32{}
	for id, a := range backendAddrs {
		backendID[a] = id
	}
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			in, l2 := build(t, f.spec)
			act, out := w.run(t, in)
			if act != f.action {
				t.Fatalf("action %s, want %s", actionNames[act], actionNames[f.action])
			}
			want := f.want
			want.backend = w.expectBackend(f.vip, flowOf(f.spec))
			checkEncap(t, in, l2, out, want)
		})
		in, _ := build(t, f.spec)
		be := w.expectBackend(f.vip, flowOf(f.spec))
		v, b := wantVIP[f.vip.num], wantBackend[backendID[be]]
		v.Packets, v.Bytes = v.Packets+1, v.Bytes+uint64(len(in))
		b.Packets, b.Bytes = b.Packets+1, b.Bytes+uint64(len(in))
		if f.vip.flags&VIPNoConntrack == 0 {
			// A first packet: a miss, then recorded (a SYN or not).
			v.ConnMisses, v.NewFlows = v.ConnMisses+1, v.NewFlows+1
		}
		wantVIP[f.vip.num], wantBackend[backendID[be]] = v, b
	}
	for _, v := range allVIPs {
		got, err := w.b.VIPCounters(v.num)
		if err != nil {
			t.Fatal(err)
		}
		if got != wantVIP[v.num] {
			t.Errorf("VIP %v counters %+v after the fixtures, want %+v", v.key, got, wantVIP[v.num])
		}
	}
	for id := range backendAddrs {
		got, err := w.b.BackendCounters(id)
		if err != nil {
			t.Fatal(err)
		}
		if got != wantBackend[id] {
			t.Errorf("backend %d (%s) counters %+v after the fixtures, want %+v", id, backendAddrs[id], got, wantBackend[id])
		}
	}

	t.Run("non-VIP traffic passes untouched", func(t *testing.T) {
		for _, s := range []pktSpec{
			{src: client4, dst: nonVIP, sport: 1, dport: 80, proto: ProtoTCP, syn: true},
			{src: client4, dst: vip4, sport: 1, dport: 81, proto: ProtoTCP, syn: true}, // VIP address, other port
			{src: client4, dst: vip4, sport: 1, dport: 80, proto: ProtoUDP},            // VIP address, other protocol
			{src: client6, dst: netip.MustParseAddr("fd00:200::1"), sport: 1, dport: 80, proto: ProtoUDP},
		} {
			in, _ := build(t, s)
			act, out := w.run(t, in)
			if act != xdpPass || !bytes.Equal(out, in) {
				t.Errorf("%v: action %s (changed: %v), want untouched PASS", flowOf(s), actionNames[act], !bytes.Equal(out, in))
			}
		}
		arp := append(bytes.Repeat([]byte{0xff}, 6), ourMAC...)
		arp = append(arp, 0x08, 0x06)
		arp = append(arp, make([]byte, 28)...)
		if act, _ := w.run(t, arp); act != xdpPass {
			t.Errorf("ARP: %s, want PASS", actionNames[act])
		}
	})

	t.Run("source affinity maps all of a client's flows to one backend", func(t *testing.T) {
		var first netip.Addr
		for port := uint16(1000); port < 1032; port++ {
			s := pktSpec{src: client4, dst: vip4, sport: port, dport: 53, proto: ProtoUDP}
			in, l2 := build(t, s)
			act, out := w.run(t, in)
			if act != xdpTX {
				t.Fatalf("action %s", actionNames[act])
			}
			got := netip.AddrFrom4([4]byte(out[l2+16 : l2+20]))
			if port == 1000 {
				first = got
			} else if got != first {
				t.Fatalf("port %d went to %s, port 1000 to %s", port, got, first)
			}
		}
		if want := w.expectBackend(vipUDPSrc, FlowKey{Src: client4}); first != want {
			t.Errorf("client went to %s, Go's FlowHash says %s", first, want)
		}
	})
}

func TestDropReasons(t *testing.T) {
	w := newWorld(t, Options{})
	cases := []struct {
		name   string
		spec   pktSpec
		reason string
	}{
		{"IPv4 first fragment", func() pktSpec { s := syn4(1); s.fragMF = true; s.df = false; return s }(), "drop_fragment"},
		{"IPv4 later fragment", func() pktSpec { s := syn4(1); s.fragOffset = 100; s.df = false; return s }(), "drop_fragment"},
		{"IPv6 fragment", pktSpec{src: client6, dst: vip6, proto: ProtoTCP, fragMF: true}, "drop_fragment"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := w.stats(t)[c.reason]
			in, _ := build(t, c.spec)
			if act, _ := w.run(t, in); act != xdpDrop {
				t.Fatalf("action %s, want DROP", actionNames[act])
			}
			if got := w.stats(t)[c.reason] - before; got != 1 {
				t.Errorf("%s rose by %d, want 1", c.reason, got)
			}
		})
	}

	t.Run("no next hop yet", func(t *testing.T) {
		s := defaultSettings()
		s.NextHopMAC = nil
		if err := w.b.SetSettings(s); err != nil {
			t.Fatal(err)
		}
		defer w.b.SetSettings(defaultSettings())
		in, _ := build(t, syn4(3))
		before := w.stats(t)["drop_no_nexthop"]
		if act, _ := w.run(t, in); act != xdpDrop || w.stats(t)["drop_no_nexthop"] != before+1 {
			t.Errorf("action %s, want DROP counted as drop_no_nexthop", actionNames[act])
		}
	})

	// The fast path of a recorded flow checks the next hop too: with it
	// lost (its neighbour entry gone), a packet would leave for a zero MAC.
	t.Run("next hop lost under a recorded flow", func(t *testing.T) {
		syn := syn4(4)
		w.open(t, vipTCP4, syn)
		s := defaultSettings()
		s.NextHopMAC = nil
		if err := w.b.SetSettings(s); err != nil {
			t.Fatal(err)
		}
		defer w.b.SetSettings(defaultSettings())
		in, _ := build(t, ackOf(syn))
		before := w.stats(t)["drop_no_nexthop"]
		if act, _ := w.run(t, in); act != xdpDrop || w.stats(t)["drop_no_nexthop"] != before+1 {
			t.Errorf("action %s, want DROP counted as drop_no_nexthop", actionNames[act])
		}
	})

	// A VIP whose table is not published yet has none to pick from, even
	// though its tables' slots read as backend id 0, a live backend here.
	t.Run("VIP with no table yet", func(t *testing.T) {
		if err := w.b.SetBackend(0, netip.MustParseAddr("10.2.9.2")); err != nil {
			t.Fatal(err)
		}
		defer w.b.DeleteBackend(0)
		k := VIPKey{netip.MustParseAddr("10.100.0.8"), 80, ProtoTCP}
		if err := w.b.SetVIP(k, 8, 0); err != nil {
			t.Fatal(err)
		}
		defer w.b.DeleteVIP(k)
		in, _ := build(t, pktSpec{src: client4, dst: k.Addr, sport: 5, dport: 80, proto: ProtoTCP, syn: true})
		before := w.stats(t)["drop_no_backend"]
		if act, _ := w.run(t, in); act != xdpDrop || w.stats(t)["drop_no_backend"] != before+1 {
			t.Errorf("action %s, want DROP counted as drop_no_backend", actionNames[act])
		}
	})

	t.Run("VIP whose backends are all down", func(t *testing.T) {
		k := VIPKey{netip.MustParseAddr("10.100.0.9"), 80, ProtoTCP}
		if err := w.b.SetVIP(k, 9, 0); err != nil {
			t.Fatal(err)
		}
		empty := make([]uint32, 251)
		for i := range empty {
			empty[i] = MaglevEmpty
		}
		// A backend id past the datapath's limit is refused whole.
		bad := slices.Clone(empty)
		bad[7] = MaxBackends
		if _, err := w.b.PublishTable(k, bad); err == nil || !strings.Contains(err.Error(), "slot 7 holds backend id") {
			t.Errorf("PublishTable with backend id %d: %v, want it refused naming the slot", MaxBackends, err)
		}
		if _, err := w.b.PublishTable(k, empty); err != nil {
			t.Fatal(err)
		}
		in, _ := build(t, pktSpec{src: client4, dst: k.Addr, sport: 4, dport: 80, proto: ProtoTCP, syn: true})
		before := w.stats(t)["drop_no_backend"]
		if act, _ := w.run(t, in); act != xdpDrop || w.stats(t)["drop_no_backend"] != before+1 {
			t.Errorf("action %s, want DROP counted as drop_no_backend", actionNames[act])
		}
	})
}

// TestTruncation cuts packets at every byte and checks that each prefix is
// passed (L2/L3 unreadable: the stack decides) or dropped as truncated (a VIP
// packet shorter than its headers say), never sent, and always counted.
func TestTruncation(t *testing.T) {
	w := newWorld(t, Options{})
	specs := []pktSpec{
		func() pktSpec { s := syn4(7); s.vlan = 7; s.ipOptions = true; return s }(),
		{src: client6, dst: vip6, sport: 7, dport: 80, proto: ProtoTCP, syn: true},
		{src: client4, dst: vip4, sport: 7, dport: 53, proto: ProtoUDP, payload: []byte("abcd")},
		// Long enough for the fast path (parse_common): untagged IPv4
		// TCP and UDP without options, 40 bytes of IP or more.
		func() pktSpec { s := syn4(7); s.payload = []byte("abcdefgh"); return s }(),
		{src: client4, dst: vip4, sport: 7, dport: 53, proto: ProtoUDP, payload: []byte("abcdefghijklmnop")},
		{src: client6, dst: vip6, sport: 7, dport: 53, proto: ProtoUDP, payload: []byte("abcd")},
		{src: client4, dst: vip4, icmpType: 8, icmpID: 1, icmpSeq: 1, icmpPayload: []byte("ping")},
		{src: client6, dst: vip6, icmpType: 128, icmpID: 1, icmpSeq: 1, icmpPayload: []byte("ping")},
	}
	for _, s := range specs {
		full, l2 := build(t, s)
		for n := 14; n < len(full); n++ {
			in := full[:n]
			before := w.stats(t)
			act, _ := w.run(t, in)
			after := w.stats(t)
			ipMin, ipEnd := l2+20, l2+int(binary.BigEndian.Uint16(full[l2+2:]))
			if s.dst.Is6() {
				ipMin, ipEnd = l2+40, l2+40+int(binary.BigEndian.Uint16(full[l2+4:]))
			}
			if n >= ipEnd {
				break // only Ethernet padding was cut
			}
			switch {
			case n < l2:
				// Cut inside the VLAN tag: not IP at all.
				if act != xdpPass {
					t.Errorf("%v cut at %d: %s, want PASS", flowOf(s), n, actionNames[act])
				}
			case n < ipMin:
				if act != xdpPass || after["pass_malformed"] != before["pass_malformed"]+1 {
					t.Errorf("%v cut at %d: %s, want PASS counted as pass_malformed", flowOf(s), n, actionNames[act])
				}
			default:
				if act != xdpDrop || after["drop_truncated"] != before["drop_truncated"]+1 {
					t.Errorf("%v cut at %d: %s, want DROP counted as drop_truncated", flowOf(s), n, actionNames[act])
				}
			}
		}
	}
}

func TestTableFlipPinsEstablishedFlows(t *testing.T) {
	w := newWorld(t, Options{})
	old := syn4(41000)
	pinned := w.open(t, vipTCP4, old)

	// New generation: a single backend that is not the pinned one.
	other := otherBackend(vipTCP4, pinned)
	meta := func() VIPMeta {
		vs, err := w.b.VIPs()
		if err != nil {
			t.Fatal(err)
		}
		return vs[vipTCP4.key]
	}
	genBefore := meta().Gen
	w.publish(t, vipTCP4.key, other)
	if m := meta(); m.Gen == genBefore || m.TableSize[0] == 0 || m.TableSize[1] == 0 {
		t.Fatalf("generation did not flip or previous generation lost: %+v", m)
	}
	prev, err := w.b.Table(vipTCP4.key, genBefore)
	if err != nil || len(prev) != 1021 {
		t.Fatalf("previous generation unreadable: %v (%d slots)", err, len(prev))
	}

	w.expectSent(t, ackOf(old), pinned)
	w.expectSent(t, syn4(41001), backendAddrs[other])
	// A retransmitted SYN of the old flow follows the current table.
	w.expectSent(t, old, backendAddrs[other])
}

// Settings the program cannot work with are refused whole, and the ones in
// force stay: an MTU below the encapsulation's room would make every VIP
// packet "too big", with an MTU that wrapped around.
func TestSettingsRefused(t *testing.T) {
	w := newWorld(t, Options{})
	good := defaultSettings()
	good.MTU = 1400
	if err := w.b.SetSettings(good); err != nil {
		t.Fatal(err)
	}
	small := defaultSettings()
	small.MTU = 40
	negative := defaultSettings()
	negative.UDPIdleTimeout = -time.Second
	// Not Ethernet (an EUI-64, an IPoIB address): no MAC the program
	// can write.
	longNextHop := defaultSettings()
	longNextHop.NextHopMAC = net.HardwareAddr{0x02, 0, 0, 0xff, 0xfe, 0, 0, 0x01}
	longSource := defaultSettings()
	longSource.SourceMAC = make(net.HardwareAddr, 20)
	// No MAC at all (tun, wireguard): no Ethernet header either.
	noSource := defaultSettings()
	noSource.SourceMAC = nil
	for _, c := range []struct {
		s    Settings
		want string
	}{
		{small, "MTU 40 is below 576"},
		{negative, "UDP idle timeout -1s is negative"},
		{longNextHop, "next-hop MAC 02:00:00:ff:fe:00:00:01 is not"},
		{longSource, "source MAC"},
		{noSource, "source MAC (none) is not a 6-byte Ethernet address"},
	} {
		err := w.b.SetSettings(c.s)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SetSettings: error %v, want one saying %q", err, c.want)
		}
		cfg, _, err := readGlobals(w.b)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Mtu != 1400 || cfg.UdpTimeoutNs != uint64(30*time.Second) {
			t.Errorf("after a refused SetSettings: MTU %d, UDP timeout %d ns, want the settings in force (1400, 30 s)", cfg.Mtu, cfg.UdpTimeoutNs)
		}
	}
	in, _ := build(t, syn4(9))
	if act, _ := w.run(t, in); act != xdpTX {
		t.Errorf("a SYN after refused settings: action %s, want TX", actionNames[act])
	}
}

func TestUDPIdleExpiry(t *testing.T) {
	w := newWorld(t, Options{})
	u := pktSpec{src: client4, dst: netip.MustParseAddr("10.100.0.1"), sport: 7777, dport: 53, proto: ProtoUDP}
	in, _ := build(t, u)
	w.run(t, in)
	// Idle timeout of zero: the entry is stale at once.
	set := defaultSettings()
	set.UDPIdleTimeout = 0
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	before := w.stats(t)["udp_expired"]
	w.run(t, in)
	if got := w.stats(t)["udp_expired"]; got != before+1 {
		t.Errorf("udp_expired %d -> %d, want +1", before, got)
	}

	// The idle timeout is UDP's alone: under a timeout of zero a TCP
	// flow's next packet still follows its entry.
	tcp := pktSpec{src: client4, dst: vip4, sport: 7778, dport: 80, proto: ProtoTCP, syn: true}
	synIn, _ := build(t, tcp)
	w.run(t, synIn)
	tcp.syn, tcp.ack = false, true
	ackIn, _ := build(t, tcp)
	s0 := w.stats(t)
	if act, _ := w.run(t, ackIn); act != xdpTX {
		t.Fatalf("TCP packet of a recorded flow: %s, want TX", actionNames[act])
	}
	if s1 := w.stats(t); s1["conn_hit"] != s0["conn_hit"]+1 || s1["conn_miss"] != s0["conn_miss"] || s1["udp_expired"] != s0["udp_expired"] {
		t.Errorf("TCP packet of a recorded flow under a zero UDP idle timeout: conn_hit %d -> %d (want +1), conn_miss %d -> %d, udp_expired %d -> %d (want both unchanged)",
			s0["conn_hit"], s1["conn_hit"], s0["conn_miss"], s1["conn_miss"], s0["udp_expired"], s1["udp_expired"])
	}

	// Idle time is counted in jiffies: a 100 ms timeout spares a packet
	// right after the previous one and expires the entry 150 ms later.
	set.UDPIdleTimeout = 100 * time.Millisecond
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	w.run(t, in) // records the flow again
	before = w.stats(t)["udp_expired"]
	w.run(t, in)
	// (Unless this VM stalled for most of the timeout in between.)
	if got := w.stats(t)["udp_expired"]; got != before && time.Since(start) < 80*time.Millisecond {
		t.Errorf("udp_expired %d -> %d right after a packet of a 100 ms timeout, want unchanged", before, got)
	}
	time.Sleep(150 * time.Millisecond)
	w.run(t, in)
	if got := w.stats(t)["udp_expired"]; got != before+1 {
		t.Errorf("udp_expired %d -> %d after 150 ms idle with a 100 ms timeout, want +1", before, got)
	}
}

// TestUDPExpiredCountedOnce: an expired UDP entry is counted once, by the
// packet that records its flow again, however many of the flow's packets
// find it expired first: one too big to forward (answered with a "too
// big") leaves the entry in place, for the next to find expired too.
func TestUDPExpiredCountedOnce(t *testing.T) {
	w := newWorld(t, Options{})
	u := pktSpec{src: client4, dst: vip4, sport: 7790, dport: 53, proto: ProtoUDP}
	small, _ := build(t, u)
	if act, _ := w.run(t, small); act != xdpTX {
		t.Fatalf("UDP packet: %s, want TX", actionNames[act])
	}
	set := defaultSettings()
	set.UDPIdleTimeout = 0 // the entry is past it at once
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	before := w.stats(t)
	big := u
	big.payload = make([]byte, 1470)
	in, _ := build(t, big)
	if act, _ := w.run(t, in); act != xdpTX {
		t.Fatalf("over-MTU UDP packet: %s, want TX (a too big)", actionNames[act])
	}
	if act, _ := w.run(t, small); act != xdpTX {
		t.Fatalf("UDP packet: %s, want TX", actionNames[act])
	}
	d := statsDelta(before, w.stats(t))
	if d["icmp_too_big_sent"] != 1 || d["udp_expired"] != 1 {
		t.Errorf("counters moved by %v, want icmp_too_big_sent +1 and udp_expired +1 (one entry expired once)", d)
	}
}

// TestFlowsLastSeen: the connection dump turns an entry's jiffies stamp
// into CLOCK_MONOTONIC, with the jiffy the loader measured.
func TestFlowsLastSeen(t *testing.T) {
	w := newWorld(t, Options{})
	if ns := w.b.clock.jiffyNs; !slices.Contains([]uint64{1e7, 4e6, 3333333, 1e6}, ns) {
		t.Fatalf("measured jiffy %d ns, not 10^9 / HZ for any HZ", ns)
	}
	mono := func() time.Duration {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ts.Nano())
	}
	s := syn4(31000)
	// The entry's stamp is the jiffy the packet read, between the jiffies
	// of clock samples taken around it. How far behind CLOCK_MONOTONIC
	// the jiffies ran then (a late tick, on a VM) is not the test's to
	// bound: it compares jiffies with jiffies, and times with the
	// clock's conversion of them.
	before, err := w.b.clock.sample()
	if err != nil {
		t.Fatal(err)
	}
	w.open(t, vipTCP4, s)
	after, err := w.b.clock.sample()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	c, ok, err := w.b.LookupFlow(flowOf(s))
	if err != nil || !ok {
		t.Fatalf("LookupFlow: %v %v", ok, err)
	}
	at := func(j uint64) time.Duration { return w.b.clock.lastSeen(after, uint32(j)) }
	if c.LastSeen < at(before.Jiffies) || c.LastSeen > at(after.Jiffies) {
		t.Errorf("last seen %v, outside the jiffies around the packet: %v (jiffy %d) to %v (jiffy %d)",
			c.LastSeen, at(before.Jiffies), before.Jiffies, at(after.Jiffies), after.Jiffies)
	}
	// A jiffy begins no later than a sample that reads it, and not long
	// before: the conversion is CLOCK_MONOTONIC.
	if d := time.Duration(after.MonoNs) - at(after.Jiffies); d < 0 || d > time.Second {
		t.Errorf("jiffy %d converts to %v, %v before the sample that read it at %v",
			after.Jiffies, at(after.Jiffies), d, time.Duration(after.MonoNs))
	}
	// Hence at least the sleep since the packet.
	if idle := mono() - c.LastSeen; idle < 50*time.Millisecond {
		t.Errorf("idle %v after a 50 ms sleep (jiffy %v)", idle, time.Duration(w.b.clock.jiffyNs))
	}
}

func TestGUE(t *testing.T) {
	w := newWorld(t, Options{})
	set := defaultSettings()
	set.GUEPort = 6080
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		spec pktSpec
		vip  fixtureVIP
	}{
		{syn4(42000), vipTCP4},
		{pktSpec{src: client6, dst: vip6, sport: 42001, dport: 80, proto: ProtoTCP, syn: true}, vipTCP6},
	} {
		in, l2 := build(t, c.spec)
		act, out := w.run(t, in)
		if act != xdpTX {
			t.Fatalf("action %s", actionNames[act])
		}
		checkEncap(t, in, l2, out, encapWant{backend: w.expectBackend(c.vip, flowOf(c.spec)), gue: 6080})
	}
}

func TestHashedOuterSource(t *testing.T) {
	w := newWorld(t, Options{})
	set := defaultSettings()
	set.SourcePrefixV4 = netip.MustParsePrefix("172.16.0.0/16")
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	srcOf := func(client netip.Addr) netip.Addr {
		s := syn4(43000)
		s.src = client
		in, l2 := build(t, s)
		if act, out := w.run(t, in); act == xdpTX {
			return netip.AddrFrom4([4]byte(out[l2+12 : l2+16]))
		}
		t.Fatal("not forwarded")
		return netip.Addr{}
	}
	seen := map[netip.Addr]bool{}
	pfx := set.SourcePrefixV4
	for i := range 16 {
		c := netip.AddrFrom4([4]byte{10, 0, byte(i), 2})
		a := srcOf(c)
		if !pfx.Contains(a) {
			t.Fatalf("outer source %s outside %s", a, pfx)
		}
		if srcOf(c) != a {
			t.Fatalf("outer source for %s is not stable", c)
		}
		seen[a] = true
	}
	if len(seen) < 12 {
		t.Errorf("16 clients map to only %d outer sources: the hash does not spread", len(seen))
	}
}

// TestMaglevTablesOfEverySize: tables of up to MAGLEV_STD_SLOTS slots
// live in maglev_std (inner maps of one size, whose lookups the verifier
// inlines), larger ones in maglev_tables. A VIP's generations move between
// the two as its table size changes, leave nothing behind in the other,
// and packets follow whichever table is current.
func TestMaglevTablesOfEverySize(t *testing.T) {
	w := newWorld(t, Options{})
	for i, size := range []uint64{131071, 1021, 65537, 1048573, 251} {
		gen := w.publishSized(t, vipTCP4.key, size, vipTCP4.backends...)
		slot, std := vipTCP4.num*2+gen, size <= maglevStdSlots
		for _, o := range []struct {
			name string
			m    *ebpf.Map
			want bool
		}{{"maglev_std", w.b.objs.MaglevStd, std}, {"maglev_tables", w.b.objs.MaglevTables, !std}} {
			var id ebpf.MapID
			if err := o.m.Lookup(slot, &id); (err == nil) != o.want {
				t.Errorf("%d slots, generation %d: %s has a table: %v, want %v", size, gen, o.name, err == nil, o.want)
			}
		}
		got, err := w.b.Table(vipTCP4.key, gen)
		if err != nil || !slices.Equal(got, w.tables[vipTCP4.key]) {
			t.Fatalf("%d slots: the table read back differs from the one published (err %v)", size, err)
		}
		for p := range 8 {
			s := syn4(uint16(31000 + 100*i + p))
			w.expectSent(t, s, w.expectBackend(vipTCP4, flowOf(s)))
		}
	}
}

// TestStdTablesMovedFromEarlierPins: an earlier version kept every table
// in maglev_tables. Loading this version over its pins copies std-size
// tables into maglev_std, where this program looks, and leaves the old
// copy for the program still attached until the generation is written
// again.
func TestStdTablesMovedFromEarlierPins(t *testing.T) {
	requireRoot(t)
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-std-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })
	w := newWorld(t, Options{PinDir: pin})
	meta, err := w.b.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	gen := meta[vipTCP4.key].Gen
	slot := vipTCP4.num*2 + gen
	// Rewrite the pins as the earlier version left them.
	table := w.tables[vipTCP4.key]
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4,
		MaxEntries: uint32(len(table)), Flags: unix.BPF_F_INNER_MAP})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := fillTable(old, table); err != nil {
		t.Fatal(err)
	}
	if err := w.b.objs.MaglevTables.Put(slot, old); err != nil {
		t.Fatal(err)
	}
	if err := w.b.objs.MaglevStd.Delete(slot); err != nil {
		t.Fatal(err)
	}
	s := syn4(32000)
	in, _ := build(t, s)
	if act, _ := w.run(t, in); act != xdpDrop {
		t.Fatalf("without its std table the VIP's SYN got %s, want DROP (no backend)", actionNames[act])
	}
	w.b.Close()

	w2 := w.reload(t, pin)
	b2 := w2.b
	w2.expectSent(t, syn4(32001), w2.expectBackend(vipTCP4, flowOf(syn4(32001))))
	var id ebpf.MapID
	if err := b2.objs.MaglevTables.Lookup(slot, &id); err != nil {
		t.Errorf("the earlier version's copy is gone before the generation was written again: %v", err)
	}
}

// TestStdTablesAdoptedFromEarlierPins: the previous release pinned
// maglev_std, whose inner maps were not mappable, as "maglev_std". Loading
// over it must copy every table into this release's outer map, so that
// packets and readers find them. The old pin stays while no new program
// runs: the previous one reads it (TestBalancerFailedUpgradeKeepsItsPins
// sees it go once the new one is attached).
func TestStdTablesAdoptedFromEarlierPins(t *testing.T) {
	requireRoot(t)
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-stdmm-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })
	w := newWorld(t, Options{PinDir: pin})
	w.b.Close()

	// The earlier release's outer map and tables.
	cur, err := ebpf.LoadPinnedMap(filepath.Join(pin, maglevStdPin), nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := loadBalancer()
	if err != nil {
		t.Fatal(err)
	}
	earlier := spec.Maps["maglev_std"].Copy()
	earlier.Name, earlier.Pinning, earlier.InnerMap.Flags = legacyMaglevStdPin, ebpf.PinNone, 0
	old, err := ebpf.NewMap(earlier)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	var (
		slot  uint32
		inner *ebpf.Map
		moved int
	)
	it := cur.Iterate()
	for it.Next(&slot, &inner) {
		table, err := readTable(inner, maglevStdSlots)
		inner.Close()
		if err != nil {
			t.Fatal(err)
		}
		m, err := ebpf.NewMap(earlier.InnerMap)
		if err != nil {
			t.Fatal(err)
		}
		if err := fillTable(m, table); err != nil {
			t.Fatal(err)
		}
		if err := old.Put(slot, m); err != nil {
			t.Fatal(err)
		}
		m.Close()
		moved++
	}
	if err := it.Err(); err != nil || moved == 0 {
		t.Fatalf("tables of the first load: %d (%v)", moved, err)
	}
	cur.Close()
	if err := os.Remove(filepath.Join(pin, maglevStdPin)); err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(filepath.Join(pin, legacyMaglevStdPin)); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	b2, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("load over the pins: %v", err)
	}
	t.Cleanup(func() { b2.Close() })
	w2 := &world{b: b2, tables: w.tables}
	// An upgrade copies up to 1,024 tables of 65,537 slots (tens of
	// seconds): the start and the end show.
	expectProgress(t, logs.String(),
		fmt.Sprintf(`msg="copying the previous release's Maglev tables to this release's mappable maps" tables=%d`, moved),
		fmt.Sprintf(`msg="Maglev tables copied to this release's mappable maps" tables=%d seconds=`, moved))
	for _, v := range allVIPs {
		meta, err := b2.VIPs()
		if err != nil {
			t.Fatal(err)
		}
		got, err := b2.Table(v.key, meta[v.key].Gen)
		if err != nil || !slices.Equal(got, w.tables[v.key]) {
			t.Fatalf("VIP %s: the table read back after the move differs (%v)", v.key, err)
		}
	}
	w2.expectSent(t, syn4(32100), w2.expectBackend(vipTCP4, flowOf(syn4(32100))))
	if _, err := os.Stat(filepath.Join(pin, legacyMaglevStdPin)); err != nil {
		t.Errorf("the previous release's pin is gone before a new program runs: %v", err)
	}
}

func TestReadBackTablesAndFlows(t *testing.T) {
	w := newWorld(t, Options{})
	got, err := w.b.Table(vipTCP4.key, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, w.tables[vipTCP4.key]) {
		t.Fatalf("table read back differs from the one published")
	}
	for i := range 10 {
		in, _ := build(t, syn4(uint16(30000+i)))
		w.run(t, in)
	}
	if n, err := w.b.CountFlows(); err != nil || n.Total != 10 {
		t.Errorf("CountFlows = %d, %v; want 10", n.Total, err)
	}
}

// TestProgramVariant: the upgrade-test build differs in tag only.
func TestProgramVariant(t *testing.T) {
	w := newWorld(t, Options{})
	v := newWorld(t, Options{ProgramVariant: 7})
	a, _ := w.b.objs.XdpBalancer.Info()
	b, _ := v.b.objs.XdpBalancer.Info()
	if a.Tag == b.Tag {
		t.Fatalf("variant has the same tag %s", a.Tag)
	}
	in, l2 := build(t, syn4(48000))
	act, out := v.run(t, in)
	if act != xdpTX {
		t.Fatalf("variant: %s", actionNames[act])
	}
	checkEncap(t, in, l2, out, encapWant{backend: v.expectBackend(vipTCP4, flowOf(syn4(48000)))})
}

// TestDeletedBackendReselects: a flow pinned to a backend that was deleted
// is chosen afresh from the table instead of being sent to a dead slot.
func TestDeletedBackendReselects(t *testing.T) {
	w := newWorld(t, Options{})
	s := syn4(49000)
	in, _ := build(t, s)
	w.run(t, in)
	pinned := w.expectBackend(vipTCP4, flowOf(s))
	var pinnedID, other uint32
	for _, id := range vipTCP4.backends {
		if backendAddrs[id] == pinned {
			pinnedID = id
		} else {
			other = id
		}
	}
	w.publish(t, vipTCP4.key, other)
	if err := w.b.DeleteBackend(pinnedID); err != nil {
		t.Fatal(err)
	}
	w.expectSent(t, ackOf(s), backendAddrs[other])
	if c, ok, _ := w.b.LookupFlow(flowOf(s)); !ok || c.BackendID != other {
		t.Errorf("connection entry %+v (found %v), want it re-pinned to %d", c, ok, other)
	}
}

// TestVIPFilterFalsePositive sends host traffic to an address that shares
// vip_filter's bit with a VIP address: the filter says "maybe", and
// nothing may be dropped, answered or counted on the strength of that.
func TestVIPFilterFalsePositive(t *testing.T) {
	w := newWorld(t, Options{})
	want := vipFilterBit(toAddr(vip4))
	var host netip.Addr
	for i := uint32(1); i < 1<<24; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if a != vip4 && vipFilterBit(toAddr(a)) == want {
			host = a
			break
		}
	}
	if !host.IsValid() {
		t.Fatal("no address in 10/8 shares vip4's filter bit")
	}
	var f balancerVipFilter
	if err := w.b.data.VipFilter.Lookup(uint32(0), &f); err != nil {
		t.Fatal(err)
	}
	if f.W[want/64]&(1<<(want%64)) == 0 {
		t.Fatalf("vip4's bit %d is not set in vip_filter", want)
	}
	t.Logf("%s shares filter bit %d with %s", host, want, vip4)

	tcp := pktSpec{src: client4, dst: host, sport: 9, dport: 80, proto: ProtoTCP, syn: true, df: true}
	frag := tcp
	frag.fragMF, frag.df = true, false
	tooBigQuote := quotedReply(t, pktSpec{src: client4, dst: host, sport: 9, dport: 80, proto: ProtoTCP, ack: true})
	cases := []struct {
		name string
		spec pktSpec
		cut  int // bytes cut off the end
	}{
		{"TCP SYN to port 80", tcp, 0},
		{"UDP to port 53", pktSpec{src: client4, dst: host, sport: 9, dport: 53, proto: ProtoUDP, payload: []byte("q")}, 0},
		{"fragment", frag, 0},
		{"truncated TCP", tcp, 10},
		{"echo request", pktSpec{src: client4, dst: host, icmpType: 8, icmpID: 1, icmpSeq: 1}, 0},
		{"fragmentation needed", pktSpec{src: netip.MustParseAddr("10.9.9.9"), dst: host, icmpType: 3, icmpCode: 4, icmpMTU: 1400, icmpPayload: tooBigQuote}, 0},
	}
	for _, c := range cases {
		in, _ := build(t, c.spec)
		in = in[:len(in)-c.cut]
		before := w.stats(t)
		if act, _ := w.run(t, in); act != xdpPass {
			t.Errorf("%s to %s: %s, want PASS", c.name, host, actionNames[act])
		}
		if after := w.stats(t); !reflect.DeepEqual(before, after) {
			t.Errorf("%s to %s moved counters: %v -> %v", c.name, host, before, after)
		}
	}
}

// TestConnTableEviction fills one set of the connection table and checks
// that a new flow takes the place of the entry seen least recently (not
// the oldest inserted), that the eviction is counted, and that a SYN of a
// recorded flow reuses its entry.
func TestConnTableEviction(t *testing.T) {
	w := newWorld(t, Options{})
	sets := w.b.objs.Conns.MaxEntries()
	var same []pktSpec // connWays+1 flows of one set
	want := connSetOf(flowSum(toFlowKey(flowOf(syn4(20000)))), sets)
	for port := uint16(20000); len(same) < connWays+1; port++ {
		if s := syn4(port); connSetOf(flowSum(toFlowKey(flowOf(s))), sets) == want {
			same = append(same, s)
		}
	}
	send := func(s pktSpec) {
		t.Helper()
		in, _ := build(t, s)
		if act, _ := w.run(t, in); act != xdpTX {
			t.Fatalf("%v: %s", flowOf(s), actionNames[act])
		}
	}
	recorded := func(s pktSpec) bool {
		t.Helper()
		_, ok, err := w.b.LookupFlow(flowOf(s))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	count := func() uint64 {
		n, err := w.b.CountFlows()
		if err != nil {
			t.Fatal(err)
		}
		return n.Total
	}
	// Stamps count jiffies (1-10 ms): space the inserts out.
	for _, s := range same[:connWays] {
		send(s)
		time.Sleep(20 * time.Millisecond)
	}
	if n := count(); n != connWays {
		t.Fatalf("%d entries after %d new flows", n, connWays)
	}
	// A SYN of a recorded flow overwrites its own entry: a refresh, which
	// evicts nothing (evictions are derived from new flows less fills and
	// refreshes).
	st := w.stats(t)
	send(same[1])
	if n := count(); n != connWays {
		t.Fatalf("a repeated SYN added an entry: %d, want %d", n, connWays)
	}
	if after := w.stats(t); after["conn_refreshed"] != st["conn_refreshed"]+1 || after["conn_evicted"] != st["conn_evicted"] {
		t.Errorf("a repeated SYN: conn_refreshed %d -> %d, conn_evicted %d -> %d; want one refresh, no eviction",
			st["conn_refreshed"], after["conn_refreshed"], st["conn_evicted"], after["conn_evicted"])
	}
	// Refresh the first flow: a packet refreshes an entry's stamp once per
	// jiffy, so let the jiffy move on first.
	time.Sleep(20 * time.Millisecond)
	send(ackOf(same[0]))

	before := w.stats(t)
	send(same[connWays])
	after := w.stats(t)
	if got := after["conn_evicted"] - before["conn_evicted"]; got != 1 {
		t.Errorf("conn_evicted rose by %d, want 1", got)
	}
	// same[1] was re-recorded by its second SYN; same[2] is now the entry
	// seen least recently.
	for i, s := range same {
		if want := i != 2; recorded(s) != want {
			t.Errorf("flow %d (%v) recorded: %v, want %v", i, flowOf(s), !want, want)
		}
	}
}

// TestEvictionsGoOnFromEarlierPins: evictions are derived (new flows -
// fills - refreshes - base). An earlier version counted them one by one
// and counted no fills, so loading over its pins must turn what it
// recorded into the base once: conn_evicted goes on from its value, and
// later fills and evictions count from there.
func TestEvictionsGoOnFromEarlierPins(t *testing.T) {
	requireRoot(t)
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-evict-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })
	w := newWorld(t, Options{PinDir: pin})
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	// The earlier version's state: 10 flows recorded, 7 of them evictions.
	flows := make([]balancerVipCounters, ncpu)
	flows[0].NewFlows = 10
	if err := w.b.objs.VipStats.Put(vipTCP4.num, flows); err != nil {
		t.Fatal(err)
	}
	evicted := make([]uint64, ncpu)
	evicted[0] = 7
	if err := w.b.objs.Stats.Put(uint32(balancerSyStatSTAT_CONN_EVICTED), evicted); err != nil {
		t.Fatal(err)
	}
	w.b.Close()

	for range 2 { // the second load must not move the base again
		b2, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		w2 := &world{b: b2, tables: w.tables}
		st := w2.stats(t)
		b2.Close()
		if st["conn_evicted"] != 7 {
			t.Fatalf("conn_evicted = %d after loading over earlier pins, want 7", st["conn_evicted"])
		}
	}
	b3, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer b3.Close()
	w3 := &world{b: b3, tables: w.tables}
	w3.open(t, vipTCP4, syn4(45000)) // a free entry: a fill, no eviction
	if st := w3.stats(t); st["conn_evicted"] != 7 || st["conn_filled"] != 1 {
		t.Errorf("after a fill: conn_evicted %d, conn_filled %d; want 7 and 1", st["conn_evicted"], st["conn_filled"])
	}
}

// TestCopiesRebuiltFromEarlierPins: packets read backends and VIP epochs
// from copies (backend_table, vip_epoch_table) that an earlier version did
// not pin. Loading over such pins must rebuild the copies from the records
// before a packet reads them: an established flow stays pinned to its
// backend, through its connection entry.
func TestCopiesRebuiltFromEarlierPins(t *testing.T) {
	requireRoot(t)
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-copies-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })
	w := newWorld(t, Options{PinDir: pin})
	s := syn4(43000)
	pinned := w.open(t, vipTCP4, s)
	w.b.Close()
	for _, name := range []string{"backend_table", "vip_epoch_table"} {
		if err := os.Remove(filepath.Join(pin, name)); err != nil {
			t.Fatalf("the earlier version's pins: %v", err)
		}
	}
	w.reload(t, pin).expectSentByEntry(t, vipTCP4, ackOf(s), pinned)
}

// expectSentByEntry is expectSent for a packet of a recorded flow of v
// that its connection entry must send (a hit), not a new choice.
func (w *world) expectSentByEntry(t *testing.T, v fixtureVIP, s pktSpec, backend netip.Addr) {
	t.Helper()
	before, err := w.b.VIPCounters(v.num)
	if err != nil {
		t.Fatal(err)
	}
	w.expectSent(t, s, backend)
	after, err := w.b.VIPCounters(v.num)
	if err != nil {
		t.Fatal(err)
	}
	if after.ConnHits != before.ConnHits+1 {
		t.Fatalf("the packet was not sent by its connection entry: hits %d -> %d", before.ConnHits, after.ConnHits)
	}
}

// TestConnsAdoptedFromEarlierPins: the previous release pinned its
// connection table without BPF_F_MMAPABLE (unaligned sets). Loading over it
// must move every entry into a table of this layout, in the old pin's
// place: an established flow stays with its backend, by its entry.
func TestConnsAdoptedFromEarlierPins(t *testing.T) {
	requireRoot(t)
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-conns-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })
	w := newWorld(t, Options{PinDir: pin})
	s := syn4(43100)
	pinned := w.open(t, vipTCP4, s)
	w.b.Close()

	// The earlier release's table: the same sets, without the flag.
	path := filepath.Join(pin, "conns")
	cur, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := loadBalancer()
	if err != nil {
		t.Fatal(err)
	}
	earlier := spec.Maps["conns"].Copy()
	earlier.Flags, earlier.Pinning, earlier.MaxEntries = 0, ebpf.PinNone, cur.MaxEntries()
	old, err := ebpf.NewMap(earlier)
	if err != nil {
		t.Fatal(err)
	}
	var set balancerConnSet
	for i := range cur.MaxEntries() {
		if err := cur.Lookup(i, &set); err != nil {
			t.Fatal(err)
		}
		if err := old.Put(i, &set); err != nil {
			t.Fatal(err)
		}
	}
	cur.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(path); err != nil {
		t.Fatal(err)
	}
	old.Close()

	// No program is attached: the pin stays the earlier table's, and the
	// second load copies it again.
	for round := range 2 {
		var logs bytes.Buffer
		b2, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatalf("load %d over the earlier table: %v", round+1, err)
		}
		// The copy (64 MiB at the default size) shows its start, and its
		// end with what it copied and how long it took.
		expectProgress(t, logs.String(),
			`msg="copying the connection table to this release's layout" sets=1024`,
			`msg="connection table copied to this release's layout" sets=1024 seconds=`)
		info, err := b2.objs.Conns.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Flags&unix.BPF_F_MMAPABLE == 0 {
			t.Fatalf("load %d: the connection table kept the earlier layout (flags %#x)", round+1, info.Flags)
		}
		w2 := &world{b: b2, tables: w.tables}
		w2.expectSentByEntry(t, vipTCP4, ackOf(s), pinned)
		b2.Close()
	}
	if _, err := os.Stat(path + "_new"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary pin is left behind: %v", err)
	}
}

// TestCountersRestartForNewOwners: a VIP number given to a new VIP, and a
// backend id given to a new address, report counters from zero, not the
// counts of their earlier owners; the global sums derived from the VIP
// counters (hits, misses, evictions) do not move.
func TestCountersRestartForNewOwners(t *testing.T) {
	w := newWorld(t, Options{})
	for i := range 5 {
		s := syn4(uint16(42000 + i))
		w.open(t, vipTCP4, s)
		w.expectSent(t, ackOf(s), w.expectBackend(vipTCP4, flowOf(s)))
	}
	old, err := w.b.VIPCounters(vipTCP4.num)
	if err != nil {
		t.Fatal(err)
	}
	if old.Packets != 10 || old.ConnHits != 5 || old.NewFlows != 5 {
		t.Fatalf("VIP counters before the change: %+v, want 10 packets, 5 hits, 5 new flows", old)
	}
	before := w.stats(t)
	if err := w.b.DeleteVIP(vipTCP4.key); err != nil {
		t.Fatal(err)
	}
	next := VIPKey{vip4, 8080, ProtoTCP}
	if err := w.b.SetVIP(next, vipTCP4.num, 0); err != nil {
		t.Fatal(err)
	}
	if c, err := w.b.VIPCounters(vipTCP4.num); err != nil || c != (VIPCounters{}) {
		t.Errorf("the new VIP of number %d starts with %+v (%v), want zeros", vipTCP4.num, c, err)
	}
	after := w.stats(t)
	for _, k := range []string{"conn_hit", "conn_miss", "conn_evicted"} {
		if after[k] != before[k] {
			t.Errorf("%s went from %d to %d when a VIP number changed hands", k, before[k], after[k])
		}
	}
	w.publish(t, next, vipTCP4.backends...)
	s := syn4(42100)
	s.dport = 8080
	w.open(t, fixtureVIP{next, vipTCP4.num, 0, vipTCP4.backends}, s)
	if c, _ := w.b.VIPCounters(vipTCP4.num); c.Packets != 1 || c.NewFlows != 1 {
		t.Errorf("the new VIP's first SYN: %+v, want 1 packet, 1 new flow", c)
	}

	id := vipTCP4.backends[0]
	if c, err := w.b.BackendCounters(id); err != nil || c.Packets == 0 {
		t.Fatalf("backend %d counted %+v (%v); the test needs traffic to it", id, c, err)
	}
	kept, _ := w.b.BackendCounters(id)
	if err := w.b.SetBackend(id, backendAddrs[id]); err != nil {
		t.Fatal(err)
	}
	if c, _ := w.b.BackendCounters(id); c != kept {
		t.Errorf("rewriting backend %d with its own address changed its counters: %+v, want %+v", id, c, kept)
	}
	if err := w.b.SetBackend(id, netip.MustParseAddr("10.2.9.9")); err != nil {
		t.Fatal(err)
	}
	if c, err := w.b.BackendCounters(id); err != nil || c != (BackendCounters{}) {
		t.Errorf("backend %d at a new address starts with %+v (%v), want zeros", id, c, err)
	}
}

// TestConnEntryVouchesForItself: nothing locks a connection entry, so two
// CPUs may write one at once and leave one flow's key beside another
// flow's backend. The datapath and the dump must not use such an entry:
// each carries a check word (the flow sum XOR its value word) that only
// one writer's whole entry satisfies. The test writes the two mixes an
// interleaving can leave into the map and sends a packet of the flow.
func TestConnEntryVouchesForItself(t *testing.T) {
	w := newWorld(t, Options{})
	a := syn4(44000)
	pinned := w.open(t, vipTCP4, a)
	var b pktSpec // a flow that Maglev sends elsewhere
	for port := uint16(44001); ; port++ {
		if b = syn4(port); w.expectBackend(vipTCP4, flowOf(b)) != pinned {
			break
		}
	}
	w.open(t, vipTCP4, b)

	slotOf := func(s pktSpec) (uint32, *balancerConnSet, int) {
		t.Helper()
		sum := flowSum(toFlowKey(flowOf(s)))
		idx := connSetOf(sum, w.b.objs.Conns.MaxEntries())
		var set balancerConnSet
		if err := w.b.objs.Conns.Lookup(idx, &set); err != nil {
			t.Fatal(err)
		}
		for i := range set.Slot {
			if set.Tag[i] == connTag(sum) && set.Slot[i].Key == toFlowKey(flowOf(s)) {
				return idx, &set, i
			}
		}
		t.Fatalf("flow %v is not in the connection table", flowOf(s))
		return 0, nil, 0
	}
	_, bSet, bWay := slotOf(b)
	bSlot := bSet.Slot[bWay]

	for _, mix := range []struct {
		name  string
		check bool // b's check word too, not only b's value word
	}{{"b's value beside a's check", false}, {"b's value and check beside a's key", true}} {
		idx, set, way := slotOf(a)
		e := &set.Slot[way]
		e.BackendId, e.VipNum, e.VipEpoch = bSlot.BackendId, bSlot.VipNum, bSlot.VipEpoch
		if mix.check {
			e.Check = bSlot.Check
		}
		if err := w.b.objs.Conns.Put(idx, set); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := w.b.LookupFlow(flowOf(a)); err != nil || ok {
			t.Errorf("%s: LookupFlow found the mixed entry (err %v)", mix.name, err)
		}
		if n, err := w.b.CountFlows(); err != nil || n.Total != 1 {
			t.Errorf("%s: CountFlows = %d (err %v), want 1: the mixed entry is no flow", mix.name, n.Total, err)
		}
		before := w.stats(t)
		w.expectSent(t, ackOf(a), pinned) // Maglev's choice, not b's backend
		if after := w.stats(t); after["conn_miss"]-before["conn_miss"] != 1 || after["conn_hit"] != before["conn_hit"] {
			t.Errorf("%s: conn_miss rose by %d and conn_hit by %d, want 1 and 0", mix.name,
				after["conn_miss"]-before["conn_miss"], after["conn_hit"]-before["conn_hit"])
		}
		// The miss recorded the flow again, whole.
		if c, ok, err := w.b.LookupFlow(flowOf(a)); err != nil || !ok || backendAddrs[c.BackendID] != pinned {
			t.Errorf("%s: after the miss, entry %+v found %v (err %v), want backend %s", mix.name, c, ok, err, pinned)
		}
	}
}

// TestDeletedVIPStopsPinnedFlows: packets of a recorded flow skip the VIP
// lookup, so the entry itself must stop working when its VIP goes (the
// address still carries another VIP here, so the address filter does not
// stop them), and a VIP re-created under the same number must not inherit
// the old entries.
func TestDeletedVIPStopsPinnedFlows(t *testing.T) {
	w := newWorld(t, Options{})
	s := syn4(43000)
	pinned := w.open(t, vipTCP4, s)
	w.expectSent(t, ackOf(s), pinned)
	ackIn, _ := build(t, ackOf(s))

	if err := w.b.DeleteVIP(vipTCP4.key); err != nil {
		t.Fatal(err)
	}
	before := w.stats(t)
	if act, _ := w.run(t, ackIn); act != xdpPass {
		t.Fatalf("ACK after the VIP was deleted: %s, want PASS", actionNames[act])
	}
	if after := w.stats(t); after["conn_hit"] != before["conn_hit"] {
		t.Errorf("a deleted VIP's entry was used: conn_hit %d -> %d", before["conn_hit"], after["conn_hit"])
	}

	// Same number again, with one backend that is not the pinned one.
	if err := w.b.SetVIP(vipTCP4.key, vipTCP4.num, vipTCP4.flags); err != nil {
		t.Fatal(err)
	}
	other := otherBackend(vipTCP4, pinned)
	w.publish(t, vipTCP4.key, other)
	w.expectSent(t, ackOf(s), backendAddrs[other])
}

// TestVIPIndexFindsEveryVIP fills the datapath with as many VIPs as it
// takes, in one batch, and sends a SYN to each: the VIP index (built in Go
// with linear probing, probed by the program) must find every one,
// including VIPs that collided on their home slot and all-ports VIPs that
// are found after a miss on the packet's port.
func TestVIPIndexFindsEveryVIP(t *testing.T) {
	w := newWorld(t, Options{})
	var vips []fixtureVIP
	err := w.b.Batch(func() error {
		for num := uint32(len(allVIPs)); num < MaxVIPs; num++ {
			v := fixtureVIP{num: num, backends: []uint32{1, 2, 3}}
			a := netip.AddrFrom4([4]byte{10, 101, byte(num >> 8), byte(num)})
			if num%2 == 1 {
				a16 := vip6.As16()
				a16[14], a16[15] = byte(num>>8), byte(num)
				a, v.backends = netip.AddrFrom16(a16), []uint32{11, 12, 13}
			}
			v.key = VIPKey{a, uint16(1000 + num%7), ProtoTCP}
			if num%11 == 0 {
				v.key.Port = 0 // all ports
			}
			if err := w.b.SetVIP(v.key, v.num, 0); err != nil {
				return err
			}
			w.publish(t, v.key, v.backends...)
			vips = append(vips, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for slot, e := range w.indexSlots(t) {
		if vipIndexHash(e.Addr, e.PortProto) != slot {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no VIP sits off its home slot: probing is not exercised")
	}
	for i, v := range append(vips, allVIPs...) {
		s := pktSpec{src: client4, dst: v.key.Addr, sport: uint16(20000 + i), dport: v.key.Port, proto: v.key.Proto, syn: true}
		if v.key.Addr.Is6() {
			s.src = client6
		}
		if s.dport == 0 {
			s.dport = 4242
		}
		w.expectSent(t, s, w.expectBackend(v, flowOf(s)))
		// LookupVIP reads the index as the program just did.
		got, ok, err := w.b.LookupVIP(v.key)
		if err != nil || !ok || got.Num != v.num {
			t.Errorf("LookupVIP(%s): %+v, %v, %v; want number %d", v.key, got, ok, err, v.num)
		}
	}
	t.Logf("%d VIPs, %d of them off their home slot", len(vips)+len(allVIPs), moved)
	// A key that shares its home slot's run but is not a VIP is not found.
	for _, v := range vips[:8] {
		k := v.key
		k.Proto = ProtoUDP
		if got, ok, err := w.b.LookupVIP(k); err != nil || ok {
			t.Errorf("LookupVIP(%s), not a VIP: %+v, %v, %v; want not found", k, got, ok, err)
		}
	}
}

// indexSlots reads the published VIP index: slot -> entry.
func (w *world) indexSlots(tb testing.TB) map[uint32]balancerVipSlot {
	tb.Helper()
	var id ebpf.MapID
	if err := w.b.objs.VipIndex.Lookup(uint32(0), &id); err != nil {
		tb.Fatal(err)
	}
	m, err := ebpf.NewMapFromID(id)
	if err != nil {
		tb.Fatal(err)
	}
	defer m.Close()
	out := map[uint32]balancerVipSlot{}
	var (
		slot uint32
		e    balancerVipSlot
	)
	it := m.Iterate()
	for it.Next(&slot, &e) {
		if e.PortProto != 0 {
			out[slot] = e
		}
	}
	if err := it.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestBatchDefersTheVIPIndex: inside a batch a new VIP is not served yet
// and a VIP keeps its published table; a second table for the same VIP in
// the batch first publishes the index, so packets never follow a
// generation that is being overwritten; the batch's end publishes the rest.
func TestBatchDefersTheVIPIndex(t *testing.T) {
	w := newWorld(t, Options{})
	fresh := fixtureVIP{VIPKey{netip.MustParseAddr("10.100.9.9"), 80, ProtoTCP}, 40, 0, []uint32{1, 2, 3}}
	freshSYN := pktSpec{src: client4, dst: fresh.key.Addr, sport: 30000, dport: 80, proto: ProtoTCP, syn: true}
	syn := syn4(30001)
	old := w.expectBackend(vipTCP4, flowOf(syn))
	first := otherBackend(vipTCP4, old)                  // the batch's first table: all to first
	second := otherBackend(vipTCP4, backendAddrs[first]) // its second: all to second
	err := w.b.Batch(func() error {
		if err := w.b.SetVIP(fresh.key, fresh.num, 0); err != nil {
			return err
		}
		w.publish(t, fresh.key, fresh.backends...)
		in, _ := build(t, freshSYN)
		if act, _ := w.run(t, in); act != xdpPass {
			t.Errorf("new VIP inside the batch: %s, want PASS (not published yet)", actionNames[act])
		}
		// Its table goes into maglev_std with the batch's other new
		// tables, in one update.
		var id ebpf.MapID
		if err := w.b.objs.MaglevStd.Lookup(fresh.num*2, &id); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Errorf("the new VIP's table is in maglev_std before the batch's end (%v)", err)
		}
		if got, err := w.b.Table(fresh.key, 0); err != nil || !slices.Equal(got, w.tables[fresh.key]) {
			t.Errorf("the new VIP's table does not read back inside the batch (%v)", err)
		}
		w.publish(t, vipTCP4.key, first)
		w.expectSent(t, syn, old) // still the published table
		// The second table overwrites the generation the index points
		// to: the index moves to the first table before that.
		w.publish(t, vipTCP4.key, second)
		w.expectSent(t, syn, backendAddrs[first])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w.expectSent(t, freshSYN, w.expectBackend(fresh, flowOf(freshSYN)))
	w.expectSent(t, syn, backendAddrs[second])
}

// TestDeletesInABatch: VIPs deleted inside a batch leave the index at its
// end, and their tables give way to the empty stand-in then, in one update
// (not one grace period each). A number deleted and given to a new VIP in
// the same batch serves the new VIP only. After a reload, the stand-in is
// not taken for a table: a new VIP gets a table of its own.
func TestDeletesInABatch(t *testing.T) {
	requireRoot(t)
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-del-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })
	w := newWorld(t, Options{PinDir: pin})
	fresh := fixtureVIP{VIPKey{netip.MustParseAddr("10.100.9.8"), 80, ProtoTCP}, vipTCP6.num, 0, []uint32{1, 2, 3}}
	allSYN := pktSpec{src: client4, dst: vip4all, sport: 30100, dport: 443, proto: ProtoTCP, syn: true}
	v6SYN := pktSpec{src: client6, dst: vip6, sport: 30101, dport: 80, proto: ProtoTCP, syn: true}
	freshSYN := pktSpec{src: client4, dst: fresh.key.Addr, sport: 30102, dport: 80, proto: ProtoTCP, syn: true}
	slotName := func(b *Balancer, slot uint32) string {
		var id ebpf.MapID
		if err := b.objs.MaglevStd.Lookup(slot, &id); err != nil {
			t.Fatalf("slot %d of maglev_std: %v", slot, err)
		}
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		return info.Name
	}
	err := w.b.Batch(func() error {
		if err := w.b.DeleteVIP(vipAll.key); err != nil {
			return err
		}
		if strings.HasPrefix(slotName(w.b, vipAll.num*2), standInName) {
			t.Errorf("the deleted VIP's table gave way before the batch's end")
		}
		if err := w.b.DeleteVIP(vipTCP6.key); err != nil {
			return err
		}
		if err := w.b.SetVIP(fresh.key, fresh.num, 0); err != nil {
			return err
		}
		w.publish(t, fresh.key, fresh.backends...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []pktSpec{allSYN, v6SYN} {
		in, _ := build(t, s)
		if act, _ := w.run(t, in); act != xdpPass {
			t.Errorf("%v to a deleted VIP: %s, want PASS", flowOf(s), actionNames[act])
		}
	}
	w.expectSent(t, freshSYN, w.expectBackend(fresh, flowOf(freshSYN)))
	// The batch's address changes were applied together at its end.
	vips, err := w.b.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	var filter balancerVipFilter
	if err := w.b.data.VipFilter.Lookup(uint32(0), &filter); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []netip.Addr{vip4all, vip6, fresh.key.Addr, vip4} {
		var want, got uint32
		for k := range vips {
			if k.Addr == addr {
				want++
			}
		}
		a := toAddr(addr)
		if err := w.b.objs.VipAddrs.Lookup(&a, &got); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("vip_addrs[%s] = %d after the batch, want %d", addr, got, want)
		}
		if bit := vipFilterBit(a); want > 0 && filter.W[bit/64]&(1<<(bit%64)) == 0 {
			t.Errorf("vip_filter lacks the bit of %s, which has %d VIPs", addr, want)
		}
	}
	if name := slotName(w.b, vipAll.num*2); !strings.HasPrefix(name, standInName) {
		t.Errorf("the deleted VIP's slot holds %q, not the stand-in", name)
	}
	w.b.Close()

	w2 := w.reload(t, pin)
	b2 := w2.b
	if err := b2.Batch(func() error {
		if err := b2.SetVIP(vipAll.key, vipAll.num, 0); err != nil {
			return err
		}
		w2.publish(t, vipAll.key, 2)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w2.expectSent(t, allSYN, backendAddrs[2])
	// A VIP whose table grows past the std size leaves its std slot of
	// that generation to the stand-in; when the generation comes back to
	// a std size, it needs a map of its own again.
	syn := syn4(30103)
	for i, size := range []uint64{1021, 131071, 1021, 1021} {
		id := uint32(1 + i%3)
		if err := b2.Batch(func() error {
			w2.publishSized(t, vipTCP4.key, size, id)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		w2.expectSent(t, syn, backendAddrs[id])
	}
	w2.expectSent(t, allSYN, backendAddrs[2])
	standIn, err := ebpf.LoadPinnedMap(filepath.Join(pin, standInName+"_std"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer standIn.Close()
	got, err := readTable(standIn, maglevStdSlots)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(got, func(id uint32) bool { return id != MaglevEmpty }); i >= 0 {
		t.Errorf("the stand-in's slot %d holds backend %d: a table was written into it", i, got[i])
	}
}

// TestVIPFlagsChangeReachesPackets: new flags on an existing VIP reach the
// index packets find VIPs by (here: source affinity, so every port of a
// client goes where its address hashes).
func TestVIPFlagsChangeReachesPackets(t *testing.T) {
	w := newWorld(t, Options{})
	v := vipTCP4
	v.flags = VIPHashSource
	if err := w.b.SetVIP(v.key, v.num, v.flags); err != nil {
		t.Fatal(err)
	}
	for port := uint16(44000); port < 44008; port++ {
		s := syn4(port)
		w.expectSent(t, s, w.expectBackend(v, flowOf(s)))
	}
}

// TestFlowsSkipEntriesOfEndedVIPs: a deleted VIP's connection entries stay
// in the table until they age out, but the datapath no longer uses them
// (their epoch is over). The dump and LookupFlow must not report them
// either: once the number goes to another VIP they would show up as that
// VIP's flows, pinned to backends it may not have.
func TestFlowsSkipEntriesOfEndedVIPs(t *testing.T) {
	w := newWorld(t, Options{})
	s := syn4(44000)
	w.open(t, vipTCP4, s)
	if _, ok, err := w.b.LookupFlow(flowOf(s)); err != nil || !ok {
		t.Fatalf("LookupFlow of a live flow: %v %v", ok, err)
	}
	before, err := w.b.CountFlows()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.b.DeleteVIP(vipTCP4.key); err != nil {
		t.Fatal(err)
	}
	if n, err := w.b.CountFlows(); err != nil || n.Total != before.Total-1 {
		t.Errorf("CountFlows after the VIP's deletion: %d (%v), want %d: the deleted VIP's flow still counted", n.Total, err, before.Total-1)
	}
	next := VIPKey{netip.MustParseAddr("10.100.9.9"), 443, ProtoTCP}
	if err := w.b.SetVIP(next, vipTCP4.num, 0); err != nil {
		t.Fatal(err)
	}
	w.publish(t, next, vipTCP4.backends...)
	if c, ok, err := w.b.LookupFlow(flowOf(s)); err != nil || ok {
		t.Errorf("LookupFlow of the deleted VIP's flow: %+v, found %v (%v); want not found", c, ok, err)
	}
	err = w.b.Flows(func(f FlowKey, c Conn) bool {
		if c.VIPNum == vipTCP4.num {
			t.Errorf("Flows reports %v as a flow of VIP number %d (now %s): its VIP was deleted", f, c.VIPNum, next)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSetVIPRefusesATakenNumber: a VIP number names the VIP's tables,
// counters and epoch. Giving a new VIP the number of one that exists
// would wipe that VIP's tables, restart its counters and end its
// established flows: refused, with the VIP that has it named.
func TestSetVIPRefusesATakenNumber(t *testing.T) {
	w := newWorld(t, Options{})
	s := syn4(45000)
	pinned := w.open(t, vipTCP4, s)
	other := VIPKey{netip.MustParseAddr("10.100.9.9"), 443, ProtoTCP}
	err := w.b.SetVIP(other, vipTCP4.num, 0)
	if err == nil || !strings.Contains(err.Error(), vipTCP4.key.String()) {
		t.Errorf("SetVIP with the number of %s: %v, want an error naming it", vipTCP4.key, err)
	}
	if vs, _ := w.b.VIPs(); vs[other] != (VIPMeta{}) {
		t.Errorf("refused VIP written: %+v", vs[other])
	}
	if tbl, err := w.b.Table(vipTCP4.key, 0); err != nil || !slices.Equal(tbl, w.tables[vipTCP4.key]) {
		t.Errorf("%s lost its table (%d slots, %v)", vipTCP4.key, len(tbl), err)
	}
	w.expectSent(t, ackOf(s), pinned)
}

// TestSettingsTakeMappedIPv4: the datapath treats ::ffff:a.b.c.d as the
// IPv4 address a.b.c.d everywhere (VIPs, backends, flows), and so must
// the outer source settings: an IPv4 source or prefix given in its
// mapped form (as net.IP and netip.AddrFromSlice often give it) is
// IPv4, not ignored (outer source 0.0.0.0) nor taken for IPv6.
func TestSettingsTakeMappedIPv4(t *testing.T) {
	w := newWorld(t, Options{})
	set := defaultSettings()
	set.SourceV4 = netip.AddrFrom16(lbV4.As16())
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	s := syn4(46000)
	w.expectSent(t, s, w.expectBackend(vipTCP4, flowOf(s)))

	pfx := netip.MustParsePrefix("172.16.0.0/16")
	set.SourcePrefixV4 = netip.PrefixFrom(netip.AddrFrom16(pfx.Addr().As16()), 96+pfx.Bits())
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	in, l2 := build(t, syn4(46001))
	act, out := w.run(t, in)
	if act != xdpTX {
		t.Fatalf("SYN: %s", actionNames[act])
	}
	if a := netip.AddrFrom4([4]byte(out[l2+12 : l2+16])); !pfx.Contains(a) {
		t.Errorf("outer source %s with source prefix %s, want one in %s", a, set.SourcePrefixV4, pfx)
	}
}

// TestSetVIPRefusesKeysItCannotServe: a VIP is TCP or UDP on a valid
// address. Protocol 0 (and port 0) makes the key's index word zero, which
// the datapath reads as a free slot: it ends the probe of every VIP
// placed past it. The zero address would make a VIP on ::.
func TestSetVIPRefusesKeysItCannotServe(t *testing.T) {
	w := newWorld(t, Options{})
	for i, k := range []VIPKey{
		{netip.MustParseAddr("10.100.9.9"), 0, 0},
		{netip.MustParseAddr("10.100.9.9"), 80, 1},
		{netip.Addr{}, 80, ProtoTCP},
	} {
		if err := w.b.SetVIP(k, 40+uint32(i), 0); err == nil {
			t.Errorf("SetVIP(%+v) accepted", k)
		}
	}
	if vs, err := w.b.VIPs(); err != nil || len(vs) != len(allVIPs) {
		t.Errorf("VIPs after refusals: %d (%v), want %d", len(vs), err, len(allVIPs))
	}
}

// TestSetBackendRefusesNoAddress: a backend slot written with the zero
// netip.Addr would be valid, an IPv4 backend at 0.0.0.0, and its flows
// encapsulated there.
func TestSetBackendRefusesNoAddress(t *testing.T) {
	w := newWorld(t, Options{})
	if err := w.b.SetBackend(40, netip.Addr{}); err == nil {
		t.Error("SetBackend with no address accepted")
	}
	if bes, err := w.b.Backends(); err != nil || len(bes) != len(backendAddrs) {
		t.Errorf("backends after the refusal: %v (%v)", bes, err)
	}
}

// TestVIPOnMappedAddress: a VIP key whose IPv4 address comes in mapped
// form (::ffff:a.b.c.d) is the IPv4 VIP (the datapath keys both forms the
// same). The address's count in vip_addrs, and its vip_filter bit, must
// count it too: else packets to it, and to every other VIP on the
// address, are passed to the host as not for a VIP.
func TestVIPOnMappedAddress(t *testing.T) {
	w := newWorld(t, Options{})
	mapped := netip.AddrFrom16(vip4.As16())
	k := VIPKey{mapped, 8080, ProtoTCP}
	v := fixtureVIP{VIPKey{vip4, 8080, ProtoTCP}, 40, 0, []uint32{1, 2, 3}}
	if err := w.b.SetVIP(k, v.num, 0); err != nil {
		t.Fatal(err)
	}
	w.publish(t, k, v.backends...)
	w.tables[v.key] = w.tables[k]
	var n uint32
	a := toAddr(vip4)
	if err := w.b.objs.VipAddrs.Lookup(&a, &n); err != nil || n != 3 {
		t.Errorf("vip_addrs[%s] = %d (%v), want 3 VIPs", vip4, n, err)
	}
	s := syn4(47000)
	s.dport = 8080
	w.expectSent(t, s, w.expectBackend(v, flowOf(s)))
	s = syn4(47001)
	w.expectSent(t, s, w.expectBackend(vipTCP4, flowOf(s)))
	if err := w.b.DeleteVIP(k); err != nil {
		t.Fatal(err)
	}
	if err := w.b.objs.VipAddrs.Lookup(&a, &n); err != nil || n != 2 {
		t.Errorf("vip_addrs[%s] = %d (%v) after the delete, want 2 VIPs", vip4, n, err)
	}
}

// TestFlowsSkipEntriesUnderAnotherFlowsTag: two CPUs that record two flows
// in one entry at once may leave one flow's tag beside the other's whole
// entry (key, value and check word: conn_insert writes the tag last). The
// datapath uses neither (flow_eq fails for the tag's flow, the tag for the
// key's): Flows and CountFlows must not list it either.
func TestFlowsSkipEntriesUnderAnotherFlowsTag(t *testing.T) {
	w := newWorld(t, Options{})
	a, b := syn4(46000), syn4(46001)
	pinned := w.open(t, vipTCP4, a)
	w.open(t, vipTCP4, b)
	before, err := w.b.CountFlows()
	if err != nil {
		t.Fatal(err)
	}

	entry := func(s pktSpec) (uint32, *balancerConnSet, int) {
		t.Helper()
		sum := flowSum(toFlowKey(flowOf(s)))
		idx := connSetOf(sum, w.b.objs.Conns.MaxEntries())
		var set balancerConnSet
		if err := w.b.objs.Conns.Lookup(idx, &set); err != nil {
			t.Fatal(err)
		}
		for i := range set.Slot {
			if set.Tag[i] == connTag(sum) && set.Slot[i].Key == toFlowKey(flowOf(s)) {
				return idx, &set, i
			}
		}
		t.Fatalf("flow %v is not in the connection table", flowOf(s))
		return 0, nil, 0
	}
	_, bSet, bWay := entry(b)
	idx, set, way := entry(a)
	set.Slot[way] = bSet.Slot[bWay] // a's tag stays
	if err := w.b.objs.Conns.Put(idx, set); err != nil {
		t.Fatal(err)
	}

	if n, err := w.b.CountFlows(); err != nil || n.Total != before.Total-1 {
		t.Errorf("CountFlows = %d (err %v), want %d: an entry under another flow's tag is no flow", n.Total, err, before.Total-1)
	}
	listed := 0
	err = w.b.Flows(func(f FlowKey, c Conn) bool {
		if f == flowOf(b) {
			listed++
		}
		return true
	})
	if err != nil || listed != 1 {
		t.Errorf("Flows lists %v %d times (err %v), want once", flowOf(b), listed, err)
	}
	// What the datapath makes of it: a miss for a, which Maglev places.
	before2 := w.stats(t)
	w.expectSent(t, ackOf(a), pinned)
	if after := w.stats(t); after["conn_miss"]-before2["conn_miss"] != 1 {
		t.Errorf("conn_miss rose by %d, want 1: the datapath used the entry", after["conn_miss"]-before2["conn_miss"])
	}
}

// expectProgress fails t unless logs has a line holding start and, after
// it, one holding end followed by a duration in seconds.
func expectProgress(t *testing.T, logs, start, end string) {
	t.Helper()
	i := strings.Index(logs, start)
	j := strings.Index(logs, end)
	if i < 0 || j < i {
		t.Fatalf("the log does not show %q and then %q:\n%s", start, end, logs)
	}
	if _, err := strconv.ParseFloat(strings.Fields(logs[j+len(end):])[0], 64); err != nil {
		t.Fatalf("the end line gives no duration in seconds (%v):\n%s", err, logs)
	}
}
