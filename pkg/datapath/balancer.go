package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Options configure how the balancer program is loaded.
type Options struct {
	// PinDir is the bpffs directory of this balancer's maps and link.
	// "" loads unpinned objects that vanish on Close (tests, benchmarks).
	PinDir string
	// ConnTableSize is the connection-table capacity (0: DefaultConnTableSize).
	// Pinned tables keep their size: changing it needs `switchyard remove`.
	ConnTableSize uint32
	// Logger receives warnings and notices (nil: discarded).
	Logger *slog.Logger

	// ProgramVariant, when non-zero, prepends a no-op instruction carrying
	// the value to the program: a functionally identical program with a
	// different tag. It exists to test hitless upgrades end to end.
	ProgramVariant uint32

	// benchUndo loads the benchmark build, which strips its own
	// encapsulation again so BPF_PROG_TEST_RUN repeats a real packet.
	benchUndo bool
}

// Balancer is the loaded balancer program and its maps.
type Balancer struct {
	objs   balancerObjects
	data   balancerDataMaps
	pinDir string
	clock  *kernelClock
	// vipIndexSpec makes each version of the VIP index (see syncVIPIndex).
	vipIndexSpec *ebpf.MapSpec
	// stdTableSpec makes the inner maps of maglev_std.
	stdTableSpec *ebpf.MapSpec
	// legacyStd is the previous release's maglev_std, pinned under its
	// own name, while its tables are copied (see syncStdTables).
	legacyStd *ebpf.Map
	// Inside Batch, VIP index updates wait for its end. indexed holds
	// what the published index says of each VIP number; indexStale is set
	// when vips changed since.
	batch      int
	indexed    map[uint32]balancerVipMeta
	indexStale bool
	log        *slog.Logger
	link       link.Link
	ifindex    int // of the interface the link was attached to
	// upgrade: the pins that swap to this program's maps once it runs.
	upgrade upgradePins

	mu     sync.Mutex
	tables map[tableKey]*ebpf.Map // inner maps, opened lazily
	// pending: inner maps made inside a batch, not yet in their outer
	// map (see installLocked); also in tables. removed: tables deleted
	// inside a batch, whose slots get the empty stand-in at its end (see
	// deleteTableLocked). standIn: that map, per outer map (std or not).
	pending map[tableKey]*ebpf.Map
	removed map[tableKey]bool
	standIn map[bool]*ebpf.Map
	// deletedNums: VIP numbers deleted in this batch, still in the
	// published index until its end.
	deletedNums map[uint32]bool
	// repurge: VIP numbers whose epoch wrapped (see nextEpoch) while the
	// published index carried the previous one.
	repurge map[uint32]bool
	// staleAddrs: addresses whose VIPs changed in this batch; their
	// vip_addrs counts and vip_filter are brought in step at its end.
	staleAddrs map[netip.Addr]bool

	// grace and graceInner: a map-in-map and its content, whose update
	// waits for packets in flight (see waitForPackets). graceWaits counts
	// those waits.
	grace, graceInner *ebpf.Map
	graceWaits        uint64

	// backendCopies and epochCopies: what backend_table and
	// vip_epoch_table are to hold where their records moved on, written
	// at the end of a batch, all together (see flushBackendCopies), or at
	// once outside one. A write that fails keeps them for the next.
	// backendCopyFailed: the last backend write failed, maybe between its
	// phases.
	backendCopies     map[uint32]balancerBackend
	epochCopies       map[uint32]uint32
	backendCopyFailed bool
	// unpurged: ids whose new address a failed flush wrote before it
	// emptied their previous address's connection entries (see
	// writeBackendCopies), by that address.
	unpurged map[uint32]netip.Addr
	// holdMoves: the last batch failed, and its caller may put back what
	// it changed (a reload's rollback): a backend id's new address waits
	// in backendCopies, its previous one in force with its connection
	// entries, until a batch succeeds or a write outside one (see
	// writeBackendCopies).
	holdMoves bool

	statsMu sync.Mutex
	// evicted: conn_evicted as last reported (see Stats), kept in the
	// pinned stats map too (see loadEvicted).
	evicted uint64
	// statsBetweenReads, if set (by tests), runs in Stats between its
	// reads of the per-VIP and of the global counters, where the
	// datapath may count packets.
	statsBetweenReads func()
}

// tableKey names a Maglev table's inner map: its slot (vip_num*2+gen) in
// maglev_std (std) or maglev_tables.
type tableKey struct {
	slot uint32
	std  bool
}

// maglevStdSlots mirrors MAGLEV_STD_SLOTS (bpf/consts.h): tables of up to
// this many slots live in maglev_std, in inner maps of exactly this size,
// whose lookups the verifier inlines; larger ones in maglev_tables.
const maglevStdSlots = 65537

// Pin names of maglev_std: this release's, whose inner maps are mappable,
// and the previous release's, which takes only inner maps that are not
// (the kernel holds an outer map to the inner template it was made with).
const (
	maglevStdPin       = "maglev_std_mm"
	legacyMaglevStdPin = "maglev_std"
)

// arraySlot is the stride of an array map's values in its memory mapping:
// the kernel rounds each value up to 8 bytes.
const arraySlot = 8

func isStdTable(size uint32) bool { return size <= maglevStdSlots }

// outer is the outer map that holds std or larger tables.
func (b *Balancer) outer(std bool) *ebpf.Map {
	if std {
		return b.objs.MaglevStd
	}
	return b.objs.MaglevTables
}

// balancerDataMaps are the balancer's global variables that the control
// plane writes, each in its own data section (bpf/maps.h). They are named
// and pinned like the single-entry array maps they replaced, whose layout
// they keep: pins of an earlier version carry over.
type balancerDataMaps struct {
	Config    *ebpf.Map `ebpf:".data.config"`
	VipFilter *ebpf.Map `ebpf:".data.vip_filter"`
	// The datapath's copies of backends and vip_epochs (see syncCopies).
	BackendTable  *ebpf.Map `ebpf:".data.backend_table"`
	VipEpochTable *ebpf.Map `ebpf:".data.vip_epoch_table"`
}

func (d *balancerDataMaps) close() {
	for _, m := range []*ebpf.Map{d.Config, d.VipFilter, d.BackendTable, d.VipEpochTable} {
		if m != nil {
			m.Close()
		}
	}
}

// dataMapNames maps the data sections of balancerDataMaps to their map and
// pin names, which are also the names of their variables.
var dataMapNames = map[string]string{
	".data.config": "config", ".data.vip_filter": "vip_filter",
	".data.backend_table": "backend_table", ".data.vip_epoch_table": "vip_epoch_table",
}

// LoadBalancer loads the balancer program, creating or reusing the maps
// pinned under opts.PinDir. It does not attach the program.
func LoadBalancer(opts Options) (*Balancer, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	load := loadBalancer
	if opts.benchUndo {
		load = loadBalancerbench
	}
	spec, err := load()
	if err != nil {
		return nil, fmt.Errorf("read balancer object: %w", err)
	}
	if opts.ProgramVariant != 0 {
		addVariant(spec.Programs["xdp_balancer"], opts.ProgramVariant)
	}
	size := opts.ConnTableSize
	if size == 0 {
		size = DefaultConnTableSize
	}
	sets := connSets(size)
	spec.Maps["conns"].MaxEntries = sets
	if err := spec.Variables["conn_sets"].Set(sets); err != nil {
		return nil, fmt.Errorf("set connection-table size: %w", err)
	}
	clock, err := getClock()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["jiffy_ns"].Set(clock.jiffyNs); err != nil {
		return nil, fmt.Errorf("set the jiffy length: %w", err)
	}
	// The control plane owns these: a load must not overwrite what an
	// earlier run pinned, and cilium/ebpf writes a data section's initial
	// contents into its map even when it reuses a pin. So they load with
	// no contents (a new map starts zeroed) and without their variables.
	for sec, name := range dataMapNames {
		spec.Maps[sec].Name = name
		spec.Maps[sec].Contents = nil
		delete(spec.Variables, name)
	}
	spec.Maps["maglev_std"].Name = maglevStdPin
	b := &Balancer{pinDir: opts.PinDir, log: log, tables: map[tableKey]*ebpf.Map{}, pending: map[tableKey]*ebpf.Map{},
		removed: map[tableKey]bool{}, standIn: map[bool]*ebpf.Map{}, deletedNums: map[uint32]bool{}, repurge: map[uint32]bool{}, staleAddrs: map[netip.Addr]bool{}, clock: clock,
		backendCopies: map[uint32]balancerBackend{}, epochCopies: map[uint32]uint32{},
		vipIndexSpec: spec.Maps["vip_index"].InnerMap.Copy(), stdTableSpec: spec.Maps["maglev_std"].InnerMap.Copy(),
		indexed: map[uint32]balancerVipMeta{}}
	// The benchmark build has the same programs and maps by name.
	var objs struct {
		balancerPrograms
		balancerMaps
		balancerDataMaps
	}
	if opts.PinDir != "" {
		running, err := resumeUpgrade(opts.PinDir, map[string]*ebpf.MapSpec{"conns": spec.Maps["conns"], statsPin: spec.Maps[statsPin]}, log)
		if err != nil {
			return nil, err
		}
		conns, err := adoptConns(spec.Maps["conns"], opts.PinDir, log)
		if err != nil {
			return nil, fmt.Errorf("move the pinned connection table to this release's layout: %w", err)
		}
		if conns != nil {
			b.upgrade.staged = append(b.upgrade.staged, conns)
		}
		stats, err := adoptStats(statsPin, "datapath", spec.Maps[statsPin], opts.PinDir, log)
		if err != nil {
			b.upgrade.close()
			return nil, fmt.Errorf("move the pinned datapath counters to this release's map: %w", err)
		}
		if stats != nil {
			b.upgrade.staged = append(b.upgrade.staged, stats)
		}
		if err := b.openLegacyStd(running); err != nil {
			b.upgrade.close()
			return nil, err
		}
	}
	if err := loadCollection(spec, opts.PinDir, b.upgrade.replacements(), &objs,
		"keep the earlier setting (e.g. conn_table_size), or run `switchyard remove --config FILE` to start afresh, which drops established flows"); err != nil {
		if b.legacyStd != nil {
			b.legacyStd.Close()
		}
		b.upgrade.close()
		return nil, err
	}
	b.objs = balancerObjects{balancerPrograms: objs.balancerPrograms, balancerMaps: objs.balancerMaps}
	b.data = objs.balancerDataMaps
	// Bring maps pinned by an earlier version up to this one, in order.
	for _, sync := range []func() error{
		b.syncVIPFilter,         // vip_filter may be missing: derive it from vip_addrs
		b.syncEpochs,            // VIPs may have no live epoch
		b.syncCopies,            // backend_table and vip_epoch_table may be missing, or behind their records
		b.purgeDeadBackendConns, // entries pinned to a deleted backend would follow its id's next address
		b.endOrphanEpochs,       // a DeleteVIP that failed (or crashed) half-way may have left one live
		b.syncEvictionBase,      // evictions were counted one by one
		b.loadEvicted,           // conn_evicted goes on from the last value reported
		b.syncStdTables,         // std tables were in maglev_tables, or in the previous maglev_std
		b.syncVIPIndex,          // no index, or one placing VIPs differently: build it afresh
	} {
		if err := sync(); err != nil {
			b.Close()
			// The step's own error names a map operation alone.
			return nil, fmt.Errorf("bring the maps pinned in %s up to this release at start: %w", opts.PinDir, err)
		}
	}
	if b.legacyStd != nil {
		// Its tables are copied. The program still attached reads it
		// until Attach swaps this one in, which removes its pin.
		b.upgrade.remove = append(b.upgrade.remove, filepath.Join(opts.PinDir, legacyMaglevStdPin))
		b.legacyStd.Close()
		b.legacyStd = nil
	}
	return b, nil
}

// openLegacyStd opens the previous release's maglev_std, if it is still
// pinned, for syncStdTables to copy its tables. running: the maps of the
// program on the pinned link (see resumeUpgrade). If that program reads
// this release's maglev_std, an earlier start swapped it in and stopped
// before it removed the previous release's pin: the pin goes now, and
// the tables in it, which nothing has written since the swap, are not
// copied.
func (b *Balancer) openLegacyStd(running map[ebpf.MapID]bool) error {
	path := filepath.Join(b.pinDir, legacyMaglevStdPin)
	legacy, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open the previous release's Maglev tables: %w", err)
	}
	id, err := pinnedMapID(filepath.Join(b.pinDir, maglevStdPin))
	if err != nil {
		legacy.Close()
		return fmt.Errorf("the previous release's Maglev tables: %w", err)
	}
	if id == 0 || !running[id] {
		b.legacyStd = legacy
		return nil
	}
	legacy.Close()
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the pin %s, which this release no longer uses: %w", path, err)
	}
	b.log.Info("finished an upgrade that an earlier start left half-done: the previous release's Maglev tables are no longer pinned", "pin", path)
	return nil
}

// resumeUpgrade finishes the pin changes of an upgrade whose process ended
// between the swap (link.Update) and their commit (see upgradePins): the
// program on the link pinned under pinDir then runs on successors no pin
// holds, while the earlier maps keep the pins. Each map of that program
// whose name is in specs, that is not the map pinned under that name and
// fits its spec (this release's layout), takes the pin: the maps pinned
// are then the ones that run, which the program has written since the
// swap, and the load that follows adopts them as they are, instead of
// copying the earlier maps again. It returns runningMaps.
func resumeUpgrade(pinDir string, specs map[string]*ebpf.MapSpec, log *slog.Logger) (map[ebpf.MapID]bool, error) {
	running, err := runningMaps(pinDir)
	if err != nil {
		return nil, err
	}
	for id := range running {
		if err := adoptRunning(pinDir, id, specs, log); err != nil {
			return nil, fmt.Errorf("finish the upgrade that an earlier start left half-done: %w (the program it swapped in keeps running; fix the cause and start again)", err)
		}
	}
	return running, nil
}

