package maglev

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// makeBackends returns n backends "backend-0000"… with Value i and the
// weight weight(i).
func makeBackends(n int, weight func(i int) uint32) []Backend {
	bes := make([]Backend, n)
	for i := range bes {
		bes[i] = Backend{ID: fmt.Sprintf("backend-%04d", i), Weight: weight(i), Value: uint32(i)}
	}
	return bes
}

func equalWeights(int) uint32 { return 1 }

func mustBuild(tb testing.TB, cfg Config, bes []Backend) []uint32 {
	tb.Helper()
	b, err := New(cfg)
	if err != nil {
		tb.Fatalf("New(%+v): %v", cfg, err)
	}
	table, err := b.Build(bes)
	if err != nil {
		tb.Fatalf("Build: %v", err)
	}
	return table
}

func slotCounts(table []uint32) map[uint32]int {
	c := make(map[uint32]int)
	for _, v := range table {
		c[v]++
	}
	return c
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func TestSizes(t *testing.T) {
	sizes := Sizes()
	if !slices.IsSorted(sizes) {
		t.Errorf("Sizes() = %v, not ascending", sizes)
	}
	for _, m := range sizes {
		if !isPrime(m) {
			t.Errorf("size %d is not prime", m)
		}
		if m >= 1<<20 {
			t.Errorf("size %d is >= 2^20; the turn-time products in turnEvent.before could overflow", m)
		}
	}
	if !slices.Contains(sizes, DefaultSize) {
		t.Errorf("DefaultSize %d is not in Sizes()", DefaultSize)
	}
	sizes[0] = 7
	if Sizes()[0] == 7 {
		t.Error("mutating the result of Sizes() changed the allowed sizes")
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		wantErr  error
		wantHint string
	}{
		{name: "default", cfg: DefaultConfig()},
		{name: "smallest", cfg: Config{Size: 251, Seed: 42}},
		{name: "largest", cfg: Config{Size: 1048573}},
		{name: "zero size", cfg: Config{}, wantErr: ErrInvalidSize, wantHint: "Size is 0"},
		{name: "not prime", cfg: Config{Size: 65536}, wantErr: ErrInvalidSize, wantHint: "use one of the primes"},
		{name: "prime not in list", cfg: Config{Size: 7}, wantErr: ErrInvalidSize, wantHint: "65537"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate() = %v, want %v", err, tt.wantErr)
			}
			_, newErr := New(tt.cfg)
			if !errors.Is(newErr, tt.wantErr) {
				t.Errorf("New() error = %v, want %v", newErr, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantHint) {
				t.Errorf("Validate() = %q, want it to mention %q", err, tt.wantHint)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	ok := func(id string, value uint32) Backend { return Backend{ID: id, Weight: 1, Value: value} }
	tests := []struct {
		name     string
		size     uint64
		backends []Backend
		wantErr  error
		wantHint string
	}{
		{
			name:     "too many backends",
			size:     251,
			backends: makeBackends(251, equalWeights),
			wantErr:  ErrTooManyBackends,
			wantHint: "use a larger Config.Size",
		},
		{
			name:     "duplicate ID",
			backends: []Backend{ok("a", 1), ok("b", 2), ok("a", 3)},
			wantErr:  ErrDuplicateID,
			wantHint: `"a"`,
		},
		{
			name:     "duplicate value",
			backends: []Backend{ok("a", 1), ok("b", 2), ok("c", 1)},
			wantErr:  ErrDuplicateValue,
			wantHint: `["a" "c"]`,
		},
		{
			name:     "zero weight",
			backends: []Backend{ok("a", 1), {ID: "b", Weight: 0, Value: 2}},
			wantErr:  ErrZeroWeight,
			wantHint: "remove drained backends",
		},
		{
			name:     "empty ID",
			backends: []Backend{ok("a", 1), ok("", 2)},
			wantErr:  ErrInvalidBackend,
			wantHint: "backends[1] has an empty ID",
		},
		{
			name:     "value Empty",
			backends: []Backend{ok("a", Empty)},
			wantErr:  ErrInvalidBackend,
			wantHint: "reserved for Empty",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.size != 0 {
				cfg.Size = tt.size
			}
			b, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			table, err := b.Build(tt.backends)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Build() error = %v, want %v", err, tt.wantErr)
			}
			if table != nil {
				t.Errorf("Build() returned a table along with error %v", err)
			}
			if !strings.Contains(err.Error(), tt.wantHint) {
				t.Errorf("Build() error = %q, want it to mention %q", err, tt.wantHint)
			}
		})
	}

	// The largest backend set that fits must build.
	mustBuild(t, Config{Size: 251}, makeBackends(250, equalWeights))
}

// A VIP whose backends are all down must still be representable.
func TestBuildNoBackends(t *testing.T) {
	for _, bes := range [][]Backend{nil, {}} {
		table := mustBuild(t, DefaultConfig(), bes)
		if len(table) != DefaultSize {
			t.Fatalf("len(table) = %d, want %d", len(table), DefaultSize)
		}
		for i, v := range table {
			if v != Empty {
				t.Fatalf("table[%d] = %d, want Empty", i, v)
			}
		}
	}
}

// TestEvenness checks that every backend's slot count is within 1% of its
// exact weighted share, expected = M·w/Σw, i.e. |count-expected| <=
// 0.01·expected. A slot is indivisible, so this is only achievable when
// every expected share is at least 100 slots; each case is chosen so, and
// the test refuses cases that are not.
func TestEvenness(t *testing.T) {
	tests := []struct {
		name   string
		size   uint64
		n      int
		weight func(i int) uint32
	}{
		{name: "1 backend", size: 251, n: 1, weight: equalWeights},
		{name: "equal 3", size: 509, n: 3, weight: equalWeights},
		{name: "equal 10", size: 1021, n: 10, weight: equalWeights},
		{name: "equal 100", size: DefaultSize, n: 100, weight: equalWeights},
		{name: "equal 600", size: DefaultSize, n: 600, weight: equalWeights},
		{name: "equal 1000", size: 131071, n: 1000, weight: equalWeights},
		{name: "1..10", size: DefaultSize, n: 10, weight: func(i int) uint32 { return uint32(i + 1) }},
		{name: "1..20", size: DefaultSize, n: 20, weight: func(i int) uint32 { return uint32(i + 1) }},
		{name: "1..100", size: 1048573, n: 100, weight: func(i int) uint32 { return uint32(i + 1) }},
		{name: "1 and 100", size: DefaultSize, n: 4, weight: func(i int) uint32 { return []uint32{1, 100}[i%2] }},
		{name: "huge weights", size: 8191, n: 5, weight: func(i int) uint32 { return ^uint32(0) - uint32(i)*1e9 }},
		{name: "cycle 1,2,3,4", size: DefaultSize, n: 200, weight: func(i int) uint32 { return uint32(i%4 + 1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bes := makeBackends(tt.n, tt.weight)
			var total float64
			for _, be := range bes {
				total += float64(be.Weight)
			}
			counts := slotCounts(mustBuild(t, Config{Size: tt.size}, bes))
			if counts[Empty] != 0 {
				t.Fatalf("%d slots are Empty", counts[Empty])
			}
			var worst float64
			for _, be := range bes {
				expected := float64(tt.size) * float64(be.Weight) / total
				if expected < 100 {
					t.Fatalf("bad test case: %s expects only %.1f slots, too few for a 1%% bound", be.ID, expected)
				}
				dev := (float64(counts[be.Value]) - expected) / expected
				if dev < 0 {
					dev = -dev
				}
				worst = max(worst, dev)
				if dev > 0.01 {
					t.Errorf("%s (weight %d) has %d slots, want %.1f ±1%%", be.ID, be.Weight, counts[be.Value], expected)
				}
			}
			t.Logf("worst relative deviation from weighted share: %.4f%%", 100*worst)
		})
	}
}

// movedBetweenSurvivors counts the slots whose owner in before is not in
// gone and whose value changed: flows moved from one healthy backend to
// another, which break their connections for nothing.
func movedBetweenSurvivors(before, after []uint32, gone uint32) int {
	n := 0
	for i := range before {
		if before[i] != gone && before[i] != after[i] {
			n++
		}
	}
	return n
}

// TestDisruption removes one backend and checks that at most 1% of the table
// moves between surviving backends. Adding a backend is the same operation
// read backwards, so it is covered too.
func TestDisruption(t *testing.T) {
	const limit = 0.01
	tests := []struct {
		name   string
		n      int
		weight func(i int) uint32
	}{
		{name: "N=10", n: 10, weight: equalWeights},
		{name: "N=100", n: 100, weight: equalWeights},
		{name: "N=1000", n: 1000, weight: equalWeights},
		{name: "N=100 weights 1..4", n: 100, weight: func(i int) uint32 { return uint32(i%4 + 1) }},
	}
	b, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bes := makeBackends(tt.n, tt.weight)
			before, err := b.Build(bes)
			if err != nil {
				t.Fatal(err)
			}
			var worst float64
			for _, victim := range []int{0, tt.n / 3, tt.n / 2, tt.n - 1} {
				after, err := b.Build(slices.Delete(slices.Clone(bes), victim, victim+1))
				if err != nil {
					t.Fatal(err)
				}
				gone := bes[victim].Value
				if c := slotCounts(after)[gone]; c != 0 {
					t.Fatalf("removed backend %s still owns %d slots", bes[victim].ID, c)
				}
				frac := float64(movedBetweenSurvivors(before, after, gone)) / float64(len(before))
				worst = max(worst, frac)
				if frac > limit {
					t.Errorf("removing %s moved %.3f%% of the table between survivors, want <= %.1f%%",
						bes[victim].ID, 100*frac, 100*limit)
				}
			}
			t.Logf("M=%d %s: worst disruption between survivors on removing one backend: %.3f%%",
				DefaultSize, tt.name, 100*worst)
		})
	}
}

