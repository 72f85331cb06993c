package datapath

import "testing"

// conn_evicted counts no eviction that did not happen: a flow recorded
// while Stats reads the counters (between its two reads) was counted as
// recorded but not as a fill, so it showed as an eviction in a table with
// free entries, and Stats holds the count so that it never falls: a
// phantom eviction for the life of the daemon (and an alert on
// rate(switchyard_datapath_events_total{event="conn_evicted"}) > 0).
func TestNoPhantomEvictionsWhileStatsReads(t *testing.T) {
	w := newWorld(t, Options{})
	port := uint16(43000)
	w.b.statsBetweenReads = func() {
		// A new flow in an empty table: it fills a free entry.
		w.open(t, vipTCP4, syn4(port))
		port++
	}
	for i := range 3 {
		st := w.stats(t)
		if st["conn_evicted"] != 0 {
			t.Fatalf("read %d, %d flows in a table of 4096 entries: conn_evicted %d, conn_filled %d; want no eviction",
				i, port-43000, st["conn_evicted"], st["conn_filled"])
		}
	}
	w.b.statsBetweenReads = nil
	if st := w.stats(t); st["conn_evicted"] != 0 || st["conn_filled"] != uint64(port-43000) {
		t.Errorf("after the reads: conn_evicted %d, conn_filled %d; want 0 and %d", st["conn_evicted"], st["conn_filled"], port-43000)
	}
}