// runningMaps returns the IDs of the maps that the program on the link
// pinned under pinDir uses; nil if no link is pinned.
func runningMaps(pinDir string) (map[ebpf.MapID]bool, error) {
	linkPath := filepath.Join(pinDir, linkPinName)
	fail := func(err error) (map[ebpf.MapID]bool, error) {
		return nil, fmt.Errorf("read the maps of the program on %s: %w (it keeps running; fix the cause and start again)", linkPath, err)
	}
	l, err := link.LoadPinnedLink(linkPath, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return fail(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return fail(err)
	}
	prog, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return fail(err)
	}
	defer prog.Close()
	pi, err := prog.Info()
	if err != nil {
		return fail(err)
	}
	ids, _ := pi.MapIDs()
	running := map[ebpf.MapID]bool{}
	for _, id := range ids {
		running[id] = true
	}
	return running, nil
}

// adoptRunning pins map id, which the program on the pinned link uses,
// under its name if specs has that name, another map holds the pin (or
// none does), and the map fits the spec.
func adoptRunning(pinDir string, id ebpf.MapID, specs map[string]*ebpf.MapSpec, log *slog.Logger) error {
	m, err := ebpf.NewMapFromID(id)
	if err != nil {
		return fmt.Errorf("open map %d of the program on the pinned link: %w", id, err)
	}
	defer m.Close()
	mi, err := m.Info()
	if err != nil {
		return fmt.Errorf("read map %d of the program on the pinned link: %w", id, err)
	}
	spec, ok := specs[mi.Name]
	if !ok {
		return nil
	}
	path := filepath.Join(pinDir, mi.Name)
	pinned, err := pinnedMapID(path)
	if err != nil || pinned == id {
		return err
	}
	if m.Type() != spec.Type || m.KeySize() != spec.KeySize || m.ValueSize() != spec.ValueSize ||
		m.MaxEntries() != spec.MaxEntries || m.Flags() != spec.Flags {
		return nil
	}
	if err := pinInPlace(m, path); err != nil {
		return err
	}
	log.Info("finished an upgrade that an earlier start left half-done: pinned the map the running program uses", "pin", path)
	return nil
}

// pinnedMapID is the ID of the map pinned at path; 0 if none is.
func pinnedMapID(path string) (ebpf.MapID, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	id, _ := info.ID()
	return id, nil
}