func TestDeterminism(t *testing.T) {
	bes := makeBackends(100, func(i int) uint32 { return uint32(i%5 + 1) })
	cfg := Config{Size: 4093, Seed: 7}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want, err := b.Build(bes)
	if err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		shuffled := slices.Clone(bes)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got, err := b.Build(shuffled)
		if err != nil {
			t.Fatal(err)
		}
		if d := Diff(want, got); d != 0 {
			t.Fatalf("shuffle %d: %d slots differ from the unshuffled table", i, d)
		}
	}

	// A fresh Builder, and a Builder whose buffers were used for a
	// different set, give the same table.
	if d := Diff(want, mustBuild(t, cfg, bes)); d != 0 {
		t.Errorf("fresh Builder: %d slots differ", d)
	}
	if _, err := b.Build(makeBackends(3, equalWeights)); err != nil {
		t.Fatal(err)
	}
	again, err := b.Build(bes)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(want, again); d != 0 {
		t.Errorf("reused Builder: %d slots differ", d)
	}

	// Build must not modify its input.
	if !slices.IsSortedFunc(bes, func(x, y Backend) int { return strings.Compare(x.ID, y.ID) }) {
		t.Error("input was reordered")
	}

	other := mustBuild(t, Config{Size: cfg.Size, Seed: cfg.Seed + 1}, bes)
	if d := Diff(want, other); d < len(want)/2 {
		t.Errorf("changing the seed moved only %d of %d slots; the seed is not mixed in", d, len(want))
	}
}

