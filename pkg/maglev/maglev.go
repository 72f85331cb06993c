// Package maglev builds weighted Maglev consistent-hashing lookup tables
// (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI 2016).
//
// The control plane builds one table per virtual service; the XDP datapath
// picks a backend with table[flowhash * len(table) >> 32] (the 32-bit flow
// hash scaled to the table, datapath.MaglevSlot). Every balancer in a
// cluster must compute the same table from the same input, so a table is a
// pure function of (Config.Size, Config.Seed, the set of (ID, Weight, Value)
// triples): input order does not matter, and the hashes are fixed forever
// (see hash.go).
//
// Weights are honoured by ordering the backends' turns in the populate loop
// by the Sainte-Laguë / Webster schedule: a backend's k-th turn (k = 0, 1, …)
// happens at time (2k+1)/(2·Weight), ties going to the smaller ID. With equal
// weights this is exactly the round-robin of the paper. Each turn fills one
// slot, so the table has exactly M turns and each backend's slot count is its
// Webster apportionment of M — proportional to its weight to within about one
// slot. The turn times of a backend depend only on its own weight, so adding
// or removing a backend, or scaling all weights by the same factor, never
// reorders the turns of the others; that is what keeps disruption low.
package maglev

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Empty marks a slot that has no backend; a table is all Empty exactly when
// it was built from no backends. The datapath must treat it as "no backend,
// drop". It is therefore not a valid Backend.Value.
const Empty = ^uint32(0)

// DefaultSize is the default table size M. It is prime and gives a
// disruption well under 1% for up to about 1,000 backends; pick a larger
// size from Sizes for bigger services.
const DefaultSize = 65537

// allowedSizes returns the allowed table sizes: primes a little under (or,
// for 65537, just over) a power of two, ascending. The list is fixed so that
// every balancer, and every future version, agrees on what a size means. It
// is returned by value so that there is no package-level state to mutate.
func allowedSizes() [13]uint64 {
	return [...]uint64{
		251, 509, 1021, 2039, 4093, 8191, 16381, 32749,
		65537, 131071, 262139, 524287, 1048573,
	}
}

// Sizes returns the allowed table sizes in ascending order. Every one is
// prime and below 2^20. The caller owns the returned slice.
func Sizes() []uint64 {
	s := allowedSizes()
	return s[:]
}

// Sentinel errors. Errors returned by this package wrap one of these, so
// callers can branch with errors.Is.
var (
	// ErrInvalidSize: Config.Size is not one of Sizes().
	ErrInvalidSize = errors.New("invalid maglev table size")
	// ErrTooManyBackends: a table of size M holds at most M-1 backends.
	ErrTooManyBackends = errors.New("too many backends for maglev table size")
	// ErrDuplicateID: two backends share an ID.
	ErrDuplicateID = errors.New("duplicate maglev backend ID")
	// ErrDuplicateValue: two backends share a datapath Value.
	ErrDuplicateValue = errors.New("duplicate maglev backend value")
	// ErrZeroWeight: a backend has Weight 0. A drained backend is not part
	// of the table; the caller filters it out before Build.
	ErrZeroWeight = errors.New("maglev backend weight is 0")
	// ErrInvalidBackend: a backend has an empty ID or uses the reserved
	// Value Empty.
	ErrInvalidBackend = errors.New("invalid maglev backend")
)

// Config configures a Builder. All balancers that serve the same virtual
// service must use the same Config.
type Config struct {
	// Size is the number of slots M in a table. It must be one of Sizes().
	// Larger tables lower disruption and improve evenness at the cost of
	// memory (4 bytes per slot) and build time.
	Size uint64
	// Seed perturbs every backend's permutation. Changing it reshuffles the
	// whole table. Zero is a valid seed.
	Seed uint64
}

// DefaultConfig returns a Config with Size DefaultSize and Seed 0.
func DefaultConfig() Config {
	return Config{Size: DefaultSize}
}