// adoptConns brings a connection table pinned by an earlier release to this
// release's layout, which differs only in its flags (BPF_F_MMAPABLE, for
// aligned sets: bpf/maps.h): it copies every set into a new map, which
// takes the old one's pin once this program runs (see upgradePins). The
// program still attached records into the old map until then: flows that
// start in between are not carried over, and their next packets go by the
// Maglev table, which sends them to the same backend unless the table
// changed meanwhile. A table of another size or layout is left to
// loadCollection, which refuses it. nil: nothing to move.
func adoptConns(spec *ebpf.MapSpec, pinDir string, log *slog.Logger) (*stagedPin, error) {
	path := filepath.Join(pinDir, "conns")
	old, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer old.Close()
	info, err := old.Info()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if info.Flags == spec.Flags || old.Type() != spec.Type || old.KeySize() != spec.KeySize ||
		old.ValueSize() != spec.ValueSize || old.MaxEntries() != spec.MaxEntries {
		return nil, nil
	}
	// A full table of the default size is 64 MiB: the start says what
	// it waits for.
	start := time.Now()
	log.Info("copying the connection table to this release's layout", "sets", old.MaxEntries())
	copied := 0
	staged, err := stagePin("conns", path, spec, func(m *ebpf.Map) error {
		return eachConnBatch(old, func(keys []uint32, sets []balancerConnSet) error {
			if _, err := m.BatchUpdate(keys, sets, nil); err != nil {
				return fmt.Errorf("copy: %w", err)
			}
			copied += len(keys)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	log.Info("connection table copied to this release's layout", "sets", copied, "seconds", time.Since(start).Seconds())
	return staged, nil
}

// upgradePins are the pin changes of an upgrade: successors of pinned maps
// (of an earlier layout) and pins of maps this release no longer uses.
// They are made only once the program loaded with the successors runs
// (commit, from Attach): until then the pins stay those of the program
// still attached, which reads and writes those maps, so that an upgrade
// whose swap fails leaves it running on its pinned state, for a restart
// or `switchyard remove` to find. A crash between the swap and commit
// leaves the new program running on successors no pin holds: the next
// start finds them through the pinned link and pins them (resumeUpgrade,
// openLegacyStd) before it copies anything.
type upgradePins struct {
	staged []*stagedPin
	remove []string
}

// stagedPin is the successor of the map pinned at path, the map spec
// name of the collection that uses it.
type stagedPin struct {
	name, path string
	m          *ebpf.Map
}

// stagePin creates a map of spec and fills it with fill (the copy of the
// map pinned at path), for upgradePins to pin in that one's place.
func stagePin(name, path string, spec *ebpf.MapSpec, fill func(*ebpf.Map) error) (*stagedPin, error) {
	fresh := spec.Copy()
	fresh.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(fresh)
	if err != nil {
		return nil, fmt.Errorf("create the successor of %s: %w", path, err)
	}
	if err := fill(m); err != nil {
		m.Close()
		return nil, fmt.Errorf("copy %s: %w", path, err)
	}
	return &stagedPin{name: name, path: path, m: m}, nil
}

// replacements are the successors, for loadCollection to use in place of
// the pinned maps.
func (u *upgradePins) replacements() map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	for _, s := range u.staged {
		out[s.name] = s.m
	}
	return out
}

// commit pins every successor in its predecessor's place and removes the
// pins to remove (see pinInPlace). What fails stays to commit, for a
// later Attach.
func (u *upgradePins) commit() error {
	for len(u.staged) > 0 {
		s := u.staged[0]
		if err := pinInPlace(s.m, s.path); err != nil {
			return err
		}
		s.m.Close()
		u.staged = u.staged[1:]
	}
	for len(u.remove) > 0 {
		if err := os.Remove(u.remove[0]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove the pin %s, which this release no longer uses: %w", u.remove[0], err)
		}
		u.remove = u.remove[1:]
	}
	return nil
}

// pinInPlace pins m at path in place of the map pinned there, if any. A
// rename replaces a pin in one step: a crash leaves the old map or the
// new one, never none.
func pinInPlace(m *ebpf.Map, path string) error {
	tmp := path + "_new" // bpffs allows no dot in a name
	os.Remove(tmp)
	if err := m.Pin(tmp); err != nil {
		return fmt.Errorf("pin the successor of %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// close drops what was not committed: the pins stay the earlier maps'.
func (u *upgradePins) close() {
	for _, s := range u.staged {
		s.m.Close()
	}
	u.staged, u.remove = nil, nil
}

// commitUpgrade commits u once prog runs on the link pinned under pinDir:
// after a successful attach (err nil), or a failed one that left prog
// attached (see attachProgram). The pins stay the earlier program's while
// it runs.
func commitUpgrade(u *upgradePins, prog *ebpf.Program, pinDir string, err error) error {
	if len(u.staged) == 0 && len(u.remove) == 0 {
		return err
	}
	if err != nil && !linkRuns(pinDir, prog) {
		return err
	}
	if cerr := u.commit(); cerr != nil {
		cerr = fmt.Errorf("the new program runs, but its maps are not all pinned: %w; run it again to finish the upgrade", cerr)
		if err != nil {
			return fmt.Errorf("%w; %w", err, cerr)
		}
		return cerr
	}
	return err
}

// addVariant prepends `r0 = v` (overwritten before any use) to prog,
// moving the function's symbol and BTF metadata to the new first instruction.
func addVariant(prog *ebpf.ProgramSpec, v uint32) {
	first := prog.Instructions[0]
	nop := asm.Mov.Imm(asm.R0, int32(v)).WithMetadata(first.Metadata)
	first = first.WithMetadata(asm.Metadata{})
	prog.Instructions = append(asm.Instructions{nop, first}, prog.Instructions[1:]...)
}

// Attach attaches the program to iface, or swaps it into the link an earlier
// run pinned (keeping established flows). Needs a PinDir to survive restarts.
func (b *Balancer) Attach(iface string, mode AttachMode) (AttachResult, error) {
	l, res, err := attachProgram(b.objs.XdpBalancer, iface, mode, b.pinDir, balancerHints, b.log)
	err = commitUpgrade(&b.upgrade, b.objs.XdpBalancer, b.pinDir, err)
	if l == nil {
		return res, err
	}
	if b.link != nil && b.pinDir != "" {
		// A handle of the pinned link that l updated or replaced:
		// the pin keeps what must stay attached. (Unpinned, the
		// handle is the attachment.)
		b.link.Close()
	}
	b.link = l
	b.ifindex = linkIfindex(l)
	return res, err
}

// Detach takes the program off the interface Attach attached it to and
// removes its link pin, leaving its maps pinned: what a start that
// attached afresh over an earlier run's pins, where the interface ran none
// of its programs (AttachResult.Taken false), undoes when it fails, so
// that no program balances with no daemon to check the backends. Before
// Attach there is nothing to detach.
func (b *Balancer) Detach() error {
	if b.link == nil {
		return nil
	}
	if err := b.link.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) {
		return fmt.Errorf("detach the balancer program: %w", err)
	}
	if b.pinDir != "" {
		if err := b.link.Unpin(); err != nil {
			return fmt.Errorf("unpin %s: %w", filepath.Join(b.pinDir, linkPinName), err)
		}
	}
	return nil
}

// ErrBalancerLinkNotPinned: the link the balancer program is attached
// through has no pin in the pin directory, and it cannot be pinned again
// there.
var ErrBalancerLinkNotPinned = errors.New("the balancer program's link is not pinned")

// RestoreLinkPin checks that the link the program is attached through is
// pinned in the pin directory, and pins it again if someone removed the pin
// (rm, or a tool that cleans bpffs). The handle Balancer holds keeps the
// program attached meanwhile, but only while the process lives: once it
// ends (a kill, an in-place upgrade) the program goes, and with it the
// balancing, and a new run finds no link to take over. It reports whether
// it pinned the link again; an error wraps ErrBalancerLinkNotPinned when
// the pin stays missing. Without a pin directory, or before Attach, there
// is nothing to check.
func (b *Balancer) RestoreLinkPin() (bool, error) {
	return restoreLinkPin(b.link, b.pinDir, ErrBalancerLinkNotPinned, "balancer program", "balancer", b.log)
}

// ErrBalancerMapsNotPinned: a map of the balancer program has no pin in
// the pin directory, and it cannot be pinned again there.
var ErrBalancerMapsNotPinned = errors.New("the balancer program's maps are not all pinned")

// RestoreMapPins checks that the balancer program's maps are pinned in the
// pin directory, and pins again those whose pin someone removed, as
// RestoreLinkPin does the link (see restoreMapPins): without its pin, the
// next run of the daemon (a restart, a kill, an in-place upgrade) creates
// the map afresh, and with it loses what it held: the connection table
// (established flows), the counters, the VIPs, backends and Maglev tables
// the daemon then has to write again. It returns the names it pinned
// again; an error wraps ErrBalancerMapsNotPinned when a pin stays missing.
func (b *Balancer) RestoreMapPins() ([]string, error) {
	o := &b.objs.balancerMaps
	held := map[string]*ebpf.Map{
		"backend_stats": o.BackendStats, "backend_stats_base": o.BackendStatsBase, "backends": o.Backends,
		"conns": o.Conns, maglevStdPin: o.MaglevStd, "maglev_tables": o.MaglevTables, statsPin: o.Stats,
		"vip_addrs": o.VipAddrs, "vip_epochs": o.VipEpochs, "vip_index": o.VipIndex, "vip_stats": o.VipStats,
		"vip_stats_base": o.VipStatsBase, "vips": o.Vips,
		dataMapNames[".data.config"]: b.data.Config, dataMapNames[".data.vip_filter"]: b.data.VipFilter,
		dataMapNames[".data.backend_table"]: b.data.BackendTable, dataMapNames[".data.vip_epoch_table"]: b.data.VipEpochTable,
	}
	b.mu.Lock()
	for std, m := range b.standIn {
		name := standInName
		if std {
			name += "_std"
		}
		held[name] = m
	}
	b.mu.Unlock()
	return restoreMapPins(b.pinDir, held, ErrBalancerMapsNotPinned, "balancer program", "balancer")
}

// ErrDetached: the balancer program no longer runs on its interface,
// though its link is still held.
var ErrDetached = errors.New("the balancer program is not attached to its interface: VIP traffic is not balanced")

// CheckAttached checks that the program still runs on the interface it was
// attached to. Its link can be detached from under the daemon (`bpftool
// link detach`, which another tool may follow with an XDP program of its
// own), or made to run another program (BPF_LINK_UPDATE through the pin):
// the error then wraps ErrDetached and says what runs on the interface now.
// Before Attach there is nothing to check.
func (b *Balancer) CheckAttached() error {
	return checkAttached(b.link, b.objs.XdpBalancer, b.ifindex, nil, ErrDetached, "balancer program", "balancer")
}

// Close releases file descriptors. Pinned maps and the pinned link stay, and
// with them the datapath: packets keep flowing while no daemon runs.
func (b *Balancer) Close() error {
	b.mu.Lock()
	for k, m := range b.tables {
		m.Close()
		delete(b.tables, k)
	}
	b.mu.Unlock()
	if b.link != nil {
		b.link.Close()
	}
	b.data.close()
	if b.legacyStd != nil {
		b.legacyStd.Close()
	}
	for _, m := range b.standIn {
		m.Close()
	}
	b.upgrade.close()
	for _, m := range []*ebpf.Map{b.grace, b.graceInner} {
		if m != nil {
			m.Close()
		}
	}
	return b.objs.Close()
}

// RemoveBalancer detaches the balancer pinned under pinDir and deletes its
// pins, dropping every flow. The explicit way to uninstall.
func RemoveBalancer(pinDir string) error { return removePinned(pinDir, false) }

// RemoveBalancerPins is RemoveBalancer that keeps pinDir itself, empty:
// for a failed first start in a directory it did not create (one an
// admin prepared, with its owner and mode), which must leave it as found.
func RemoveBalancerPins(pinDir string) error { return removePinned(pinDir, true) }

// Settings are the balancer-wide datapath parameters.
type Settings struct {
	NextHopMAC     net.HardwareAddr // router MAC; nil: not resolved, VIP traffic is dropped (counted)
	SourceMAC      net.HardwareAddr // the interface's MAC: 6 bytes, as only Ethernet is forwarded
	MTU            uint16           // largest encapsulated L3 packet
	GUEPort        uint16           // 0: IPIP / IPv6 encapsulation; else GUE on this UDP port
	ICMPTooBig     bool             // answer over-MTU packets with "too big"
	SourceV4       netip.Addr       // outer IPv4 source
	SourceV6       netip.Addr       // outer IPv6 source
	SourcePrefixV4 netip.Prefix     // if valid: outer IPv4 source hashed from the client inside it
	SourcePrefixV6 netip.Prefix
	UDPIdleTimeout time.Duration
}

// MinMTU is the smallest MTU SetSettings accepts: IPv4's minimum
// datagram size. Below it the encapsulation alone would leave clients too
// little room, and the "too big" messages would announce an MTU that no
// stack accepts.
const MinMTU = 576

// SetSettings writes the balancer-wide parameters (one atomic map update).
// Settings that the program cannot work with are refused, and the ones in
// force stay.
func (b *Balancer) SetSettings(s Settings) error {
	var c balancerLbConfig
	if s.MTU < MinMTU {
		return fmt.Errorf("datapath settings: MTU %d is below %d; raise the interface MTU or set datapath.mtu to at least %d", s.MTU, MinMTU, MinMTU)
	}
	if s.UDPIdleTimeout < 0 {
		return fmt.Errorf("datapath settings: UDP idle timeout %s is negative; use 0 (expire at once) or a positive duration", s.UDPIdleTimeout)
	}
	// Empty: not resolved. Any other length is no Ethernet address, and
	// would silently stop (or misaddress) forwarding.
	if len(s.NextHopMAC) != 0 && len(s.NextHopMAC) != 6 {
		return fmt.Errorf("datapath settings: next-hop MAC %s is not a 6-byte Ethernet address", s.NextHopMAC)
	}
	// An interface without a MAC (tun, wireguard) frames packets without
	// an Ethernet header, as one with a longer address (IPoIB) does: the
	// program would rewrite bytes of the IP header as MACs.
	if len(s.SourceMAC) != 6 {
		mac := s.SourceMAC.String()
		if mac == "" {
			mac = "(none)"
		}
		return fmt.Errorf("datapath settings: source MAC %s is not a 6-byte Ethernet address; XDP forwarding needs an Ethernet interface", mac)
	}
	if len(s.NextHopMAC) == 6 {
		copy(c.NhMac[:], s.NextHopMAC)
		c.Flags |= uint32(balancerCfgFlagsCFG_F_NEXTHOP)
	}
	copy(c.SrcMac[:], s.SourceMAC)
	c.Mtu = s.MTU
	if s.GUEPort != 0 {
		c.GuePort = htons(s.GUEPort)
		c.Flags |= uint32(balancerCfgFlagsCFG_F_GUE)
	}
	if s.ICMPTooBig {
		c.Flags |= uint32(balancerCfgFlagsCFG_F_ICMP_TOO_BIG)
	}
	// IPv4 in its mapped form (::ffff:a.b.c.d) is IPv4, as everywhere
	// in the datapath; a mapped address is never an IPv6 source.
	if a := s.SourceV4.Unmap(); a.Is4() {
		c.SrcV4 = toAddr(a).A[3]
	}
	if a := s.SourceV6; a.Is6() && !a.Is4In6() {
		c.SrcV6 = toAddr(a)
	}
	if p := unmapPrefix(s.SourcePrefixV4); p.IsValid() && p.Addr().Is4() {
		net4, mask := prefixParts(p)
		c.SrcPrefixV4, c.SrcHostmaskV4 = net4.A[3], mask.A[3]
		c.Flags |= uint32(balancerCfgFlagsCFG_F_SRC_PREFIX_V4)
	}
	if p := s.SourcePrefixV6; p.IsValid() && p.Addr().Is6() && !p.Addr().Is4In6() {
		c.SrcPrefixV6, c.SrcHostmaskV6 = prefixParts(p)
		c.Flags |= uint32(balancerCfgFlagsCFG_F_SRC_PREFIX_V6)
	}
	c.UdpTimeoutNs = uint64(s.UDPIdleTimeout.Nanoseconds())
	return b.data.Config.Put(uint32(0), &c)
}

// NextHopMAC returns the next-hop MAC the settings in force carry (nil:
// none, VIP traffic is dropped as no_nexthop): on pins an earlier run
// left, the one it wrote.
func (b *Balancer) NextHopMAC() (net.HardwareAddr, error) {
	var c balancerLbConfig
	if err := b.data.Config.Lookup(uint32(0), &c); err != nil {
		return nil, fmt.Errorf("read datapath settings: %w", err)
	}
	if c.Flags&uint32(balancerCfgFlagsCFG_F_NEXTHOP) == 0 {
		return nil, nil
	}
	return net.HardwareAddr(bytes.Clone(c.NhMac[:])), nil
}

// unmapPrefix returns an IPv4 prefix written in mapped form
// (::ffff:a.b.c.d/96+n) as the IPv4 prefix it is, and p otherwise.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.IsValid() && p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// prefixParts returns a prefix's network part and its host mask in datapath
// form (an IPv4 prefix occupies the last word).
func prefixParts(p netip.Prefix) (network, hostmask balancerAddr) {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	var m [16]byte
	for i := range m {
		switch {
		case bits >= 8*(i+1):
			m[i] = 0
		case bits <= 8*i:
			m[i] = 0xff
		default:
			m[i] = 0xff >> (bits - 8*i)
		}
	}
	return toAddr(p.Addr()), toAddr(netip.AddrFrom16(m))
}

// SetVIP creates a VIP or changes its options, keeping its tables and
// generation. A new VIP has no table (its packets are dropped as "no
// backend") until PublishTable.
func (b *Balancer) SetVIP(k VIPKey, num uint32, flags VIPFlags) error {
	if num >= MaxVIPs {
		return fmt.Errorf("VIP %s: number %d over the datapath's limit of %d VIPs", k, num, MaxVIPs)
	}
	// The VIP index reads a slot whose port and protocol word is zero
	// as free: a VIP of protocol 0 would end other VIPs' probes.
	if k.Proto != ProtoTCP && k.Proto != ProtoUDP {
		return fmt.Errorf("VIP %s: protocol %d; a VIP is TCP (%d) or UDP (%d)", k, k.Proto, ProtoTCP, ProtoUDP)
	}
	if !k.Addr.IsValid() {
		return fmt.Errorf("VIP %s: no address", k)
	}
	key := toVIPKey(k)
	var meta balancerVipMeta
	err := b.objs.Vips.Lookup(&key, &meta)
	isNew := errors.Is(err, ebpf.ErrKeyNotExist)
	switch {
	case err == nil && meta.VipNum != num:
		return fmt.Errorf("VIP %s: already has number %d, not %d", k, meta.VipNum, num)
	case errors.Is(err, ebpf.ErrKeyNotExist):
		// The number names another VIP's tables, counters and epoch
		// while that VIP exists. Its epoch is live (odd) then: only
		// such a number needs looking for in vips (a DeleteVIP that
		// failed half-way may leave one live, with no VIP).
		var e uint32
		if err := b.objs.VipEpochs.Lookup(num, &e); err != nil {
			return fmt.Errorf("read VIP epoch %d: %w", num, err)
		}
		if e%2 == 1 {
			owner, err := b.vipOfNum(num)
			if err != nil {
				return err
			}
			if owner != nil {
				return fmt.Errorf("VIP %s: number %d is taken by VIP %s; delete that VIP first or use another number", k, num, owner)
			}
		}
		meta = balancerVipMeta{VipNum: num, Flags: ^uint32(0)}
		if b.deletedNums[num] {
			// The published index still sends the deleted VIP's
			// packets to this number's tables.
			if err := b.syncVIPIndex(); err != nil {
				return err
			}
		}
		if err := b.clearTables(num); err != nil {
			return err
		}
		// The number may have counted for a deleted VIP. No packet
		// counts for the new one before it is in the index.
		raw, err := b.rawVIPCounters(num)
		if err != nil {
			return err
		}
		if err := restartCounters(b.objs.VipStatsBase, num, &raw, "VIP"); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("look up VIP %s: %w", k, err)
	}
	changed := meta.Flags != uint32(flags)
	meta.Flags = uint32(flags)
	if err := b.objs.Vips.Put(&key, &meta); err != nil {
		return fmt.Errorf("write VIP %s: %w", k, err)
	}
	if changed {
		// A new VIP, or new flags: entries recorded before do not apply,
		// and the index must show the VIP as it is now.
		if err := b.nextEpoch(num, true); err != nil {
			return err
		}
		if err := b.indexChanged(); err != nil {
			if isNew {
				// Most likely no room in the index: take the VIP out
				// again, so that the index can be rebuilt without it
				// and the VIPs there stay served.
				return b.unsetVIP(k, num, err)
			}
			return fmt.Errorf("%w (new options of VIP %s not in effect until the index can be built)", err, k)
		}
	} else if im, ok := b.indexed[num]; b.batch == 0 && ok && im.Flags != meta.Flags {
		// An earlier call moved the epoch but could not publish the
		// index: the retry publishes it, or fails as that call did.
		if err := b.indexChanged(); err != nil {
			return fmt.Errorf("%w (new options of VIP %s not in effect until the index can be built)", err, k)
		}
	}
	return b.vipAddrChanged(k.Addr)
}

// unsetVIP takes out the VIP that SetVIP has just added, after the index
// rebuild failed with cause.
func (b *Balancer) unsetVIP(k VIPKey, num uint32, cause error) error {
	key := toVIPKey(k)
	if err := b.objs.Vips.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("%w; taking VIP %s out again failed too: %w", cause, k, err)
	}
	if err := b.nextEpoch(num, false); err != nil {
		return fmt.Errorf("%w; %w", cause, err)
	}
	if err := b.syncVIPIndex(); err != nil {
		return fmt.Errorf("%w; rebuilding the VIP index without it failed too: %w", cause, err)
	}
	return fmt.Errorf("%w (VIP %s not added)", cause, k)
}

// vipOfNum returns the VIP that has number num, or nil.
func (b *Balancer) vipOfNum(num uint32) (*VIPKey, error) {
	vips, err := b.VIPs()
	if err != nil {
		return nil, err
	}
	for k, m := range vips {
		if m.Num == num {
			return &k, nil
		}
	}
	return nil, nil
}

// nextEpoch moves vip_epochs[num] on to the next odd (live) or even
// (deleted) value. Connection entries carry the epoch they were recorded
// under; a pinned packet whose entry's epoch is not the current one takes
// the full path (VIP lookup, Maglev).
func (b *Balancer) nextEpoch(num uint32, live bool) error {
	var e uint32
	if err := b.objs.VipEpochs.Lookup(num, &e); err != nil {
		return fmt.Errorf("read VIP epoch %d: %w", num, err)
	}
	old := e
	e++
	if (e%2 == 1) != live {
		e++
	}
	if e>>16 != old>>16 {
		// Entries carry the epoch's low 16 bits: from here on they
		// repeat, and an entry of this number recorded 65,536 epochs
		// ago would match again. None of its entries is live once the
		// epoch moves on, so all go (once per 32,768 deletions or
		// option changes of the VIP number).
		if err := b.purgeConns(num, 0); err != nil {
			return fmt.Errorf("VIP epoch %d: %w", num, err)
		}
		// Until the index is rebuilt, new flows record the epoch it
		// carries, which the purge cannot catch: those go once it is
		// (see syncVIPIndex).
		if _, ok := b.indexed[num]; ok {
			b.repurge[num] = true
		}
	}
	if err := b.objs.VipEpochs.Put(num, e); err != nil {
		return fmt.Errorf("write VIP epoch %d: %w", num, err)
	}
	return b.putEpochCopy(num, e)
}

// syncEpochs makes the epoch of every VIP in the datapath live (odd): maps
// pinned by an earlier version have no vip_epochs.
func (b *Balancer) syncEpochs() error {
	vips, err := b.VIPs()
	if err != nil {
		return err
	}
	for _, m := range vips {
		var e uint32
		if err := b.objs.VipEpochs.Lookup(m.Num, &e); err != nil {
			return fmt.Errorf("read VIP epoch %d: %w", m.Num, err)
		}
		if e%2 == 0 {
			if err := b.nextEpoch(m.Num, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// DeleteVIP removes a VIP and its tables. Its connection entries are no
// longer used (their epoch is over) and age out.
func (b *Balancer) DeleteVIP(k VIPKey) error {
	key := toVIPKey(k)
	var meta balancerVipMeta
	if err := b.objs.Vips.Lookup(&key, &meta); err != nil {
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("look up VIP %s: %w", k, err)
		}
		// Gone already, or by a call that failed after taking it out
		// of vips: the retry finishes that one, which no longer knows
		// the VIP's number.
		if err := b.endOrphanEpochs(); err != nil {
			return fmt.Errorf("VIP %s: finish an earlier deletion: %w", k, err)
		}
		return b.vipAddrChanged(k.Addr)
	}
	if err := b.objs.Vips.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete VIP %s: %w", k, err)
	}
	// The index drops it now, or at the end of the batch, and its tables
	// go with it (clearTables); a number deleted in a batch is not given
	// to another VIP before the index has dropped it (SetVIP).
	if b.batch > 0 && batchedUpdates {
		b.deletedNums[meta.VipNum] = true
		b.indexStale = true
	} else if err := b.syncVIPIndex(); err != nil {
		// Put it back: the published index still has it, and a retry
		// must find it to finish the deletion.
		if perr := b.objs.Vips.Put(&key, &meta); perr != nil {
			return fmt.Errorf("%w; VIP %s is out of the VIP list but still in the published index (putting it back failed: %v); restart to rebuild the index", err, k, perr)
		}
		return fmt.Errorf("%w (VIP %s not deleted)", err, k)
	}
	if err := b.nextEpoch(meta.VipNum, false); err != nil {
		return err
	}
	if err := b.vipAddrChanged(k.Addr); err != nil {
		return err
	}
	return b.clearTables(meta.VipNum)
}

// VIPEpoch returns VIP number num's epoch (odd while a VIP has the
// number), the one its connection entries are recorded under.
func (b *Balancer) VIPEpoch(num uint32) (uint32, error) {
	if num >= MaxVIPs {
		return 0, fmt.Errorf("VIP number %d over the datapath's limit of %d VIPs", num, MaxVIPs)
	}
	var e uint32
	if err := b.objs.VipEpochs.Lookup(num, &e); err != nil {
		return 0, fmt.Errorf("read VIP epoch %d: %w", num, err)
	}
	return e, nil
}

// RestoreVIP puts VIP k back as it was before a configuration change that
// was rolled back: with the number, the options and the live epoch
// (VIPEpoch) it had, so that the connection entries it recorded then serve
// its flows again. The change deleted it (DeleteVIP: it is created again)
// or gave it other options (SetVIP, which moved its epoch on: the options
// go back). The number's entries of any other epoch (recorded for a VIP
// that had the number meanwhile, or for the VIP under the change's
// options) are emptied, those that packets record under the published
// index's epoch until the next one included. A VIP created again, like a
// new VIP, has no table until PublishTable, and its counters start again.
func (b *Balancer) RestoreVIP(k VIPKey, num uint32, flags VIPFlags, epoch uint32) error {
	if epoch%2 == 0 {
		return fmt.Errorf("VIP %s: epoch %d is a deleted VIP's, not a live one", k, epoch)
	}
	key := toVIPKey(k)
	var meta balancerVipMeta
	switch err := b.objs.Vips.Lookup(&key, &meta); {
	case err == nil && meta.VipNum != num:
		return fmt.Errorf("VIP %s: has number %d, not %d", k, meta.VipNum, num)
	case err == nil:
		// Its options go back with the epoch: the index that
		// publishes both is built at the batch's end (or at once
		// outside one).
		meta.Flags = uint32(flags)
		if err := b.objs.Vips.Put(&key, &meta); err != nil {
			return fmt.Errorf("write VIP %s: %w", k, err)
		}
	case !errors.Is(err, ebpf.ErrKeyNotExist):
		return fmt.Errorf("look up VIP %s: %w", k, err)
	default:
		// SetVIP starts a new epoch, which then gives way to the old
		// one: the index that publishes either is built at the batch's
		// end (or at once outside one), reading the record written
		// here.
		if err := b.SetVIP(k, num, flags); err != nil {
			return err
		}
	}
	if err := b.objs.VipEpochs.Put(num, epoch); err != nil {
		return fmt.Errorf("write VIP epoch %d: %w", num, err)
	}
	if err := b.putEpochCopy(num, epoch); err != nil {
		return err
	}
	if err := b.purgeConns(num, epoch); err != nil {
		return fmt.Errorf("VIP %s: %w", k, err)
	}
	if _, ok := b.indexed[num]; ok {
		b.repurge[num] = true
	}
	return b.indexChanged()
}

// endOrphanEpochs ends the epoch of every VIP number that no VIP has but
// whose epoch is live, in its record or in the copy packets read: a
// DeleteVIP (or a refused SetVIP) that failed after taking its VIP out of
// vips leaves one, and the VIP's connection entries stay usable with it
// (a pinned packet skips the VIP lookup). The number's tables go too.
// Writers never leave one otherwise: SetVIP puts a VIP in vips before
// its epoch goes live. A retried DeleteVIP calls it, and so does every
// load, for the process that failed (or crashed) may not retry.
func (b *Balancer) endOrphanEpochs() error {
	vips, err := b.VIPs()
	if err != nil {
		return err
	}
	owned := map[uint32]bool{}
	for _, m := range vips {
		owned[m.Num] = true
	}
	copies, err := b.epochs()
	if err != nil {
		return err
	}
	var (
		num, e  uint32
		orphans = map[uint32]uint32{}
	)
	// An epoch not yet in the copy (epochCopies: of this batch, or whose
	// write failed) counts as the copy differing.
	it := b.objs.VipEpochs.Iterate()
	for it.Next(&num, &e) {
		_, unwritten := b.epochCopies[num]
		if num < MaxVIPs && !owned[num] && (e%2 == 1 || copies[num] != e || unwritten) {
			orphans[num] = e
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read vip_epochs: %w", err)
	}
	for num, e := range orphans {
		if e%2 == 1 {
			err = b.nextEpoch(num, false)
		} else {
			// Only the copy is live: its write failed, or waits
			// for the batch's end.
			err = b.putEpochCopy(num, e)
		}
		if err != nil {
			return err
		}
		if err := b.clearTables(num); err != nil {
			return err
		}
	}
	return nil
}

// VIPs returns every VIP in the datapath.
func (b *Balancer) VIPs() (map[VIPKey]VIPMeta, error) {
	out := map[VIPKey]VIPMeta{}
	var key balancerVipKey
	var meta balancerVipMeta
	it := b.objs.Vips.Iterate()
	for it.Next(&key, &meta) {
		out[fromVIPKey(key)] = VIPMeta{Num: meta.VipNum, Flags: VIPFlags(meta.Flags), TableSize: meta.TableSize, Gen: meta.Gen}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate VIPs: %w", err)
	}
	return out, nil
}

// IndexedVIP is what the published VIP index holds for a VIP: what packets
// to it find.
type IndexedVIP struct {
	VIPMeta
	// Epoch is the VIP epoch the index carries, which new flows record.
	Epoch uint32
}

// LookupVIP finds k in the published VIP index as the program finds the
// VIP of a packet to k's address, port and protocol (but without falling
// back to the address's all-ports VIP): what packets see, which vips (see
// VIPs) may not show inside a batch. It reports false if k is not there.
func (b *Balancer) LookupVIP(k VIPKey) (IndexedVIP, bool, error) {
	var id ebpf.MapID
	if err := b.objs.VipIndex.Lookup(uint32(0), &id); err != nil {
		return IndexedVIP{}, false, fmt.Errorf("read the VIP index: %w", err)
	}
	idx, err := ebpf.NewMapFromID(id)
	if err != nil {
		return IndexedVIP{}, false, fmt.Errorf("open the VIP index: %w", err)
	}
	defer idx.Close()
	key := toVIPKey(k)
	pp := uint32(key.Port) | uint32(key.Proto)<<16
	home := vipIndexHash(key.Addr, pp)
	for i := range uint32(vipIndexProbes) {
		slot := (home + i) & (vipIndexSlots - 1)
		var s balancerVipSlot
		if err := idx.Lookup(slot, &s); err != nil {
			return IndexedVIP{}, false, fmt.Errorf("read VIP index slot %d: %w", slot, err)
		}
		if s.PortProto == 0 {
			break
		}
		if s.Addr == key.Addr && s.PortProto == pp {
			m := s.Meta
			return IndexedVIP{VIPMeta{Num: m.VipNum, Flags: VIPFlags(m.Flags), TableSize: m.TableSize, Gen: m.Gen}, m.Epoch}, true, nil
		}
	}
	return IndexedVIP{}, false, nil
}

// vipAddrChanged notes that the VIPs on addr changed: its count in
// vip_addrs (and vip_filter) is brought in step now, or at the end of the
// batch, once for all the batch's addresses.
func (b *Balancer) vipAddrChanged(addr netip.Addr) error {
	// In the form VIPs gives (as the datapath keys it): IPv4 unmapped,
	// no zone.
	addr = fromAddr(toAddr(addr))
	if b.batch > 0 && batchedUpdates {
		b.staleAddrs[addr] = true
		return nil
	}
	return b.syncVIPAddrs(map[netip.Addr]bool{addr: true})
}

// syncVIPAddrs keeps vip_addrs[a] equal to the number of VIPs on a, for
// each address in addrs, and then vip_filter: one pass over vips for all
// of them.
func (b *Balancer) syncVIPAddrs(addrs map[netip.Addr]bool) error {
	vips, err := b.VIPs()
	if err != nil {
		return err
	}
	count := map[netip.Addr]uint32{}
	for k := range vips {
		if addrs[k.Addr] {
			count[k.Addr]++
		}
	}
	// Gone addresses first: vip_addrs holds no more than MaxVIPs, and a
	// batch at the limit that replaces VIPs needs their entries for the
	// new ones' addresses.
	for addr := range addrs {
		a := toAddr(addr)
		if count[addr] > 0 {
			continue
		}
		if err := b.objs.VipAddrs.Delete(&a); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete VIP address %s: %w", addr, err)
		}
	}
	for addr, n := range count {
		a := toAddr(addr)
		if err := b.objs.VipAddrs.Put(&a, n); err != nil {
			return fmt.Errorf("write VIP address %s: %w", addr, err)
		}
	}
	return b.syncVIPFilter()
}

// syncVIPFilter rewrites vip_filter from vip_addrs. Bits of addresses that
// stay are rewritten with the same value, so a packet to them never sees
// the filter say "no" while this runs.
func (b *Balancer) syncVIPFilter() error {
	var f balancerVipFilter
	var a balancerAddr
	var n uint32
	it := b.objs.VipAddrs.Iterate()
	for it.Next(&a, &n) {
		bit := vipFilterBit(a)
		f.W[bit/64] |= 1 << (bit % 64)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate VIP addresses: %w", err)
	}
	if err := b.data.VipFilter.Put(uint32(0), &f); err != nil {
		return fmt.Errorf("write VIP address filter: %w", err)
	}
	return nil
}

// PublishTable installs a new Maglev table for a VIP without any packet ever
// seeing a half-written one: it fills the inactive generation, then flips
// the VIP's generation index in one map update. The table that was active
// stays readable as the previous generation. Returns the new generation.
func (b *Balancer) PublishTable(k VIPKey, table []uint32) (uint32, error) {
	if len(table) == 0 {
		return 0, fmt.Errorf("VIP %s: empty table", k)
	}
	// The program reads backends under a mask: an id past the limit would
	// send its slots' packets to another backend's copy, or to none.
	for i, id := range table {
		if id >= MaxBackends && id != MaglevEmpty {
			return 0, fmt.Errorf("VIP %s: slot %d holds backend id %d, over the datapath's limit of %d", k, i, id, MaxBackends)
		}
	}
	key := toVIPKey(k)
	var meta balancerVipMeta
	if err := b.objs.Vips.Lookup(&key, &meta); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("VIP %s: %w", k, ErrNoSuchVIP)
		}
		return 0, fmt.Errorf("look up VIP %s: %w", k, err)
	}
	next := meta.Gen ^ 1
	if meta.TableSize[meta.Gen] == 0 {
		next = meta.Gen // first table: nothing to keep
	}
	// The published index must not point packets at the generation this
	// overwrites: with a second table for the VIP within one batch, it
	// still may.
	if im, ok := b.indexed[meta.VipNum]; ok && im.Gen == next && im.TableSize[next] != 0 {
		if err := b.syncVIPIndex(); err != nil {
			return 0, fmt.Errorf("VIP %s: %w", k, err)
		}
	}
	if err := b.writeTable(meta.VipNum, next, table); err != nil {
		return 0, fmt.Errorf("VIP %s: %w", k, err)
	}
	meta.TableSize[next] = uint32(len(table))
	meta.Gen = next
	if err := b.objs.Vips.Put(&key, &meta); err != nil {
		return 0, fmt.Errorf("flip VIP %s to generation %d: %w", k, next, err)
	}
	if err := b.indexChanged(); err != nil {
		return 0, fmt.Errorf("flip VIP %s to generation %d: %w", k, next, err)
	}
	return next, nil
}

// Batch runs fn, during which changes to VIPs and tables reach the VIP
// index (and so packets) only when fn returns, in one update: building
// and swapping in an index waits for the kernel to see no program still
// reading the previous one (an RCU grace period, milliseconds), which
// per call would make a large configuration slow to apply. Backends
// (SetBackend, DeleteBackend) and VIP epochs reach the copies packets read
// at the end too, just before the index, all in one write each (a backend
// whose address changes waits for packets in flight: at most twice per
// batch, not per backend). A VIP deleted in the batch leaves the index at
// its end, with the batch's other changes, and its entries stop serving
// then too (its epoch ends): until then its new flows took the index's
// way to the same tables. Batches nest; writers (SetVIP, DeleteVIP,
// PublishTable, SetBackend, DeleteBackend, Batch) must not run
// concurrently.
func (b *Balancer) Batch(fn func() error) error {
	b.batch++
	err := fn()
	b.batch--
	if b.batch == 0 {
		// Addresses first: a VIP added in the batch is in the filter
		// before the index below sends its packets anywhere.
		if len(b.staleAddrs) > 0 {
			if aerr := b.syncVIPAddrs(b.staleAddrs); aerr != nil {
				// Kept: the next change retries them.
				if err == nil {
					err = aerr
				}
			} else {
				clear(b.staleAddrs)
			}
		}
		// A failed batch's changes may be put back by the next (a
		// reload's rollback): a backend id it gave a new address keeps
		// its previous one, and that one's flows their entries, which
		// the new address would have emptied for good. Failed here too
		// if its addresses did: its caller sees the failure all the same.
		b.holdMoves = err != nil
		// Then the backends and epochs, which the tables and the index
		// below need (syncVIPIndex): if they fail, the batch's tables and
		// index wait for the next batch's end, and packets go on as
		// before it (but for the address filter).
		if cerr := b.flushCopies(); cerr != nil {
			if err == nil {
				err = cerr
			}
		} else {
			if ferr := b.installPending(); ferr != nil && err == nil {
				err = ferr
			}
			if b.indexStale {
				if serr := b.syncVIPIndex(); serr != nil && err == nil {
					err = serr
				}
			}
		}
	}
	return err
}

// indexChanged notes that vips changed: the index is rebuilt now, or at
// the end of the batch.
func (b *Balancer) indexChanged() error {
	b.indexStale = true
	if b.batch > 0 {
		return nil
	}
	return b.syncVIPIndex()
}

// syncVIPIndex builds the VIP index (bpf/maps.h) from vips as a new table
// and swaps it into vip_index in one update: a packet sees the previous
// version or this one, whole. VIPs take the first free slot from their
// home slot, as the datapath probes.
func (b *Balancer) syncVIPIndex() error {
	// The index may point packets at tables made in this batch, whose
	// backends must be in backend_table, and must not go ahead of the
	// epochs packets check their entries against (flushEpochCopies).
	if err := b.flushCopies(); err != nil {
		return err
	}
	if err := b.installPending(); err != nil {
		return err
	}
	var (
		key    balancerVipKey
		meta   balancerVipMeta
		slots  []uint32
		values []balancerVipSlot
	)
	taken := map[uint32]bool{}
	indexed := map[uint32]balancerVipMeta{}
	it := b.objs.Vips.Iterate()
	for it.Next(&key, &meta) {
		indexed[meta.VipNum] = meta
		// New flows record the epoch the index carries.
		if err := b.objs.VipEpochs.Lookup(meta.VipNum, &meta.Epoch); err != nil {
			return fmt.Errorf("read VIP epoch %d: %w", meta.VipNum, err)
		}
		pp := uint32(key.Port) | uint32(key.Proto)<<16
		home, placed := vipIndexHash(key.Addr, pp), false
		for i := range uint32(vipIndexProbes) {
			slot := (home + i) & (vipIndexSlots - 1)
			if !taken[slot] {
				taken[slot], placed = true, true
				slots = append(slots, slot)
				values = append(values, balancerVipSlot{Addr: key.Addr, PortProto: pp, Meta: meta})
				break
			}
		}
		if !placed {
			return fmt.Errorf("VIP %s: the VIP index has no free slot within %d of its hash (%d VIPs in %d slots); give the VIP another address or port",
				fromVIPKey(key), vipIndexProbes, len(slots), vipIndexSlots)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate VIPs: %w", err)
	}
	table, err := ebpf.NewMap(b.vipIndexSpec)
	if err != nil {
		return fmt.Errorf("create VIP index: %w", err)
	}
	defer table.Close() // vip_index holds its own reference
	if len(slots) > 0 {
		if _, err := table.BatchUpdate(slots, values, nil); err != nil {
			return fmt.Errorf("fill VIP index: %w", err)
		}
	}
	if err := b.objs.VipIndex.Put(uint32(0), table); err != nil {
		return fmt.Errorf("publish VIP index: %w", err)
	}
	b.indexed, b.indexStale = indexed, false
	clear(b.deletedNums)
	// The kernel has waited for every packet that read the previous index
	// (an outer map's update does): entries recorded under the epochs it
	// carried are all written now. The index is published whatever
	// happens here (callers undo their change on an error): a purge that
	// fails is retried with the next index, long before the epoch comes
	// round to those entries.
	for num := range b.repurge {
		var e uint32
		err := b.objs.VipEpochs.Lookup(num, &e)
		if err == nil {
			err = b.purgeConns(num, e)
		}
		if err != nil {
			b.log.Warn("purge the connection entries of a wrapped VIP epoch: retried with the next VIP index", "vip_num", num, "error", err)
			continue
		}
		delete(b.repurge, num)
	}
	return nil
}

func (b *Balancer) writeTable(num, gen uint32, table []uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := tableKey{num*2 + gen, isStdTable(uint32(len(table)))}
	if err := b.installLocked(k, table); err != nil {
		return err
	}
	// The slot's table in the other outer map, if any, is an earlier
	// content of this generation: nothing reads it any more.
	return b.deleteTableLocked(tableKey{k.slot, !k.std})
}

// installLocked writes table into k's inner map, creating and installing
// one if there is none of a fitting size.
func (b *Balancer) installLocked(k tableKey, table []uint32) error {
	m, err := b.tableLocked(k)
	if err != nil {
		return err
	}
	// A std inner map has room for any std table; other sizes need a map
	// of their own.
	if m != nil && (k.std || m.MaxEntries() == uint32(len(table))) {
		return fillTable(m, table)
	}
	spec := &ebpf.MapSpec{
		Name: "maglev_table", Type: ebpf.Array, KeySize: 4, ValueSize: 4,
		MaxEntries: uint32(len(table)), Flags: unix.BPF_F_INNER_MAP,
	}
	if k.std {
		spec = b.stdTableSpec
	}
	nm, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("create Maglev table of %d slots: %w", len(table), err)
	}
	if err := fillTable(nm, table); err != nil {
		nm.Close()
		return err
	}
	// Every update of an outer map waits for an RCU grace period (the
	// kernel makes sure no program still uses what it replaced): about
	// 10 ms. Inside a batch the new maps go in together at its end, in
	// one batch update, one wait; no packet looks for them before the
	// VIP index that the batch's end publishes.
	if b.batch > 0 && batchedUpdates {
		b.pending[k] = nm
		delete(b.removed, k)
	} else if err := b.outer(k.std).Put(k.slot, nm); err != nil {
		nm.Close()
		return fmt.Errorf("install Maglev table: %w", err)
	}
	if m != nil {
		m.Close()
	}
	b.tables[k] = nm
	return nil
}

// batchedUpdates: inside a batch, new inner maps go into their outer map,
// deleted tables give way to the stand-in and deleted VIPs leave the index
// at its end. Off only in the benchmarks' baselines (BenchmarkNewVIPTables,
// BenchmarkDeleteVIPs).
var batchedUpdates = true

// installPending puts the inner maps made in this batch into their outer
// maps, one batch update per outer map.
func (b *Balancer) installPending() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, std := range []bool{true, false} {
		var keys, fds []uint32
		for k, m := range b.pending {
			if k.std == std {
				keys, fds = append(keys, k.slot), append(fds, uint32(m.FD()))
			}
		}
		for k := range b.removed {
			if k.std == std {
				in, err := b.standInLocked(std)
				if err != nil {
					return err
				}
				keys, fds = append(keys, k.slot), append(fds, uint32(in.FD()))
			}
		}
		if len(keys) == 0 {
			continue
		}
		if _, err := b.outer(std).BatchUpdate(keys, fds, nil); err != nil {
			return fmt.Errorf("install %d Maglev tables: %w", len(keys), err)
		}
		for k := range b.pending {
			if k.std == std {
				delete(b.pending, k)
			}
		}
		for k := range b.removed {
			if k.std == std {
				delete(b.removed, k)
			}
		}
	}
	return nil
}

// standInName names the map that stands in an outer map's slot for a
// table deleted inside a batch: an outer map has no batch delete, and one
// delete each would wait for a grace period each. It holds no backend in
// any slot, so a packet that still reads it is dropped (no backend), as
// with no table. The name tells it from a table after a restart.
const standInName = "maglev_none"

// standInLocked returns the stand-in for std or larger tables, made (and
// its slots emptied) on first use and pinned, so that later runs use the
// same one.
func (b *Balancer) standInLocked(std bool) (*ebpf.Map, error) {
	if m := b.standIn[std]; m != nil {
		return m, nil
	}
	spec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: unix.BPF_F_INNER_MAP}
	spec.Name = standInName
	if std {
		spec = b.stdTableSpec.Copy()
		spec.Name = standInName + "_std"
	}
	var opts ebpf.MapOptions
	if b.pinDir != "" {
		spec.Pinning, opts.PinPath = ebpf.PinByName, b.pinDir // pinned by its name
	}
	m, err := ebpf.NewMapWithOptions(spec, opts)
	if err != nil {
		return nil, fmt.Errorf("create the stand-in for deleted Maglev tables: %w", err)
	}
	empty := make([]uint32, m.MaxEntries())
	for i := range empty {
		empty[i] = MaglevEmpty
	}
	if err := fillTable(m, empty); err != nil {
		m.Close()
		return nil, err
	}
	b.standIn[std] = m
	return m, nil
}

// mappedTableWrites: fillTable writes mappable tables through a mapping.
// Off only in the benchmark's baseline (BenchmarkPublishTable).
var mappedTableWrites = true

// fillTable writes table into the first slots of m: through m's memory
// mapping if it has one (maglev_std's), else by a batch update.
func fillTable(m *ebpf.Map, table []uint32) error {
	if m.Flags()&unix.BPF_F_MMAPABLE != 0 && mappedTableWrites {
		err := withMapping(m, len(table)*arraySlot, true, func(b []byte) {
			for i, v := range table {
				binary.NativeEndian.PutUint32(b[i*arraySlot:], v)
			}
		})
		if err != nil {
			return fmt.Errorf("write Maglev table: %w", err)
		}
		return nil
	}
	keys := make([]uint32, len(table))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := m.BatchUpdate(keys, table, nil); err != nil {
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("write Maglev table: %w", err)
		}
		for i, v := range table {
			if err := m.Put(uint32(i), v); err != nil {
				return fmt.Errorf("write Maglev table slot %d: %w", i, err)
			}
		}
	}
	return nil
}

// tableLocked returns the inner map of k, opening it from its outer map
// if an earlier run installed it; nil if there is none.
func (b *Balancer) tableLocked(k tableKey) (*ebpf.Map, error) {
	if m, ok := b.tables[k]; ok {
		return m, nil
	}
	if b.removed[k] {
		return nil, nil
	}
	var m *ebpf.Map
	if err := b.outer(k.std).Lookup(k.slot, &m); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("open Maglev table %d: %w", k.slot, err)
	}
	info, err := m.Info()
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("open Maglev table %d: %w", k.slot, err)
	}
	if strings.HasPrefix(info.Name, standInName) {
		m.Close()
		return nil, nil
	}
	b.tables[k] = m
	return m, nil
}

