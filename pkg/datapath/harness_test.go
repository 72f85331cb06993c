package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/switchyard-lb/switchyard/pkg/maglev"
)

// XDP verdicts (enum xdp_action).
const (
	xdpAborted = 0
	xdpDrop    = 1
	xdpPass    = 2
	xdpTX      = 3
)

var actionNames = map[uint32]string{xdpAborted: "ABORTED", xdpDrop: "DROP", xdpPass: "PASS", xdpTX: "TX"}

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("SKIPPED: needs root to load BPF programs (CI runs as root; run `sudo make test`)")
	}
}

// Addresses of the fixture world.
var (
	nextHopMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	ourMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	clientMAC  = nextHopMAC // clients' packets arrive from the router

	lbV4 = netip.MustParseAddr("10.1.1.2")
	lbV6 = netip.MustParseAddr("fd00:1:1::2")

	client4 = netip.MustParseAddr("10.0.0.2")
	client6 = netip.MustParseAddr("fd00::2")

	vip4     = netip.MustParseAddr("10.100.0.1")
	vip4to6  = netip.MustParseAddr("10.100.0.2")
	vip4all  = netip.MustParseAddr("10.100.0.3")
	vip4pure = netip.MustParseAddr("10.100.0.4")
	vip6     = netip.MustParseAddr("fd00:100::1")
	nonVIP   = netip.MustParseAddr("10.200.0.1")
)

// fixtureVIP is one VIP of the fixture world.
type fixtureVIP struct {
	key      VIPKey
	num      uint32
	flags    VIPFlags
	backends []uint32
}

var (
	backendAddrs = map[uint32]netip.Addr{
		1: netip.MustParseAddr("10.2.1.2"), 2: netip.MustParseAddr("10.2.2.2"), 3: netip.MustParseAddr("10.2.3.2"),
		11: netip.MustParseAddr("fd00:2:1::2"), 12: netip.MustParseAddr("fd00:2:2::2"), 13: netip.MustParseAddr("fd00:2:3::2"),
	}
	vipTCP4   = fixtureVIP{VIPKey{vip4, 80, ProtoTCP}, 0, 0, []uint32{1, 2, 3}}
	vipTCP6   = fixtureVIP{VIPKey{vip6, 80, ProtoTCP}, 1, 0, []uint32{11, 12, 13}}
	vip4To6   = fixtureVIP{VIPKey{vip4to6, 80, ProtoTCP}, 2, 0, []uint32{11, 12, 13}}
	vipUDPSrc = fixtureVIP{VIPKey{vip4, 53, ProtoUDP}, 3, VIPHashSource, []uint32{1, 2, 3}}
	vipAll    = fixtureVIP{VIPKey{vip4all, 0, ProtoTCP}, 4, 0, []uint32{1, 2, 3}}
	vipPure   = fixtureVIP{VIPKey{vip4pure, 53, ProtoUDP}, 5, VIPNoConntrack, []uint32{1, 2, 3}}
	allVIPs   = []fixtureVIP{vipTCP4, vipTCP6, vip4To6, vipUDPSrc, vipAll, vipPure}
)

func defaultSettings() Settings {
	return Settings{
		NextHopMAC: nextHopMAC, SourceMAC: ourMAC, MTU: 1500, ICMPTooBig: true,
		SourceV4: lbV4, SourceV6: lbV6, UDPIdleTimeout: 30 * time.Second,
	}
}

// world is a loaded balancer with the fixture VIPs and backends installed.
type world struct {
	b      *Balancer
	tables map[VIPKey][]uint32
}

func newWorld(tb testing.TB, opts Options) *world {
	tb.Helper()
	requireRoot(tb)
	if opts.ConnTableSize == 0 {
		opts.ConnTableSize = 4096
	}
	b, err := LoadBalancer(opts)
	if err != nil {
		tb.Fatalf("load balancer: %v", err)
	}
	tb.Cleanup(func() { b.Close() })
	return setUpWorld(tb, b)
}

// setUpWorld installs the fixture settings, backends, VIPs and tables in b.
func setUpWorld(tb testing.TB, b *Balancer) *world {
	tb.Helper()
	w := &world{b: b, tables: map[VIPKey][]uint32{}}
	if err := b.SetSettings(defaultSettings()); err != nil {
		tb.Fatal(err)
	}
	for id, a := range backendAddrs {
		if err := b.SetBackend(id, a); err != nil {
			tb.Fatal(err)
		}
	}
	for _, v := range allVIPs {
		if err := b.SetVIP(v.key, v.num, v.flags); err != nil {
			tb.Fatal(err)
		}
		w.publish(tb, v.key, v.backends...)
	}
	return w
}

