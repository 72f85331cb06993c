package topology

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// OwnerDir holds one marker file per topology, named after its prefix: the
// process that built it (pid and start time, which tells a reused pid
// apart) and the paths it asked to be removed with it (Own). Close removes
// the marker; a marker whose process is gone is a topology that a killed
// run (Ctrl-C on `go test`, a -timeout panic, SIGKILL) left behind, and
// SweepOrphans removes it. It is on tmpfs, emptied at boot as the
// namespaces are.
const OwnerDir = "/run/switchyard-topology"

// owner identifies a process across pid reuse.
type owner struct {
	pid   int
	start uint64 // field 22 of /proc/PID/stat, in clock ticks since boot
}

func self() (owner, error) {
	start, err := ProcessStart(os.Getpid())
	return owner{os.Getpid(), start}, err
}

// ProcessStart reads a process's start time from /proc/PID/stat (field
// 22, in clock ticks since boot): with the pid, it names the process
// across pid reuse (see ProcessAlive).
func ProcessStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses itself; the fields after its last ')' start at 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 22-2 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command name, want at least 20", pid, len(fields))
	}
	return strconv.ParseUint(fields[22-3], 10, 64)
}

// alive reports whether the process still runs. A zombie counts as alive
// until it is reaped: whatever it owns is left to a later sweep.
func (o owner) alive() bool { return ProcessAlive(o.pid, o.start) }

// ProcessAlive reports whether the process pid that started at start
// (ProcessStart) still runs; a zombie counts as running until reaped.
func ProcessAlive(pid int, start uint64) bool {
	now, err := ProcessStart(pid)
	return err == nil && now == start
}

// marker is the content of a topology's marker file.
type marker struct {
	owner owner // pid 0: none written yet
	paths []string
}

func parseMarker(b []byte) (marker, error) {
	var m marker
	for n, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" && n == 0 {
			continue
		}
		key, val, _ := strings.Cut(line, " ")
		switch key {
		case "owner":
			var o owner
			if _, err := fmt.Sscanf(val, "%d %d", &o.pid, &o.start); err != nil || o.pid <= 0 {
				return marker{}, fmt.Errorf("line %d: bad owner %q", n+1, val)
			}
			m.owner = o
		case "path":
			if err := checkOwnedPath(val); err != nil {
				return marker{}, fmt.Errorf("line %d: %w", n+1, err)
			}
			m.paths = append(m.paths, val)
		default:
			return marker{}, fmt.Errorf("line %d: unknown %q", n+1, line)
		}
	}
	return m, nil
}

func (m marker) encode() []byte {
	var b bytes.Buffer
	if m.owner.pid != 0 {
		fmt.Fprintf(&b, "owner %d %d\n", m.owner.pid, m.owner.start)
	}
	for _, p := range m.paths {
		fmt.Fprintf(&b, "path %s\n", p)
	}
	return b.Bytes()
}

func checkOwnedPath(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" || strings.ContainsAny(p, "\n") {
		return fmt.Errorf("owned path %q: want a clean absolute path other than /, on one line", p)
	}
	return nil
}

func markerPath(prefix string) string { return filepath.Join(OwnerDir, prefix) }

// lockMarker opens prefix's marker file and takes its flock, which whoever
// reads or changes the marker, and the topology it names, holds. With
// create it creates the file if missing; without, a missing file gives
// (nil, nil). With block unset, a marker locked by someone else gives
// (nil, nil) too.
func lockMarker(prefix string, create, block bool) (*os.File, error) {
	path := markerPath(prefix)
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE
		if err := os.MkdirAll(OwnerDir, 0o755); err != nil {
			return nil, err
		}
	}
	for {
		f, err := os.OpenFile(path, flags, 0o644)
		if !create && errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		how := unix.LOCK_EX
		if !block {
			how |= unix.LOCK_NB
		}
		if err := unix.Flock(int(f.Fd()), how); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) && !block {
				return nil, nil
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		// Whoever held the lock before may have removed the file: then
		// the lock is on a file nobody else will open.
		var held, named unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, err
		}
		err = unix.Stat(path, &named)
		if err == nil && held.Dev == named.Dev && held.Ino == named.Ino {
			return f, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, err
		}
	}
}

func readMarker(f *os.File) (marker, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return marker{}, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return marker{}, err
	}
	m, err := parseMarker(b)
	if err != nil {
		return marker{}, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return m, nil
}

func writeMarker(f *os.File, m marker) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(m.encode(), 0); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return nil
}

