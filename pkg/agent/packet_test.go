package agent

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/topology"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// packetCase is an encapsulated UDP datagram as a balancer sends it to
// backend 1.
type packetCase struct {
	name               string
	outerSrc, outerDst netip.Addr
	guePort            uint16 // 0: IP in IP
	innerSrc, innerDst netip.AddrPort
	stats              []string // decap counters that count it
}

// TestDecapDeliversToVIP sends real encapsulated frames from the router to
// backend 1: the decap program strips the outer headers, the VIP on lo and
// the relaxed rp_filter let the inner datagram reach a socket bound to the
// VIP, with the client's address as its source, and the counters and
// metrics count it.
func TestDecapDeliversToVIP(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.all.rp_filter", "1")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	a := startAgent(t, topo, be, testConfig(topo))

	lb4, lb6 := topology.BalancerIPv4(1), topology.BalancerIPv6(1)
	be4, be6 := topology.BackendIPv4(1), topology.BackendIPv6(1)
	client4 := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(topology.ClientIPv4, port) }
	client6 := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(topology.ClientIPv6, port) }
	svc4, svc6 := netip.AddrPortFrom(vip4, 5353), netip.AddrPortFrom(vip6, 5353)
	gue := uint16(config.DefaultGUEPort)
	cases := []packetCase{
		{"IPv4 in IPv4", lb4, be4, 0, client4(40000), svc4, []string{statDecapIPv4}},
		{"IPv4 in IPv6", lb6, be6, 0, client4(40001), svc4, []string{statDecapIPv6}},
		{"IPv6 in IPv6", lb6, be6, 0, client6(40002), svc6, []string{statDecapIPv6}},
		{"GUE IPv4 in IPv4", lb4, be4, gue, client4(40003), svc4, []string{statDecapIPv4, statDecapGUE}},
		{"GUE IPv6 in IPv6", lb6, be6, gue, client6(40004), svc6, []string{statDecapIPv6, statDecapGUE}},
	}
	conns := map[netip.AddrPort]net.PacketConn{
		svc4: listenUDP(t, topo, be, svc4),
		svc6: listenUDP(t, topo, be, svc6),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, err := a.Stats()
			if err != nil {
				t.Fatal(err)
			}
			sendFrame(t, topo, buildFrame(t, topo, c))
			expectDatagram(t, conns[c.innerDst], c)
			after, err := a.Stats()
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{statDecapIPv4, statDecapIPv6, statDecapGUE} {
				want := before[name]
				for _, s := range c.stats {
					if s == name {
						want++
					}
				}
				if after[name] != want {
					t.Errorf("counter %s = %d, want %d", name, after[name], want)
				}
			}
		})
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.Collector())
	got := gather(t, reg)
	for metric, want := range map[string]float64{
		`switchyard_agent_decap_packets_total{outer="ipv4"}`:          2,
		`switchyard_agent_decap_packets_total{outer="ipv6"}`:          3,
		`switchyard_agent_decap_gue_packets_total`:                    2,
		`switchyard_agent_drops_total{reason="inner_not_ip"}`:         0,
		`switchyard_agent_drops_total{reason="adjust_failed"}`:        0,
		`switchyard_agent_drops_total{reason="ce_not_ect"}`:           0,
		`switchyard_agent_bad_outer_packets_total{reason="csum"}`:     0,
		`switchyard_agent_bad_outer_packets_total{reason="ip_len"}`:   0,
		`switchyard_agent_bad_outer_packets_total{reason="udp_len"}`:  0,
		`switchyard_agent_bad_outer_packets_total{reason="udp_csum"}`: 0,
		`switchyard_agent_bad_outer_packets_total{reason="src"}`:      0,
		`switchyard_agent_vips`:                                       2,
		`switchyard_agent_vips_missing`:                               0,
	} {
		if v, ok := got[metric]; !ok || v != want {
			t.Errorf("%s = %v (present %t), want %v", metric, v, ok, want)
		}
	}
	if _, ok := got["switchyard_agent_passed_packets_total"]; !ok {
		t.Errorf("switchyard_agent_passed_packets_total missing: %v", got)
	}
	// The status shows the same counts.
	st, err := a.AgentStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	info := `switchyard_agent_info{attach_mode="` + st.AttachMode + `",interface="` + st.Interface + `",node="` + st.Node + `",program_tag="` + st.ProgramTag + `"}`
	if v, ok := got[info]; !ok || v != 1 || st.ProgramTag == "" || st.Interface == "" {
		t.Errorf("%s = %v (present %t), want 1 with the status's interface and program tag", info, v, ok)
	}
	if st.Counters[statDecapIPv4] != 2 || st.Counters[statDecapIPv6] != 3 || st.Counters[statDecapGUE] != 2 {
		t.Errorf("status counters %v, want 2 IPv4, 3 IPv6 and 2 GUE decapsulated", st.Counters)
	}
	// A VIP removed from lo behind the agent's back is counted missing.
	err = topo.Netlink(be, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.AddrDel(lo, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(vip6, 128))})
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := gather(t, reg)["switchyard_agent_vips_missing"]; got != 1 {
		t.Errorf("switchyard_agent_vips_missing = %v after the removal of %s from lo, want 1", got, vip6)
	}

	// A scrape that cannot read the status (here: a sysctl it reads
	// again) counts an error and has no other series.
	if len(a.sysctls) == 0 {
		t.Fatal("the agent changed no sysctl: nothing to make the status fail with")
	}
	held := a.sysctls[0].f
	closed, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	a.mu.Lock()
	a.sysctls[0].f = closed
	a.mu.Unlock()
	got = gather(t, reg)
	a.mu.Lock()
	a.sysctls[0].f = held
	a.mu.Unlock()
	if len(got) != 1 || got["switchyard_agent_scrape_errors_total"] != 1 {
		t.Errorf("scrape with an unreadable status: %v, want only switchyard_agent_scrape_errors_total 1", got)
	}

	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := gather(t, reg); len(got) != 1 || got["switchyard_agent_scrape_errors_total"] != 1 {
		t.Errorf("metrics of a stopped agent: %v, want only switchyard_agent_scrape_errors_total", got)
	}
}

