package datapath

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// conn_evicted does not fall across a restart: a daemon started over the
// pins of one that reported it goes on from the value last reported.
// Derived afresh (new flows - fills - refreshes - base), the new daemon's
// first count is behind by the flows that fill an entry while Stats
// reads (counted as fills, not yet as recorded), and Prometheus takes a
// counter that falls for a reset: rate() counts the whole total again.
func TestEvictionsKeptAcrossRestart(t *testing.T) {
	requireRoot(t)
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-evictkept-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })
	const size = 2 * connWays // two sets: one to evict in, one with free entries
	w := newWorld(t, Options{PinDir: pin, ConnTableSize: size})
	sets := w.b.objs.Conns.MaxEntries()
	var inSet [2][]pktSpec
	for port := uint16(30000); len(inSet[0]) < connWays+3 || len(inSet[1]) < connWays; port++ {
		s := syn4(port)
		set := connSetOf(flowSum(toFlowKey(flowOf(s))), sets)
		inSet[set] = append(inSet[set], s)
	}
	for _, s := range inSet[0][:connWays+3] {
		w.open(t, vipTCP4, s)
	}
	first := w.stats(t)
	if first["conn_evicted"] != 3 || first["conn_filled"] != connWays {
		t.Fatalf("%d flows in a set of %d: conn_evicted %d, conn_filled %d; want 3 and %d",
			connWays+3, connWays, first["conn_evicted"], first["conn_filled"], connWays)
	}
	w.b.Close()

	load := func() *world {
		t.Helper()
		b, err := LoadBalancer(Options{PinDir: pin, ConnTableSize: size})
		if err != nil {
			t.Fatalf("load over the pins: %v", err)
		}
		t.Cleanup(func() { b.Close() })
		return &world{b: b, tables: w.tables}
	}
	free := inSet[1]
	w2 := load()
	w2.b.statsBetweenReads = func() {
		// A fill between the reads: counted as a fill, not yet as
		// recorded, so the derived count is one behind.
		w2.open(t, vipTCP4, free[0])
		free = free[1:]
	}
	if st := w2.stats(t); st["conn_evicted"] < first["conn_evicted"] {
		t.Errorf("first reading after a restart: conn_evicted %d, below the %d reported before it", st["conn_evicted"], first["conn_evicted"])
	}
	w2.b.statsBetweenReads = nil
	for port := uint16(40000); ; port++ { // one more eviction in the first set
		if s := syn4(port); connSetOf(flowSum(toFlowKey(flowOf(s))), sets) == 0 {
			w2.open(t, vipTCP4, s)
			break
		}
	}
	second := w2.stats(t)
	if second["conn_evicted"] != 4 {
		t.Fatalf("after one more eviction: conn_evicted %d, want 4", second["conn_evicted"])
	}
	w2.b.Close()

	// And again, with the derived count behind by two.
	w3 := load()
	w3.b.statsBetweenReads = func() {
		for _, s := range free[:2] {
			w3.open(t, vipTCP4, s)
		}
		free = free[2:]
	}
	if st := w3.stats(t); st["conn_evicted"] != second["conn_evicted"] {
		t.Errorf("first reading after the second restart: conn_evicted %d, want the %d reported before it", st["conn_evicted"], second["conn_evicted"])
	}
}
