package datapath

import (
	"net/netip"
	"testing"
	"time"
)

// TestFlowHashSpread checks that flows which differ only in the client port,
// or only in the client address, spread evenly over a Maglev-sized table:
// the flow hash is what Maglev's evenness rests on.
func TestFlowHashSpread(t *testing.T) {
	const slots, perSlot = 251, 4000
	spread := func(name string, n int, flow func(i int) FlowKey, sourceOnly bool) {
		counts := make([]int, slots)
		for i := range n {
			counts[MaglevSlot(FlowHash(flow(i), sourceOnly), slots)]++
		}
		lo, hi := n, 0
		for _, c := range counts {
			lo, hi = min(lo, c), max(hi, c)
		}
		// 5 standard deviations of a binomial with mean 4000 is 8%.
		if float64(lo) < 0.92*perSlot || float64(hi) > 1.08*perSlot {
			t.Errorf("%s: slot counts from %d to %d, want within 8%% of %d", name, lo, hi, perSlot)
		}
	}
	vip := netip.MustParseAddr("10.100.0.1")
	spread("client ports", slots*perSlot, func(i int) FlowKey {
		return FlowKey{Src: netip.MustParseAddr("10.0.0.2"), Dst: vip, SrcPort: uint16(i), DstPort: uint16(80 + i>>16), Proto: ProtoTCP}
	}, false)
	spread("IPv4 clients", slots*perSlot, func(i int) FlowKey {
		return FlowKey{Src: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Dst: vip, SrcPort: 40000, DstPort: 80, Proto: ProtoTCP}
	}, true)
	spread("IPv6 clients", slots*perSlot, func(i int) FlowKey {
		a := netip.MustParseAddr("fd00::").As16()
		a[13], a[14], a[15] = byte(i>>16), byte(i>>8), byte(i)
		return FlowKey{Src: netip.AddrFrom16(a), Dst: netip.MustParseAddr("fd00:100::1"), SrcPort: 40000, DstPort: 80, Proto: ProtoTCP}
	}, true)
}

// jiffyLength finds the kernel's jiffy from edges caught by polling, also
// when some ticks came late (a VM's host ran something else), when a late
// tick advanced jiffies by more than one, and across the wrap of jiffies
// five minutes after boot.
func TestJiffyLength(t *testing.T) {
	for _, hz := range kernelHZ {
		ns := uint64(1e9) / hz
		for _, c := range []struct {
			name string
			late map[int]uint64 // edge -> how late its tick came, ns
		}{
			{"punctual", nil},
			{"first tick 3 ms late", map[int]uint64{0: 3e6}},
			{"first tick 10 ms late", map[int]uint64{0: 10e6}},
			{"two late ticks", map[int]uint64{0: 10e6, 7: 6e6}},
			{"last tick 10 ms late", map[int]uint64{clockEdges - 1: 10e6}},
		} {
			const offset = 123456789
			j := uint64(0) - 300*hz + 3 // INITIAL_JIFFIES, 3 jiffies on
			var edges []clockClockSample
			for i := range clockEdges {
				poll := uint64(i*37%200) * 1000 // caught within 0.2 ms
				late := c.late[i]
				// A late tick brings jiffies up to date at once.
				j += 1 + late/ns
				edges = append(edges, clockClockSample{Jiffies: j, MonoNs: offset + j*ns + late%ns + poll})
			}
			if got := jiffyLength(edges); got != ns {
				t.Errorf("HZ %d, %s: jiffy of %d ns, want %d", hz, c.name, got, ns)
			}
		}
	}
}

// lastSeen extends a 32-bit stamp with the sample's jiffies: back across
// the wrap of the low word, and forward for an entry refreshed after the
// sample was taken (Flows samples once, then scans for milliseconds).
func TestLastSeenStamps(t *testing.T) {
	c := &kernelClock{jiffyNs: 4e6, offset: 1000, seen: true}
	at := func(j uint64) time.Duration { return time.Duration(j*4e6 + 1000) }
	for _, tc := range []struct {
		name  string
		now   uint64
		stamp uint32
		want  uint64 // the stamp's jiffy
	}{
		{"same jiffy", 5000, 5000, 5000},
		{"ten jiffies before", 5000, 4990, 4990},
		{"before the low word wrapped", 1<<32 + 2, 0xffff_fffe, 1<<32 - 2},
		{"three jiffies after the sample", 5000, 5003, 5003},
		{"after the sample, across the wrap", 1<<32 - 1, 1, 1<<32 + 1},
		{"a day before, at HZ 250", 30_000_000, 30_000_000 - 21_600_000, 30_000_000 - 21_600_000},
	} {
		if got := c.lastSeen(clockClockSample{Jiffies: tc.now}, tc.stamp); got != at(tc.want) {
			t.Errorf("%s: stamp %d with the sample at jiffy %d: %v, want %v (jiffy %d)",
				tc.name, tc.stamp, tc.now, got, at(tc.want), tc.want)
		}
	}
}
