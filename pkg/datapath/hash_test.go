package datapath

import (
	"net/netip"
	"testing"
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
