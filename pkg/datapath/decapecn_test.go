package datapath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// setECN sets the ECN field of the IP header at ip to ecn, and makes an
// IPv4 header's checksum right again.
func setECN(ip []byte, ecn uint8) {
	if ip[0]>>4 == 6 {
		ip[1] = ip[1]&^0x30 | ecn<<4
		return
	}
	ip[1] = ip[1]&^3 | ecn
	hl := int(ip[0]&0xf) * 4
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip[:hl], 0))
}

// TestDecapKeepsCongestionMark: a router between balancer and backend
// that is congested marks the outer header CE instead of dropping the
// packet (the outer header carries the client's ECN field, encap.h). The
// decap program must carry that mark over to the inner header of an
// ECN-capable packet (RFC 6040 §4.2), with a valid IPv4 checksum, or the
// backend's transport never learns of the congestion; the DSCP and every
// other inner byte stay as the client sent them. A Not-ECT inner packet
// cannot carry the mark, and its transport reads congestion only from a
// loss: it must be dropped (RFC 6040 §4.2, as Linux's ip_tunnel does),
// counted as drop_ce_not_ect and nothing else. An outer header without the
// mark leaves the inner one alone. Every encapsulation, with GUE and
// without.
func TestDecapKeepsCongestionMark(t *testing.T) {
	w := newWorld(t, Options{})
	w.addVIPs(t, vip6To4)
	d := loadFixtureDecap(t)
	const notECT, ect1, ect0, ce = 0, 1, 2, 3
	for _, gue := range []uint16{0, 6080} {
		w.setGUE(t, gue)
		for _, c := range encapKinds() {
			for _, innerECN := range []uint8{notECT, ect1, ect0, ce} {
				for _, marked := range []bool{false, true} {
					s := c.spec
					s.tos = 0xb8 | innerECN
					s.sport += uint16(innerECN)
					in, l2 := build(t, s)
					act, out := w.run(t, in)
					if act != xdpTX {
						t.Fatalf("gue=%d %s: %s, want TX", gue, c.name, actionNames[act])
					}
					want := append([]byte(nil), ipPacket(in[l2:])...)
					if marked {
						setECN(out[l2:], ce)
						if innerECN != notECT {
							setECN(want, ce)
						}
					}
					name := fmt.Sprintf("gue=%d %s, inner ECN %d, outer marked CE %v", gue, c.name, innerECN, marked)
					before, err := d.Stats()
					if err != nil {
						t.Fatal(err)
					}
					act, dec := runProg(t, d.objs.XdpDecap, out)
					if marked && innerECN == notECT {
						if act != xdpDrop {
							t.Errorf("%s: decap %s, want DROP", name, actionNames[act])
						}
						expectDecapCounters(t, d, name, before, []string{"drop_ce_not_ect"})
						continue
					}
					if act != xdpPass || !bytes.Equal(dec[l2:], want) {
						t.Errorf("%s: decap %s\n got %x\nwant %x", name, actionNames[act], dec[l2:], want)
					}
					after, err := d.Stats()
					if err != nil {
						t.Fatal(err)
					}
					if after["drop_ce_not_ect"] != before["drop_ce_not_ect"] {
						t.Errorf("%s: drop_ce_not_ect counted a packet passed", name)
					}
				}
			}
		}
	}
}

// TestDecapECNTable: every combination of outer and inner ECN field gives
// the inner field of RFC 6040 section 4.2's table, for each family of
// outer and inner header: the outer CE is carried into an ECN-capable
// packet (a Not-ECT one is dropped), an outer ECT(1) turns an inner ECT(0)
// into ECT(1) (as Linux's tunnels do), and every other combination keeps
// the inner field. An IPv4 inner header's checksum stays valid. The decap
// program used to ignore an outer ECT(1).
func TestDecapECNTable(t *testing.T) {
	requireRoot(t)
	d := loadFixtureDecap(t)
	const notECT, ect1, ect0, ce, drop = 0, 1, 2, 3, -1
	// rfc6040[inner][outer]: the inner field after decapsulation.
	rfc6040 := [4][4]int{
		notECT: {notECT: notECT, ect0: notECT, ect1: notECT, ce: drop},
		ect0:   {notECT: ect0, ect0: ect0, ect1: ect1, ce: ce},
		ect1:   {notECT: ect1, ect0: ect1, ect1: ect1, ce: ce},
		ce:     {notECT: ce, ect0: ce, ect1: ce, ce: ce},
	}
	b4, l2 := build(t, syn4(53300))
	b6, l26 := build(t, pktSpec{src: client6, dst: vip6, sport: 53301, dport: 80, proto: ProtoTCP, syn: true})
	inners := map[string][]byte{"IPv4": b4[l2:], "IPv6": b6[l26:]}
	outers := map[string]netip.Addr{"IPv4": backendAddrs[1], "IPv6": backendAddrs[11]}
	for outerName, dst := range outers {
		src := lbV4
		if dst.Is6() {
			src = lbV6
		}
		for innerName, inner := range inners {
			proto := layers.IPProtocolIPv4
			if innerName == "IPv6" {
				proto = layers.IPProtocolIPv6
			}
			for innerECN := range uint8(4) {
				for outerECN := range uint8(4) {
					name := fmt.Sprintf("%s in %s, inner ECN %d, outer ECN %d", innerName, outerName, innerECN, outerECN)
					in := append([]byte(nil), inner...)
					setECN(in, innerECN)
					frame := encapFrame(t, src, dst, proto, 0, in)
					setECN(frame[14:], outerECN)
					act, out := runProg(t, d.objs.XdpDecap, frame)
					wantECN := rfc6040[innerECN][outerECN]
					if wantECN == drop {
						if act != xdpDrop {
							t.Errorf("%s: %s, want DROP", name, actionNames[act])
						}
						continue
					}
					want := append([]byte(nil), in...)
					setECN(want, uint8(wantECN))
					if act != xdpPass || !bytes.Equal(out[14:], want) {
						t.Errorf("%s: %s\n got %x\nwant PASS %x", name, actionNames[act], out[14:], want)
					}
				}
			}
		}
	}
}
