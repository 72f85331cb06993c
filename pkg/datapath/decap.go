package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Decap is the backend-side program that strips Switchyard's encapsulation.
type Decap struct {
	objs   decapObjects
	pinDir string
	log    *slog.Logger
	link   link.Link
	// ifindex: of the interface the link was attached to; nl: a netlink
	// socket in that interface's network namespace, opened at Attach, so
	// that CheckAttached names what the interface runs from any thread.
	ifindex int
	nl      *netlink.Handle
	// upgrade: the pins that swap to this program's maps once it runs.
	upgrade upgradePins
}

// LoadDecap loads the decap program, reusing maps pinned under pinDir ("" =
// unpinned).
func LoadDecap(pinDir string, log *slog.Logger) (*Decap, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	spec, err := loadDecap()
	if err != nil {
		return nil, fmt.Errorf("read decap object: %w", err)
	}
	d := &Decap{pinDir: pinDir, log: log}
	if pinDir != "" {
		if _, err := resumeUpgrade(pinDir, map[string]*ebpf.MapSpec{decapStatsPin: spec.Maps[decapStatsPin]}, log); err != nil {
			return nil, err
		}
		stats, err := adoptStats(decapStatsPin, "decap", spec.Maps[decapStatsPin], pinDir, log)
		if err != nil {
			return nil, fmt.Errorf("move the pinned decap counters to this release's map: %w", err)
		}
		if stats != nil {
			d.upgrade.staged = append(d.upgrade.staged, stats)
		}
	}
	if err := loadCollection(spec, pinDir, d.upgrade.replacements(), &d.objs,
		"they come from another version of the agent: run `switchyard remove --agent --config FILE` to start afresh (decapsulation stops until the agent is up again)"); err != nil {
		d.upgrade.close()
		return nil, err
	}
	return d, nil
}

// Attach attaches (or hitlessly replaces) the decap program on iface.
func (d *Decap) Attach(iface string, mode AttachMode) (AttachResult, error) {
	l, res, err := attachProgram(d.objs.XdpDecap, iface, mode, d.pinDir, decapHints, d.log)
	err = commitUpgrade(&d.upgrade, d.objs.XdpDecap, d.pinDir, err)
	if l == nil {
		return res, err
	}
	if d.link != nil && d.pinDir != "" {
		// A handle of the pinned link that l updated or replaced:
		// the pin keeps what must stay attached. (Unpinned, the
		// handle is the attachment.)
		d.link.Close()
	}
	d.link = l
	d.ifindex = linkIfindex(l)
	if d.nl == nil {
		var nerr error
		if d.nl, nerr = netlink.NewHandle(unix.NETLINK_ROUTE); nerr != nil {
			// Only CheckAttached's word on what the interface runs
			// instead needs it: it then looks in the calling
			// thread's namespace.
			d.log.Warn("open netlink for the decap program's attachment check", "error", nerr)
		}
	}
	return res, err
}

// ErrLinkNotPinned: the link the decap program is attached through has no
// pin in the pin directory, and it cannot be pinned again there.
var ErrLinkNotPinned = errors.New("the decap program's link is not pinned")

// RestoreLinkPin checks that the link the program is attached through is
// pinned in the pin directory, and pins it again if someone removed the pin
// (rm, or a tool that cleans bpffs). The handle Decap holds keeps the
// program attached meanwhile, but only while the process lives: once it
// ends (a kill, an in-place upgrade) the program goes, and a new run finds
// no link to take over. It reports whether it pinned the link again; an
// error wraps ErrLinkNotPinned when the pin stays missing. Without a pin
// directory, or before Attach, there is nothing to check.
func (d *Decap) RestoreLinkPin() (bool, error) {
	return restoreLinkPin(d.link, d.pinDir, ErrLinkNotPinned, "decap program", "agent", d.log)
}

// ErrMapsNotPinned: a map of the decap program has no pin in the pin
// directory, and it cannot be pinned again there.
var ErrMapsNotPinned = errors.New("the decap program's maps are not all pinned")

// RestoreMapPins checks that the decap program's maps (its addresses, its
// configuration and its counters) are pinned in the pin directory, and
// pins again those whose pin someone removed, as RestoreLinkPin does the
// link (see restoreMapPins): without their pins the next run of the agent
// creates them afresh (resumeUpgrade takes the counters back through the
// link pin, if that is there). It returns the names it pinned again; an error wraps
// ErrMapsNotPinned when a pin stays missing.
func (d *Decap) RestoreMapPins() ([]string, error) {
	return restoreMapPins(d.pinDir, map[string]*ebpf.Map{
		"decap_addrs": d.objs.DecapAddrs, "decap_cfg": d.objs.DecapCfg, decapStatsPin: d.objs.DecapStats,
	}, ErrMapsNotPinned, "decap program", "agent")
}

// ErrDecapDetached: the decap program no longer runs on its interface,
// though its link is still held.
var ErrDecapDetached = errors.New("the decap program is not attached to its interface: encapsulated packets are not decapsulated")

// CheckAttached checks that the program still runs on the interface it was
// attached to (see checkAttached, the balancer's check too): its link
// detached (`bpftool link detach`) or made to run another program is an
// error wrapping ErrDecapDetached that says what the interface runs now.
// It may run on any thread. Before Attach there is nothing to check.
func (d *Decap) CheckAttached() error {
	return checkAttached(d.link, d.objs.XdpDecap, d.ifindex, d.nl, ErrDecapDetached, "decap program", "agent")
}

