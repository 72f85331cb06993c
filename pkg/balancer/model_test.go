package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/maglev"
)

// The reload model test drives the control loop with a random walk of
// configurations, drains and undrains (through Reload and Drain, as the
// daemon and the CLI do) over the real datapath, and after every step
// compares what the kernel holds with what the configuration alone says it
// must: incremental updates (VIP numbers, backend ids, two table
// generations, epochs, the VIP index) are where state drifts.

// modelSeeds are TestReloadModel's fixed walks; each run adds a fresh
// seed (or runs SWITCHYARD_MODEL_SEED's alone). Seed 7 rolls back a reload
// that changed a VIP's options (its epoch moved on twice).
var modelSeeds = []uint64{1, 7}

const modelSteps = 60

// modelSeedsFor is fixed, followed by a fresh seed, or, if set,
// SWITCHYARD_MODEL_SEED's alone.
func modelSeedsFor(t *testing.T, fixed ...uint64) []uint64 {
	if s := os.Getenv("SWITCHYARD_MODEL_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SWITCHYARD_MODEL_SEED=%q: %v; give a decimal seed", s, err)
		}
		return []uint64{n}
	}
	return append(slices.Clone(fixed), uint64(time.Now().UnixNano()))
}

func TestReloadModel(t *testing.T) {
	for _, seed := range modelSeedsFor(t, modelSeeds...) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			runModel(t, seed, modelSteps, false)
			if t.Failed() {
				t.Logf("replay with SWITCHYARD_MODEL_SEED=%d go test -run 'TestReloadModel' ./pkg/balancer", seed)
			}
		})
	}
}

type mBackend struct {
	name, addr string
	weight     int
	drained    bool
}

type mVIP struct {
	name, addr string
	port       int
	udp        bool
	source     bool // hash: source
	noCT       bool // conntrack: false (udp only)
	size       int
	backends   []mBackend
}

func (v *mVIP) key() datapath.VIPKey {
	p := datapath.ProtoTCP
	if v.udp {
		p = datapath.ProtoUDP
	}
	return datapath.VIPKey{Addr: netip.MustParseAddr(v.addr), Port: uint16(v.port), Proto: p}
}

func (v *mVIP) flags() datapath.VIPFlags {
	var f datapath.VIPFlags
	if v.source {
		f |= datapath.VIPHashSource
	}
	if v.noCT {
		f |= datapath.VIPNoConntrack
	}
	return f
}

func (v *mVIP) backendByName(name string) *mBackend {
	for i := range v.backends {
		if v.backends[i].name == name {
			return &v.backends[i]
		}
	}
	return nil
}

func (v *mVIP) backendByAddr(addr string) *mBackend {
	for i := range v.backends {
		if v.backends[i].addr == addr {
			return &v.backends[i]
		}
	}
	return nil
}

// model is the configuration and the operator's drains, by "VIP/ADDRESS".
type model struct {
	vips      []mVIP
	overrides map[string]bool
}

func (m *model) clone() model {
	c := model{overrides: map[string]bool{}}
	for _, v := range m.vips {
		v.backends = slices.Clone(v.backends)
		c.vips = append(c.vips, v)
	}
	for k, d := range m.overrides {
		c.overrides[k] = d
	}
	return c
}

func (m *model) vipByName(name string) *mVIP {
	for i := range m.vips {
		if m.vips[i].name == name {
			return &m.vips[i]
		}
	}
	return nil
}

func (m *model) hasKey(k datapath.VIPKey) bool {
	return slices.ContainsFunc(m.vips, func(v mVIP) bool { return v.key() == k })
}

func (m *model) yaml() string {
	var sb strings.Builder
	sb.WriteString("datapath:\n  interface: lo\n  conn_table_size: 4096\napi:\n  socket: /tmp/unused.sock\nmetrics:\n  listen: \"\"\nvips:\n")
	if len(m.vips) == 0 {
		sb.WriteString("  []\n")
	}
	for _, v := range m.vips {
		proto, hash := "tcp", "5tuple"
		if v.udp {
			proto = "udp"
		}
		if v.source {
			hash = "source"
		}
		fmt.Fprintf(&sb, "  - name: %s\n    address: %s\n    port: %d\n    protocol: %s\n    hash: %s\n    conntrack: %v\n    table_size: %d\n    health: {type: none}\n    backends:\n",
			v.name, v.addr, v.port, proto, hash, !v.noCT, v.size)
		if len(v.backends) == 0 {
			sb.WriteString("      []\n")
		}
		for _, be := range v.backends {
			fmt.Fprintf(&sb, "      - {name: %s, address: %s, weight: %d, drained: %v}\n", be.name, be.addr, be.weight, be.drained)
		}
	}
	return sb.String()
}

