package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/switchyard-lb/switchyard/test/readme"
)

// Benchmarks time the programs inside the kernel with BPF_PROG_TEST_RUN and
// report ns/packet as the kernel measured it. Each path is proven to have
// run on every repetition by the program's own counters. The forwarding
// paths use the benchmark build (SY_BENCH_UNDO), which strips its outer
// headers after encapsulating so the next repetition sees the client's
// packet again instead of our output (see KERNEL-FACTS.md). `make bench`
// prints each as a ratio to the floor measured in the same run.

func benchProg(b *testing.B, prog *ebpf.Program, in []byte, wantAction uint32) {
	b.Helper()
	act, perRun, err := prog.Benchmark(in, b.N, b.ResetTimer)
	if err != nil {
		b.Fatal(err)
	}
	if act != wantAction {
		b.Fatalf("verdict %s, want %s", actionNames[act], actionNames[wantAction])
	}
	b.ReportMetric(float64(perRun.Nanoseconds()), "ns/packet")
}

// replayed is how many of n counted packets of a run of 'runs' were
// replays: cilium/ebpf restarts a BPF_PROG_TEST_RUN that a signal
// interrupted (EINTR) from its first packet, so the packets before the
// interruption run twice, and a replayed new flow finds the entry it
// recorded the first time. Only that many may.
func replayed(n, runs uint64) uint64 {
	if n < runs {
		return 0
	}
	return n - runs
}

func BenchmarkDatapath(b *testing.B) {
	requireRoot(b)
	syn, _ := build(b, syn4(50000))

	var floor testprogsObjects
	if err := loadTestprogsObjects(&floor, nil); err != nil {
		b.Fatal(err)
	}
	defer floor.Close()
	b.Run("floor", func(b *testing.B) { benchProg(b, floor.XdpFloor, syn, xdpTX) })
	// A reference, not a path: the floor plus what the benchmark build's
	// undo adds to a forwarded packet.
	b.Run("floor-undo", func(b *testing.B) { benchProg(b, floor.XdpFloorUndo, syn, xdpTX) })

	b.Run("new-flow", func(b *testing.B) {
		w := newWorld(b, Options{benchUndo: true})
		before := w.stats(b)
		benchProg(b, w.b.objs.XdpBalancer, syn, xdpTX)
		after := w.stats(b)
		vc, _ := w.b.VIPCounters(vipTCP4.num)
		if vc.Packets < uint64(b.N) || after["conn_miss"]-before["conn_miss"] < uint64(b.N) || vc.NewFlows < uint64(b.N) ||
			after["conn_refreshed"]-before["conn_refreshed"] > replayed(vc.NewFlows, uint64(b.N)) {
			b.Fatalf("path not taken every time: %d runs, %d forwarded, %d misses, %d new flows, %d found an entry of their own",
				b.N, vc.Packets, after["conn_miss"]-before["conn_miss"], vc.NewFlows, after["conn_refreshed"]-before["conn_refreshed"])
		}
	})

	b.Run("established", func(b *testing.B) {
		w := newWorld(b, Options{benchUndo: true})
		w.run(b, syn) // insert the connection
		est := syn4(50000)
		est.syn, est.ack = false, true
		in, _ := build(b, est)
		before, _ := w.b.VIPCounters(vipTCP4.num)
		benchProg(b, w.b.objs.XdpBalancer, in, xdpTX)
		after, _ := w.b.VIPCounters(vipTCP4.num)
		if after.Packets-before.Packets < uint64(b.N) || after.ConnHits-before.ConnHits < uint64(b.N) {
			b.Fatalf("path not taken every time: %d runs, %d forwarded, %d connection hits",
				b.N, after.Packets-before.Packets, after.ConnHits-before.ConnHits)
		}
	})

	b.Run("non-vip", func(b *testing.B) {
		w := newWorld(b, Options{})
		in, _ := build(b, pktSpec{src: client4, dst: nonVIP, sport: 1, dport: 80, proto: ProtoTCP, syn: true})
		before := w.stats(b)
		benchProg(b, w.b.objs.XdpBalancer, in, xdpPass)
		if after := w.stats(b); !reflect.DeepEqual(before, after) {
			b.Fatalf("non-VIP packets moved counters: %v -> %v", before, after)
		}
	})
}