// claim locks prefix's marker for a topology about to be built. A marker
// of a live process means the prefix is in use; one of a process that is
// gone is swept first.
func claim(prefix string) (*os.File, error) {
	for {
		f, err := lockMarker(prefix, true, true)
		if err != nil {
			return nil, err
		}
		m, err := readMarker(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		if m.owner.pid == 0 {
			return f, nil
		}
		if m.owner.alive() {
			f.Close()
			return nil, fmt.Errorf("%w: %s names the running process %d", ErrPrefixInUse, f.Name(), m.owner.pid)
		}
		_, err = sweepLocked(prefix, f, m)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("remove what the killed process %d left of topology %s: %w", m.owner.pid, prefix, err)
		}
	}
}

// Own records path (a work or pin directory the topology's user made for
// it) in the topology's marker, so that if the process ends without Close,
// SweepOrphans removes path with the namespaces. Record a path before
// creating it. Close does not remove it: that stays its user's job.
func (t *Topology) Own(path string) error {
	if err := checkOwnedPath(path); err != nil {
		return err
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return ErrClosed
	}
	f, err := lockMarker(t.cfg.Prefix, false, true)
	if err != nil {
		return err
	}
	if f == nil {
		return fmt.Errorf("own %s: the marker %s is gone", path, markerPath(t.cfg.Prefix))
	}
	defer f.Close()
	m, err := readMarker(f)
	if err != nil {
		return err
	}
	if m.owner != t.owner {
		return fmt.Errorf("own %s: %s names process %d, not this one", path, f.Name(), m.owner.pid)
	}
	m.paths = append(m.paths, path)
	return writeMarker(f, m)
}

// releaseMarker removes the topology's marker once its namespaces are
// gone, unless it names another process.
func (t *Topology) releaseMarker() error {
	f := t.marker
	t.marker = nil
	if f == nil {
		var err error
		if f, err = lockMarker(t.cfg.Prefix, false, true); err != nil || f == nil {
			return err
		}
	}
	defer f.Close()
	m, err := readMarker(f)
	if err != nil {
		return err
	}
	// Empty: New failed before it wrote its owner.
	if m.owner.pid != 0 && m.owner != t.owner {
		return nil
	}
	return removeMarker(f)
}

// Orphan is a topology whose process ended without closing it, as
// SweepOrphans removed it.
type Orphan struct {
	Prefix     string
	PID        int      // of the process that built it
	Namespaces []string // removed (the processes in them killed)
	Paths      []string // removed, as recorded with Own
}

func (o Orphan) String() string {
	return fmt.Sprintf("topology %s of the ended process %d: namespaces %v, paths %v", o.Prefix, o.PID, o.Namespaces, o.Paths)
}

// SweepOrphans removes every topology whose building process has ended
// without Close (a test run killed by Ctrl-C or a -timeout panic runs no
// cleanup): the processes in its namespaces, the namespaces, the paths it
// recorded with Own, and its marker. Topologies of running processes, and
// namespaces with no marker (built by another program or an older
// Switchyard), are never touched; neither is a marker another process
// holds locked (being built, closed, or swept). It returns what it removed.
func SweepOrphans() ([]Orphan, error) {
	entries, err := os.ReadDir(OwnerDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", OwnerDir, err)
	}
	var swept []Orphan
	var errs []error
	for _, e := range entries {
		prefix := e.Name()
		if validatePrefix(prefix) != nil {
			continue
		}
		f, err := lockMarker(prefix, false, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if f == nil {
			continue
		}
		m, err := readMarker(f)
		if err == nil && !(m.owner.pid != 0 && m.owner.alive()) {
			var o Orphan
			if o, err = sweepLocked(prefix, f, m); len(o.Namespaces)+len(o.Paths) > 0 {
				swept = append(swept, o)
			}
		}
		f.Close()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return swept, errors.Join(errs...)
}

// sweepLocked removes what marker m (locked as f) names, then the marker.
// An unlocked marker without an owner is one whose New was killed before
// it created a namespace: there is nothing to remove but the file.
func sweepLocked(prefix string, f *os.File, m marker) (Orphan, error) {
	o := Orphan{Prefix: prefix, PID: m.owner.pid}
	if m.owner.pid == 0 {
		// Namespaces of this prefix, if any, are not the killed New's:
		// it writes its owner as soon as it has created one.
		return o, removeMarker(f)
	}
	o.Namespaces = Leftovers(prefix)
	errs := []error{Cleanup(prefix)}
	for _, p := range m.paths {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		o.Paths = append(o.Paths, p)
		errs = append(errs, os.RemoveAll(p))
	}
	if err := errors.Join(errs...); err != nil {
		// Kept, so that a later sweep tries again.
		return o, err
	}
	return o, removeMarker(f)
}

func removeMarker(f *os.File) error {
	if err := os.Remove(f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