func (b *Balancer) deleteTableLocked(k tableKey) error {
	delete(b.pending, k)
	if b.batch > 0 && batchedUpdates {
		m, err := b.tableLocked(k) // now in b.tables, if there is one
		if err != nil || m == nil {
			return err // nothing to delete
		}
		m.Close()
		delete(b.tables, k)
		b.removed[k] = true
		return nil
	}
	if err := b.outer(k.std).Delete(k.slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete Maglev table %d: %w", k.slot, err)
	}
	if m, ok := b.tables[k]; ok {
		m.Close()
		delete(b.tables, k)
	}
	return nil
}

func (b *Balancer) clearTables(num uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for gen := range uint32(2) {
		for _, std := range []bool{true, false} {
			if err := b.deleteTableLocked(tableKey{num*2 + gen, std}); err != nil {
				return err
			}
		}
	}
	return nil
}

// syncStdTables gives every std-size table that an earlier version left
// only in the previous release's maglev_std, or only in maglev_tables, a
// copy in maglev_std, where this version's program looks for it. While
// the previous release's maglev_std is pinned, its tables are copied
// whatever maglev_std holds (see moveStdTables). The copy
// in maglev_tables stays for the program still running until Attach swaps
// this one in; the generation's next write removes it. (The previous
// maglev_std loses its pin once copied, and lives on with that program.)
func (b *Balancer) syncStdTables() error {
	vips, err := b.VIPs()
	if err != nil {
		return err
	}
	// An upgrade copies every table (up to 1,024 of 65,537 slots: tens
	// of seconds): the start says what it waits for.
	start := time.Now()
	if b.legacyStd != nil {
		n := 0
		for _, v := range vips {
			for _, size := range v.TableSize {
				if size != 0 && isStdTable(size) {
					n++
				}
			}
		}
		b.log.Info("copying the previous release's Maglev tables to this release's mappable maps", "tables", n)
	}
	copied := 0
	// One batch: the copies go into maglev_std in one update.
	err = b.Batch(func() error { return b.moveStdTables(vips, &copied) })
	if err == nil && (copied > 0 || b.legacyStd != nil) {
		b.log.Info("Maglev tables copied to this release's mappable maps", "tables", copied, "seconds", time.Since(start).Seconds())
	}
	return err
}