// Validate reports whether c can be used to build tables.
func (c Config) Validate() error {
	sizes := allowedSizes()
	if _, ok := slices.BinarySearch(sizes[:], c.Size); ok {
		return nil
	}
	allowed := fmt.Sprint(sizes[:])
	if c.Size == 0 {
		return fmt.Errorf("maglev config: Size is 0; set it to one of %s (default %d): %w",
			allowed, DefaultSize, ErrInvalidSize)
	}
	return fmt.Errorf("maglev config: Size %d is not an allowed table size; use one of the primes %s (default %d): %w",
		c.Size, allowed, DefaultSize, ErrInvalidSize)
}

// Backend is one member of a virtual service.
type Backend struct {
	// ID is the backend's stable identity (a name or address). It decides
	// the backend's permutation, so it must not change while the backend
	// stays in the service, and it must be the same on every balancer.
	ID string
	// Weight is the backend's relative share of the table; it must be > 0.
	// A backend with a tiny share (less than about half a slot) may get no
	// slot at all.
	Weight uint32
	// Value is what the table stores for this backend: the backend's id in
	// the datapath. It must be unique within a Build and must not be Empty.
	Value uint32
}

// Builder builds Maglev tables for one Config. It keeps its working buffers
// between builds, so reuse one Builder per goroutine; a Builder is not safe
// for concurrent use. The zero value is not usable: call New.
type Builder struct {
	cfg Config

	sorted   []Backend // input sorted by ID; indices below refer to it
	values   []uint32
	perm     []permState
	byWeight []int32       // backend indices sorted by (weight, index)
	groups   []weightGroup // one per distinct weight, ascending
	counts   []int32       // per bucket of the current window: event count, then end offset
	events   []turnEvent   // the current window's events, ordered by bucket
	turn     []int32       // backend indices taking a turn at the current time
	used     []uint64      // occupancy bitmap over the table's slots

	// window is the number of buckets sorted at a time; 0 means
	// max(2^16, 2·groups), or all the buckets if fewer. Tests shrink it to
	// cross many windows.
	window int
}

// permState is one backend's walk through its permutation.
type permState struct {
	pos   uint32 // next slot in this backend's permutation; < M
	skip  uint32 // permutation stride; in [1, M-1]
	value uint32
}

// weightGroup is the run of backends with one weight. They share turn times,
// so they take their turns together, in ID order: turn k of every member is
// at time (2k+1)/(2·weight). The group also generates its turns in order:
// turn k falls in bucket floor((2k+1)·scale/weight) (see populate), kept as
// quotient bucket and remainder rem so that the next turn's bucket costs an
// add rather than a divide.
type weightGroup struct {
	weight uint32
	lo, hi int32  // members are byWeight[lo:hi], in ID order
	turns  uint32 // turns generated so far: k of the next one
	limit  uint32 // turns at or before the horizon; no more are generated
	bucket uint64 // bucket of turn k
	rem    uint64 // (2k+1)·scale mod weight
	step   uint64 // 2·scale / weight: buckets from one turn to the next …
	stepR  uint64 // … and 2·scale mod weight
}

// turnEvent is turn k of every member of groups[group].
type turnEvent struct {
	group, k, weight uint32
}

// before reports whether event x happens strictly before event y. Turn k at
// weight w is at time (2k+1)/(2w); the times are compared by
// cross-multiplying, which is exact: 2k+1 <= 2M+1 < 2^21 (every allowed M is
// below 2^20) and w < 2^32, so the products stay below 2^53.
func (x turnEvent) before(y turnEvent) bool {
	return (2*uint64(x.k)+1)*uint64(y.weight) < (2*uint64(y.k)+1)*uint64(x.weight)
}

// sameTime reports whether events x and y happen at the same time.
func (x turnEvent) sameTime(y turnEvent) bool {
	return (2*uint64(x.k)+1)*uint64(y.weight) == (2*uint64(y.k)+1)*uint64(x.weight)
}

// New returns a Builder for cfg.
func New(cfg Config) (*Builder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Builder{cfg: cfg}, nil
}