// TestGoldenTables pins the hashes and whole tables. Every balancer in a
// cluster, across versions, must compute these exact bytes; if this test
// fails you have changed the table format and broken upgrades. Do not update
// the expected values unless that is the intent.
func TestGoldenTables(t *testing.T) {
	hashes := []struct {
		seed   uint64
		domain byte
		id     string
		want   uint64
	}{
		{0, domainOffset, "", 0x4dbc56cefe8a38aa},
		{0, domainOffset, "10.0.0.1:80", 0xcfecfa487796019e},
		{0, domainSkip, "10.0.0.1:80", 0xf764b178f5e3f2bd},
		{0xdeadbeef, domainOffset, "backend-a", 0xf99f0c07277840c8},
	}
	for _, h := range hashes {
		if got := hashID(h.seed, h.domain, h.id); got != h.want {
			t.Errorf("hashID(%#x, %q, %q) = %#x, want %#x", h.seed, h.domain, h.id, got, h.want)
		}
	}

	tables := []struct {
		cfg      Config
		backends []Backend
		want     string // hex sha256 of the table as little-endian uint32s
	}{
		{Config{Size: 251}, makeBackends(3, equalWeights), "085e3fd1a5e9a2b0f58f9430e186f8abea3d7bf965d860bf6818f5bf9f4f5c09"},
		{Config{Size: DefaultSize, Seed: 1}, makeBackends(100, func(i int) uint32 { return uint32(i%7 + 1) }), "d086340c69d9970385ecd95722c4988a733ef1fbbb3810c2c66ddc520532c243"},
	}
	for _, tt := range tables {
		table := mustBuild(t, tt.cfg, tt.backends)
		buf := make([]byte, 0, 4*len(table))
		for _, v := range table {
			buf = binary.LittleEndian.AppendUint32(buf, v)
		}
		sum := sha256.Sum256(buf)
		if got := hex.EncodeToString(sum[:]); got != tt.want {
			t.Errorf("table for %+v with %d backends has sha256 %s, want %s", tt.cfg, len(tt.backends), got, tt.want)
		}
	}
}