// moveStdTables is syncStdTables' work, inside its batch; it counts the
// tables it copies in copied.
func (b *Balancer) moveStdTables(vips map[VIPKey]VIPMeta, copied *int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for vk, v := range vips {
		for gen := range uint32(2) {
			size, slot := v.TableSize[gen], v.Num*2+gen
			if size == 0 || !isStdTable(size) {
				continue
			}
			m, err := b.tableLocked(tableKey{slot, true})
			if err != nil {
				return err
			}
			// With the previous release's maglev_std pinned, the
			// program that runs (or ran last) reads that one: what
			// this one holds is a copy an upgrade made that did not
			// go through, which a rollback to that release may have
			// made stale since.
			if m != nil && b.legacyStd == nil {
				continue
			}
			table, err := b.legacyTable(slot, size)
			if err == nil && table == nil {
				table, err = b.readTableLocked(tableKey{slot, false}, size)
			}
			switch {
			case err != nil:
			case table != nil:
				if err = b.installLocked(tableKey{slot, true}, table); err == nil {
					*copied++
				}
			case m != nil:
				// The program that runs has no table there.
				err = b.deleteTableLocked(tableKey{slot, true})
			}
			if err != nil {
				return fmt.Errorf("VIP %s: move the table of generation %d: %w", vk, gen, err)
			}
		}
	}
	return nil
}