// reloaded is the model after a reload from m to cur succeeded: the
// operator's drain or undrain of a backend ends when the file changes its
// `drained`, or no longer has it (by VIP name and address).
func (m *model) reloaded(cur model) model {
	out := cur.clone()
	out.overrides = map[string]bool{}
	for key, d := range m.overrides {
		vip, addr, _ := strings.Cut(key, "/")
		nv := cur.vipByName(vip)
		if nv == nil || nv.backendByAddr(addr) == nil {
			continue
		}
		if ov := m.vipByName(vip); ov != nil {
			if ob := ov.backendByAddr(addr); ob != nil && ob.drained != nv.backendByAddr(addr).drained {
				continue
			}
		}
		out.overrides[key] = d
	}
	return out
}

// drained is a backend's state: the operator's word, else the file's.
func (m *model) drained(v *mVIP, be mBackend) bool {
	if d, ok := m.overrides[v.name+"/"+be.addr]; ok {
		return d
	}
	return be.drained
}

// table is the Maglev table the model says VIP v has, by backend address
// ("" for an empty slot).
func (m *model) table(t *testing.T, v *mVIP) []string {
	t.Helper()
	var in []maglev.Backend
	var addrs []string
	for _, be := range v.backends {
		if m.drained(v, be) {
			continue
		}
		in = append(in, maglev.Backend{ID: netip.MustParseAddr(be.addr).String(), Weight: uint32(be.weight), Value: uint32(len(addrs))})
		addrs = append(addrs, be.addr)
	}
	mb, err := maglev.New(maglev.Config{Size: uint64(v.size)})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := mb.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		if id != maglev.Empty {
			out[i] = addrs[id]
		}
	}
	return out
}

// Pools the walk draws from: few addresses, so that VIPs share addresses
// (on other ports, and with all-ports VIPs) and backends serve several
// VIPs.
var (
	modelVIPAddrs = []string{"10.100.0.1", "10.100.0.2", "2001:db8:100::1", "2001:db8:100::2"}
	modelBEAddrs  = []string{"10.2.0.1", "10.2.0.2", "10.2.0.3", "10.2.0.4", "10.2.0.5", "2001:db8:2::1", "2001:db8:2::2", "2001:db8:2::3"}
	modelPorts    = []int{0, 53, 80, 443}
	modelSizes    = []int{251, 509, 1021}
	modelBENames  = []string{"a", "b", "c", "d", "e", "f"}
)

type walker struct {
	rng   *rand.Rand
	names int // VIP names given so far
	// fill: filler VIPs (one backend each, addresses of their own) keep
	// the configuration at the datapath's limit of VIPs; every change
	// replaces some, so that new VIPs need the numbers of removed ones.
	fill    bool
	fillers int // filler VIPs made so far
}

func isFiller(v mVIP) bool { return strings.HasPrefix(v.name, "f") }

// refill replaces a few of m's filler VIPs with new ones, and adds or
// removes fillers to bring m to the datapath's limit of VIPs.
func (w *walker) refill(m *model) string {
	core := slices.DeleteFunc(slices.Clone(m.vips), isFiller)
	fillers := slices.DeleteFunc(slices.Clone(m.vips), func(v mVIP) bool { return !isFiller(v) })
	gone := min(len(fillers), 1+w.pick(4))
	for range gone {
		j := w.pick(len(fillers))
		fillers = slices.Delete(fillers, j, j+1)
	}
	for len(core)+len(fillers) > datapath.MaxVIPs {
		fillers = fillers[1:]
	}
	for len(core)+len(fillers) < datapath.MaxVIPs {
		n := w.fillers
		w.fillers++
		fillers = append(fillers, mVIP{
			name: fmt.Sprintf("f%d", n), addr: fmt.Sprintf("10.%d.%d.%d", 101+n/62500, n/250%250, 1+n%250), port: 80, size: 251,
			backends: []mBackend{{name: "a", addr: modelBEAddrs[n%len(modelBEAddrs)], weight: 1}},
		})
	}
	m.vips = append(core, fillers...)
	return fmt.Sprintf("%d filler VIPs replaced", gone)
}

