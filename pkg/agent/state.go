package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/ethtool"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultStateDir holds the agents' state files. It is a tmpfs on every
// systemd host: a reboot clears the records together with the changes
// they describe.
const DefaultStateDir = "/run/switchyard"

// stateFormat names the layout of the state file. A change an earlier
// release would misread takes a new name: a run then refuses the file
// instead of undoing the wrong things.
const stateFormat = "switchyard-agent-state/2"

// stateFormatV1 is the previous release's layout: the same record without
// pin_dir. It is read as it is; another agent's is taken for running (see
// readPeers).
const stateFormatV1 = "switchyard-agent-state/1"

// hostLockName is the file, in the state directory, whose flock
// serialises the agents of a host while they decide what to share: a VIP
// or sysctl that one agent set and another needs as well (see peers).
const hostLockName = "agents.lock"

// ErrState: the state file of an earlier run cannot be used.
var ErrState = errors.New("agent state file cannot be used")

// stateRecord is what the agent has changed on the host, written before
// each change, so that a run after a crash undoes its predecessor's
// changes as its own instead of taking them for the admin's.
type stateRecord struct {
	Format string `json:"format"`
	// BootID and NetNS say where the changes were made: a record from
	// before a reboot or from another network namespace describes
	// changes that are gone.
	BootID string `json:"boot_id"`
	NetNS  uint64 `json:"netns"`
	// PinDir is the writer's pin directory, which it holds a lock on
	// while it runs: other agents tell from it, or from the lock beside
	// the record (see runLockPath), whether the writer is alive (see
	// readPeers).
	PinDir  string         `json:"pin_dir,omitempty"`
	Sysctls []sysctlRecord `json:"sysctls"` // in the order they were set
	VIPs    []netip.Prefix `json:"vips"`    // added to lo
	// GRO: the interface on which the agent turned GRO off (generic
	// mode). Left out when none, so that a file without it stays
	// readable by the previous release.
	GRO *groRecord `json:"gro,omitempty"`
}

// sysctlRecord is one sysctl the agent changed: conf/dev/key, relative to
// /proc/sys.
type sysctlRecord struct {
	Conf string `json:"conf"`
	Dev  string `json:"dev"`
	// Ifindex is Dev's index when Dev is an interface (0 for "all"): a
	// run after the interface was renamed finds its settings by it.
	Ifindex int    `json:"ifindex,omitempty"`
	Key     string `json:"key"`
	Old     string `json:"old"` // found before the first run changed it
	Set     string `json:"set"` // what the agent wrote
}

func (r sysctlRecord) path() string { return filepath.Join(r.Conf, r.Dev, r.Key) }

// stateFile names the state file of the agent with pinDir, which one agent
// at a time holds: for the default pin directory agent-<interface>.json,
// for any other the last element of the path and a hash of all of it.
func stateFile(dir, pinDir, iface string) string {
	clean := filepath.Clean(pinDir)
	if clean == datapath.DefaultAgentPinDir(iface) {
		return filepath.Join(dir, "agent-"+iface+".json")
	}
	sum := sha256.Sum256([]byte(clean))
	return filepath.Join(dir, fmt.Sprintf("agent-%s-%x.json", filepath.Base(clean), sum[:6]))
}

// hostID returns the boot and the network namespace (of the calling
// thread) the agent changes.
func hostID() (bootID string, netns uint64, err error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", 0, fmt.Errorf("read boot id: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return "", 0, fmt.Errorf("identify the network namespace: %w", err)
	}
	return strings.TrimSpace(string(b)), st.Ino, nil
}

