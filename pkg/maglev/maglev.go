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
	groups   []weightGroup // min-heap on next turn time
	tied     []weightGroup // groups popped together because their turn times are equal
	turn     []int32       // backend indices taking a turn at the current time
	used     []uint64      // occupancy bitmap over the table's slots
}

// permState is one backend's walk through its permutation.
type permState struct {
	pos   uint32 // next slot in this backend's permutation; < M
	skip  uint32 // permutation stride; in [1, M-1]
	value uint32
}

// weightGroup is the run of backends with one weight. They share turn times,
// so they take their turns together, in ID order: turn k of every member is
// at time (2k+1)/(2·weight).
type weightGroup struct {
	weight uint32
	turns  uint32 // turns each member has taken; never exceeds M
	lo, hi int32  // members are byWeight[lo:hi], in ID order
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
	b.populate(table)
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
// their turn times, so the loop keeps a min-heap of weight groups rather
// than of backends; with equal weights it is a plain round-robin. Each
// backend walks its permutation in place (pos += skip mod M) and slot
// occupancy is a bitmap, so the state is O(N + M/64) words and the loop does
// about M·ln(M) probes in total.
func (b *Builder) populate(table []uint32) {
	m := b.cfg.Size
	m32 := uint32(m)
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
	for lo := 0; lo < n; {
		w := b.sorted[b.byWeight[lo]].Weight
		hi := lo + 1
		for hi < n && b.sorted[b.byWeight[hi]].Weight == w {
			hi++
		}
		b.groups = append(b.groups, weightGroup{weight: w, lo: int32(lo), hi: int32(hi)})
		lo = hi
	}
	for i := len(b.groups)/2 - 1; i >= 0; i-- {
		b.siftDown(i)
	}

	b.used = slices.Grow(b.used[:0], int(m+63)/64)[:(m+63)/64]
	clear(b.used)

	filled := uint64(0)
	for {
		// Pop every group whose next turn is at the earliest time.
		b.tied = append(b.tied[:0], b.popGroup())
		for len(b.groups) > 0 && turnTimeCmp(b.groups[0], b.tied[0]) == 0 {
			b.tied = append(b.tied, b.popGroup())
		}
		var turn []int32
		if len(b.tied) == 1 {
			g := b.tied[0]
			turn = b.byWeight[g.lo:g.hi]
		} else {
			b.turn = b.turn[:0]
			for _, g := range b.tied {
				b.turn = append(b.turn, b.byWeight[g.lo:g.hi]...)
			}
			slices.Sort(b.turn)
			turn = b.turn
		}

		for _, i := range turn {
			p := &b.perm[i]
			for b.used[p.pos/64]&(1<<(p.pos%64)) != 0 {
				p.pos += p.skip
				if p.pos >= m32 {
					p.pos -= m32
				}
			}
			b.used[p.pos/64] |= 1 << (p.pos % 64)
			table[p.pos] = p.value
			p.pos += p.skip
			if p.pos >= m32 {
				p.pos -= m32
			}
			if filled++; filled == m {
				return
			}
		}

		for _, g := range b.tied {
			g.turns++
			b.pushGroup(g)
		}
	}
}

// turnTimeCmp compares the next turn times of groups x and y. Turn k of a
// group with weight w is at time (2k+1)/(2w); the times are compared by
// cross-multiplying, which is exact: 2k+1 <= 2M+1 < 2^21 (every allowed M
// is below 2^20) and w < 2^32, so the products stay below 2^53.
func turnTimeCmp(x, y weightGroup) int {
	return cmp.Compare(
		(2*uint64(x.turns)+1)*uint64(y.weight),
		(2*uint64(y.turns)+1)*uint64(x.weight),
	)
}

func (b *Builder) popGroup() weightGroup {
	h := b.groups
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	b.groups = h[:last]
	b.siftDown(0)
	return top
}

func (b *Builder) pushGroup(g weightGroup) {
	b.groups = append(b.groups, g)
	h := b.groups
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if turnTimeCmp(h[i], h[parent]) >= 0 {
			return
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
}

func (b *Builder) siftDown(i int) {
	h := b.groups
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && turnTimeCmp(h[r], h[l]) < 0 {
			c = r
		}
		if turnTimeCmp(h[c], h[i]) >= 0 {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
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