// Build returns a table of Config.Size slots, each holding the Value of one
// of backends. The result depends only on the set of backends, not their
// order. With no backends every slot is Empty; otherwise no slot is Empty
// and each backend's slot count is proportional to its weight. The caller
// owns the returned slice.
func (b *Builder) Build(backends []Backend) ([]uint32, error) {
	m := b.cfg.Size
	if uint64(len(backends)) >= m {
		return nil, fmt.Errorf("maglev: %d backends do not fit a table of size %d (at most %d); use a larger Config.Size: %w",
			len(backends), m, m-1, ErrTooManyBackends)
	}
	for i, be := range backends {
		switch {
		case be.ID == "":
			return nil, fmt.Errorf("maglev: backends[%d] has an empty ID; give every backend a stable name or address: %w",
				i, ErrInvalidBackend)
		case be.Weight == 0:
			return nil, fmt.Errorf("maglev: backend %q has weight 0; remove drained backends before building the table: %w",
				be.ID, ErrZeroWeight)
		case be.Value == Empty:
			return nil, fmt.Errorf("maglev: backend %q has Value %#x, which is reserved for Empty; use another datapath id: %w",
				be.ID, Empty, ErrInvalidBackend)
		}
	}

	// Sorting by ID makes the result independent of input order: it fixes
	// the tie-break between equal turn times.
	b.sorted = append(b.sorted[:0], backends...)
	slices.SortFunc(b.sorted, func(x, y Backend) int { return strings.Compare(x.ID, y.ID) })
	for i := 1; i < len(b.sorted); i++ {
		if b.sorted[i].ID == b.sorted[i-1].ID {
			return nil, fmt.Errorf("maglev: backend ID %q appears more than once; IDs must be unique: %w",
				b.sorted[i].ID, ErrDuplicateID)
		}
	}
	if err := b.checkValues(); err != nil {
		return nil, err
	}

	table := make([]uint32, m)
	if len(b.sorted) == 0 {
		for i := range table {
			table[i] = Empty
		}
		return table, nil
	}
	if err := b.populate(table); err != nil {
		return nil, err
	}
	return table, nil
}

// checkValues reports two sorted backends sharing a Value.
func (b *Builder) checkValues() error {
	b.values = b.values[:0]
	for _, be := range b.sorted {
		b.values = append(b.values, be.Value)
	}
	slices.Sort(b.values)
	for i := 1; i < len(b.values); i++ {
		if b.values[i] != b.values[i-1] {
			continue
		}
		v := b.values[i]
		var ids []string
		for _, be := range b.sorted {
			if be.Value == v {
				ids = append(ids, be.ID)
			}
		}
		return fmt.Errorf("maglev: backends %q share Value %d; each backend needs its own datapath id: %w",
			ids, v, ErrDuplicateValue)
	}
	return nil
}

