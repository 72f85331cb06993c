package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// encapSpecs are one packet for each encapsulation the balancer makes of
// the fixture's VIPs (each also with GUE, see setGUE).
var encapSpecs = []pktSpec{
	syn4(46000), // IPIP
	{src: client6, dst: vip6, sport: 46001, dport: 80, proto: ProtoTCP, syn: true, tos: 0x28},  // IPv6 in IPv6
	{src: client4, dst: vip4to6, sport: 46002, dport: 80, proto: ProtoTCP, syn: true},          // IPv4 in IPv6
	func() pktSpec { s := syn4(46003); s.vlan = 100; s.payload = []byte("hello"); return s }(), // tagged
}

// setGUE switches the balancer's GUE encapsulation to port (0: off).
func (w *world) setGUE(tb testing.TB, port uint16) {
	tb.Helper()
	set := defaultSettings()
	set.GUEPort = port
	if err := w.b.SetSettings(set); err != nil {
		tb.Fatal(err)
	}
}

// loadFixtureDecap loads the decap program for every fixture backend's
// address, with GUE on port 6080; closed at the test's end.
func loadFixtureDecap(tb testing.TB) *Decap {
	tb.Helper()
	d, err := LoadDecap("", nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	var addrs []netip.Addr
	for _, a := range backendAddrs {
		addrs = append(addrs, a)
	}
	if err := d.SetAddrs(addrs); err != nil {
		tb.Fatal(err)
	}
	if err := d.SetGUEPort(6080); err != nil {
		tb.Fatal(err)
	}
	return d
}

// ipPacket is the IP packet that b starts with, without the trailer
// (Ethernet padding) its length field leaves out; b whole if it is too
// short for that field.
func ipPacket(b []byte) []byte {
	n := 0
	switch {
	case len(b) >= 40 && b[0]>>4 == 6:
		n = 40 + int(binary.BigEndian.Uint16(b[4:]))
	case len(b) >= 20 && b[0]>>4 == 4:
		n = int(binary.BigEndian.Uint16(b[2:]))
	}
	if n == 0 || n > len(b) {
		return b
	}
	return b[:n]
}

// TestDecapRoundTrip feeds the balancer's output to the decap program and
// expects the client's original packet back, for every encapsulation
// (without the Ethernet padding of the client's frame: the balancer
// carries it along, behind the outer packet, and the decap program trims it).
func TestDecapRoundTrip(t *testing.T) {
	w := newWorld(t, Options{})
	d := loadFixtureDecap(t)

	for _, gue := range []uint16{0, 6080} {
		w.setGUE(t, gue)
		for _, s := range encapSpecs {
			in, l2 := build(t, s)
			act, enc := w.run(t, in)
			if act != xdpTX {
				t.Fatalf("balancer: %s", actionNames[act])
			}
			act, dec := runProg(t, d.objs.XdpDecap, enc)
			if act != xdpPass {
				t.Fatalf("decap: %s", actionNames[act])
			}
			if !bytes.Equal(dec[12:l2], in[12:l2]) {
				t.Errorf("gue=%d %v: L2 type/tag %x, want %x", gue, flowOf(s), dec[12:l2], in[12:l2])
			}
			if !bytes.Equal(dec[l2:], ipPacket(in[l2:])) {
				t.Errorf("gue=%d %v: decapsulated packet differs from the original:\n got %x\nwant %x", gue, flowOf(s), dec[l2:], in[l2:])
			}
		}
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st["decap_ipv4_outer"] != 4 || st["decap_ipv6_outer"] != 4 || st["decap_gue"] != 4 {
		t.Errorf("decap counters %v, want 4 IPv4 outer, 4 IPv6 outer, 4 GUE", st)
	}

	// Not addressed to this host, or not encapsulated: untouched.
	other, _ := build(t, syn4(1))
	enc := append([]byte(nil), other...)
	if act, out := runProg(t, d.objs.XdpDecap, enc); act != xdpPass || !bytes.Equal(out, other) {
		t.Errorf("plain packet: %s changed=%v", actionNames[act], !bytes.Equal(out, other))
	}
	w.b.SetSettings(defaultSettings())
	in, _ := build(t, syn4(46004))
	_, enc = w.run(t, in)
	if err := d.SetAddrs([]netip.Addr{netip.MustParseAddr("10.2.9.9")}); err != nil {
		t.Fatal(err)
	}
	if act, out := runProg(t, d.objs.XdpDecap, enc); act != xdpPass || !bytes.Equal(out, enc) {
		t.Errorf("encapsulated to another host: %s changed=%v, want untouched", actionNames[act], !bytes.Equal(out, enc))
	}
}

// TestCounters runs a known mix of packets and checks every counter it
// should move.
func TestCounters(t *testing.T) {
	w := newWorld(t, Options{})
	syn := syn4(47000)
	in, _ := build(t, syn)
	w.run(t, in)
	ack := syn
	ack.syn, ack.ack, ack.payload = false, true, []byte("GET / HTTP/1.1\r\n\r\n")
	ackIn, _ := build(t, ack)
	for range 3 {
		w.run(t, ackIn)
	}
	frag := syn4(1)
	frag.fragMF = true
	fragIn, _ := build(t, frag)
	w.run(t, fragIn)
	nv, _ := build(t, pktSpec{src: client4, dst: nonVIP, sport: 1, dport: 80, proto: ProtoTCP, syn: true})
	w.run(t, nv)

	s := w.stats(t)
	want := map[string]uint64{"conn_hit": 3, "conn_miss": 1, "drop_fragment": 1, "drop_truncated": 0}
	for k, v := range want {
		if s[k] != v {
			t.Errorf("%s = %d, want %d", k, s[k], v)
		}
	}
	vc, err := w.b.VIPCounters(vipTCP4.num)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes := uint64(len(in) + 3*len(ackIn))
	if vc.Packets != 4 || vc.NewFlows != 1 || vc.ConnHits != 3 || vc.ConnMisses != 1 || vc.Bytes != wantBytes {
		t.Errorf("VIP counters %+v, want 4 packets, 1 new flow, 3 connection hits, 1 miss, %d bytes", vc, wantBytes)
	}
	be := w.expectBackend(vipTCP4, flowOf(syn))
	for id, a := range backendAddrs {
		bc, err := w.b.BackendCounters(id)
		if err != nil {
			t.Fatal(err)
		}
		if wantPk := map[bool]uint64{true: 4, false: 0}[a == be]; bc.Packets != wantPk {
			t.Errorf("backend %s: %d packets, want %d", a, bc.Packets, wantPk)
		}
	}
	var flows int
	w.b.Flows(func(f FlowKey, c Conn) bool {
		flows++
		if f != flowOf(syn) || backendAddrs[c.BackendID] != be || c.VIPNum != vipTCP4.num {
			t.Errorf("flow %v -> backend %d vip %d", f, c.BackendID, c.VIPNum)
		}
		return true
	})
	if flows != 1 {
		t.Errorf("%d flows in the connection table, want 1", flows)
	}
}

// Maps an earlier agent pinned that this program cannot reuse are refused
// with the agent's way out (remove --agent), not the balancer's settings.
func TestDecapIncompatiblePins(t *testing.T) {
	requireRoot(t)
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-decap-pins-test-%d", time.Now().UnixNano()))
	if err := os.MkdirAll(pin, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pin) })
	// decap_cfg as another version might have had it: another value size.
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "decap_cfg", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(pin, "decap_cfg")); err != nil {
		t.Fatal(err)
	}
	d, err := LoadDecap(pin, nil)
	if err == nil {
		d.Close()
		t.Fatal("LoadDecap over an incompatible pinned map succeeded")
	}
	if !errors.Is(err, ErrPinnedIncompatible) || !strings.Contains(err.Error(), "`switchyard remove --agent --config FILE`") ||
		strings.Contains(err.Error(), "conn_table_size") {
		t.Errorf("LoadDecap over an incompatible pinned map: %v; want ErrPinnedIncompatible naming `switchyard remove --agent --config FILE` and no balancer setting", err)
	}
}