// TestGUEPortConfigured: the agent decapsulates GUE on the configured
// gue_port and passes UDP to any other port, the default 6080 included, to
// the stack untouched.
func TestGUEPortConfigured(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	c.GUEPort = 7777
	startAgent(t, topo, be, c)

	vip := listenUDP(t, topo, be, netip.AddrPortFrom(vip4, 5353))
	gue := packetCase{name: "GUE on the configured port", outerSrc: topology.BalancerIPv4(1), outerDst: topology.BackendIPv4(1),
		guePort: 7777, innerSrc: netip.AddrPortFrom(topology.ClientIPv4, 40001), innerDst: netip.AddrPortFrom(vip4, 5353)}
	sendFrame(t, topo, buildFrame(t, topo, gue))
	expectDatagram(t, vip, gue)

	// On the default port, now an ordinary UDP port: the stack delivers
	// the datagram whole to whoever listens there.
	plain := listenUDP(t, topo, be, netip.AddrPortFrom(topology.BackendIPv4(1), config.DefaultGUEPort))
	other := gue
	other.name, other.guePort = "GUE on the default port", config.DefaultGUEPort
	sendFrame(t, topo, buildFrame(t, topo, other))
	if err := plain.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, _, err := plain.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no datagram on the default GUE port %d, which is not the configured one: %v", config.DefaultGUEPort, err)
	}
	if !strings.HasSuffix(string(buf[:n]), other.name) {
		t.Errorf("datagram on port %d is %q, want the GUE packet whole", config.DefaultGUEPort, buf[:n])
	}
}