func TestWeights(t *testing.T) {
	b, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("double weight gets double slots", func(t *testing.T) {
		bes := makeBackends(10, equalWeights)
		bes[3].Weight = 2
		counts := slotCounts(mustBuild(t, DefaultConfig(), bes))
		for _, be := range bes {
			if be.Weight != 1 {
				continue
			}
			ratio := float64(counts[bes[3].Value]) / float64(counts[be.Value])
			if ratio < 1.98 || ratio > 2.02 {
				t.Errorf("weight-2 backend has %.4f× the slots of %s, want 2 ±1%%", ratio, be.ID)
			}
		}
	})

	t.Run("scaling all weights changes nothing", func(t *testing.T) {
		bes := makeBackends(50, func(i int) uint32 { return uint32(i%3 + 1) })
		want, err := b.Build(bes)
		if err != nil {
			t.Fatal(err)
		}
		for i := range bes {
			bes[i].Weight *= 1000
		}
		got, err := b.Build(bes)
		if err != nil {
			t.Fatal(err)
		}
		if d := Diff(want, got); d != 0 {
			t.Errorf("multiplying every weight by 1000 moved %d slots, want 0", d)
		}
	})

	// Changing one backend's weight must move roughly the slots it gains or
	// loses, and little else: slots moving between two other backends are
	// pure disruption.
	tests := []struct {
		name     string
		n        int
		from, to uint32
	}{
		{name: "N=10 1→2", n: 10, from: 1, to: 2},
		{name: "N=100 1→2", n: 100, from: 1, to: 2},
		{name: "N=100 2→1", n: 100, from: 2, to: 1},
		{name: "N=1000 1→3", n: 1000, from: 1, to: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bes := makeBackends(tt.n, func(i int) uint32 { return uint32(i%2 + 1) })
			bes[tt.n/2].Weight = tt.from
			before, err := b.Build(bes)
			if err != nil {
				t.Fatal(err)
			}
			changed := bes[tt.n/2].Value
			bes[tt.n/2].Weight = tt.to
			after, err := b.Build(bes)
			if err != nil {
				t.Fatal(err)
			}
			delta := slotCounts(after)[changed] - slotCounts(before)[changed]
			if (tt.to > tt.from) != (delta > 0) {
				t.Errorf("weight %d→%d changed the backend's slots by %d", tt.from, tt.to, delta)
			}
			others := 0
			for i := range before {
				if before[i] != changed && after[i] != changed && before[i] != after[i] {
					others++
				}
			}
			frac := float64(others) / float64(len(before))
			t.Logf("backend's slots changed by %d; %d slots (%.3f%%) moved between other backends; Diff %d",
				delta, others, 100*frac, Diff(before, after))
			if frac > 0.01 {
				t.Errorf("%.3f%% of the table moved between backends whose weight did not change, want <= 1%%", 100*frac)
			}
		})
	}
}