// readState returns the record of an earlier run, nil if there is none.
func readState(path string) (*stateRecord, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	const undo = "it lists the sysctls and VIPs an earlier run of the agent changed and did not undo (it did not stop cleanly): " +
		"set those sysctls back and delete those VIPs from lo by hand where need be (the README, Operations, says which the agent changes), turn GRO on again if it names gro (`ethtool -K IFACE gro on`), then remove the file and start the agent again"
	if err != nil {
		return nil, fmt.Errorf("read %s: %w: %w; %s", path, ErrState, err, undo)
	}
	var probe struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("parse %s: %w: %w; %s", path, ErrState, err, undo)
	}
	if probe.Format != stateFormat && probe.Format != stateFormatV1 {
		return nil, fmt.Errorf("%s: %w: format %q, this release reads %q; another release of switchyard wrote it and did not stop cleanly: "+
			"start that release again and stop it with SIGTERM, so that it undoes its changes; or %s",
			path, ErrState, probe.Format, stateFormat, undo)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var rec stateRecord
	if err := dec.Decode(&rec); err != nil {
		return nil, fmt.Errorf("parse %s: %w: %w; %s", path, ErrState, err, undo)
	}
	for _, s := range rec.Sysctls {
		if s.Conf != ipv4Conf || !validName(s.Dev) || !validName(s.Key) {
			return nil, fmt.Errorf("%s: %w: sysctl %q is not one the agent sets; %s", path, ErrState, s.path(), undo)
		}
	}
	if g := rec.GRO; g != nil && (!validName(g.Dev) || g.Ifindex <= 0) {
		return nil, fmt.Errorf("%s: %w: gro names no interface (dev %q, ifindex %d); %s", path, ErrState, g.Dev, g.Ifindex, undo)
	}
	return &rec, nil
}

// loadState reads the record of an earlier run that did not stop cleanly
// and takes over what it changed that is still as it left it: a sysctl
// still at the value it wrote, a VIP still on lo. Those Stop undoes as if
// this run had made them, the rest is someone else's since. What this run
// would not have changed (a VIP no longer configured, a setting of another
// interface) is undone at once. It runs under the pin directory's lock.
//
// If it fails part-way, it gives up what it took over (see leaveRecord):
// the record stays as the earlier run left it, so that what it had not yet
// taken over is not dropped from it when the failed start, or remove,
// removes the record.
func (a *Agent) loadState() (err error) {
	if a.bootID, a.netns, err = hostID(); err != nil {
		return err
	}
	a.removeStaleTemps()
	rec, err := readState(a.statePath)
	if err != nil {
		return err
	}
	a.stateHeld = true
	if rec == nil {
		return nil
	}
	if rec.BootID != a.bootID || rec.NetNS != a.netns {
		a.log.Info("state of a run before a reboot or in another network namespace: its changes are gone", "file", a.statePath)
		return a.saveState()
	}
	a.log.Warn("an earlier run did not stop cleanly: taking over its changes", "file", a.statePath)
	defer func() {
		if err != nil {
			a.leaveRecord()
		}
	}()
	for _, r := range rec.Sysctls {
		s, err := a.adoptSysctl(r)
		if err != nil {
			return err
		}
		if s != nil {
			a.sysctls = append(a.sysctls, s)
		}
	}
	if rec.GRO != nil {
		if err := a.adoptGRO(*rec.GRO); err != nil {
			return err
		}
	}
	lo, err := a.nl.LinkByName(loopback)
	if err != nil {
		return fmt.Errorf("find %s: %w", loopback, err)
	}
	present, err := a.loAddrs(lo)
	if err != nil {
		return err
	}
	for _, p := range rec.VIPs {
		if _, ok := present[p.Addr()]; ok && !slices.Contains(a.added, p) {
			a.added = append(a.added, p)
		} else {
			a.log.Info("VIP the earlier run added is no longer on lo", "vip", p)
		}
	}
	if err := a.undoUnwanted(); err != nil {
		return err
	}
	return a.saveState()
}

// leaveRecord gives up, undoing nothing, the changes loadState took over
// when it failed part-way: its record stays as the earlier run wrote it,
// listing them with those it had not yet taken over, for the next start
// or `remove --agent`. (What it undid already, a setting of another
// interface or a VIP no longer configured, is found so by the next run,
// which leaves it.) Undone and then removed with the record, the rest
// would stay on the host unrecorded: VIPs the next run takes for the
// admin's.
func (a *Agent) leaveRecord() {
	a.log.Warn("cannot take over the earlier run's changes: they are left as they are, recorded, for the next start or `switchyard remove --agent`", "file", a.statePath)
	for _, s := range a.sysctls {
		s.f.Close()
	}
	a.sysctls, a.added, a.gro = nil, nil, nil
	a.stateHeld = false
}