// populate writes every slot of table from b.sorted, which is non-empty,
// sorted by ID, validated and shorter than the table.
//
// It is the populate loop of the paper, with the round-robin replaced by the
// weighted turn order described in the package comment: backend i takes turn
// k at time (2k+1)/(2·w_i), ties in ID order. Backends of equal weight share
// their turn times, so turns are generated per weight group; with equal
// weights it is a plain round-robin.
//
// The table takes exactly M turns, and they all happen by the horizon
// T = (2M+N)/(2W), W the sum of the weights: by time T a backend of weight w
// has had floor(w·T + 1/2) > w·T - 1/2 turns, so all of them together have
// had more than W·T - N/2 = M. The loop therefore generates every group's
// turns up to T and orders them by an exact bucket sort: turn k of weight w
// goes to bucket floor((2k+1)·scale/w), which never puts a later turn in an
// earlier bucket and puts turns at the same time in the same bucket; the few
// turns that share a bucket are ordered by their exact times. The scale makes
// the buckets about as many as the turns, so most hold none or one. Buckets
// are sorted a window at a time, which keeps the buffers small.
//
// Each backend walks its permutation in place (pos += skip mod M) and slot
// occupancy is a bitmap, so the state is O(N + M/64) words beside a window,
// and the loop does about M·ln(M) probes in total.
func (b *Builder) populate(table []uint32) error {
	m := b.cfg.Size
	n := len(b.sorted)

	b.perm = slices.Grow(b.perm[:0], n)[:n]
	b.byWeight = slices.Grow(b.byWeight[:0], n)[:n]
	for i, be := range b.sorted {
		offset, skip := permutation(b.cfg.Seed, be.ID, m)
		b.perm[i] = permState{pos: uint32(offset), skip: uint32(skip), value: be.Value}
		b.byWeight[i] = int32(i)
	}
	slices.SortFunc(b.byWeight, func(x, y int32) int {
		if c := cmp.Compare(b.sorted[x].Weight, b.sorted[y].Weight); c != 0 {
			return c
		}
		return cmp.Compare(x, y)
	})
	b.groups = b.groups[:0]
	var total uint64 // W < 2^20 · 2^32
	for lo := 0; lo < n; {
		w := b.sorted[b.byWeight[lo]].Weight
		hi := lo + 1
		for hi < n && b.sorted[b.byWeight[hi]].Weight == w {
			hi++
		}
		b.groups = append(b.groups, weightGroup{weight: w, lo: int32(lo), hi: int32(hi)})
		total += uint64(w) * uint64(hi-lo)
		lo = hi
	}

	// Turn k is at or before the horizon T = (2M+N)/(2W) when
	// 2k+1 <= w·(2M+N)/W. w·(2M+N) < 2^32·2^22, so the sum stays below 2^55.
	horizon := 2*m + uint64(n)
	var turns uint64
	for i := range b.groups {
		g := &b.groups[i]
		g.limit = uint32((uint64(g.weight)*horizon + total) / (2 * total))
		turns += uint64(g.limit)
	}
	// The last turn's bucket is about horizon·scale/W, so this scale makes
	// about as many buckets as turns: fewer buckets put more turns in one,
	// more cost more windows; 2 or 4 times as many measured no faster. Any
	// scale >= 1 orders the turns correctly. turns <= M+N, so scale <= W+1 <
	// 2^53 and 2·scale fits with room for the bucket sums.
	scale := uint64(float64(total)*float64(turns)/float64(horizon)) + 1
	for i := range b.groups {
		g := &b.groups[i]
		w := uint64(g.weight)
		g.turns = 0
		g.bucket, g.rem = scale/w, scale%w
		g.step, g.stepR = 2*scale/w, 2*scale%w
	}

	b.used = slices.Grow(b.used[:0], int(m+63)/64)[:(m+63)/64]
	clear(b.used)

	window := b.window
	if window == 0 {
		// No larger than the buckets there are (few with equal weights),
		// as a whole window is cleared and scanned.
		buckets := int(float64(horizon)*float64(scale)/float64(total)) + 2
		window = min(max(1<<16, 2*len(b.groups)), buckets)
	}
	b.counts = slices.Grow(b.counts[:0], window)[:window]
	filled := uint64(0)
	for lo := uint64(0); ; lo += uint64(window) {
		hi := lo + uint64(window)
		if !b.sortWindow(lo, hi) {
			// Unreachable: the turns up to the horizon fill the table.
			// An error, not a panic, should that ever be wrong: the
			// control plane keeps its running tables.
			return fmt.Errorf("maglev: internal error: ran out of turns with %d of %d slots filled (%d backends); please report it", filled, m, len(b.sorted))
		}
		start := int32(0)
		for _, end := range b.counts {
			evs := b.events[start:end]
			start = end
			if len(evs) > 1 {
				sortEvents(evs)
			}
			for len(evs) > 0 {
				// Take the turns of every group at the earliest time.
				tied := 1
				for tied < len(evs) && evs[0].sameTime(evs[tied]) {
					tied++
				}
				var turn []int32
				if tied == 1 {
					g := &b.groups[evs[0].group]
					turn = b.byWeight[g.lo:g.hi]
				} else {
					b.turn = b.turn[:0]
					for _, e := range evs[:tied] {
						g := &b.groups[e.group]
						b.turn = append(b.turn, b.byWeight[g.lo:g.hi]...)
					}
					slices.Sort(b.turn)
					turn = b.turn
				}
				evs = evs[tied:]
				if filled = b.takeTurns(table, turn, filled); filled == m {
					return nil
				}
			}
		}
	}
}

