package datapath

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// twoCPUs returns two CPUs this process may run on, or skips the test.
func twoCPUs(t *testing.T) [2]int {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for c := 0; c < 1024 && len(cpus) < 2; c++ {
		if allowed.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		t.Skip("SKIPPED: needs two CPUs")
	}
	return [2]int{cpus[0], cpus[1]}
}

// onCPU runs fn on the calling goroutine's thread, bound to cpu. The thread
// stays locked, so its affinity stays with it: Go discards the thread when
// the goroutine ends. Call it from a goroutine of its own.
func onCPU(cpu int, fn func() error) error {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("bind to CPU %d: %w", cpu, err)
	}
	return fn()
}

// TestConnTableAcrossCPUs: nothing locks a connection entry. Two CPUs write
// a table of one set at once with the benchmark build's new flows (a new
// client port every repetition, two clients), so they keep writing the same
// four entries, while a reader copies the set again and again. Every copy
// of an entry that vouches for itself names the backend Maglev gives its
// flow: neither a mix of two CPUs' writes nor a read torn by a write is
// taken for a flow. (TestConnEntryVouchesForItself writes such mixes on
// purpose; here the CPUs make them.)
func TestConnTableAcrossCPUs(t *testing.T) {
	requireRoot(t)
	cpus := twoCPUs(t)
	w := newWorld(t, Options{benchUndo: true, ConnTableSize: connWays})
	other := syn4(1000)
	other.src = netip.MustParseAddr("10.0.0.3")
	specs := []pktSpec{syn4(1000), other}
	const runs, perRun = 40, 50000
	errs := make(chan error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		in, _ := build(t, s)
		wg.Go(func() { errs <- onCPU(cpus[i], func() error { return runTX(w, in, runs, perRun) }) })
	}
	start := time.Now()
	done := make(chan struct{})
	var vouched, mixed, snapshots int
	readerDone := make(chan error, 1)
	go func() {
		var err error
		defer func() { readerDone <- err }()
		for {
			select {
			case <-done:
				return
			default:
			}
			snapshots++
			err = w.b.eachConnSet(func(s *balancerConnSet) bool {
				for way := range connWays {
					if s.Tag[way] == connTagEmpty || s.Tag[way] == connTagBusy {
						continue
					}
					if !connValid(s, way) {
						mixed++
						continue
					}
					vouched++
					f := fromFlowKey(s.Slot[way].Key)
					if got, want := backendAddrs[s.Slot[way].BackendId], w.expectBackend(vipTCP4, f); got != want {
						t.Errorf("entry of %v vouches for backend %s; Maglev gives %s", f, got, want)
					}
				}
				return true
			})
			if err != nil {
				return
			}
		}
	}()
	wg.Wait()
	close(done)
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a CPU's run failed: %v", err)
		}
	}
	vc, err := w.b.VIPCounters(vipTCP4.num)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d new flows from 2 CPUs in %v; %d copies of the set: %d entries vouched for themselves, %d were mixed or torn",
		vc.NewFlows, time.Since(start).Round(time.Millisecond), snapshots, vouched, mixed)
	if vc.NewFlows < uint64(len(specs)*runs*perRun) {
		t.Errorf("%d new flows recorded, want %d", vc.NewFlows, len(specs)*runs*perRun)
	}
	if vouched == 0 {
		t.Errorf("no copy of an entry vouched for itself in %d copies of the set", snapshots)
	}
}

