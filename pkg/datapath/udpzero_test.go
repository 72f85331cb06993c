package datapath

import (
	"net/netip"
	"testing"
)

// TestUDPZeroTimeoutExpiresAtOnce: an idle timeout of zero expires an
// entry at once, even for the very next packet in the same jiffy.
func TestUDPZeroTimeoutExpiresAtOnce(t *testing.T) {
	w := newWorld(t, Options{})
	set := defaultSettings()
	set.UDPIdleTimeout = 0
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	in, _ := build(t, pktSpec{src: client4, dst: vip4, sport: 7779, dport: 53, proto: ProtoUDP})
	before := w.stats(t)["udp_expired"]
	w.run(t, in) // records the flow
	w.run(t, in) // microseconds later
	if got := w.stats(t)["udp_expired"]; got != before+1 {
		t.Errorf("udp_expired %d -> %d for a packet right after its flow's first with a zero timeout, want +1", before, got)
	}
}

// TestTooBigCountsNoExpiredEntry: a "too big" about a UDP flow whose entry
// has expired goes to the VIP's current backend, and leaves the entry in
// place (it records nothing): the flow's next packet finds it expired and
// records the flow again. That packet counts the expired entry, once.
// Before, the "too big" counted it too: udp_expired rose by two for one
// entry (and by one more for each further "too big").
func TestTooBigCountsNoExpiredEntry(t *testing.T) {
	w := newWorld(t, Options{})
	set := defaultSettings()
	set.UDPIdleTimeout = 0
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	s := pktSpec{src: client4, dst: vip4, sport: 7780, dport: 53, proto: ProtoUDP}
	in, _ := build(t, s)
	if act, _ := w.run(t, in); act != xdpTX {
		t.Fatalf("the flow's first packet: %s, want TX", actionNames[act])
	}
	before := w.stats(t)
	tooBig, _ := build(t, pktSpec{src: netip.MustParseAddr("10.9.9.9"), dst: vip4, icmpType: 3, icmpCode: 4, icmpMTU: 1400, icmpPayload: quotedReply(t, s)})
	if act, _ := w.run(t, tooBig); act != xdpTX {
		t.Fatalf("too big about the flow: %s, want TX", actionNames[act])
	}
	w.run(t, in)
	after := w.stats(t)
	if got := after["icmp_too_big_forwarded"] - before["icmp_too_big_forwarded"]; got != 1 {
		t.Errorf("icmp_too_big_forwarded +%d, want +1", got)
	}
	if got := after["udp_expired"] - before["udp_expired"]; got != 1 {
		t.Errorf("udp_expired +%d for one expired entry, found by a \"too big\" and then by its flow's packet; want +1", got)
	}
}