// adoptSysctl opens the setting r recorded, under the current name of its
// interface (see recordedLink), and returns it if it still has the value
// the earlier run wrote (nil if it is gone or was changed since). Another
// device at the recorded index is left as it is: its settings are its
// own, though the admin may well have given it the values the agent sets.
func (a *Agent) adoptSysctl(r sysctlRecord) (*sysctl, error) {
	if r.Ifindex != 0 {
		l, other, err := a.recordedLink(r.Dev, r.Ifindex)
		if err != nil {
			return nil, fmt.Errorf("find interface %s (index %d), whose sysctl %s the earlier run set: %w", r.Dev, r.Ifindex, dotted(r.path()), err)
		}
		if l == nil {
			a.log.Info(a.sysctlGone(r, other))
			return nil, nil
		}
		r.Dev = l.Attrs().Name
	}
	name := dotted(r.path())
	f, err := os.OpenFile(filepath.Join(procSys, r.path()), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open sysctl %s: %w", name, err)
	}
	cur, err := readSysctl(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read sysctl %s: %w", name, err)
	}
	if cur != r.Set {
		a.log.Info("sysctl changed since the earlier run set it: left as it is", "key", name, "value", cur, "found_before", r.Old)
		f.Close()
		return nil, nil
	}
	return &sysctl{name: name, f: f, sysctlRecord: r}, nil
}

// recordedLink returns the device that is the interface an earlier run
// recorded as dev, of index ifindex: the device at that index if it has
// the name, or, under another name, while the earlier run's pinned link
// still drives it (the interface renamed since: deleting an interface
// detaches its link). Otherwise l is nil: the interface is gone, and
// other names the device given its index since (`ip link add ... index
// N`, or one moved into the namespace, which keeps its index), which the
// earlier run never touched ("" if none). A netlink error other than a
// missing device says nothing of either, and is returned.
func (a *Agent) recordedLink(dev string, ifindex int) (l netlink.Link, other string, err error) {
	l, other, err = a.interfaceAt(dev, ifindex)
	if l != nil && dev != "" && l.Attrs().Name != dev {
		a.log.Info("interface renamed since the earlier run", "was", dev, "now", l.Attrs().Name, "ifindex", ifindex)
	}
	return l, other, err
}

// interfaceAt is recordedLink without its line: the device that is the
// interface recorded as dev, of index ifindex, or nil and the name of
// another device at the index. A running agent follows its own
// interface's renames by it too (see readSysctlOf): its link is pinned.
func (a *Agent) interfaceAt(dev string, ifindex int) (l netlink.Link, other string, err error) {
	// The balancer's rule for its GRO record, by name and index.
	l, other, err = ethtool.GROOff{Dev: dev, Ifindex: ifindex}.Find(a.nl.LinkByIndex)
	if err != nil || other == "" {
		return l, "", err
	}
	if datapath.PinnedLinkOn(a.pinDir, l) {
		return l, "", nil
	}
	return nil, other, nil
}

// currentInterface returns the device that is the running agent's
// interface, found as interfaceAt finds a record's: the device at its
// index under the configured name, or under another one while the
// agent's pinned link drives it (renamed while the agent runs). nil: the
// interface is gone, though another device may have its index since
// (`ip link add ... index N`, or one moved into the namespace), which is
// not the agent's.
func (a *Agent) currentInterface() (netlink.Link, error) {
	l, _, err := a.interfaceAt(a.iface, a.ifindex)
	return l, err
}

// sysctlGone says that the interface of the setting r recorded is gone,
// its record dropped, in the words of the GRO record's line (see
// ethtool.GROOff.Gone); other is the device at its index now, if any.
func (a *Agent) sysctlGone(r sysctlRecord, other string) string {
	s := fmt.Sprintf("interface %s (index %d), whose sysctl %s the agent set, is gone: its sysctl record in %s dropped", r.Dev, r.Ifindex, dotted(r.path()), a.statePath)
	if other != "" {
		o := r
		o.Dev = other
		s += fmt.Sprintf(" (index %d is %s now, left as it is; if that is %s renamed and %s is still %s, set it back with `sysctl -w %s=%s`)",
			r.Ifindex, other, r.Dev, dotted(o.path()), r.Set, dotted(o.path()), r.Old)
	}
	return s
}

