package datapath

import (
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

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
	if runtime.NumCPU() < 2 {
		t.Skip("SKIPPED: needs two CPUs")
	}
	w := newWorld(t, Options{benchUndo: true, ConnTableSize: connWays})
	other := syn4(1000)
	other.src = netip.MustParseAddr("10.0.0.3")
	specs := []pktSpec{syn4(1000), other}
	const runs, perRun = 40, 50000
	errs := make(chan error, len(specs))
	var wg sync.WaitGroup
	for cpu, s := range specs {
		in, _ := build(t, s)
		wg.Go(func() {
			// The thread keeps its affinity: left locked, Go discards
			// it when the goroutine ends.
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errs <- err
				return
			}
			for range runs {
				if act, _, err := w.b.objs.XdpBalancer.Benchmark(in, perRun, nil); err != nil || act != xdpTX {
					errs <- err
					return
				}
			}
		})
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
		t.Fatalf("a CPU's run failed: %v", err)
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