func (w *walker) pick(n int) int { return w.rng.IntN(n) }

func (w *walker) newBackend(v *mVIP) (mBackend, bool) {
	for range 20 {
		be := mBackend{name: modelBENames[w.pick(len(modelBENames))], addr: modelBEAddrs[w.pick(len(modelBEAddrs))], weight: 1 + w.pick(3)}
		if v.backendByName(be.name) == nil && v.backendByAddr(be.addr) == nil {
			be.drained = w.pick(8) == 0
			return be, true
		}
	}
	return mBackend{}, false
}

// freeKey gives v a key (address, port, protocol) no other VIP of m has.
func (w *walker) freeKey(m *model, v *mVIP) bool {
	for range 20 {
		c := *v
		c.addr, c.port, c.udp = modelVIPAddrs[w.pick(len(modelVIPAddrs))], modelPorts[w.pick(len(modelPorts))], w.pick(2) == 0
		if !m.hasKey(c.key()) {
			*v = c
			if !v.udp {
				v.noCT = false
			}
			return true
		}
	}
	return false
}

func (w *walker) newVIP(m *model) (mVIP, bool) {
	w.names++
	v := mVIP{name: fmt.Sprintf("v%d", w.names), size: modelSizes[w.pick(len(modelSizes))], source: w.pick(3) == 0}
	if !w.freeKey(m, &v) {
		return v, false
	}
	v.noCT = v.udp && w.pick(2) == 0
	for range 1 + w.pick(3) {
		if be, ok := w.newBackend(&v); ok {
			v.backends = append(v.backends, be)
		}
	}
	return v, true
}

// mutate changes one thing of m's VIPs (not of its fillers) and says what.
func (w *walker) mutate(all *model) string {
	m := &model{vips: slices.DeleteFunc(slices.Clone(all.vips), isFiller)}
	defer func() {
		all.vips = append(m.vips, slices.DeleteFunc(all.vips, func(v mVIP) bool { return !isFiller(v) })...)
	}()
	if len(m.vips) == 0 {
		if v, ok := w.newVIP(m); ok {
			m.vips = append(m.vips, v)
			return "add VIP " + v.name
		}
		return "nothing"
	}
	i := w.pick(len(m.vips))
	v := &m.vips[i]
	switch w.pick(14) {
	case 0, 1:
		if len(m.vips) < 6 {
			if nv, ok := w.newVIP(m); ok {
				m.vips = append(m.vips, nv)
				return "add VIP " + nv.name
			}
		}
		fallthrough
	case 2:
		name := v.name
		m.vips = slices.Delete(m.vips, i, i+1)
		return "remove VIP " + name
	case 3:
		old := v.name
		w.names++
		v.name = fmt.Sprintf("v%d", w.names)
		return "rename VIP " + old + " to " + v.name
	case 4:
		old := v.key()
		if w.freeKey(m, v) {
			return fmt.Sprintf("VIP %s: key %s to %s", v.name, old, v.key())
		}
		return "nothing"
	case 5:
		v.source = !v.source
		return fmt.Sprintf("VIP %s: source hash %v", v.name, v.source)
	case 6:
		if v.udp {
			v.noCT = !v.noCT
			return fmt.Sprintf("VIP %s: conntrack %v", v.name, !v.noCT)
		}
		return "nothing"
	case 7:
		v.size = modelSizes[w.pick(len(modelSizes))]
		return fmt.Sprintf("VIP %s: table size %d", v.name, v.size)
	case 8:
		if be, ok := w.newBackend(v); ok {
			v.backends = append(v.backends, be)
			return fmt.Sprintf("VIP %s: add backend %s %s", v.name, be.name, be.addr)
		}
		return "nothing"
	case 9:
		if len(v.backends) > 0 {
			j := w.pick(len(v.backends))
			name := v.backends[j].name
			v.backends = slices.Delete(v.backends, j, j+1)
			return fmt.Sprintf("VIP %s: remove backend %s", v.name, name)
		}
		return "nothing"
	case 10:
		if len(v.backends) > 0 {
			be := &v.backends[w.pick(len(v.backends))]
			be.weight = 1 + w.pick(4)
			return fmt.Sprintf("VIP %s: backend %s weight %d", v.name, be.name, be.weight)
		}
		return "nothing"
	case 11:
		if len(v.backends) > 0 {
			be := &v.backends[w.pick(len(v.backends))]
			name := modelBENames[w.pick(len(modelBENames))]
			if v.backendByName(name) == nil {
				old := be.name
				be.name = name
				return fmt.Sprintf("VIP %s: rename backend %s to %s", v.name, old, name)
			}
		}
		return "nothing"
	case 12:
		if len(v.backends) > 0 {
			be := &v.backends[w.pick(len(v.backends))]
			be.drained = !be.drained
			return fmt.Sprintf("VIP %s: backend %s drained: %v in the file", v.name, be.name, be.drained)
		}
		return "nothing"
	default: // move a backend to another VIP
		if len(v.backends) == 0 || len(m.vips) < 2 {
			return "nothing"
		}
		j, to := w.pick(len(v.backends)), &m.vips[(i+1+w.pick(len(m.vips)-1))%len(m.vips)]
		be := v.backends[j]
		if to.backendByName(be.name) != nil || to.backendByAddr(be.addr) != nil {
			return "nothing"
		}
		v.backends = slices.Delete(v.backends, j, j+1)
		to.backends = append(to.backends, be)
		return fmt.Sprintf("move backend %s %s from VIP %s to %s", be.name, be.addr, v.name, to.name)
	}
}