// undoUnwanted undoes the adopted changes this run would not make.
func (a *Agent) undoUnwanted() error {
	want := map[string]bool{}
	for _, r := range dsrSysctls(a.iface) {
		want[r.path()] = !a.removing
	}
	var undo []*sysctl
	a.sysctls = slices.DeleteFunc(a.sysctls, func(s *sysctl) bool {
		if s.Ifindex != 0 && s.Ifindex != a.ifindex || !want[s.path()] {
			undo = append(undo, s)
			return true
		}
		return false
	})
	var errs []error
	for i := len(undo) - 1; i >= 0; i-- {
		if err := a.restoreSysctl(undo[i]); err != nil {
			errs = append(errs, err)
		}
	}
	var gone []netip.Prefix
	a.added = slices.DeleteFunc(a.added, func(p netip.Prefix) bool {
		if a.removing || !slices.Contains(a.vips, p.Addr()) {
			gone = append(gone, p)
			return true
		}
		return false
	})
	if len(gone) > 0 {
		a.log.Info("removing VIPs no longer configured that the earlier run added", "vips", fmt.Sprint(gone))
		if err := a.deleteVIPs(gone); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// saveState records the current changes: written to a temporary file that
// replaces the old record, so a crash leaves one or the other whole.
func (a *Agent) saveState() error {
	rec := stateRecord{Format: stateFormat, BootID: a.bootID, NetNS: a.netns, PinDir: a.pinDir, VIPs: a.added, GRO: a.gro}
	for _, s := range a.sysctls {
		rec.Sysctls = append(rec.Sysctls, s.sysctlRecord)
	}
	data, err := json.MarshalIndent(rec, "", "\t")
	if err != nil {
		return err
	}
	why := "the agent records there what it changes on the host, so that a run after a crash can undo it; make the directory writable (it follows the agent's api.socket)"
	dir := filepath.Dir(a.statePath)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create state directory %s: %w (%s)", dir, err, why)
	}
	f, err := os.CreateTemp(dir, filepath.Base(a.statePath)+".tmp*")
	if err != nil {
		return fmt.Errorf("write state file %s: %w (%s)", a.statePath, err, why)
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), a.statePath)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write state file %s: %w (%s)", a.statePath, err, why)
	}
	return nil
}

// removeStaleTemps removes the temporary files saveState left beside the
// record when an earlier run was killed while it wrote one. The pin
// directory's lock makes this agent the record's only writer, so none of
// them is being written.
func (a *Agent) removeStaleTemps() {
	dir, prefix := filepath.Dir(a.statePath), filepath.Base(a.statePath)+".tmp"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return // no directory yet, or saveState says what is wrong with it
	}
	for _, e := range entries {
		// os.CreateTemp's random part is decimal digits.
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || rest == "" || strings.Trim(rest, "0123456789") != "" || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			a.log.Warn("cannot remove the temporary state file an earlier run left", "file", path, "error", err)
			continue
		}
		a.log.Info("removed the temporary state file an earlier run left when it was killed", "file", path)
	}
}

// dropState removes the state file once everything it recorded is undone.
func (a *Agent) dropState() error {
	if err := os.Remove(a.statePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove state file %s: %w", a.statePath, err)
	}
	return nil
}

// validName reports whether s is one element of a path.
func validName(s string) bool { return s != "" && s != "." && s != ".." && !strings.Contains(s, "/") }

func dotted(path string) string { return strings.ReplaceAll(path, "/", ".") }

// lockHost takes the state directory's host lock (see hostLockName), and
// reads the records of the other agents of this host and network
// namespace, which hold still while it is held: an agent writes its
// record only under this lock. A lock already held is kept. The wait for
// it ends early, with ctx's error, when ctx is done.
func (a *Agent) lockHost(ctx context.Context) error {
	if a.hostLock != nil {
		return nil
	}
	dir := filepath.Dir(a.statePath)
	path := filepath.Join(dir, hostLockName)
	why := "the agents of a host lock it while they decide which VIPs and sysctls they share; make the directory writable (it follows the agent's api.socket)"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create state directory %s: %w (%s)", dir, err, why)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open agents' lock %s: %w (%s)", path, err, why)
	}
	if err := flockWithin(ctx, f, path, a.hostLockWait, a.log); err != nil {
		f.Close()
		if ctx.Err() != nil {
			return fmt.Errorf("wait for the agents' lock %s: %w", path, err)
		}
		return fmt.Errorf("lock %s: %w (%s)", path, err, why)
	}
	a.hostLock = f
	if a.bootID == "" {
		if a.bootID, a.netns, err = hostID(); err != nil {
			a.unlockHost()
			return err
		}
	}
	a.peers = a.readPeers(dir)
	return nil
}

// defaultHostLockWait bounds the wait for the host lock, which an agent
// holds only while it adds or removes VIPs and sysctls: a few
// milliseconds.
const defaultHostLockWait = 30 * time.Second

// errLockHeld: the host lock stayed taken for all of the agent's
// hostLockWait.
var errLockHeld = errors.New("another agent of this host has held it too long")