// gather scrapes reg into "name{label=\"value\"}" -> value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			if lp := m.GetLabel(); len(lp) > 0 {
				key += "{"
				for i, l := range lp {
					if i > 0 {
						key += ","
					}
					key += l.GetName() + `="` + l.GetValue() + `"`
				}
				key += "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// buildFrame encodes c as the Ethernet frame the router puts on the link
// to backend 1.
func buildFrame(t *testing.T, topo *topology.Topology, c packetCase) []byte {
	t.Helper()
	dst, err := topo.Link(topo.Backend(1), topology.EthName)
	if err != nil {
		t.Fatal(err)
	}
	src, err := topo.Link(topo.Router(), topology.RouterBackendIf(1))
	if err != nil {
		t.Fatal(err)
	}
	inner := ipLayer(c.innerSrc.Addr(), c.innerDst.Addr(), layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(c.innerSrc.Port()), DstPort: layers.UDPPort(c.innerDst.Port())}
	if err := udp.SetNetworkLayerForChecksum(inner); err != nil {
		t.Fatal(err)
	}
	encap := layers.IPProtocolIPv4
	if c.innerDst.Addr().Is6() {
		encap = layers.IPProtocolIPv6
	}
	var gueUDP *layers.UDP
	if c.guePort != 0 {
		encap = layers.IPProtocolUDP
		gueUDP = &layers.UDP{SrcPort: layers.UDPPort(c.innerSrc.Port()), DstPort: layers.UDPPort(c.guePort)}
	}
	outer := ipLayer(c.outerSrc, c.outerDst, encap)
	eth := &layers.Ethernet{SrcMAC: src.Attrs().HardwareAddr, DstMAC: dst.Attrs().HardwareAddr, EthernetType: layers.EthernetTypeIPv4}
	if c.outerDst.Is6() {
		eth.EthernetType = layers.EthernetTypeIPv6
	}
	ls := []gopacket.SerializableLayer{eth, outer.(gopacket.SerializableLayer)}
	if gueUDP != nil {
		if err := gueUDP.SetNetworkLayerForChecksum(outer); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, gueUDP)
	}
	ls = append(ls, inner.(gopacket.SerializableLayer), udp, gopacket.Payload(c.name))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize %s: %v", c.name, err)
	}
	return buf.Bytes()
}

func ipLayer(src, dst netip.Addr, proto layers.IPProtocol) gopacket.NetworkLayer {
	if src.Is4() {
		return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	}
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

// sendFrame puts frame on the router's link to backend 1 with a packet
// socket, as if the router had forwarded it from a balancer.
func sendFrame(t *testing.T, topo *topology.Topology, frame []byte) {
	t.Helper()
	ifname := topology.RouterBackendIf(1)
	err := topo.Do(topo.Router(), func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		// Protocol 0: the socket only sends, it receives nothing.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		etherType := binary.BigEndian.Uint16(frame[12:14])
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifc.Index, Protocol: htons(etherType)})
	})
	if err != nil {
		t.Fatalf("send frame on %s of the router: %v", ifname, err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func listenUDP(t *testing.T, topo *topology.Topology, node string, addr netip.AddrPort) net.PacketConn {
	t.Helper()
	c, err := topo.ListenPacket(node, "udp", addr.String())
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectDatagram reads c's inner datagram from conn.
func expectDatagram(t *testing.T, conn net.PacketConn, c packetCase) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, from, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatalf("%s: no datagram on %s: %v", c.name, c.innerDst, err)
	}
	if got := string(buf[:n]); got != c.name {
		t.Errorf("%s: received %q", c.name, got)
	}
	if got := from.(*net.UDPAddr).AddrPort(); got.Addr().Unmap() != c.innerSrc.Addr() || got.Port() != c.innerSrc.Port() {
		t.Errorf("%s: datagram from %s, want the client's %s", c.name, got, c.innerSrc)
	}
}