// TestMapMemory reports the kernel memory the balancer's maps take at the
// default sizes (1Mi connections, one VIP with two 65537-slot tables),
// holds it to the budget, and checks the README's figure against it. It
// counts every map the balancer holds (each of its object's maps and data
// sections, found by reflection so that a new map is never left out), the
// maps its program uses (.rodata among them), and the inner maps behind
// the outer ones, each once. Per-CPU maps grow with the CPUs, so the
// README states the figure for 2 CPUs and what each further CPU adds.
func TestMapMemory(t *testing.T) {
	requireRoot(t)
	bal, err := LoadBalancer(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	k := VIPKey{vip4, 80, ProtoTCP}
	if err := bal.SetVIP(k, 0, 0); err != nil {
		t.Fatal(err)
	}
	table := make([]uint32, 65537)
	for range 2 {
		if _, err := bal.PublishTable(k, table); err != nil {
			t.Fatal(err)
		}
	}
	type counted struct {
		name string
		m    *ebpf.Map
	}
	var maps []counted
	for _, v := range []reflect.Value{reflect.ValueOf(bal.objs.balancerMaps), reflect.ValueOf(bal.data)} {
		for i := range v.NumField() {
			if m, ok := v.Field(i).Interface().(*ebpf.Map); ok {
				maps = append(maps, counted{v.Type().Field(i).Tag.Get("ebpf"), m})
			}
		}
	}
	if len(maps) < 17 {
		t.Fatalf("found %d maps by reflection: the balancer has at least 17", len(maps))
	}
	for k, m := range bal.tables {
		maps = append(maps, counted{fmt.Sprintf("maglev table %d", k.slot), m})
	}
	open := func(id ebpf.MapID) *ebpf.Map {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	var indexID ebpf.MapID
	if err := bal.objs.VipIndex.Lookup(uint32(0), &indexID); err != nil {
		t.Fatal(err)
	}
	maps = append(maps, counted{"vip index table", open(indexID)})
	pi, err := bal.objs.XdpBalancer.Info()
	if err != nil {
		t.Fatal(err)
	}
	uses, ok := pi.MapIDs()
	if !ok {
		t.Fatal("the kernel does not list the program's maps")
	}
	for _, id := range uses {
		m := open(id)
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		maps = append(maps, counted{"program's " + info.Name, m})
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[ebpf.MapID]bool{}
	var total, perCPU uint64
	for _, c := range maps {
		info, err := c.m.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		if seen[id] {
			continue
		}
		seen[id] = true
		n, _ := info.Memlock()
		t.Logf("%-24s %8.3f MiB", c.name, float64(n)/(1<<20))
		total += n
		if c.m.Type() == ebpf.PerCPUArray || c.m.Type() == ebpf.PerCPUHash {
			perCPU += uint64(c.m.MaxEntries()) * uint64((c.m.ValueSize()+7)&^7)
		}
	}
	const mib = 1 << 20
	t.Logf("total                    %8.3f MiB on %d CPUs, of which %.3f MiB per CPU", float64(total)/mib, cpus, float64(perCPU)/mib)
	if total > 256<<20 {
		t.Errorf("maps take %d MiB at default sizes, over the 256 MiB budget", total>>20)
	}
	// The README's figure, for 2 CPUs, and what each further CPU adds.
	on2 := float64(total-uint64(cpus)*perCPU+2*perCPU) / mib
	text := strings.Join(strings.Fields(readme.Section(t, "### Map memory")), " ")
	want := fmt.Sprintf("%.1f MiB on 2 CPUs", on2)
	wantPer := fmt.Sprintf("%.2f MiB for each further CPU", float64(perCPU)/mib)
	if !strings.Contains(text, want) || !strings.Contains(text, wantPer) {
		t.Errorf("the README's Map memory says:\n%s\nwant it to say %q and %q", text, want, wantPer)
	}
}

// BenchmarkRatios measures each forwarding path against the floor program
// in tightly alternating pairs (floor, path, floor, path, ...) and reports
// the mean of the middle half of the per-pair ratios: the VM's speed
// drifts over seconds, and a ratio taken within a pair cancels that drift;
// the trimmed mean drops the pairs an interruption spoiled. A mean rather
// than the median: the kernel reports whole nanoseconds per packet, a
// ninth of the floor, and only an average of many pairs resolves less.
// Two rows are references, not paths: mem-touch-1Mi, the floor plus one
// cache-missing touch of a table the size of the default connection
// table, and floor-undo, the floor plus the work of the benchmark build's
// undo, which every forwarding path here includes and the product never
// runs.
func BenchmarkRatios(b *testing.B) {
	requireRoot(b)
	const pairs, perRun = 41, 200000
	syn, _ := build(b, syn4(50000))
	est := syn4(50000)
	est.syn, est.ack = false, true
	estIn, _ := build(b, est)
	nonVIP, _ := build(b, pktSpec{src: client4, dst: nonVIP, sport: 1, dport: 80, proto: ProtoTCP, syn: true})

	var floor testprogsObjects
	if err := loadTestprogsObjects(&floor, nil); err != nil {
		b.Fatal(err)
	}
	defer floor.Close()
	undo := newWorld(b, Options{benchUndo: true})
	// The established path has a world of its own: the new flows would
	// evict its connection, and a miss would record it with the undo's
	// next port, making every later packet a new flow.
	estW := newWorld(b, Options{benchUndo: true})
	estW.run(b, syn)
	prod := newWorld(b, Options{})
	// New flows spread over a default-sized (1Mi) table miss the CPU
	// caches as real ones do; the small fixture table stays cached.
	big := newWorld(b, Options{benchUndo: true, ConnTableSize: DefaultConnTableSize})

	touch := loadMemTouch(b, big.b.objs.Conns)

	// What a path counts once per packet, read from the world that runs
	// it: proof that every repetition took the path.
	vipCount := func(w *world, field func(VIPCounters) uint64) func() uint64 {
		return func() uint64 {
			c, err := w.b.VIPCounters(vipTCP4.num)
			if err != nil {
				b.Fatal(err)
			}
			return field(c)
		}
	}
	newFlows := func(c VIPCounters) uint64 { return c.NewFlows }
	hits := func(c VIPCounters) uint64 { return c.ConnHits }
	paths := []struct {
		name  string
		prog  *ebpf.Program
		in    []byte
		want  uint32
		world *world        // nil for the references
		count func() uint64 // rises by one per packet of the path
		fresh bool          // new flows: none may find an entry of its own
		still *world        // a world none of whose counters the path moves
	}{
		{"new-flow", undo.b.objs.XdpBalancer, syn, xdpTX, undo, vipCount(undo, newFlows), true, nil},
		{"new-flow-1Mi", big.b.objs.XdpBalancer, syn, xdpTX, big, vipCount(big, newFlows), true, nil},
		{"mem-touch-1Mi", touch, syn, xdpTX, nil, nil, false, nil},
		{"floor-undo", floor.XdpFloorUndo, syn, xdpTX, nil, nil, false, nil},
		{"established", estW.b.objs.XdpBalancer, estIn, xdpTX, estW, vipCount(estW, hits), false, nil},
		// A packet not for a VIP passes untouched and uncounted: a
		// counter that moved would show it took another way to its pass
		// (a malformed packet's, say).
		{"non-vip", prod.b.objs.XdpBalancer, nonVIP, xdpPass, nil, nil, false, prod},
	}
	timeOf := func(p *ebpf.Program, in []byte, want uint32) float64 {
		act, d, err := p.Benchmark(in, perRun, nil)
		if err != nil || act != want {
			b.Fatalf("run: %v, verdict %s", err, actionNames[act])
		}
		return float64(d.Nanoseconds())
	}
	// Every run of a new-flow path starts from another client address
	// (its last two bytes): a run replays the same sequence of flows from
	// its input, and in the 1Mi table they would find their entries of
	// the run before.
	runs := uint16(0)
	firstOfRun := func(in []byte) []byte {
		runs++
		in = slices.Clone(in)
		binary.BigEndian.PutUint16(in[14+14:], runs) // IPv4 source, bytes 3-4
		return in
	}
	for range b.N {
		for _, p := range paths {
			var counted, refreshed uint64
			if p.world != nil {
				counted, refreshed = p.count(), p.world.stats(b)["conn_refreshed"]
			}
			var still map[string]uint64
			if p.still != nil {
				still = p.still.stats(b)
			}
			ratios := make([]float64, pairs)
			for i := range ratios {
				f := timeOf(floor.XdpFloor, syn, xdpTX)
				in := p.in
				if p.fresh {
					in = firstOfRun(in)
				}
				ratios[i] = timeOf(p.prog, in, p.want) / max(f, 1)
			}
			if p.world != nil {
				// A new flow finds no entry of its own, except as a
				// replay (replayed).
				n, again := p.count()-counted, p.world.stats(b)["conn_refreshed"]-refreshed
				if n < pairs*perRun || (p.fresh && again > replayed(n, pairs*perRun)) {
					b.Fatalf("%s: %d packets, %d counted on the path, %d recorded again in their own entry", p.name, pairs*perRun, n, again)
				}
			}
			if p.still != nil {
				if after := p.still.stats(b); !reflect.DeepEqual(still, after) {
					b.Fatalf("%s: the packets moved counters: %v -> %v", p.name, still, after)
				}
			}
			slices.Sort(ratios)
			mid := ratios[pairs/4 : pairs-pairs/4]
			sum := 0.0
			for _, r := range mid {
				sum += r
			}
			b.ReportMetric(sum/float64(len(mid)), "x-floor-"+p.name)
		}
	}
}

// loadMemTouch loads the memory-latency reference (bpf/memlat.bpf.c) with a
// table of as many bytes as conns, and proves that its chain of reads
// spreads over the whole table.
func loadMemTouch(b *testing.B, conns *ebpf.Map) *ebpf.Program {
	b.Helper()
	spec, err := loadMemlat()
	if err != nil {
		b.Fatal(err)
	}
	lines := conns.MaxEntries() * conns.ValueSize() / uint32(binary.Size(memlatMemLine{}))
	spec.Maps["mem_table"].MaxEntries = lines
	if err := spec.Variables["mem_lines"].Set(lines); err != nil {
		b.Fatal(err)
	}
	var objs memlatObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { objs.Close() })
	in := make([]byte, 64)
	const runs = 100000
	if _, _, err := objs.XdpMemTouch.Benchmark(in, runs, nil); err != nil {
		b.Fatal(err)
	}
	// Each read adds a nonzero step to the line it read: count the lines
	// the chain visited, in a sample of the table.
	var line memlatMemLine
	visited, sample := 0, uint32(4096)
	for i := range sample {
		if err := objs.MemTable.Lookup(i*(lines/sample), &line); err != nil {
			b.Fatal(err)
		}
		if line.W[0] != 0 {
			visited++
		}
	}
	// 100,000 random reads of 1Mi lines visit about 9% of them.
	if visited < int(sample)/20 {
		b.Fatalf("the reference's reads visited %d of %d sampled lines: not spread over the table", visited, sample)
	}
	return objs.XdpMemTouch
}

// benchVIPs is how many VIPs the control-plane benchmarks change at once.
const benchVIPs = 64

// benchVIPKey is the n-th VIP of the control-plane benchmarks.
func benchVIPKey(n int) VIPKey {
	return VIPKey{netip.AddrFrom4([4]byte{10, 100, 1, byte(n)}), 80, ProtoTCP}
}

// againstBaseline runs fn as two sub-benchmarks, first as the baseline
// (named baseline, *way off), then as name (*way on, as the product runs).
func againstBaseline(b *testing.B, way *bool, baseline, name string, fn func(b *testing.B)) {
	requireRoot(b)
	for _, c := range []struct {
		name string
		on   bool
	}{{baseline, false}, {name, true}} {
		b.Run(c.name, func(b *testing.B) {
			*way = c.on
			defer func() { *way = true }()
			fn(b)
		})
	}
}

// benchTable is a std-size table over the fixture's IPv4 backends.
func benchTable() []uint32 {
	table := make([]uint32, maglevStdSlots)
	for i := range table {
		table[i] = uint32(1 + i%3)
	}
	return table
}

// reportPerVIP reports the time per VIP of an op that changes benchVIPs.
func reportPerVIP(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchVIPs)/1e6, "ms/VIP")
}