// flockWithin takes f's exclusive flock, waiting at most wait, or until
// ctx is done (its error then); after a second it logs that it waits, so
// a hung agent holding the lock shows.
func flockWithin(ctx context.Context, f *os.File, path string, wait time.Duration, log *slog.Logger) error {
	start := time.Now()
	logged := false
	retry := time.NewTicker(20 * time.Millisecond)
	defer retry.Stop()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		waited := time.Since(start)
		if waited >= wait {
			return fmt.Errorf("%w (%s; find it with `fuser -v %s`, stop or kill it, then try again)", errLockHeld, wait, path)
		}
		if !logged && waited >= time.Second {
			log.Warn("waiting for the agents' host lock, which another agent holds", "lock", path)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-retry.C:
		}
	}
}

// unlockHost releases the host lock, if held.
func (a *Agent) unlockHost() {
	if a.hostLock != nil {
		a.hostLock.Close() // releases the flock
		a.hostLock = nil
	}
	a.peers = nil
}

// peer is another agent's record in the same state directory.
type peer struct {
	path  string
	rec   *stateRecord
	alive bool // it runs now (or is being removed)
}

// readPeers returns the records of the other agents in dir that made
// their changes in this boot and network namespace. A record that cannot
// be read is skipped: its agent refuses to start on it until the admin
// has dealt with it.
func (a *Agent) readPeers(dir string) []peer {
	paths, err := filepath.Glob(filepath.Join(dir, "agent-*.json"))
	if err != nil {
		return nil
	}
	var out []peer
	for _, path := range paths {
		if path == a.statePath {
			continue
		}
		rec, err := readState(path)
		if err != nil || rec == nil || rec.BootID != a.bootID || rec.NetNS != a.netns {
			continue
		}
		// A previous release's record (no pin_dir) cannot say whether
		// its agent runs: during a rolling upgrade it likely does, so it
		// counts as running. At worst a VIP it recorded stays on lo
		// after this agent's stop, until that agent's next run or
		// `remove --agent` undoes its own record.
		// An agent runs while it holds either lock: the pin
		// directory's goes with the directory when someone removes it
		// by hand (rm -r, a clean-up of bpffs); the run lock, beside
		// the record, is not held by agents of the previous release.
		alive := rec.PinDir == "" || pinDirHeld(rec.PinDir) || runLockHeld(path)
		out = append(out, peer{path: path, rec: rec, alive: alive})
	}
	return out
}

// holdLiveness marks the pin directory held by this agent with an open
// file description lock, which goes with the descriptor (and so with the
// process, however it ends). Other agents test it with F_OFD_GETLK, which
// takes no lock: unlike a probe of the directory's flock, it never makes
// an agent starting at that moment take the directory for another's.
func holdLiveness(dir *os.File) error {
	lk := unix.Flock_t{Type: unix.F_RDLCK}
	return unix.FcntlFlock(dir.Fd(), unix.F_OFD_SETLK, &lk)
}

// runLockPath names the file beside the state file statePath on which its
// agent holds a lock while it runs (see lockRun): agent-eth0.json.lock for
// agent-eth0.json, which readPeers's glob of records does not take for
// one.
func runLockPath(statePath string) string { return statePath + ".lock" }

// runLockHeld reports whether the agent whose record is statePath runs:
// it holds its run lock. Tested with F_OFD_GETLK, as pinDirHeld does,
// which takes no lock, so that a probe never keeps that agent from
// starting.
func runLockHeld(statePath string) bool {
	f, err := os.Open(runLockPath(statePath))
	if err != nil {
		return false // none: an agent of the previous release, or none running
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}

// pinDirHeld reports whether a running agent holds the pin directory dir.
func pinDirHeld(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}

// sharedVIP returns the state file of another agent that recorded p as
// added to lo and, with alive, runs now ("" if none).
func (a *Agent) sharedVIP(p netip.Prefix, alive bool) string {
	for _, o := range a.peers {
		if (o.alive || !alive) && slices.Contains(o.rec.VIPs, p) {
			return o.path
		}
	}
	return ""
}

// sharedSysctl returns the record of another agent that changed the
// setting at path and, with alive, runs now (nil if none).
func (a *Agent) sharedSysctl(path string, alive bool) (*sysctlRecord, string) {
	for _, o := range a.peers {
		if !o.alive && alive {
			continue
		}
		for i, r := range o.rec.Sysctls {
			if r.Ifindex == 0 && r.path() == path {
				return &o.rec.Sysctls[i], o.path
			}
		}
	}
	return nil, ""
}