func TestDiff(t *testing.T) {
	tests := []struct {
		a, b []uint32
		want int
	}{
		{nil, nil, 0},
		{[]uint32{1, 2, 3}, []uint32{1, 2, 3}, 0},
		{[]uint32{1, 2, 3}, []uint32{1, 5, Empty}, 2},
		{[]uint32{1, 2, 3}, []uint32{1, 2}, 3},
		{nil, []uint32{1}, 1},
	}
	for _, tt := range tests {
		if got := Diff(tt.a, tt.b); got != tt.want {
			t.Errorf("Diff(%v, %v) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := Diff(tt.b, tt.a); got != tt.want {
			t.Errorf("Diff(%v, %v) = %d, want %d", tt.b, tt.a, got, tt.want)
		}
	}
}

func benchmarkBuild(b *testing.B, n int, size uint64) {
	bes := makeBackends(n, equalWeights)
	builder, err := New(Config{Size: size})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := builder.Build(bes); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "ms/op")
}

func BenchmarkBuild10x65537(b *testing.B)     { benchmarkBuild(b, 10, 65537) }
func BenchmarkBuild100x65537(b *testing.B)    { benchmarkBuild(b, 100, 65537) }
func BenchmarkBuild1000x65537(b *testing.B)   { benchmarkBuild(b, 1000, 65537) }
func BenchmarkBuild1000x1048573(b *testing.B) { benchmarkBuild(b, 1000, 1048573) }

// referenceBuild is the populate loop written as plainly as possible, with
// none of Build's optimisations: each step scans all backends for the
// earliest next turn time (2k+1)/(2w), ties to the smaller ID, and walks the
// permutation (offset + j·skip) mod M by its index j. Build must agree with
// it slot for slot.
func referenceBuild(cfg Config, bes []Backend) []uint32 {
	m := cfg.Size
	table := make([]uint32, m)
	for i := range table {
		table[i] = Empty
	}
	if len(bes) == 0 {
		return table
	}
	sorted := slices.Clone(bes)
	slices.SortFunc(sorted, func(x, y Backend) int { return strings.Compare(x.ID, y.ID) })
	offset := make([]uint64, len(sorted))
	skip := make([]uint64, len(sorted))
	next := make([]uint64, len(sorted))  // j: next index into the permutation
	turns := make([]uint64, len(sorted)) // k: turns taken
	for i, be := range sorted {
		offset[i], skip[i] = permutation(cfg.Seed, be.ID, m)
	}
	for range m {
		best := 0
		for i := 1; i < len(sorted); i++ {
			// (2k_i+1)/(2w_i) < (2k_best+1)/(2w_best); strict, so ties keep the smaller ID.
			if (2*turns[i]+1)*uint64(sorted[best].Weight) < (2*turns[best]+1)*uint64(sorted[i].Weight) {
				best = i
			}
		}
		for {
			slot := (offset[best] + next[best]*skip[best]) % m
			next[best]++
			if table[slot] == Empty {
				table[slot] = sorted[best].Value
				break
			}
		}
		turns[best]++
	}
	return table
}