// invalid breaks m in one of the ways validation refuses.
func (w *walker) invalid(m *model) string {
	if len(m.vips) == 0 {
		nv, _ := w.newVIP(m)
		m.vips = append(m.vips, nv)
	}
	v := &m.vips[w.pick(len(m.vips))]
	switch w.pick(6) {
	case 0:
		v.port = 70000
		return "port 70000"
	case 1:
		v.size = 250
		return "table size 250"
	case 2:
		c := *v
		c.name += "x"
		m.vips = append(m.vips, c)
		return "a second VIP with the same key"
	case 3:
		v.udp, v.noCT = false, true
		return "tcp without conntrack"
	case 4:
		if len(v.backends) > 0 {
			v.backends = append(v.backends, mBackend{name: "dup", addr: v.backends[0].addr, weight: 1})
			return "a backend address twice"
		}
		fallthrough
	default:
		v.backends = append(v.backends, mBackend{name: "zero", addr: "10.2.9.9", weight: 0})
		return "weight 0"
	}
}

// dpState is what the datapath holds, read through its typed accessors.
type dpState struct {
	vips     map[datapath.VIPKey]datapath.VIPMeta
	indexed  map[datapath.VIPKey]datapath.IndexedVIP
	tables   map[datapath.VIPKey][2][]uint32
	backends map[uint32]datapath.Backend
}