// BenchmarkPublishTable times what a change that concerns 64 VIPs costs
// the datapath: one table flip each through PublishTable, in one batch,
// whose end swaps in the VIP index once. "mapped" writes each table
// through its memory mapping; "batch-update-baseline" the same flips with
// the batch update that wrote tables before, measured in the same run.
// Reported per VIP; make bench prints the ratio.
func BenchmarkPublishTable(b *testing.B) {
	againstBaseline(b, &mappedTableWrites, "batch-update-baseline", "mapped", func(b *testing.B) {
		table := benchTable()
		w := newWorld(b, Options{})
		keys := make([]VIPKey, benchVIPs)
		for n := range keys {
			keys[n] = benchVIPKey(n)
			if err := w.b.SetVIP(keys[n], uint32(100+n), 0); err != nil {
				b.Fatal(err)
			}
		}
		flipAll := func() error {
			return w.b.Batch(func() error {
				for _, k := range keys {
					if _, err := w.b.PublishTable(k, table); err != nil {
						return err
					}
				}
				return nil
			})
		}
		// Both generations exist after two flips: each further one
		// writes the inactive table in place.
		for range 2 {
			if err := flipAll(); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		for range b.N {
			if err := flipAll(); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		reportPerVIP(b)
		meta, err := w.b.VIPs()
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range keys {
			got, err := w.b.Table(k, meta[k].Gen)
			if err != nil || !slices.Equal(got, table) {
				b.Fatalf("VIP %s: the table read back differs from the one published (%v)", k, err)
			}
		}
	})
}

// BenchmarkNewVIPTables times what 64 new VIPs cost the datapath when a
// configuration adds them: a VIP record and a first table each, in one
// batch. "batched" puts the new inner maps into maglev_std in one batch
// update at the batch's end (one RCU grace period); the baseline puts
// each at once (batchedUpdates off, one grace period per table), as
// tables were installed before, measured in the same run. Reported per
// VIP; make bench prints the ratio.
func BenchmarkNewVIPTables(b *testing.B) {
	againstBaseline(b, &batchedUpdates, "one-at-a-time-baseline", "batched", func(b *testing.B) {
		table := benchTable()
		defer reportPerVIP(b)
		for range b.N {
			b.StopTimer()
			w := newWorld(b, Options{})
			b.StartTimer()
			err := w.b.Batch(func() error {
				for n := range benchVIPs {
					k := benchVIPKey(n)
					if err := w.b.SetVIP(k, uint32(100+n), 0); err != nil {
						return err
					}
					if _, err := w.b.PublishTable(k, table); err != nil {
						return err
					}
				}
				return nil
			})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			// The last VIP's packets find its table (without it:
			// dropped, no backend).
			in, _ := build(b, pktSpec{src: client4, dst: benchVIPKey(benchVIPs - 1).Addr,
				sport: 40000, dport: 80, proto: ProtoTCP, syn: true})
			if act, _ := w.run(b, in); act != xdpTX {
				b.Fatalf("a SYN to the last new VIP: %s, want TX", actionNames[act])
			}
			w.b.Close()
			b.StartTimer()
		}
	})
}

// BenchmarkCountFlows times a count of the default-sized (1Mi) connection
// table holding 60,000 flows, as every status request and metrics scrape
// makes: CountFlows (through a read-only mapping of the table), against
// the batched reads of the whole table that did it before (the baseline),
// measured in the same run. make bench prints the ratio.
func BenchmarkCountFlows(b *testing.B) {
	const flows = 60000 // distinct: the benchmark build moves the client port on
	var mapped bool
	count := func(bal *Balancer) (uint64, error) {
		if mapped {
			n, err := bal.CountFlows()
			return n.Total, err
		}
		var n uint64
		err := eachConnBatch(bal.objs.Conns, func(_ []uint32, sets []balancerConnSet) error {
			for i := range sets {
				for w := range sets[i].Tag {
					if connValid(&sets[i], w) {
						n++
					}
				}
			}
			return nil
		})
		return n, err
	}
	againstBaseline(b, &mapped, "batched-reads-baseline", "mapped", func(b *testing.B) {
		// The benchmark build records a new flow on every repetition.
		w := newWorld(b, Options{benchUndo: true, ConnTableSize: DefaultConnTableSize})
		syn, _ := build(b, syn4(50000))
		if _, _, err := w.b.objs.XdpBalancer.Benchmark(syn, flows, nil); err != nil {
			b.Fatal(err)
		}
		var n uint64
		for b.Loop() {
			var err error
			if n, err = count(w.b); err != nil {
				b.Fatal(err)
			}
		}
		// (Five flows in one set of four would evict one.)
		if n < flows*99/100 || n > flows {
			b.Fatalf("counted %d flows of %d recorded", n, flows)
		}
	})
}

// BenchmarkDeleteVIPs times what deleting 64 VIPs (two tables each) costs
// the datapath in one batch: "batched" drops them from the index and gives
// their table slots to the stand-in at the batch's end, in two updates;
// the baseline (batchedUpdates off) drops each from the index at once and
// deletes each table, a grace period each, as before, measured in the
// same run. Reported per VIP; make bench prints the ratio.
func BenchmarkDeleteVIPs(b *testing.B) {
	againstBaseline(b, &batchedUpdates, "one-at-a-time-baseline", "batched", func(b *testing.B) {
		table := benchTable()
		on := batchedUpdates
		defer reportPerVIP(b)
		for range b.N {
			b.StopTimer()
			batchedUpdates = true
			w := newWorld(b, Options{})
			for range 2 { // both generations
				if err := w.b.Batch(func() error {
					for n := range benchVIPs {
						if err := w.b.SetVIP(benchVIPKey(n), uint32(100+n), 0); err != nil {
							return err
						}
						if _, err := w.b.PublishTable(benchVIPKey(n), table); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			batchedUpdates = on
			b.StartTimer()
			err := w.b.Batch(func() error {
				for n := range benchVIPs {
					if err := w.b.DeleteVIP(benchVIPKey(n)); err != nil {
						return err
					}
				}
				return nil
			})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			in, _ := build(b, pktSpec{src: client4, dst: benchVIPKey(0).Addr, sport: 40000, dport: 80, proto: ProtoTCP, syn: true})
			if act, _ := w.run(b, in); act != xdpPass {
				b.Fatalf("a SYN to a deleted VIP: %s, want PASS", actionNames[act])
			}
			w.b.Close()
			b.StartTimer()
		}
	})
}

// benchBackends is how many backends BenchmarkSetBackends moves at once.
const benchBackends = 256

// BenchmarkSetBackends times what moving 256 backends in used slots to new
// addresses (IPv4 to IPv6 and back, every op) costs the datapath in one
// batch: "batched" writes backend_table at the batch's end, three writes
// and two waits for packets in flight for all of them; the baseline
// (batchedUpdates off) writes each backend at once, three writes and two
// waits each, as before, measured in the same run. Reported per backend,
// with the waits per op; make bench prints the ratio.
func BenchmarkSetBackends(b *testing.B) {
	againstBaseline(b, &batchedUpdates, "one-at-a-time-baseline", "batched", func(b *testing.B) {
		w := newWorld(b, Options{})
		addrs := [2]map[uint32]netip.Addr{{}, {}}
		for n := range uint32(benchBackends) {
			id := 1000 + n
			addrs[0][id] = netip.AddrFrom4([4]byte{10, 5, byte(n), 2})
			addrs[1][id] = netip.AddrFrom16([16]byte{0xfd, 0, 0, 5, 0, byte(n), 15: 2})
			if err := w.b.SetBackend(id, addrs[0][id]); err != nil {
				b.Fatal(err)
			}
		}
		waits := w.b.graceWaits
		b.ResetTimer()
		for i := range b.N {
			err := w.b.Batch(func() error {
				for id, a := range addrs[(i+1)%2] {
					if err := w.b.SetBackend(id, a); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBackends)/1e6, "ms/backend")
		b.ReportMetric(float64(w.b.graceWaits-waits)/float64(b.N), "waits/op")
		bt := new(backendTable)
		if err := w.b.data.BackendTable.Lookup(uint32(0), bt); err != nil {
			b.Fatal(err)
		}
		for id, a := range addrs[b.N%2] {
			if fromAddr(bt[id].Addr) != a || bt[id].Flags&uint32(balancerBackendFlagsBACKEND_F_VALID) == 0 {
				b.Fatalf("backend_table[%d]: %s flags %#x, want %s valid", id, fromAddr(bt[id].Addr), bt[id].Flags, a)
			}
		}
	})
}