// TestConnReadsAcrossCPUs: the program's own reads of entries that another
// CPU is rewriting. One CPU sends the packets of one UDP flow to a VIP with
// IPv4 backends (vipUDPSrc), reading its entry and, whenever the other CPU
// has evicted it, recording it again; the other CPU records new TCP flows
// to a VIP with IPv6 backends (vipTCP6) into the same set. An entry mixed
// from the two would send a UDP packet to a backend of the TCP VIP, counted
// as a connection hit of that VIP, whose SYNs never use an entry: every
// UDP packet must be forwarded as the UDP VIP's, to its backends, and the
// TCP VIP must count no hit. (With the check word ignored, 4,500 to
// 107,000 UDP packets went to the TCP VIP's backends per run.)
func TestConnReadsAcrossCPUs(t *testing.T) {
	requireRoot(t)
	cpus := twoCPUs(t)
	w := newWorld(t, Options{benchUndo: true, ConnTableSize: connWays})
	udp := pktSpec{src: client4, dst: vip4, sport: 2000, dport: 53, proto: ProtoUDP, payload: []byte("q")}
	syns := pktSpec{src: client6, dst: vip6, sport: 1000, dport: 80, proto: ProtoTCP, syn: true}
	const runs, perRun = 40, 50000
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	for i, s := range []pktSpec{udp, syns} {
		in, _ := build(t, s)
		wg.Go(func() { errs <- onCPU(cpus[i], func() error { return runTX(w, in, runs, perRun) }) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a CPU's run failed: %v", err)
		}
	}
	for _, v := range []fixtureVIP{vipUDPSrc, vipTCP6} {
		vc, err := w.b.VIPCounters(v.num)
		if err != nil {
			t.Fatal(err)
		}
		var sum uint64
		for _, id := range v.backends {
			bc, err := w.b.BackendCounters(id)
			if err != nil {
				t.Fatal(err)
			}
			sum += bc.Packets
		}
		t.Logf("VIP %s: %d packets (%d connection hits, %d misses), its backends %d", v.key, vc.Packets, vc.ConnHits, vc.ConnMisses, sum)
		if sum != vc.Packets {
			t.Errorf("VIP %s forwarded %d packets, its backends got %d: entries of one VIP's flows sent packets elsewhere",
				v.key, vc.Packets, sum)
		}
		switch v.num {
		case vipUDPSrc.num:
			if vc.Packets < runs*perRun {
				t.Errorf("VIP %s forwarded %d of the %d UDP packets: the others went out as another VIP's",
					v.key, vc.Packets, runs*perRun)
			}
			if vc.ConnHits == 0 || vc.ConnMisses < 1000 {
				t.Errorf("VIP %s: %d connection hits and %d misses, want both: its flow's entry was not contested",
					v.key, vc.ConnHits, vc.ConnMisses)
			}
		case vipTCP6.num:
			if vc.ConnHits != 0 {
				t.Errorf("VIP %s, which only receives SYNs, counted %d connection hits: packets of another flow used its entries",
					v.key, vc.ConnHits)
			}
		}
	}
}

// runTX runs the benchmark build on in, runs times perRun repetitions,
// each of which must end in XDP_TX.
func runTX(w *world, in []byte, runs, perRun int) error {
	for range runs {
		act, _, err := w.b.objs.XdpBalancer.Benchmark(in, perRun, nil)
		if err != nil {
			return err
		}
		if act != xdpTX {
			return fmt.Errorf("verdict %s, want TX", actionNames[act])
		}
	}
	return nil
}

// TestTableFlipsUnderTraffic: the issue's "no packet ever sees a
// half-written table", with packets running. One CPU sends a new flow with
// every packet (a Maglev lookup each) to a VIP that the control plane
// flips between two 65,537-slot tables. Before each flip the test fills
// the inactive generation with empty slots, where a packet would be
// dropped as "no backend"; PublishTable then writes the next table over
// them and flips. No packet may be dropped, and both tables must have
// carried packets.
//
// The writes land among the packets: each run of the sender installs the
// program in the kernel's XDP dispatcher (RCU grace periods, some 20 ms
// here) and then runs a million repetitions (about 100 ms), and a flip
// takes some 10 ms, its index swap waiting for a grace period. The test
// waits for the sender's first packet before the first flip, and after
// each flip for a packet through the new table, so that every flip falls
// while packets run, however late a loaded machine starts the sender.
// (Filling the active generation instead drops packets by the hundred
// thousand.)
func TestTableFlipsUnderTraffic(t *testing.T) {
	requireRoot(t)
	cpus := twoCPUs(t)
	w := newWorld(t, Options{benchUndo: true})
	k, num := vipTCP4.key, vipTCP4.num
	tables := [2][]uint32{slices.Repeat([]uint32{1}, maglevStdSlots), slices.Repeat([]uint32{2}, maglevStdSlots)}
	poison := slices.Repeat([]uint32{MaglevEmpty}, maglevStdSlots)
	if _, err := w.b.PublishTable(k, tables[0]); err != nil {
		t.Fatal(err)
	}
	packets := func(id uint32) uint64 {
		t.Helper()
		c, err := w.b.BackendCounters(id)
		if err != nil {
			t.Fatal(err)
		}
		return c.Packets
	}
	b1, b2 := packets(1), packets(2)
	before := w.stats(t)
	in, _ := build(t, syn4(1000))
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- onCPU(cpus[0], func() error {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				if err := runTX(w, in, 1, 1000000); err != nil {
					return err
				}
			}
		})
	}()
	// The sender must be stopped before the world is closed, also when
	// the test fails half-way.
	var sent error
	halt := sync.OnceFunc(func() { close(stop); sent = <-errc })
	t.Cleanup(halt)
	// carried waits until backend id receives a packet: the table that
	// sends there is the one the sender reads.
	carried := func(id uint32) {
		t.Helper()
		n := packets(id)
		for deadline := time.Now().Add(10 * time.Second); packets(id) == n; time.Sleep(time.Millisecond) {
			select {
			case err := <-errc:
				t.Fatalf("the sending CPU stopped: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("backend %d received no packet within 10 s of its table's publication", id)
			}
		}
	}
	carried(1)
	const flips = 20
	for i := range flips {
		metas, err := w.b.VIPs()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.b.writeTable(num, metas[k].Gen^1, poison); err != nil {
			t.Fatal(err)
		}
		next := (i + 1) % 2
		if _, err := w.b.PublishTable(k, tables[next]); err != nil {
			t.Fatal(err)
		}
		carried(tables[next][0])
	}
	halt()
	if sent != nil {
		t.Fatalf("the sending CPU: %v", sent)
	}
	after := w.stats(t)
	a1, a2 := packets(1), packets(2)
	t.Logf("%d flips under %d new flows: %d to backend 1, %d to backend 2", flips,
		after["conn_miss"]-before["conn_miss"], a1-b1, a2-b2)
	if d := after["drop_no_backend"] - before["drop_no_backend"]; d != 0 {
		t.Errorf("%d packets dropped as \"no backend\": they read a generation being written", d)
	}
}
