package datapath

import (
	"sync/atomic"
	"testing"
	"time"
)

// idleFor makes flow f's connection entry look as if its last packet came
// d ago, as an entry left alone for d would: it moves the entry's stamp
// back in the table the datapath reads, the one place the datapath keeps
// a flow's age.
func (w *world) idleFor(tb testing.TB, f FlowKey, d time.Duration) {
	tb.Helper()
	now, err := w.b.clock.sample()
	if err != nil {
		tb.Fatal(err)
	}
	key := toFlowKey(f)
	sum := flowSum(key)
	set := connSetOf(sum, w.b.objs.Conns.MaxEntries())
	found := false
	err = w.b.withConnSets(true, func(sets []balancerConnSet) {
		s := &sets[set]
		for i := range s.Tag {
			if atomic.LoadUint32(&s.Tag[i]) == connTag(sum) && s.Slot[i].Key == key {
				atomic.StoreUint32(&s.Stamp[i], uint32(now.Jiffies)-uint32(uint64(d)/w.b.clock.jiffyNs))
				found = true
			}
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	if !found {
		tb.Fatalf("no connection entry of %v", f)
	}
}

// countFlows is CountFlows, failing tb on an error.
func (w *world) countFlows(tb testing.TB) FlowCounts {
	tb.Helper()
	c, err := w.b.CountFlows()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// backendOf is the fixture's id of the backend Maglev gives s's flow of v.
func (w *world) backendOf(tb testing.TB, v fixtureVIP, s pktSpec) uint32 {
	tb.Helper()
	a := w.expectBackend(v, flowOf(s))
	for _, id := range v.backends {
		if backendAddrs[id] == a {
			return id
		}
	}
	tb.Fatalf("%v: backend %s is none of the VIP's", flowOf(s), a)
	return 0
}

// TestCountFlowsByBackend: the one scan that counts the table also counts
// each VIP's flows of each backend, as Flows lists them: two VIPs with the
// same backends keep their counts apart (an entry records the VIP number
// that pinned it), and the per-backend counts add up to the total.
func TestCountFlowsByBackend(t *testing.T) {
	w := newWorld(t, Options{})
	want := map[VIPBackend]FlowCount{}
	var total uint64
	for i := range 40 {
		v, s := vipTCP4, syn4(uint16(31000+i))
		if i%3 == 0 {
			v, s.dst, s.dport = vipAll, vip4all, 8080
		}
		w.open(t, v, s)
		k := VIPBackend{v.num, w.backendOf(t, v, s)}
		c := want[k]
		c.Flows++
		c.Active++
		want[k] = c
		total++
	}
	listed := map[VIPBackend]uint64{}
	if err := w.b.Flows(func(_ FlowKey, c Conn) bool {
		listed[VIPBackend{c.VIPNum, c.BackendID}]++
		return true
	}); err != nil {
		t.Fatal(err)
	}
	got := w.countFlows(t)
	if got.Total != total {
		t.Errorf("CountFlows total %d, want %d", got.Total, total)
	}
	if len(got.ByBackend) != len(want) {
		t.Errorf("CountFlows by backend: %v, want %v", got.ByBackend, want)
	}
	var sum uint64
	for k, c := range want {
		if got.ByBackend[k] != c {
			t.Errorf("VIP %d backend %d: %+v, want %+v", k.VIPNum, k.BackendID, got.ByBackend[k], c)
		}
		if listed[k] != c.Flows {
			t.Errorf("VIP %d backend %d: Flows lists %d, CountFlows counts %d", k.VIPNum, k.BackendID, listed[k], c.Flows)
		}
		sum += got.ByBackend[k].Flows
	}
	if sum != got.Total {
		t.Errorf("by backend: %d flows in all, total %d", sum, got.Total)
	}
	// Both VIPs had flows of a shared backend: the test would otherwise
	// not tell the VIPs apart.
	shared := false
	for k := range want {
		if k.VIPNum == vipTCP4.num {
			_, shared = want[VIPBackend{vipAll.num, k.BackendID}]
		}
		if shared {
			break
		}
	}
	if !shared {
		t.Fatal("no backend has flows of both VIPs: pick other ports")
	}
}

// TestCountFlowsActive: a TCP entry stays in the table after its
// connection ended (the datapath sees no FIN), so only the time since its
// last packet tells whether a flow is active. One idle for longer than
// ActiveFlowWindow still counts among its backend's flows, not among its
// active ones, and its next packet, which the datapath records, makes it
// active again; one idle for a little less is active.
func TestCountFlowsActive(t *testing.T) {
	w := newWorld(t, Options{})
	var same []pktSpec // three flows of one backend
	var id uint32
	for port := uint16(32000); len(same) < 3; port++ {
		s := syn4(port)
		if len(same) == 0 {
			id = w.backendOf(t, vipTCP4, s)
		} else if w.backendOf(t, vipTCP4, s) != id {
			continue
		}
		w.open(t, vipTCP4, s)
		same = append(same, s)
	}
	k := VIPBackend{vipTCP4.num, id}
	if got := w.countFlows(t).ByBackend[k]; got != (FlowCount{Flows: 3, Active: 3}) {
		t.Fatalf("three new flows of backend %d: %+v, want 3 flows, 3 active", id, got)
	}

	w.idleFor(t, flowOf(same[0]), ActiveFlowWindow+5*time.Second)
	w.idleFor(t, flowOf(same[1]), ActiveFlowWindow-5*time.Second)
	if got := w.countFlows(t).ByBackend[k]; got != (FlowCount{Flows: 3, Active: 2}) {
		t.Errorf("one flow idle for %v, one for %v: %+v, want 3 flows, 2 active",
			ActiveFlowWindow+5*time.Second, ActiveFlowWindow-5*time.Second, got)
	}
	// The idle flow is still the datapath's: its next packet goes to its
	// backend through the entry, which it refreshes.
	hits := w.stats(t)["conn_hit"]
	w.expectSent(t, ackOf(same[0]), backendAddrs[id])
	if got := w.stats(t)["conn_hit"]; got != hits+1 {
		t.Fatalf("conn_hit %d -> %d, want +1: the idle flow's packet did not use its entry", hits, got)
	}
	if got := w.countFlows(t).ByBackend[k]; got != (FlowCount{Flows: 3, Active: 3}) {
		t.Errorf("after a packet of the idle flow: %+v, want 3 flows, 3 active", got)
	}
}