// reload loads the balancer again over the maps pinned under pin (as a
// restart or an upgrade does), for a world with w's tables; closed at the
// test's end.
func (w *world) reload(t *testing.T, pin string) *world {
	t.Helper()
	b, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: 4096})
	if err != nil {
		t.Fatalf("load over the pins: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return &world{b: b, tables: w.tables}
}

// publish builds a small Maglev table over ids and installs it for k.
func (w *world) publish(tb testing.TB, k VIPKey, ids ...uint32) {
	tb.Helper()
	w.publishSized(tb, k, 1021, ids...)
}

// publishSized builds a Maglev table of size slots over ids, installs it
// for k and returns its generation.
func (w *world) publishSized(tb testing.TB, k VIPKey, size uint64, ids ...uint32) uint32 {
	tb.Helper()
	mb, err := maglev.New(maglev.Config{Size: size})
	if err != nil {
		tb.Fatal(err)
	}
	var bes []maglev.Backend
	for _, id := range ids {
		bes = append(bes, maglev.Backend{ID: backendAddrs[id].String(), Weight: 1, Value: id})
	}
	table, err := mb.Build(bes)
	if err != nil {
		tb.Fatal(err)
	}
	gen, err := w.b.PublishTable(k, table)
	if err != nil {
		tb.Fatal(err)
	}
	w.tables[k] = table
	return gen
}

// open sends the SYN s to VIP v and returns the backend it was pinned to.
func (w *world) open(tb testing.TB, v fixtureVIP, s pktSpec) netip.Addr {
	tb.Helper()
	in, _ := build(tb, s)
	if act, _ := w.run(tb, in); act != xdpTX {
		tb.Fatalf("SYN %v: %s", flowOf(s), actionNames[act])
	}
	return w.expectBackend(v, flowOf(s))
}

// expectSent sends s and checks that it is encapsulated to backend.
func (w *world) expectSent(t *testing.T, s pktSpec, backend netip.Addr) {
	t.Helper()
	in, l2 := build(t, s)
	act, out := w.run(t, in)
	if act != xdpTX {
		t.Fatalf("%v: %s, want TX to %s", flowOf(s), actionNames[act], backend)
	}
	checkEncap(t, in, l2, out, encapWant{backend: backend})
}

// ackOf is a packet of s's flow after the handshake.
func ackOf(s pktSpec) pktSpec {
	s.syn, s.ack = false, true
	return s
}

// otherBackend is a backend of v whose address is not a.
func otherBackend(v fixtureVIP, a netip.Addr) uint32 {
	for _, id := range v.backends {
		if backendAddrs[id] != a {
			return id
		}
	}
	panic("every backend of the VIP has address " + a.String())
}

// expectBackend is the backend Maglev gives flow f of VIP v, computed in Go.
func (w *world) expectBackend(v fixtureVIP, f FlowKey) netip.Addr {
	t := w.tables[v.key]
	return backendAddrs[t[MaglevSlot(FlowHash(f, v.flags&VIPHashSource != 0), len(t))]]
}

func (w *world) run(tb testing.TB, in []byte) (uint32, []byte) {
	tb.Helper()
	return runProg(tb, w.b.objs.XdpBalancer, in)
}

func runProg(tb testing.TB, prog *ebpf.Program, in []byte) (uint32, []byte) {
	tb.Helper()
	out := make([]byte, len(in)+512)
	opts := &ebpf.RunOptions{Data: in, DataOut: out}
	ret, err := prog.Run(opts)
	if err != nil {
		tb.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret, opts.DataOut
}

func (w *world) stats(tb testing.TB) map[string]uint64 {
	tb.Helper()
	s, err := w.b.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// ---- packet construction ----

type pktSpec struct {
	src, dst        netip.Addr
	sport, dport    uint16
	proto           uint8 // ProtoTCP, ProtoUDP
	syn, ack        bool
	payload         []byte
	tos             uint8
	vlan            uint16 // 0: untagged
	ipOptions       bool   // IPv4 header with options (IHL 6)
	df              bool
	fragMF          bool
	fragOffset      uint16
	hopLimitOrTTL   uint8
	icmpType        uint8 // with proto 0: an ICMP(v6) packet
	icmpCode        uint8
	icmpPayload     []byte
	icmpID, icmpSeq uint16
	icmpMTU         uint32
}

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// build returns the Ethernet frame and the offset of its IP header.
func build(tb testing.TB, s pktSpec) ([]byte, int) {
	tb.Helper()
	v6 := s.dst.Is6() && !s.dst.Is4In6()
	eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: ourMAC, EthernetType: layers.EthernetTypeIPv4}
	if v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
	}
	var ls []gopacket.SerializableLayer
	l2 := 14
	if s.vlan != 0 {
		dq := &layers.Dot1Q{VLANIdentifier: s.vlan, Type: eth.EthernetType}
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, eth, dq)
		l2 = 18
	} else {
		ls = append(ls, eth)
	}
	ttl := s.hopLimitOrTTL
	if ttl == 0 {
		ttl = 61
	}
	var netl gopacket.NetworkLayer
	if v6 {
		ip := &layers.IPv6{Version: 6, TrafficClass: s.tos, FlowLabel: 0x12345, HopLimit: ttl,
			SrcIP: s.src.AsSlice(), DstIP: s.dst.AsSlice()}
		netl = ip
		ls = append(ls, ip)
		switch {
		case s.proto == ProtoTCP:
			ip.NextHeader = layers.IPProtocolTCP
		case s.proto == ProtoUDP:
			ip.NextHeader = layers.IPProtocolUDP
		default:
			ip.NextHeader = layers.IPProtocolICMPv6
		}
		if s.fragMF {
			ip.NextHeader = layers.IPProtocolIPv6Fragment
			ls = append(ls, gopacket.Payload([]byte{byte(layers.IPProtocolTCP), 0, 0, 1, 0, 0, 0, 7}))
			return serialize(tb, ls...), l2
		}
	} else {
		ip := &layers.IPv4{Version: 4, TOS: s.tos, TTL: ttl, Id: 0x4242,
			SrcIP: s.src.AsSlice(), DstIP: s.dst.AsSlice(), FragOffset: s.fragOffset}
		if s.df {
			ip.Flags |= layers.IPv4DontFragment
		}
		if s.fragMF {
			ip.Flags |= layers.IPv4MoreFragments
		}
		if s.ipOptions {
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
		}
		switch s.proto {
		case ProtoTCP:
			ip.Protocol = layers.IPProtocolTCP
		case ProtoUDP:
			ip.Protocol = layers.IPProtocolUDP
		default:
			ip.Protocol = layers.IPProtocolICMPv4
		}
		netl = ip
		ls = append(ls, ip)
	}
	switch s.proto {
	case ProtoTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), Seq: 1000, SYN: s.syn, ACK: s.ack, Window: 65535}
		if s.ack {
			tcp.Ack = 5000
		}
		tcp.SetNetworkLayerForChecksum(netl)
		ls = append(ls, tcp, gopacket.Payload(s.payload))
	case ProtoUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(s.sport), DstPort: layers.UDPPort(s.dport)}
		udp.SetNetworkLayerForChecksum(netl)
		ls = append(ls, udp, gopacket.Payload(s.payload))
	default:
		if v6 {
			ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(s.icmpType, s.icmpCode)}
			ic.SetNetworkLayerForChecksum(netl)
			var body []byte
			if s.icmpType == ICMPv6PacketTooBig {
				body = binary.BigEndian.AppendUint32(nil, s.icmpMTU)
			} else {
				body = binary.BigEndian.AppendUint16(nil, s.icmpID)
				body = binary.BigEndian.AppendUint16(body, s.icmpSeq)
			}
			ls = append(ls, ic, gopacket.Payload(append(body, s.icmpPayload...)))
		} else {
			ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(s.icmpType, s.icmpCode), Id: s.icmpID, Seq: s.icmpSeq}
			if s.icmpType == 3 {
				ic.Id, ic.Seq = 0, uint16(s.icmpMTU)
			}
			ls = append(ls, ic, gopacket.Payload(s.icmpPayload))
		}
	}
	return serialize(tb, ls...), l2
}

// ICMPv6PacketTooBig is the ICMPv6 type.
const ICMPv6PacketTooBig = 2

func syn4(sport uint16) pktSpec {
	return pktSpec{src: client4, dst: vip4, sport: sport, dport: 80, proto: ProtoTCP, syn: true, df: true}
}

func flowOf(s pktSpec) FlowKey {
	return FlowKey{Src: s.src, Dst: s.dst, SrcPort: s.sport, DstPort: s.dport, Proto: s.proto}
}

// inetChecksum is the RFC 1071 sum of b (0 when b holds a valid checksum).
func inetChecksum(b []byte, initial uint32) uint16 {
	sum := initial
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func pseudoSum(src, dst netip.Addr, length uint32, proto uint8) uint32 {
	var sum uint32
	for _, a := range []netip.Addr{src, dst} {
		b := a.As16()
		for i := 0; i < 16; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	return sum + length>>16 + length&0xffff + uint32(proto)
}