// sortWindow fills b.events with the turns in buckets [lo, hi), ordered by
// bucket, and leaves in b.counts[j] the end in b.events of bucket lo+j. It
// reports false when no group has a turn left at or after lo.
func (b *Builder) sortWindow(lo, hi uint64) bool {
	counts := b.counts
	clear(counts)
	left := false
	for i := range b.groups {
		g := &b.groups[i]
		if g.turns < g.limit {
			left = true
		}
		k, bucket, rem := g.turns, g.bucket, g.rem
		for k < g.limit && bucket < hi {
			counts[bucket-lo]++
			k++
			bucket, rem = bucket+g.step, rem+g.stepR
			if rem >= uint64(g.weight) {
				bucket, rem = bucket+1, rem-uint64(g.weight)
			}
		}
	}
	if !left {
		return false
	}
	// Exclusive prefix sums: counts[j] becomes the start of bucket lo+j,
	// and placing the bucket's events advances it to the bucket's end.
	sum := int32(0)
	for j, c := range counts {
		counts[j] = sum
		sum += c
	}
	b.events = slices.Grow(b.events[:0], int(sum))[:sum]
	for i := range b.groups {
		g := &b.groups[i]
		for g.turns < g.limit && g.bucket < hi {
			j := g.bucket - lo
			b.events[counts[j]] = turnEvent{group: uint32(i), k: g.turns, weight: g.weight}
			counts[j]++
			g.turns++
			g.bucket, g.rem = g.bucket+g.step, g.rem+g.stepR
			if g.rem >= uint64(g.weight) {
				g.bucket, g.rem = g.bucket+1, g.rem-uint64(g.weight)
			}
		}
	}
	return true
}

// sortEvents orders the events of one bucket by time. Turns at the same time
// end up next to each other, in any order: populate merges their members by
// ID.
func sortEvents(evs []turnEvent) {
	if len(evs) <= 12 {
		for i := 1; i < len(evs); i++ {
			for j := i; j > 0 && evs[j].before(evs[j-1]); j-- {
				evs[j], evs[j-1] = evs[j-1], evs[j]
			}
		}
		return
	}
	slices.SortFunc(evs, func(x, y turnEvent) int {
		switch {
		case x.before(y):
			return -1
		case y.before(x):
			return 1
		}
		return 0
	})
}

// takeTurns lets each backend in turn, in order, take the next free slot of
// its permutation, until the table is full. filled is the number of slots
// filled before; takeTurns returns the number after.
func (b *Builder) takeTurns(table []uint32, turn []int32, filled uint64) uint64 {
	m := b.cfg.Size
	m32 := uint32(m)
	// This is the hot loop: the locals keep the probe in registers, where
	// b's fields and p.pos would be reloaded and stored on every probe.
	used, perm := b.used, b.perm
	for _, i := range turn {
		p := &perm[i]
		pos, skip := p.pos, p.skip
		for used[pos/64]&(1<<(pos%64)) != 0 {
			pos += skip
			if pos >= m32 {
				pos -= m32
			}
		}
		used[pos/64] |= 1 << (pos % 64)
		table[pos] = p.value
		pos += skip
		if pos >= m32 {
			pos -= m32
		}
		p.pos = pos
		if filled++; filled == m {
			break
		}
	}
	return filled
}

// Diff returns the number of slots whose values differ between tables a and
// b: the number of table slots — and so the share of flows — that a switch
// from a to b moves. Tables of different lengths index flows differently
// altogether, so Diff then returns the length of the longer one.
func Diff(a, b []uint32) int {
	if len(a) != len(b) {
		return max(len(a), len(b))
	}
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}
