package datapath

import (
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
