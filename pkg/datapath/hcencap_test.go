package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// tc verdicts (linux/pkt_cls.h).
const (
	tcActOK   = 0
	tcActShot = 2
)

// loadFixtureHC loads the tunnel health-check program over w's maps;
// closed at the test's end.
func loadFixtureHC(tb testing.TB, w *world) *HCEncap {
	tb.Helper()
	h, err := w.b.LoadHCEncap()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

// runHC runs the program on frame with the socket mark mark, as tc
// egress would.
func runHC(tb testing.TB, h *HCEncap, frame []byte, mark uint32) (uint32, []byte) {
	tb.Helper()
	// struct __sk_buff up to mark: len and pkt_type (which a test run
	// must leave zero), mark.
	skb := make([]byte, 12)
	binary.LittleEndian.PutUint32(skb[8:], mark)
	out := make([]byte, len(frame)+512)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out, Context: skb}
	ret, err := h.objs.TcHcEncap.Run(opts)
	if err != nil {
		tb.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret, opts.DataOut
}

// TestHCEncap: a health-check packet marked for a backend leaves
// encapsulated to that backend, as the balancer program encapsulates a
// client's (IPv4 or IPv6 outer by the backend's family, in UDP with
// GUE), with the VIP as the inner destination; the decap program gives
// back the very packet the check's socket sent. Unmarked packets and
// other marks leave untouched.
func TestHCEncap(t *testing.T) {
	w := newWorld(t, Options{})
	h := loadFixtureHC(t, w)
	d := loadFixtureDecap(t)

	cases := []struct {
		name string
		s    pktSpec
		id   uint32
	}{
		{"v4 VIP, v4 backend", pktSpec{src: lbV4, dst: vip4, sport: 40000, dport: 80, proto: ProtoTCP, syn: true, tos: 0x10}, 1},
		{"v6 VIP, v6 backend", pktSpec{src: lbV6, dst: vip6, sport: 40001, dport: 80, proto: ProtoTCP, syn: true, tos: 0x28}, 12},
		{"v4 VIP, v6 backend", pktSpec{src: lbV4, dst: vip4to6, sport: 40002, dport: 80, proto: ProtoTCP, syn: true}, 13},
		{"v6 VIP, v4 backend", pktSpec{src: lbV6, dst: vip6, sport: 40003, dport: 80, proto: ProtoTCP, syn: true}, 2},
		{"UDP check", pktSpec{src: lbV4, dst: vip4, sport: 40004, dport: 53, proto: ProtoUDP, payload: []byte("query")}, 3},
	}
	want := map[string]uint64{}
	for _, gue := range []uint16{0, 6080} {
		w.setGUE(t, gue)
		for _, c := range cases {
			frame, l2 := build(t, c.s)
			// Without the Ethernet padding of the fixture's frame: a
			// socket's packet has none.
			in := frame[:l2+len(ipPacket(frame[l2:]))]
			act, out := runHC(t, h, append([]byte(nil), in...), HCMark(c.id))
			if act != tcActOK {
				t.Fatalf("gue=%d %s: verdict %d, want TC_ACT_OK", gue, c.name, act)
			}
			want["encapsulated"]++
			be := backendAddrs[c.id]
			pkt := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
			eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if eth == nil || !bytes.Equal(eth.DstMAC, nextHopMAC) || !bytes.Equal(eth.SrcMAC, ourMAC) {
				t.Errorf("gue=%d %s: Ethernet %v, want %s -> %s (the balancer's next hop)", gue, c.name, eth, ourMAC, nextHopMAC)
				continue
			}
			var inner []byte
			var outerProto layers.IPProtocol
			if be.Is4() {
				ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
				if ip == nil || netip.AddrFrom4([4]byte(ip.DstIP.To4())) != be || netip.AddrFrom4([4]byte(ip.SrcIP.To4())) != lbV4 {
					t.Errorf("gue=%d %s: outer %v, want IPv4 %s -> %s", gue, c.name, ip, lbV4, be)
					continue
				}
				if ip.Checksum != 0 && inetChecksum(out[14:34], 0) != 0 {
					t.Errorf("gue=%d %s: outer IPv4 checksum wrong", gue, c.name)
				}
				if int(ip.Length) != len(out)-14 || ip.TOS != c.s.tos || ip.Flags&layers.IPv4DontFragment == 0 {
					t.Errorf("gue=%d %s: outer length %d tos %#x flags %v, want %d, %#x, DF", gue, c.name, ip.Length, ip.TOS, ip.Flags, len(out)-14, c.s.tos)
				}
				outerProto, inner = ip.Protocol, ip.Payload
			} else {
				ip, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
				if ip == nil || netip.AddrFrom16([16]byte(ip.DstIP)) != be || netip.AddrFrom16([16]byte(ip.SrcIP)) != lbV6 {
					t.Errorf("gue=%d %s: outer %v, want IPv6 %s -> %s", gue, c.name, ip, lbV6, be)
					continue
				}
				if int(ip.Length) != len(out)-14-40 || ip.TrafficClass != c.s.tos {
					t.Errorf("gue=%d %s: outer payload length %d class %#x, want %d, %#x", gue, c.name, ip.Length, ip.TrafficClass, len(out)-54, c.s.tos)
				}
				outerProto, inner = ip.NextHeader, ip.Payload
			}
			if gue != 0 {
				want["gue"]++
				if outerProto != layers.IPProtocolUDP || len(inner) < 8 || binary.BigEndian.Uint16(inner[2:]) != gue ||
					int(binary.BigEndian.Uint16(inner[4:])) != len(inner) {
					t.Errorf("gue=%d %s: outer protocol %v, UDP %x, want UDP to port %d around the inner packet", gue, c.name, outerProto, inner[:min(8, len(inner))], gue)
					continue
				}
				inner = inner[8:]
			} else if want4 := c.s.dst.Is4(); (want4 && outerProto != layers.IPProtocolIPv4) || (!want4 && outerProto != layers.IPProtocolIPv6) {
				t.Errorf("gue=%d %s: outer protocol %v, want the inner packet's family", gue, c.name, outerProto)
			}
			if !bytes.Equal(inner, in[l2:]) {
				t.Errorf("gue=%d %s: inner packet differs from the check's:\n got %x\nwant %x", gue, c.name, inner, in[l2:])
			}
			// Round trip: the backend's decap gives the check's packet back.
			act, dec := runProg(t, d.objs.XdpDecap, out)
			if act != xdpPass || !bytes.Equal(dec[l2:], in[l2:]) || !bytes.Equal(dec[12:14], in[12:14]) {
				t.Errorf("gue=%d %s: decap %s, got %x, want %x", gue, c.name, actionNames[act], dec, in)
			}
		}
	}
	if st := hcStats(t, h); st["encapsulated"] != want["encapsulated"] || st["no_backend"]+st["too_big"]+st["error"] != 0 {
		t.Errorf("counters %v, want %d encapsulated and nothing else", st, want["encapsulated"])
	}
	dst, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if dst["decap_gue"] != want["gue"] || dst["decap_ipv4_outer"]+dst["decap_ipv6_outer"] != want["encapsulated"] {
		t.Errorf("decap counters %v, want %d decapsulated, %d of them GUE", dst, want["encapsulated"], want["gue"])
	}

	// Not a health check: untouched, not counted.
	w.setGUE(t, 0)
	plain, _ := build(t, pktSpec{src: lbV4, dst: vip4, sport: 40010, dport: 80, proto: ProtoTCP, syn: true})
	for _, mark := range []uint32{0, 0x12340001, hcMarkMagic ^ 0x10000 | 1} {
		if act, out := runHC(t, h, append([]byte(nil), plain...), mark); act != tcActOK || !bytes.Equal(out, plain) {
			t.Errorf("mark %#x: verdict %d, changed %t; want TC_ACT_OK, untouched", mark, act, !bytes.Equal(out, plain))
		}
	}
	if st := hcStats(t, h); st["encapsulated"] != want["encapsulated"] {
		t.Errorf("unmarked packets counted: %v", st)
	}
}

func hcStats(tb testing.TB, h *HCEncap) map[string]uint64 {
	tb.Helper()
	st, err := h.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// TestHCEncapDrops: marked packets that cannot be sent through the
// tunnel are dropped (the check then fails, as it should: sent
// unencapsulated, a check to the VIP would reach whichever backend the
// balancers choose) and counted by reason.
func TestHCEncapDrops(t *testing.T) {
	w := newWorld(t, Options{})
	h := loadFixtureHC(t, w)
	syn, _ := build(t, pktSpec{src: lbV4, dst: vip4, sport: 40020, dport: 80, proto: ProtoTCP, syn: true})
	big, _ := build(t, pktSpec{src: lbV4, dst: vip4, sport: 40021, dport: 80, proto: ProtoTCP, ack: true, payload: make([]byte, 1500-40-10)})
	lenLies := append([]byte(nil), syn...)
	binary.BigEndian.PutUint16(lenLies[14+2:], uint16(len(syn)-14+20)) // says 20 bytes more than it has
	arp := append([]byte(nil), syn...)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	cases := []struct {
		name   string
		frame  []byte
		mark   uint32
		reason string
	}{
		{"backend id with no backend", syn, HCMark(7), "no_backend"},
		{"backend id past the table", syn, hcMarkMagic | hcMarkIDMask, "no_backend"},
		{"over the MTU once encapsulated", big, HCMark(1), "too_big"},
		// (A frame cut inside its IP header the kernel refuses to run.)
		{"IP length beyond the frame", lenLies, HCMark(1), "error"},
		{"not IP", arp, HCMark(1), "error"},
	}
	for _, c := range cases {
		before := hcStats(t, h)
		act, _ := runHC(t, h, append([]byte(nil), c.frame...), c.mark)
		after := hcStats(t, h)
		if act != tcActShot {
			t.Errorf("%s: verdict %d, want TC_ACT_SHOT", c.name, act)
		}
		for name, n := range after {
			wantN := before[name]
			if name == c.reason {
				wantN++
			}
			if n != wantN {
				t.Errorf("%s: counter %s %d -> %d, want %s +1 only", c.name, name, before[name], n, c.reason)
			}
		}
	}
	// A backend deleted after its check started: the next packet finds
	// no backend and is dropped.
	if err := w.b.DeleteBackend(3); err != nil {
		t.Fatal(err)
	}
	if act, _ := runHC(t, h, append([]byte(nil), syn...), HCMark(3)); act != tcActShot {
		t.Errorf("deleted backend: verdict %d, want TC_ACT_SHOT", act)
	}
}