// legacyTable reads the table in slot of the previous release's maglev_std,
// if there is one.
func (b *Balancer) legacyTable(slot, size uint32) ([]uint32, error) {
	if b.legacyStd == nil {
		return nil, nil
	}
	var m *ebpf.Map
	if err := b.legacyStd.Lookup(slot, &m); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("open the previous release's Maglev table %d: %w", slot, err)
	}
	defer m.Close()
	return readTable(m, size)
}

// Table reads back a VIP's table of generation gen (nil if it has none).
func (b *Balancer) Table(k VIPKey, gen uint32) ([]uint32, error) {
	key := toVIPKey(k)
	var meta balancerVipMeta
	if err := b.objs.Vips.Lookup(&key, &meta); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("VIP %s: %w", k, ErrNoSuchVIP)
		}
		return nil, fmt.Errorf("look up VIP %s: %w", k, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	size := meta.TableSize[gen&1]
	return b.readTableLocked(tableKey{meta.VipNum*2 + gen&1, isStdTable(size)}, size)
}

// readTableLocked reads the first size slots of k's inner map (nil if
// there is none).
func (b *Balancer) readTableLocked(k tableKey, size uint32) ([]uint32, error) {
	m, err := b.tableLocked(k)
	if err != nil || m == nil {
		return nil, err
	}
	return readTable(m, size)
}

// withMapping maps the first size bytes of the mappable array m and calls
// fn with them, then unmaps them. (A mapping holds the map alive: one kept
// for later would keep a deleted table's memory until the mapping went.)
func withMapping(m *ebpf.Map, size int, write bool, fn func([]byte)) error {
	if size == 0 {
		return nil
	}
	prot := unix.PROT_READ
	if write {
		prot |= unix.PROT_WRITE
	}
	b, err := unix.Mmap(m.FD(), 0, size, prot, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("memory-map: %w", err)
	}
	fn(b)
	if err := unix.Munmap(b); err != nil {
		return fmt.Errorf("unmap: %w", err)
	}
	return nil
}

// readTable reads the first size slots of the Maglev table m (fewer if m
// is smaller).
func readTable(m *ebpf.Map, size uint32) ([]uint32, error) {
	n := int(min(size, m.MaxEntries()))
	out := make([]uint32, n)
	if m.Flags()&unix.BPF_F_MMAPABLE != 0 {
		err := withMapping(m, n*arraySlot, false, func(b []byte) {
			for i := range out {
				out[i] = binary.NativeEndian.Uint32(b[i*arraySlot:])
			}
		})
		if err != nil {
			return nil, fmt.Errorf("read Maglev table: %w", err)
		}
		return out, nil
	}
	keys := make([]uint32, n)
	var cursor ebpf.MapBatchCursor
	got := 0
	for got < n {
		c, err := m.BatchLookup(&cursor, keys[got:], out[got:], nil)
		got += c
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read Maglev table: %w", err)
		}
	}
	if got < n {
		return nil, fmt.Errorf("read Maglev table: %d of %d slots", got, n)
	}
	return out[:n], nil
}

// SetBackend writes backend id's address. If the id had another address,
// the connection entries pinned to it are emptied before the new one is in
// force (see flushBackendCopies): those flows are placed by Maglev again,
// never sent to the new address.
func (b *Balancer) SetBackend(id uint32, addr netip.Addr) error {
	if id >= MaxBackends {
		return fmt.Errorf("backend id %d over the datapath's limit of %d", id, MaxBackends)
	}
	if !addr.IsValid() {
		return fmt.Errorf("backend %d: no address (use DeleteBackend to free the id)", id)
	}
	be := balancerBackend{Addr: toAddr(addr), Flags: uint32(balancerBackendFlagsBACKEND_F_VALID)}
	if addr.Is6() && !addr.Is4In6() {
		be.Flags |= uint32(balancerBackendFlagsBACKEND_F_V6)
	}
	var old balancerBackend
	if err := b.objs.Backends.Lookup(id, &old); err != nil {
		return fmt.Errorf("read backend %d: %w", id, err)
	}
	if old != be {
		// A new address for the id (or the id back in use): its
		// counters start again.
		raw, err := b.rawBackendCounters(id)
		if err != nil {
			return err
		}
		if err := restartCounters(b.objs.BackendStatsBase, id, &raw, "backend"); err != nil {
			return err
		}
	}
	if err := b.objs.Backends.Put(id, &be); err != nil {
		return fmt.Errorf("write backend %d: %w", id, err)
	}
	return b.putBackendCopy(id, be)
}

// DeleteBackend invalidates backend id: flows pinned to it choose again.
func (b *Balancer) DeleteBackend(id uint32) error {
	if id >= MaxBackends {
		return fmt.Errorf("backend id %d over the datapath's limit of %d", id, MaxBackends)
	}
	if err := b.objs.Backends.Put(id, &balancerBackend{}); err != nil {
		return fmt.Errorf("clear backend %d: %w", id, err)
	}
	return b.putBackendCopy(id, balancerBackend{})
}

// backendTable and epochTable are the values of backend_table and
// vip_epoch_table (bpf/maps.h): each map's one entry holds the whole array.
type (
	backendTable [MaxBackends]balancerBackend
	epochTable   [MaxVIPs]uint32
)

// putBackendCopy writes backend id's entry of backend_table, now or, inside
// a batch, at its end together with the batch's other backends (see
// flushBackendCopies): no table published in the batch names the id
// before the batch's VIP index, which comes after.
func (b *Balancer) putBackendCopy(id uint32, be balancerBackend) error {
	b.backendCopies[id] = be
	if b.batch > 0 && batchedUpdates {
		return nil
	}
	b.holdMoves = false
	return b.flushBackendCopies()
}

// flushBackendCopies writes the entries of backendCopies into
// backend_table in an order that no packet sees torn. A packet reads an
// entry's flags (BACKEND_F_VALID, then BACKEND_F_V6 in encap) and its
// address at different moments, with no lock, and uses the entry only
// while it is valid (backend_of and its callers in bpf/balancer.bpf.c). A
// write is a copy of the whole array (the map's one value; the map is not
// mappable, and other entries are rewritten with the bytes they hold), in
// which a new address and its flags changed together: one packet could
// see the flags of one address and bytes of the other. So new addresses
// go in while their entries are invalid: the validity of every entry whose
// address changes is cleared (one write), every packet that may have read
// one valid is waited for, the addresses are written (one write), the
// packets that ran meanwhile (which saw them invalid, but may have read
// address bytes early) are waited for, the connection entries pinned to
// those ids under their previous addresses are emptied
// (purgeBackendConns), and the flags go in last (one write). However many backends change, that is at most two waits for
// packets and three copies of the array. A change of the flags alone
// changes one byte (they all fit in the first: bpf/consts.h), which no
// copy tears, and goes in with the first write. A deleted entry keeps the
// address and BACKEND_F_V6 it had (nothing reads them in an invalid entry
// but the packets that read it valid before, for which they must stay the
// address's): the copy differs from its record there only, until
// syncCopies. If a step fails, backendCopies stays for the next flush,
// which first waits for the packets that may have read entries between
// this one's steps.
func (b *Balancer) flushBackendCopies() error {
	if len(b.backendCopies) == 0 {
		return nil
	}
	what := fmt.Sprintf("%d backends", len(b.backendCopies))
	if len(b.backendCopies) == 1 {
		for id := range b.backendCopies {
			what = fmt.Sprintf("backend %d", id)
		}
	}
	held, err := b.writeBackendCopies()
	if err != nil {
		b.backendCopyFailed = true
		return fmt.Errorf("write %s to backend_table: %w", what, err)
	}
	b.backendCopyFailed = false
	for id := range b.backendCopies {
		if !held[id] {
			delete(b.backendCopies, id)
		}
	}
	return nil
}

// writeBackendCopies is flushBackendCopies' work. While holdMoves, an id
// that had another address (whose entries a new one empties) keeps it: it
// returns those ids, which stay in backendCopies.
func (b *Balancer) writeBackendCopies() (held map[uint32]bool, err error) {
	const valid = uint32(balancerBackendFlagsBACKEND_F_VALID)
	if b.backendCopyFailed {
		if err := b.waitForPackets(); err != nil {
			return nil, err
		}
	}
	t := new(backendTable)
	if err := b.data.BackendTable.Lookup(uint32(0), t); err != nil {
		return nil, fmt.Errorf("read backend_table: %w", err)
	}
	put := func() error { return b.data.BackendTable.Put(uint32(0), t) }
	var (
		moved          []uint32 // ids whose address changes
		changed, inUse bool     // the first write's, and whether it invalidated a valid entry
	)
	for id, be := range b.backendCopies {
		e := &t[id]
		switch {
		case *e == be && b.unpurged[id] == netip.Addr{}:
		case be.Flags&valid == 0:
			if e.Flags&valid != 0 {
				e.Flags &^= valid
				changed = true
			}
		case e.Addr == be.Addr && b.unpurged[id] == netip.Addr{}:
			e.Flags, changed = be.Flags, true
		case b.holdMoves && (*e != balancerBackend{} || b.unpurged[id] != netip.Addr{}):
			// Its flows keep their entries, and go on to the
			// address they began with, for a rollback.
			if held == nil {
				held = map[uint32]bool{}
			}
			held[id] = true
		case e.Flags&valid != 0:
			// Only the validity: a packet that read it valid reads
			// BACKEND_F_V6 again in encap, which must still be the
			// address's.
			e.Flags &^= valid
			changed, inUse = true, true
			moved = append(moved, id)
		default:
			moved = append(moved, id)
		}
	}
	if changed {
		if err := put(); err != nil {
			return nil, err
		}
	}
	if inUse {
		if err := b.waitForPackets(); err != nil {
			return nil, err
		}
	}
	if len(moved) == 0 {
		return held, nil
	}
	// A slot no backend had since the copy was built (all zero: a new
	// backend's, the common case, and every one at a first start) waits
	// for nothing and empties no entry: no table names it, and no entry
	// is pinned to it (the load emptied those of the ids that were not
	// valid: purgeDeadBackendConns), so no packet reads it before the
	// flags' write, by the end of which the address write has long
	// completed. (A wait costs a grace period, about 9 ms.)
	fresh := true
	if b.unpurged == nil {
		b.unpurged = map[uint32]netip.Addr{}
	}
	for _, id := range moved {
		e := &t[id]
		if *e != (balancerBackend{}) {
			fresh = false
			if b.unpurged[id] == (netip.Addr{}) {
				b.unpurged[id] = fromAddr(e.Addr)
			}
		}
		e.Addr = b.backendCopies[id].Addr
	}
	if err := put(); err != nil {
		return nil, err
	}
	if !fresh {
		if err := b.waitForPackets(); err != nil {
			return nil, err
		}
		// The connection entries pinned to an id that had another
		// address are another machine's flows: they must not follow
		// the new one (the control loop gives a new address the slot
		// of a removed one when every slot is taken). No packet
		// records a flow under an invalid id (forward in
		// bpf/balancer.bpf.c), and every one that may have read these
		// valid, however long ago, is done: none records one under
		// them before the flags below.
		if err := b.purgeBackendConns(b.unpurged); err != nil {
			return nil, err
		}
		clear(b.unpurged)
	}
	for _, id := range moved {
		t[id].Flags = b.backendCopies[id].Flags
	}
	return held, put()
}

// waitForPackets returns once the program has finished with every packet
// it was handling when called. The kernel waits for an RCU grace period
// after an update of a map-in-map (maybe_wait_bpf_programs,
// kernel/bpf/syscall.c), and XDP programs run inside RCU read sections:
// an update of a map-in-map of its own is that wait (milliseconds).
func (b *Balancer) waitForPackets() error {
	if b.grace == nil {
		inner := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
		in, err := ebpf.NewMap(inner)
		if err != nil {
			return fmt.Errorf("create the map that waits for packets in flight: %w", err)
		}
		outer, err := ebpf.NewMap(&ebpf.MapSpec{Name: "grace", Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: inner})
		if err != nil {
			in.Close()
			return fmt.Errorf("create the map that waits for packets in flight: %w", err)
		}
		b.grace, b.graceInner = outer, in
	}
	if err := b.grace.Put(uint32(0), b.graceInner); err != nil {
		return fmt.Errorf("wait for packets in flight: %w", err)
	}
	b.graceWaits++
	return nil
}

// putEpochCopy writes VIP num's epoch into vip_epoch_table, now or, inside
// a batch, at its end together with the batch's other epochs (see
// flushEpochCopies).
func (b *Balancer) putEpochCopy(num, epoch uint32) error {
	b.epochCopies[num] = epoch
	if b.batch > 0 && batchedUpdates {
		return nil
	}
	return b.flushEpochCopies()
}

// flushEpochCopies writes the epochs of epochCopies into vip_epoch_table,
// in one copy of the whole array. Every VIP index is published after it
// (syncVIPIndex): an index never goes ahead of the copy, which would let a
// VIP's pinned flows go on by their entries after the index dropped it. If
// the write fails, epochCopies stays for the next.
func (b *Balancer) flushEpochCopies() error {
	if len(b.epochCopies) == 0 {
		return nil
	}
	var t epochTable
	if err := b.data.VipEpochTable.Lookup(uint32(0), &t); err != nil {
		return fmt.Errorf("read vip_epoch_table: %w", err)
	}
	for num, e := range b.epochCopies {
		t[num] = e
	}
	if err := b.data.VipEpochTable.Put(uint32(0), &t); err != nil {
		if len(b.epochCopies) == 1 {
			for num := range b.epochCopies {
				return fmt.Errorf("write VIP epoch %d to vip_epoch_table: %w", num, err)
			}
		}
		return fmt.Errorf("write %d VIP epochs to vip_epoch_table: %w", len(b.epochCopies), err)
	}
	clear(b.epochCopies)
	return nil
}