func TestBuildMatchesReference(t *testing.T) {
	const maxWeight = ^uint32(0)
	tests := []struct {
		name   string
		size   uint64
		n      int
		weight func(i int) uint32
		window int // buckets sorted at a time; 0 for Build's default
	}{
		{name: "one", size: 251, n: 1, weight: equalWeights},
		{name: "equal", size: 1021, n: 7, weight: equalWeights},
		{name: "full", size: 251, n: 250, weight: equalWeights},
		{name: "1..30", size: 4093, n: 30, weight: func(i int) uint32 { return uint32(i + 1) }},
		{name: "odd weights tie", size: 2039, n: 40, weight: func(i int) uint32 { return uint32(2*(i%5) + 1) }},
		{name: "1,3,9", size: DefaultSize, n: 30, weight: func(i int) uint32 { return []uint32{1, 3, 9}[i%3] }},
		{name: "extreme", size: 509, n: 4, weight: func(i int) uint32 { return []uint32{1, ^uint32(0), 1 << 31, 3}[i] }},
		// Weight 2i+1 takes turn i at time 1/2 (and turn 3i+1 at 3/2): all
		// 300 groups tie there, and their members must go in ID order.
		{name: "tie across 300 groups", size: DefaultSize, n: 300, weight: func(i int) uint32 { return uint32(2*i + 1) }},
		{name: "tie across groups of 6", size: DefaultSize, n: 600, weight: func(i int) uint32 { return uint32(2*(i%100) + 1) }},
		// The weight-1 backend's first turn is far past the last one taken.
		{name: "1 beside max", size: DefaultSize, n: 2, weight: func(i int) uint32 { return []uint32{1, maxWeight}[i] }},
		{name: "1s beside max, largest size", size: 1048573, n: 4, weight: func(i int) uint32 { return []uint32{1, 1, maxWeight, 1}[i] }},
		{name: "largest size, distinct", size: 1048573, n: 20, weight: func(i int) uint32 { return uint32(i + 1) }},
		{name: "one, largest size", size: 1048573, n: 1, weight: func(int) uint32 { return maxWeight }},
		{name: "one, weight 1", size: DefaultSize, n: 1, weight: equalWeights},
		{name: "all max", size: 4093, n: 50, weight: func(int) uint32 { return maxWeight }},
		// Weights this close put each round of turns into one bucket, to
		// be ordered exactly within it.
		{name: "distinct near max", size: 8191, n: 200, weight: func(i int) uint32 { return maxWeight - uint32(i) }},
		{name: "full, distinct", size: 251, n: 250, weight: func(i int) uint32 { return uint32(i + 1) }},
		{name: "full, near max", size: 251, n: 250, weight: func(i int) uint32 { return maxWeight - uint32(i%3) }},
		{name: "window of 1 bucket", size: 1021, n: 30, weight: func(i int) uint32 { return uint32(i%4 + 1) }, window: 1},
		{name: "window of 7 buckets", size: 4093, n: 40, weight: func(i int) uint32 { return uint32(3*i + 1) }, window: 7},
		{name: "window of 3 buckets, ties", size: 2039, n: 40, weight: func(i int) uint32 { return uint32(2*(i%10) + 1) }, window: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bes := makeBackends(tt.n, tt.weight)
			cfg := Config{Size: tt.size, Seed: 99}
			b, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			b.window = tt.window
			got, err := b.Build(bes)
			if err != nil {
				t.Fatal(err)
			}
			if d := Diff(got, referenceBuild(cfg, bes)); d != 0 {
				t.Errorf("Build differs from referenceBuild in %d slots", d)
			}
		})
	}
}

func benchmarkBuildWeighted(b *testing.B, n int, size uint64, weight func(i int) uint32) {
	bes := makeBackends(n, weight)
	builder, err := New(Config{Size: size})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := builder.Build(bes); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "ms/op")
}

// Every weight distinct: as many weight groups as backends, the most turn
// times to order.
func BenchmarkBuild1000x65537Weighted(b *testing.B) {
	benchmarkBuildWeighted(b, 1000, 65537, func(i int) uint32 { return uint32(i + 1) })
}

func BenchmarkBuild1000x1048573Weighted(b *testing.B) {
	benchmarkBuildWeighted(b, 1000, 1048573, func(i int) uint32 { return uint32(i + 1) })
}

// Distinct weights so close that each round's 1,000 turns share one bucket
// of Build's sort.
func BenchmarkBuild1000x65537NearEqualWeights(b *testing.B) {
	benchmarkBuildWeighted(b, 1000, 65537, func(i int) uint32 { return ^uint32(0) - uint32(i) })
}
