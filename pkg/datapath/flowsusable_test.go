package datapath

import (
	"testing"
)

// listed tells whether Flows lists f, LookupFlow finds it and how many
// flows CountFlows counts.
func (w *world) listed(tb testing.TB, f FlowKey) (inFlows, found bool, count uint64) {
	tb.Helper()
	err := w.b.Flows(func(g FlowKey, _ Conn) bool {
		inFlows = inFlows || g == f
		return true
	})
	if err != nil {
		tb.Fatal(err)
	}
	if _, found, err = w.b.LookupFlow(f); err != nil {
		tb.Fatal(err)
	}
	n, err := w.b.CountFlows()
	if err != nil {
		tb.Fatal(err)
	}
	count = n.Total
	return inFlows, found, count
}

// TestFlowsSkipExpiredUDPEntries: a UDP entry idle past udp_idle_timeout
// is never used again (its flow's next packet counts udp_expired and goes
// by Maglev), so the flow dump, the lookup and the count leave it out, as
// they leave out every entry the datapath would not use.
func TestFlowsSkipExpiredUDPEntries(t *testing.T) {
	w := newWorld(t, Options{})
	u := pktSpec{src: client4, dst: vip4, sport: 7788, dport: 53, proto: ProtoUDP}
	in, _ := build(t, u)
	if act, _ := w.run(t, in); act != xdpTX {
		t.Fatalf("UDP packet: %s, want TX", actionNames[act])
	}
	inFlows, found, live := w.listed(t, flowOf(u))
	if !inFlows || !found {
		t.Fatalf("UDP flow within its idle timeout: in Flows %v, found %v; want both", inFlows, found)
	}

	set := defaultSettings()
	set.UDPIdleTimeout = 0 // every entry is past it
	if err := w.b.SetSettings(set); err != nil {
		t.Fatal(err)
	}
	inFlows, found, n := w.listed(t, flowOf(u))
	if inFlows || found || n != live-1 {
		t.Errorf("UDP flow past its idle timeout: in Flows %v, found %v, CountFlows %d; want false, false, %d", inFlows, found, n, live-1)
	}
	before := w.stats(t)["udp_expired"]
	w.run(t, in)
	if got := w.stats(t)["udp_expired"]; got != before+1 {
		t.Errorf("udp_expired %d -> %d, want +1: the datapath still used the entry", before, got)
	}
}

// TestFlowsSkipEntriesOfDeletedBackends: an entry pinned to a backend id
// that DeleteBackend cleared is never used again (the flow chooses again),
// so it is no flow for Flows, LookupFlow and CountFlows either: Flows
// listed it with a backend of no address ("invalid IP").
func TestFlowsSkipEntriesOfDeletedBackends(t *testing.T) {
	w := newWorld(t, Options{})
	s := syn4(47000)
	pinned := w.open(t, vipTCP4, s)
	inFlows, found, live := w.listed(t, flowOf(s))
	if !inFlows || !found {
		t.Fatalf("flow of a valid backend: in Flows %v, found %v; want both", inFlows, found)
	}
	var id uint32
	for i, a := range backendAddrs {
		if a == pinned {
			id = i
		}
	}
	if err := w.b.DeleteBackend(id); err != nil {
		t.Fatal(err)
	}
	err := w.b.Flows(func(f FlowKey, c Conn) bool {
		if c.BackendID == id {
			t.Errorf("Flows lists %v on deleted backend %d", f, id)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, found, n := w.listed(t, flowOf(s)); found || n != live-1 {
		t.Errorf("flow of deleted backend %d: found %v, CountFlows %d; want false, %d", id, found, n, live-1)
	}
	// What the datapath makes of it: a miss.
	before := w.stats(t)["conn_miss"]
	in, _ := build(t, ackOf(s))
	w.run(t, in)
	if got := w.stats(t)["conn_miss"]; got != before+1 {
		t.Errorf("conn_miss %d -> %d, want +1: the datapath used the entry of a deleted backend", before, got)
	}
}