func readDP(t *testing.T, dp *datapath.Balancer, also []datapath.VIPKey) dpState {
	t.Helper()
	s := dpState{indexed: map[datapath.VIPKey]datapath.IndexedVIP{}, tables: map[datapath.VIPKey][2][]uint32{}}
	var err error
	if s.vips, err = dp.VIPs(); err != nil {
		t.Fatal(err)
	}
	if s.backends, err = dp.Backends(); err != nil {
		t.Fatal(err)
	}
	keys := slices.Collect(func(yield func(datapath.VIPKey) bool) {
		for k := range s.vips {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range append(keys, also...) {
		iv, ok, err := dp.LookupVIP(k)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			s.indexed[k] = iv
		}
	}
	for k := range s.vips {
		var gens [2][]uint32
		for g := range uint32(2) {
			if gens[g], err = dp.Table(k, g); err != nil {
				t.Fatal(err)
			}
		}
		s.tables[k] = gens
	}
	return s
}

// failingPublishes fails the datapath's PublishTable call that brings
// armed to 0, as a kernel short of memory for a moment would.
type failingPublishes struct {
	*datapath.Balancer
	armed atomic.Int32
}

func (f *failingPublishes) PublishTable(k datapath.VIPKey, table []uint32) (uint32, error) {
	if f.armed.Load() > 0 && f.armed.Add(-1) == 0 {
		return 0, errors.New("injected failure")
	}
	return f.Balancer.PublishTable(k, table)
}

// check compares the datapath's state now with what m says, and with the
// state before the step (prev, of model pm). After a rolled-back reload
// (rolledBack) tables may have moved on and back, but a failed reload
// changes no entry of a surviving flow: an entry serves while its VIP
// number has the epoch it was recorded under and its backend id the
// address, so every VIP keeps its number, options and epoch (those the
// failed file removed, which at the VIP limit its apply deleted for their
// numbers (removed), and those whose options it changed, which moved their
// epochs on), and every backend slot its address (those the failed file
// gave to new addresses are given back).
func check(t *testing.T, m, pm *model, now, prev dpState, rolledBack bool, removed map[datapath.VIPKey]bool) {
	t.Helper()
	addrOf := map[uint32]string{}
	idOf := map[string]uint32{}
	for id, be := range now.backends {
		a := be.Addr.String()
		if other, dup := idOf[a]; dup {
			t.Errorf("backend address %s has ids %d and %d", a, other, id)
		}
		idOf[a], addrOf[id] = id, a
	}
	for id, be := range prev.backends {
		if nid, ok := idOf[be.Addr.String()]; ok && nid != id {
			t.Errorf("backend %s moved from id %d to %d: its flows move", be.Addr, id, nid)
		}
		if a, ok := addrOf[id]; rolledBack && a != be.Addr.String() {
			t.Errorf("backend slot %d held %s and holds %q (in use: %v) after a rolled-back reload: its flows' entries no longer serve", id, be.Addr, a, ok)
		}
	}
	nums := map[uint32]datapath.VIPKey{}
	for k, meta := range now.vips {
		if !m.hasKey(k) {
			t.Errorf("VIP %s is in the datapath but not in the configuration", k)
		}
		if other, dup := nums[meta.Num]; dup {
			t.Errorf("VIPs %s and %s share number %d", k, other, meta.Num)
		}
		nums[meta.Num] = k
	}
	for k := range prev.vips {
		if _, found := now.indexed[k]; !m.hasKey(k) && found {
			t.Errorf("VIP %s was removed but the VIP index still finds it", k)
		}
	}
	for i := range m.vips {
		v := &m.vips[i]
		k := v.key()
		meta, ok := now.vips[k]
		if !ok {
			t.Errorf("VIP %s (%s) is not in the datapath", v.name, k)
			continue
		}
		if meta.Flags != v.flags() {
			t.Errorf("VIP %s: flags %#x, want %#x", v.name, meta.Flags, v.flags())
		}
		iv, found := now.indexed[k]
		switch {
		case !found:
			t.Errorf("VIP %s (%s): the VIP index does not find it", v.name, k)
		case iv.VIPMeta != meta:
			t.Errorf("VIP %s: the VIP index holds %+v, vips %+v", v.name, iv.VIPMeta, meta)
		case iv.Epoch%2 != 1:
			t.Errorf("VIP %s: the VIP index carries epoch %d, not a live (odd) one", v.name, iv.Epoch)
		}
		if meta.TableSize[meta.Gen] != uint32(v.size) {
			t.Errorf("VIP %s: active table (generation %d) has %d slots, want %d", v.name, meta.Gen, meta.TableSize[meta.Gen], v.size)
		}
		active := now.tables[k][meta.Gen]
		got := make([]string, len(active))
		for s, id := range active {
			if id == datapath.MaglevEmpty {
				continue
			}
			a, ok := addrOf[id]
			if !ok {
				t.Errorf("VIP %s: slot %d holds backend id %d, which has no address", v.name, s, id)
			}
			got[s] = a
		}
		want := m.table(t, v)
		if !slices.Equal(got, want) {
			t.Errorf("VIP %s: active table differs from the configuration's in %d of %d slots (%d vs %d long)",
				v.name, diffCount(got, want), len(want), len(got), len(want))
		}
		// Against the step before: a VIP that stays keeps its number, its
		// epoch unless its flags changed, and its table unless its inputs
		// changed; a new table keeps the one before as the inactive
		// generation.
		pmeta, existed := prev.vips[k]
		if !existed {
			continue
		}
		if pmeta.Num != meta.Num {
			t.Errorf("VIP %s: number %d became %d", v.name, pmeta.Num, meta.Num)
			continue
		}
		if piv, ok := prev.indexed[k]; ok && found && removed[k] && piv.Epoch != iv.Epoch {
			t.Errorf("VIP %s: epoch %d became %d over a rolled-back reload that removed it: its flows' entries no longer serve", v.name, piv.Epoch, iv.Epoch)
		}
		if piv, ok := prev.indexed[k]; ok && found && rolledBack && !removed[k] && (piv.Epoch != iv.Epoch || piv.Flags != iv.Flags) {
			t.Errorf("VIP %s: epoch %d, options %#x became %d, %#x over a rolled-back reload: its flows' entries no longer serve",
				v.name, piv.Epoch, piv.Flags, iv.Epoch, iv.Flags)
		}
		if rolledBack {
			continue
		}
		if piv, ok := prev.indexed[k]; ok && found {
			if same := pmeta.Flags == meta.Flags; same != (piv.Epoch == iv.Epoch) {
				t.Errorf("VIP %s: flags %#x to %#x, epoch %d to %d", v.name, pmeta.Flags, meta.Flags, piv.Epoch, iv.Epoch)
			}
		}
		pv := pmVIP(pm, k)
		prevActive := prev.tables[k][pmeta.Gen]
		if pv != nil && slices.Equal(pm.table(t, pv), want) {
			if meta.Gen != pmeta.Gen || !slices.Equal(active, prevActive) {
				t.Errorf("VIP %s: table republished (generation %d to %d) though its inputs gave the same table", v.name, pmeta.Gen, meta.Gen)
			}
			continue
		}
		if meta.Gen == pmeta.Gen {
			t.Errorf("VIP %s: new table written over the active generation %d", v.name, meta.Gen)
			continue
		}
		if inactive := now.tables[k][pmeta.Gen]; !slices.Equal(inactive, prevActive) {
			t.Errorf("VIP %s: the inactive generation %d does not hold the previous table (%d of %d slots differ)",
				v.name, pmeta.Gen, diffCount(inactive, prevActive), len(prevActive))
		}
	}
}

func pmVIP(m *model, k datapath.VIPKey) *mVIP {
	for i := range m.vips {
		if m.vips[i].key() == k {
			return &m.vips[i]
		}
	}
	return nil
}

func diffCount[T comparable](a, b []T) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

func runModel(t *testing.T, seed uint64, steps int, fill bool) {
	w := &walker{rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), fill: fill}
	m := model{overrides: map[string]bool{}}
	for range 2 {
		v, _ := w.newVIP(&m)
		m.vips = append(m.vips, v)
	}
	if fill {
		w.refill(&m)
	}
	fp := &failingPublishes{}
	r := newWrappedRig(t, m.yaml(), datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		fp.Balancer = dp
		return fp
	})
	keysOf := func(m model) []datapath.VIPKey {
		var out []datapath.VIPKey
		for _, v := range m.vips {
			out = append(out, v.key())
		}
		return out
	}
	state := readDP(t, r.dp, nil)
	check(t, &m, &m, state, dpState{}, false, nil)
	for step := range steps {
		if t.Failed() {
			return
		}
		next := m.clone()
		var what string
		rolledBack, removed := false, map[datapath.VIPKey]bool{}
		switch roll := w.pick(10); {
		case roll < 2 && len(m.vips) > 0: // drain or undrain
			v := &m.vips[w.pick(len(m.vips))]
			drain := w.pick(3) != 0
			target, scoped := "nope", true
			if len(v.backends) > 0 {
				target = v.backends[w.pick(len(v.backends))].name
				scoped = w.pick(2) == 0
			}
			if scoped {
				target = v.name + "/" + target
			}
			what = fmt.Sprintf("drain(%q, %v)", target, drain)
			vipName, beName, _ := strings.Cut(target, "/")
			if !scoped {
				vipName, beName = "", target
			}
			matched := 0
			for i := range next.vips {
				nv := &next.vips[i]
				if vipName != "" && nv.name != vipName {
					continue
				}
				if be := nv.backendByName(beName); be != nil {
					next.overrides[nv.name+"/"+be.addr] = drain
					matched++
				}
			}
			_, err := r.b.Drain(r.ctx, target, drain)
			if matched == 0 {
				if !errors.Is(err, api.ErrNotFound) {
					t.Fatalf("step %d: %s: %v, want ErrNotFound", step, what, err)
				}
			} else if err != nil {
				t.Fatalf("step %d: %s: %v", step, what, err)
			}
		case roll < 3: // an invalid file: refused whole
			bad := m.clone()
			what = "invalid file: " + w.invalid(&bad)
			r.write(bad.yaml())
			if _, err := r.b.Reload(r.ctx); !errors.Is(err, api.ErrRejected) {
				t.Fatalf("step %d: %s: reload %v, want it rejected\n%s", step, what, err, bad.yaml())
			}
		default:
			var whats []string
			for range 1 + w.pick(3) {
				whats = append(whats, w.mutate(&next))
			}
			if w.fill {
				whats = append(whats, w.refill(&next))
			}
			what = strings.Join(whats, "; ")
			if roll == 9 && w.pick(2) == 0 {
				// The daemon restarted, over the datapath it left, with
				// the file edited meanwhile: it adopts VIP numbers,
				// backend ids and tables, and keeps the drains the file
				// has not outvoted.
				what = "restart with " + what
				r.restart(next.yaml())
				next = m.reloaded(next)
				break
			}
			if w.pick(6) == 0 {
				// Its apply fails at the first or second table it
				// publishes, if it publishes that many: the running
				// configuration must stay in force.
				n := 1 + w.pick(2)
				fp.armed.Store(int32(n))
				what += fmt.Sprintf(" (publish %d fails)", n)
			}
			r.write(next.yaml())
			_, err := r.b.Reload(r.ctx)
			failed := fp.armed.Swap(0) == 0 && strings.Contains(what, "fails)")
			switch {
			case failed && err == nil:
				t.Fatalf("step %d: %s: reload succeeded though a publish failed", step, what)
			case failed:
				if !strings.Contains(err.Error(), "the running configuration stays in force") {
					t.Fatalf("step %d: %s: reload %v, want it rolled back", step, what, err)
				}
				what += ": rolled back"
				for _, v := range m.vips {
					removed[v.key()] = !next.hasKey(v.key())
				}
				next, rolledBack = m.clone(), true
			case err != nil:
				t.Fatalf("step %d: %s: reload: %v\n%s", step, what, err, next.yaml())
			default:
				next = m.reloaded(next)
			}
		}
		t.Logf("step %d: %s", step, what)
		now := readDP(t, r.dp, keysOf(m))
		if strings.HasPrefix(what, "invalid") {
			if !reflect.DeepEqual(now, state) {
				t.Errorf("step %d: %s: the datapath changed", step, what)
			}
		}
		check(t, &next, &m, now, state, rolledBack, removed)
		if t.Failed() {
			t.Logf("step %d: %s; the configuration now:\n%s\noverrides %v", step, what, next.yaml(), next.overrides)
		}
		m, state = next, now
	}
}

// TestReloadModelAtTheVIPLimit is the walk with the configuration at the
// datapath's limit of VIPs: VIPs removed by a reload are deleted before
// the new ones are added, which take their numbers in the same batch.
// Seed 3 replaced VIPs at the limit in a batch whose vip_addrs writes
// found the map full (fixed in datapath.syncVIPAddrs).
func TestReloadModelAtTheVIPLimit(t *testing.T) {
	for _, seed := range modelSeedsFor(t, 3) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			runModel(t, seed, 12, true)
			if t.Failed() {
				t.Logf("replay with SWITCHYARD_MODEL_SEED=%d go test -run 'TestReloadModelAtTheVIPLimit' ./pkg/balancer", seed)
			}
		})
	}
}