// SetGUEPort sets the UDP port of GUE packets to decapsulate (0: none).
func (d *Decap) SetGUEPort(port uint16) error {
	c := decapDecapConfig{GuePort: htons(port)}
	if err := d.objs.DecapCfg.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write decap config: %w", err)
	}
	return nil
}

// SetAddrs makes addrs the exact set of outer destinations to decapsulate.
// More than the map holds fail with ErrTooManyDecapAddrs before any change:
// the set in force stays whole.
func (d *Decap) SetAddrs(addrs []netip.Addr) error {
	want := map[balancerAddr]bool{}
	for _, a := range addrs {
		want[toAddr(a)] = true
	}
	if limit := d.objs.DecapAddrs.MaxEntries(); uint32(len(want)) > limit {
		return fmt.Errorf("%d addresses, at most %d: %w", len(want), limit, ErrTooManyDecapAddrs)
	}
	var key balancerAddr
	var v uint32
	var stale []balancerAddr
	it := d.objs.DecapAddrs.Iterate()
	for it.Next(&key, &v) {
		if !want[key] {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate decap addresses: %w", err)
	}
	for _, k := range stale {
		if err := d.objs.DecapAddrs.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete decap address %s: %w", fromAddr(k), err)
		}
	}
	for k := range want {
		if err := d.objs.DecapAddrs.Put(&k, uint32(1)); err != nil {
			return fmt.Errorf("add decap address %s: %w", fromAddr(k), err)
		}
	}
	return nil
}

// Stats returns the decap counters by name, summed over CPUs.
func (d *Decap) Stats() (map[string]uint64, error) {
	return readStats(d.objs.DecapStats, decapStatNames[:])
}

// Close releases file descriptors; pins (and the attachment) stay.
func (d *Decap) Close() error {
	if d.link != nil {
		d.link.Close()
	}
	if d.nl != nil {
		d.nl.Close()
	}
	d.upgrade.close()
	return d.objs.Close()
}

// RemoveDecap detaches the decap program pinned under pinDir and deletes its pins.
func RemoveDecap(pinDir string) error { return removePinned(pinDir, false) }

// RemoveDecapPins is RemoveDecap that keeps pinDir itself, empty: for a
// failed start in a directory it did not create (one an admin prepared,
// with its owner and mode), which must leave it as found.
func RemoveDecapPins(pinDir string) error { return removePinned(pinDir, true) }

var decapStatNames = [decapDecapStatDECAP_STAT_MAX]string{
	decapDecapStatDECAP_STAT_IPIP:            "decap_ipv4_outer",
	decapDecapStatDECAP_STAT_IP6:             "decap_ipv6_outer",
	decapDecapStatDECAP_STAT_GUE:             "decap_gue",
	decapDecapStatDECAP_STAT_PASS:            "pass",
	decapDecapStatDECAP_STAT_DROP_INNER:      "drop_inner_not_ip",
	decapDecapStatDECAP_STAT_DROP_ADJUST:     "drop_adjust_failed",
	decapDecapStatDECAP_STAT_DROP_CE_NOT_ECT: "drop_ce_not_ect",
	// Not dropped here: passed untouched, and the stack drops them.
	decapDecapStatDECAP_STAT_BAD_OUTER_CSUM:     "bad_outer_csum",
	decapDecapStatDECAP_STAT_BAD_OUTER_IP_LEN:   "bad_outer_ip_len",
	decapDecapStatDECAP_STAT_BAD_OUTER_UDP_LEN:  "bad_outer_udp_len",
	decapDecapStatDECAP_STAT_BAD_OUTER_UDP_CSUM: "bad_outer_udp_csum",
	decapDecapStatDECAP_STAT_BAD_OUTER_SRC:      "bad_outer_src",
}

// decapStatsPin is the pin of the decap counters; adoptStats pins their
// successor as decapStatsPin + "_new" for a moment.
const decapStatsPin = "decap_stats"

// adoptStats brings counters pinned under name by an earlier release,
// which had fewer reasons (a smaller map: new reasons go last, so every
// earlier index means the same), to this release's size: it copies every
// CPU's counts into a new map, which takes the old one's pin once this
// program runs (see upgradePins). The program still attached counts into
// the old map until Attach swaps this one in: the few packets it counts in
// between are not carried over. A map of another kind, or a larger one (a
// later release's), is left to loadCollection, which refuses it. what
// names the counters in the log. nil: nothing to move.
func adoptStats(name, what string, spec *ebpf.MapSpec, pinDir string, log *slog.Logger) (*stagedPin, error) {
	path := filepath.Join(pinDir, name)
	old, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer old.Close()
	if old.Type() != spec.Type || old.KeySize() != spec.KeySize || old.ValueSize() != spec.ValueSize ||
		old.MaxEntries() >= spec.MaxEntries {
		return nil, nil
	}
	staged, err := stagePin(name, path, spec, func(m *ebpf.Map) error {
		var perCPU []uint64
		for i := range old.MaxEntries() {
			if err := old.Lookup(i, &perCPU); err != nil {
				return fmt.Errorf("read entry %d: %w", i, err)
			}
			if err := m.Put(i, perCPU); err != nil {
				return fmt.Errorf("write entry %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	log.Info(what+" counters copied to this release's larger map", "counters", spec.MaxEntries, "earlier", old.MaxEntries())
	return staged, nil
}