// flushCopies writes what the records of the batch (or of a failed write)
// left for the copies packets read.
func (b *Balancer) flushCopies() error {
	if err := b.flushEpochCopies(); err != nil {
		return err
	}
	return b.flushBackendCopies()
}

// syncCopies brings backend_table and vip_epoch_table, which the program
// reads, in step with backends and vip_epochs, the records (bpf/maps.h):
// an earlier version pinned no copies, and a copy must never differ from
// its record when the program is attached. Writers keep them in step
// after that, the record first; but a process may end before a write of
// the copy (one that failed, or a failed batch's held moves). The backends
// go through flushBackendCopies, as every write does: an id whose copy has
// another address has that address's connection entries emptied before
// the record's is valid, so its flows do not follow the id to a new
// machine, and a deleted one keeps its address, invalid.
func (b *Balancer) syncCopies() error {
	var (
		id uint32
		be balancerBackend
	)
	it := b.objs.Backends.Iterate()
	for it.Next(&id, &be) {
		if id < MaxBackends {
			b.backendCopies[id] = be
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read backends: %w", err)
	}
	if err := b.flushBackendCopies(); err != nil {
		return err
	}
	var (
		et    epochTable
		num   uint32
		epoch uint32
	)
	it = b.objs.VipEpochs.Iterate()
	for it.Next(&num, &epoch) {
		et[num%MaxVIPs] = epoch
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read vip_epochs: %w", err)
	}
	if err := b.data.VipEpochTable.Put(uint32(0), &et); err != nil {
		return fmt.Errorf("write vip_epoch_table: %w", err)
	}
	clear(b.epochCopies)
	return nil
}

// purgeDeadBackendConns empties the connection entries pinned to a backend
// id that is not valid, at load. They serve no flow (the datapath places
// the flows of a deleted backend again), but nothing else marks them: a
// backend deleted before a restart (or before an earlier version rebuilt
// backend_table from the records, which zeroed its entry there) leaves a
// slot that looks unused, and when it gets a new address, no earlier one
// tells flushBackendCopies to empty its entries first, so they would serve
// again, to the new address. No packet records an entry under an invalid
// id, and syncCopies waited for those that may have read one valid.
func (b *Balancer) purgeDeadBackendConns() error {
	t := new(backendTable)
	if err := b.data.BackendTable.Lookup(uint32(0), t); err != nil {
		return fmt.Errorf("read backend_table: %w", err)
	}
	dead := map[uint32]netip.Addr{}
	for id := range t {
		if t[id].Flags&uint32(balancerBackendFlagsBACKEND_F_VALID) == 0 {
			dead[uint32(id)] = fromAddr(t[id].Addr)
		}
	}
	cleared, err := b.clearBackendConns(dead)
	if err != nil {
		return fmt.Errorf("empty the connection entries of deleted backends: %w", err)
	}
	for id, n := range cleared {
		b.log.Info("connection entries of a deleted backend cleared: its id may get a new address", "backend_id", id, "entries", n)
	}
	return nil
}

// Backends returns the valid backend slots.
func (b *Balancer) Backends() (map[uint32]Backend, error) {
	out := map[uint32]Backend{}
	var id uint32
	var be balancerBackend
	it := b.objs.Backends.Iterate()
	for it.Next(&id, &be) {
		if be.Flags&uint32(balancerBackendFlagsBACKEND_F_VALID) != 0 {
			out[id] = Backend{Addr: fromAddr(be.Addr)}
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate backends: %w", err)
	}
	return out, nil
}

// Connection-table layout, as in bpf/consts.h.
const (
	connWays     = 4
	connTagEmpty = 0
	connTagBusy  = 1
)

// connSets is the number of sets that hold size entries.
func connSets(size uint32) uint32 { return (size + connWays - 1) / connWays }

// connTag mirrors conn_tag in bpf/conntrack.h.
func connTag(flowSum uint64) uint32 { return uint32(flowSum>>32) | 2 }

// connSetOf mirrors conn_set_of in bpf/conntrack.h: the set of the flow
// with sum flowSum.
func connSetOf(flowSum uint64, sets uint32) uint32 {
	return uint32((flowSum >> 32) * uint64(sets) >> 32)
}

// connValid tells whether way w of set s holds a flow whose entry vouches
// for itself, as the datapath requires (conn_find and conn_read in
// bpf/conntrack.h): its tag is its key's, and its check word is the flow
// sum XOR the value word. Entries that two CPUs' writes mixed (one flow's
// tag beside another's entry, one's value beside another's check) and
// entries of versions before the check word fail.
func connValid(s *balancerConnSet, w int) bool {
	c := &s.Slot[w]
	sum := flowSum(c.Key)
	if s.Tag[w] != connTag(sum) {
		return false
	}
	value := uint64(c.BackendId) | uint64(c.VipNum)<<32 | uint64(c.VipEpoch)<<48
	return c.Check == sum^value
}

// connView is what tells whether the datapath would use a connection
// entry (conn_backend in bpf/balancer.bpf.c), read once per scan.
type connView struct {
	epochs   *epochTable   // vip_epoch_table
	backends *backendTable // backend_table
	udpIdle  uint64        // udp_timeout_ns
	jiffyNs  uint64
	now      clockClockSample // taken before the entries are read
}

// epochs reads vip_epoch_table, the VIP epochs the datapath checks
// connection entries against.
func (b *Balancer) epochs() (*epochTable, error) {
	et := new(epochTable)
	if err := b.data.VipEpochTable.Lookup(uint32(0), et); err != nil {
		return nil, fmt.Errorf("read vip_epoch_table: %w", err)
	}
	return et, nil
}

// connView reads the maps and clocks that usable checks entries against.
func (b *Balancer) connView() (*connView, error) {
	v := &connView{backends: new(backendTable), jiffyNs: b.clock.jiffyNs}
	var err error
	if v.epochs, err = b.epochs(); err != nil {
		return nil, err
	}
	if err := b.data.BackendTable.Lookup(uint32(0), v.backends); err != nil {
		return nil, fmt.Errorf("read backend_table: %w", err)
	}
	var cfg balancerLbConfig
	if err := b.data.Config.Lookup(uint32(0), &cfg); err != nil {
		return nil, fmt.Errorf("read the datapath settings: %w", err)
	}
	v.udpIdle = cfg.UdpTimeoutNs
	if v.now, err = b.clock.sample(); err != nil {
		return nil, err
	}
	return v, nil
}

// usable tells whether way w of set s (valid: connValid) is an entry the
// datapath would use, as conn_backend requires: recorded under its VIP
// number's current epoch (entries of a deleted VIP, or of one whose
// options changed since, only wait to be overwritten, and their number
// may belong to another VIP by now), pinned to a valid backend (a flow of
// a deleted one chooses again), and, for UDP, not idle past the timeout.
func (v *connView) usable(s *balancerConnSet, w int) bool {
	c := &s.Slot[w]
	e := v.epochs[uint32(c.VipNum)%MaxVIPs]
	if e%2 == 0 || uint16(e) != c.VipEpoch {
		return false
	}
	if c.BackendId >= MaxBackends || v.backends[c.BackendId].Flags&uint32(balancerBackendFlagsBACKEND_F_VALID) == 0 {
		return false
	}
	if c.Key.Proto == ProtoUDP && uint64(v.idle(s.Stamp[w]))*v.jiffyNs >= v.udpIdle {
		return false
	}
	return true
}

// idle is how many jiffies before v.now an entry stamped stamp last saw a
// packet. An entry refreshed after v.now has a stamp ahead of it: idle
// for no time.
func (v *connView) idle(stamp uint32) uint32 {
	if stamp-uint32(v.now.Jiffies) < stampAhead {
		return 0
	}
	return uint32(v.now.Jiffies) - stamp
}

// connOf is way w of set s as a Conn, its stamp read against now.
func (b *Balancer) connOf(s *balancerConnSet, w int, now clockClockSample) Conn {
	c := &s.Slot[w]
	return Conn{BackendID: c.BackendId, VIPNum: uint32(c.VipNum), LastSeen: b.clock.lastSeen(now, s.Stamp[w])}
}

// withConnSets calls fn with the connection table's sets, through a
// mapping of the table (conns is mappable: bpf/maps.h), read-only unless
// write. The datapath writes on meanwhile.
func (b *Balancer) withConnSets(write bool, fn func(sets []balancerConnSet)) error {
	m := b.objs.Conns
	if unsafe.Sizeof(balancerConnSet{}) != uintptr(m.ValueSize()) {
		return fmt.Errorf("connection table: sets of %d bytes, not %d", m.ValueSize(), unsafe.Sizeof(balancerConnSet{}))
	}
	return withMapping(m, int(m.MaxEntries())*int(m.ValueSize()), write, func(mem []byte) {
		fn(unsafe.Slice((*balancerConnSet)(unsafe.Pointer(&mem[0])), m.MaxEntries()))
	})
}

// eachConnSet calls fn for every set of the connection table that may hold
// an entry, a copy taken as the datapath writes on, until fn returns false.
// It reads through a mapping of the table, where batched reads copied all
// of it.
func (b *Balancer) eachConnSet(fn func(*balancerConnSet) bool) error {
	err := b.withConnSets(false, func(sets []balancerConnSet) {
		for i := range sets {
			// Most sets of a large table are empty: copy the others.
			if !slices.ContainsFunc(sets[i].Tag[:], func(t uint32) bool { return t != connTagEmpty && t != connTagBusy }) {
				continue
			}
			s := sets[i]
			if !fn(&s) {
				return
			}
		}
	})
	if err != nil {
		return fmt.Errorf("read connection table: %w", err)
	}
	return nil
}

// purgeConns empties every connection entry of VIP number num but those
// of its epoch live, if live is a live (odd) epoch, through a writable
// mapping of the table. An entry's tag is cleared only if it is still the
// one read with the entry's VIP number (compare-and-swap): an entry that
// a CPU records meanwhile for another flow is left alone.
func (b *Balancer) purgeConns(num, live uint32) error {
	err := b.withConnSets(true, func(sets []balancerConnSet) {
		for i := range sets {
			s := &sets[i]
			for w := range s.Tag {
				t := atomic.LoadUint32(&s.Tag[w])
				if t == connTagEmpty || t == connTagBusy {
					continue
				}
				// The value word: backend id, VIP number, epoch.
				v := atomic.LoadUint64((*uint64)(unsafe.Pointer(&s.Slot[w].BackendId)))
				if uint16(v>>32) == uint16(num) && (live%2 == 0 || uint16(v>>48) != uint16(live)) {
					atomic.CompareAndSwapUint32(&s.Tag[w], t, connTagEmpty)
				}
			}
		}
	})
	if err != nil {
		return fmt.Errorf("purge connection table: %w", err)
	}
	return nil
}

// purgeBackendConns empties every connection entry pinned to one of the
// backend ids in previous (by their previous address), none of which is
// valid in backend_table nor read valid by a packet still running, so
// that no packet records one meanwhile, and logs how many it emptied of
// each. An entry's tag is cleared only if it is still the one read with
// the entry's backend id (compare-and-swap), as purgeConns does: a flow that a CPU records
// meanwhile in the same entry, under another id, keeps it, or at worst
// (its tag the same) loses it and is placed by Maglev again; it is never
// sent to the moved id's new address.
func (b *Balancer) purgeBackendConns(previous map[uint32]netip.Addr) error {
	cleared, err := b.clearBackendConns(previous)
	if err != nil {
		return fmt.Errorf("clear the connection entries of backend ids given a new address: %w", err)
	}
	for id, n := range cleared {
		b.log.Info("backend id given a new address: the connection entries of its previous one cleared, their flows placed by Maglev again",
			"backend_id", id, "previous", previous[id], "address", fromAddr(b.backendCopies[id].Addr), "entries", n)
	}
	return nil
}

// clearBackendConns empties every connection entry pinned to a backend id
// in ids and returns how many it emptied of each, by compare-and-swap of
// the tag (see purgeBackendConns).
func (b *Balancer) clearBackendConns(ids map[uint32]netip.Addr) (map[uint32]int, error) {
	cleared := map[uint32]int{}
	// A dense mark per id: the scan looks up every recorded entry (a
	// million at the default size, at load), where a map lookup each
	// would cost tens of milliseconds.
	var marked [MaxBackends]bool
	for id := range ids {
		if id < MaxBackends {
			marked[id] = true
		}
	}
	err := b.withConnSets(true, func(sets []balancerConnSet) {
		for i := range sets {
			s := &sets[i]
			for w := range s.Tag {
				tag := atomic.LoadUint32(&s.Tag[w])
				if tag == connTagEmpty || tag == connTagBusy {
					continue
				}
				// The value word's low half: the backend id.
				id := uint32(atomic.LoadUint64((*uint64)(unsafe.Pointer(&s.Slot[w].BackendId))))
				if id < MaxBackends && marked[id] && atomic.CompareAndSwapUint32(&s.Tag[w], tag, connTagEmpty) {
					cleared[id]++
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return cleared, nil
}

// eachConnBatch reads the connection table m in batches, from its first
// set, and calls fn with each batch's keys and sets.
func eachConnBatch(m *ebpf.Map, fn func(keys []uint32, sets []balancerConnSet) error) error {
	const chunk = 1024
	keys := make([]uint32, chunk)
	sets := make([]balancerConnSet, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, sets, nil)
		if n > 0 {
			if ferr := fn(keys[:n], sets[:n]); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Flows calls fn for every connection-table entry that the datapath would
// use (see connView.usable) until fn returns false.
func (b *Balancer) Flows(fn func(FlowKey, Conn) bool) error {
	v, err := b.connView()
	if err != nil {
		return err
	}
	return b.eachConnSet(func(s *balancerConnSet) bool {
		for w := range s.Tag {
			if connValid(s, w) && v.usable(s, w) && !fn(fromFlowKey(s.Slot[w].Key), b.connOf(s, w, v.now)) {
				return false
			}
		}
		return true
	})
}

// LookupFlow returns the connection entry of a flow, if the datapath would
// use it (see connView.usable).
func (b *Balancer) LookupFlow(f FlowKey) (Conn, bool, error) {
	key := toFlowKey(f)
	sum := flowSum(key)
	v, err := b.connView()
	if err != nil {
		return Conn{}, false, err
	}
	var s balancerConnSet
	if err := b.objs.Conns.Lookup(connSetOf(sum, b.objs.Conns.MaxEntries()), &s); err != nil {
		return Conn{}, false, fmt.Errorf("read connection table: %w", err)
	}
	for w, tag := range s.Tag {
		if tag == connTag(sum) && s.Slot[w].Key == key && connValid(&s, w) && v.usable(&s, w) {
			return b.connOf(&s, w, v.now), true, nil
		}
	}
	return Conn{}, false, nil
}

// CountFlows counts the connection-table entries the datapath would use,
// as Flows lists them, in total and by VIP and backend, with those of
// them that saw a packet within ActiveFlowWindow (one scan of the whole
// table: 64 MiB at the default size).
func (b *Balancer) CountFlows() (FlowCounts, error) {
	out := FlowCounts{ByBackend: map[VIPBackend]FlowCount{}}
	v, err := b.connView()
	if err != nil {
		return out, err
	}
	window := uint64(ActiveFlowWindow) / v.jiffyNs
	// Counted through pointers: one map lookup per entry, no store.
	by := map[VIPBackend]*FlowCount{}
	err = b.eachConnSet(func(s *balancerConnSet) bool {
		for w := range s.Tag {
			if !connValid(s, w) || !v.usable(s, w) {
				continue
			}
			out.Total++
			k := VIPBackend{uint32(s.Slot[w].VipNum), s.Slot[w].BackendId}
			c := by[k]
			if c == nil {
				c = new(FlowCount)
				by[k] = c
			}
			c.Flows++
			if uint64(v.idle(s.Stamp[w])) < window {
				c.Active++
			}
		}
		return true
	})
	for k, c := range by {
		out.ByBackend[k] = *c
	}
	return out, err
}

// ConnTableSize is the capacity of the connection table.
func (b *Balancer) ConnTableSize() uint32 { return b.objs.Conns.MaxEntries() * connWays }

// VIPCounters returns VIP num's counters summed over CPUs, counted from
// when the number was given to the VIP that has it now (vip_stats_base).
func (b *Balancer) VIPCounters(num uint32) (VIPCounters, error) {
	raw, err := b.rawVIPCounters(num)
	if err != nil {
		return VIPCounters{}, err
	}
	var base balancerVipCounters
	if err := b.objs.VipStatsBase.Lookup(num, &base); err != nil {
		return VIPCounters{}, fmt.Errorf("read VIP %d counter baseline: %w", num, err)
	}
	return VIPCounters{
		Packets: since(raw.Packets, base.Packets), Bytes: since(raw.Bytes, base.Bytes),
		NewFlows: since(raw.NewFlows, base.NewFlows), ConnHits: since(raw.ConnHits, base.ConnHits),
		ConnMisses: since(raw.ConnMisses, base.ConnMisses),
	}, nil
}

// rawVIPCounters is VIP number num's vip_stats entry summed over CPUs.
func (b *Balancer) rawVIPCounters(num uint32) (balancerVipCounters, error) {
	var per []balancerVipCounters
	if err := b.objs.VipStats.Lookup(num, &per); err != nil {
		return balancerVipCounters{}, fmt.Errorf("read VIP %d counters: %w", num, err)
	}
	var out balancerVipCounters
	for _, c := range per {
		out.Packets += c.Packets
		out.Bytes += c.Bytes
		out.NewFlows += c.NewFlows
		out.ConnHits += c.ConnHits
		out.ConnMisses += c.ConnMisses
	}
	return out, nil
}

// BackendCounters returns backend id's counters summed over CPUs, counted
// from when the id was given to its address (backend_stats_base).
func (b *Balancer) BackendCounters(id uint32) (BackendCounters, error) {
	raw, err := b.rawBackendCounters(id)
	if err != nil {
		return BackendCounters{}, err
	}
	var base balancerBackendCounters
	if err := b.objs.BackendStatsBase.Lookup(id, &base); err != nil {
		return BackendCounters{}, fmt.Errorf("read backend %d counter baseline: %w", id, err)
	}
	return BackendCounters{Packets: since(raw.Packets, base.Packets), Bytes: since(raw.Bytes, base.Bytes)}, nil
}

func (b *Balancer) rawBackendCounters(id uint32) (balancerBackendCounters, error) {
	var per []balancerBackendCounters
	if err := b.objs.BackendStats.Lookup(id, &per); err != nil {
		return balancerBackendCounters{}, fmt.Errorf("read backend %d counters: %w", id, err)
	}
	var out balancerBackendCounters
	for _, c := range per {
		out.Packets += c.Packets
		out.Bytes += c.Bytes
	}
	return out, nil
}

// since is a counter's count from its baseline. The datapath's counters
// only grow, so a count under its baseline means the baseline is from
// other maps (pins removed and made again between two writes): none.
func since(count, base uint64) uint64 {
	if count < base {
		return 0
	}
	return count - base
}

// restartCounters makes a VIP number's or backend id's counters (raw, as
// they stand) count from zero: raw becomes its baseline in base.
func restartCounters(base *ebpf.Map, key uint32, raw any, what string) error {
	if err := base.Put(key, raw); err != nil {
		return fmt.Errorf("write %s %d counter baseline: %w", what, key, err)
	}
	return nil
}

// Stats returns the global counters by name (see StatNames), summed over
// CPUs. conn_hit and conn_miss are the sums of every VIP number's ConnHits
// and ConnMisses: the datapath counts them per VIP only, and never clears a
// VIP number's counters, so the sums only grow.
func (b *Balancer) Stats() (map[string]uint64, error) {
	// The recorded flows first: a flow counts its fill or refresh before
	// it counts as recorded (on its CPU), so every flow read as recorded
	// is among the fills and refreshes read after, and the evictions
	// derived from them can run behind a packet's counts, never ahead.
	// Read the other way round, a flow recorded between the reads was an
	// eviction, in a table with free entries, and held (below) for good.
	hits, misses, recorded, err := b.vipTotals()
	if err != nil {
		return nil, err
	}
	if b.statsBetweenReads != nil {
		b.statsBetweenReads()
	}
	out, err := readStats(b.objs.Stats, statNames[:])
	if err != nil {
		return nil, err
	}
	base, err := readStat(b.objs.Stats, uint32(balancerSyStatSTAT_CONN_EVICT_BASE))
	if err != nil {
		return nil, fmt.Errorf("read the eviction base: %w", err)
	}
	out["conn_hit"], out["conn_miss"] = hits, misses
	// Evictions, derived (bpf/consts.h, enum sy_stat), held monotonic
	// as a counter must be: a count behind by the flows recorded during
	// the reads does not lower it.
	b.statsMu.Lock()
	defer b.statsMu.Unlock()
	if done := out["conn_filled"] + out["conn_refreshed"] + base; recorded >= done && recorded-done > b.evicted {
		if err := b.keepEvicted(recorded - done); err != nil {
			return nil, err
		}
		b.evicted = recorded - done
	}
	out["conn_evicted"] = b.evicted
	return out, nil
}

// keepEvicted writes n, the conn_evicted about to be reported, to the
// pinned stats map (STAT_CONN_EVICTED: CPU 0's slot, the others 0), where
// the next process over these pins starts from it (loadEvicted): derived
// afresh, its first count could be behind the last one reported, by the
// flows recorded while Stats read, which Prometheus takes for a counter
// reset.
func (b *Balancer) keepEvicted(n uint64) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("count CPUs: %w", err)
	}
	per := make([]uint64, ncpu)
	per[0] = n
	if err := b.objs.Stats.Put(uint32(balancerSyStatSTAT_CONN_EVICTED), per); err != nil {
		return fmt.Errorf("keep conn_evicted in the pinned stats: %w", err)
	}
	return nil
}

// loadEvicted starts conn_evicted at the value kept in STAT_CONN_EVICTED:
// the last one an earlier process over these pins reported (keepEvicted),
// or the count of a release that counted evictions one by one, which it
// reported as it stood.
//
// The value kept there does not confuse syncEvictionBase, which reads it
// only while no fill, refresh or base has ever been counted in these pins:
// those counters never fall, and a new flow evicts only an entry that
// is not empty, which this program filled (counted), unless a release that
// counted no fills did. So a value is kept there with nothing counted only
// over that release's table, and is then what syncEvictionBase takes it
// for: the evictions reported so far.
func (b *Balancer) loadEvicted() error {
	n, err := readStat(b.objs.Stats, uint32(balancerSyStatSTAT_CONN_EVICTED))
	if err != nil {
		return fmt.Errorf("read the evictions reported so far: %w", err)
	}
	b.statsMu.Lock()
	b.evicted = n
	b.statsMu.Unlock()
	return nil
}

// vipTotals sums connection hits, misses and recorded flows over every
// VIP number's counters (never cleared, so the sums never fall).
func (b *Balancer) vipTotals() (hits, misses, recorded uint64, err error) {
	var (
		num uint32
		per []balancerVipCounters
	)
	it := b.objs.VipStats.Iterate()
	for it.Next(&num, &per) {
		for _, c := range per {
			hits += c.ConnHits
			misses += c.ConnMisses
			recorded += c.NewFlows
		}
	}
	if err := it.Err(); err != nil {
		return 0, 0, 0, fmt.Errorf("read VIP counters: %w", err)
	}
	return hits, misses, recorded, nil
}

// syncEvictionBase: an earlier version counted evictions one by one
// (STAT_CONN_EVICTED) and no fills or refreshes. On its pins, the flows it
// recorded that evicted nothing become STAT_CONN_EVICT_BASE, once, so the
// derived count goes on from the earlier one. Pins that already count
// fills, or have recorded nothing, are left alone.
func (b *Balancer) syncEvictionBase() error {
	var done uint64
	for _, i := range []balancerSyStat{balancerSyStatSTAT_CONN_FILLED, balancerSyStatSTAT_CONN_REFRESHED, balancerSyStatSTAT_CONN_EVICT_BASE} {
		n, err := readStat(b.objs.Stats, uint32(i))
		if err != nil {
			return fmt.Errorf("read counter %d: %w", i, err)
		}
		done += n
	}
	if done != 0 {
		return nil
	}
	evicted, err := readStat(b.objs.Stats, uint32(balancerSyStatSTAT_CONN_EVICTED))
	if err != nil {
		return fmt.Errorf("read the evictions counted so far: %w", err)
	}
	_, _, recorded, err := b.vipTotals()
	if err != nil || recorded <= evicted {
		return err
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("count CPUs: %w", err)
	}
	per := make([]uint64, ncpu)
	per[0] = recorded - evicted
	if err := b.objs.Stats.Put(uint32(balancerSyStatSTAT_CONN_EVICT_BASE), per); err != nil {
		return fmt.Errorf("write the eviction base: %w", err)
	}
	return nil
}

// readStat is per-CPU counter i of m summed over CPUs.
func readStat(m *ebpf.Map, i uint32) (uint64, error) {
	var per []uint64
	if err := m.Lookup(i, &per); err != nil {
		return 0, err
	}
	var sum uint64
	for _, v := range per {
		sum += v
	}
	return sum, nil
}

func readStats(m *ebpf.Map, names []string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(names))
	for i, name := range names {
		if name == "" {
			continue // an index the datapath no longer counts
		}
		n, err := readStat(m, uint32(i))
		if err != nil {
			return nil, fmt.Errorf("read counter %s: %w", name, err)
		}
		out[name] = n
	}
	return out, nil
}

// statsPin is the pin of the global counters; adoptStats pins their
// successor as statsPin + "_new" for a moment.
const statsPin = "stats"

// statNames are the global counters, in the order of enum sy_stat. Names
// starting with "drop_" are drop reasons; indices without a name are no
// longer counted.
var statNames = [balancerSyStatSTAT_MAX]string{
	balancerSyStatSTAT_PASS_MALFORMED:      "pass_malformed",
	balancerSyStatSTAT_CONN_HIT:            "conn_hit",
	balancerSyStatSTAT_CONN_MISS:           "conn_miss",
	balancerSyStatSTAT_UDP_EXPIRED:         "udp_expired",
	balancerSyStatSTAT_ICMP_ECHO_REPLY:     "icmp_echo_reply",
	balancerSyStatSTAT_ICMP_TOO_BIG_FWD:    "icmp_too_big_forwarded",
	balancerSyStatSTAT_ICMP_TOO_BIG_SENT:   "icmp_too_big_sent",
	balancerSyStatSTAT_DROP_FRAGMENT:       "drop_fragment",
	balancerSyStatSTAT_DROP_TRUNCATED:      "drop_truncated",
	balancerSyStatSTAT_DROP_NO_BACKEND:     "drop_no_backend",
	balancerSyStatSTAT_DROP_NO_NEXTHOP:     "drop_no_nexthop",
	balancerSyStatSTAT_DROP_TOO_BIG:        "drop_too_big",
	balancerSyStatSTAT_DROP_ADJUST:         "drop_adjust_failed",
	balancerSyStatSTAT_DROP_ICMP_INVALID:   "drop_icmp_invalid",
	balancerSyStatSTAT_CONN_INSERT_RACE:    "conn_insert_race",
	balancerSyStatSTAT_CONN_FILLED:         "conn_filled",
	balancerSyStatSTAT_CONN_REFRESHED:      "conn_refreshed",
	balancerSyStatSTAT_DROP_INVALID_SOURCE: "drop_invalid_source",
}
