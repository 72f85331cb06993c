package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
)

const (
	procSys = "/proc/sys"
	// ipv4Conf holds every setting the agent changes (relative to
	// procSys); a state file that names another directory is refused.
	ipv4Conf = "net/ipv4/conf"
)

// sysctlRule is one setting direct server return needs.
type sysctlRule struct {
	conf, dev, key string // the sysctl conf/dev/key, relative to /proc/sys
	want           string
	// onlyFrom, if set, is the only current value that is changed: the rule
	// relaxes a setting without overriding any other choice of the admin.
	onlyFrom string
	// keep are current values other than want that serve as well (stricter
	// choices of the admin): they are left as they are.
	keep []string
	// maxWith, if set, is the setting the kernel combines with this one by
	// taking the larger value; onlyFrom then applies to that larger value,
	// the one in force.
	maxWith string
}

// dsrSysctls are the settings for direct server return on iface. The VIPs
// live on lo, so the host must not answer ARP for them on its NIC
// (arp_ignore=1) nor use them as the source of its own ARP requests
// (arp_announce=2); the kernel applies the larger of "all" and the device's
// value, so both are set. arp_ignore 2 (only to senders in the address's
// subnet) and 8 (never) answer no ARP for a VIP on lo either, and are
// stricter than 1: an admin's 2 or 8 stays. 0, 3 (any non-host-scope
// address, a VIP on lo included) and the reserved 4-7 answer for the VIP.
// The decapsulated packet arrives on iface with the client's source
// address: loose reverse-path filtering accepts it whatever the routing,
// so strict filtering in force on iface (from "all" or its own value) is
// relaxed to loose by iface's value alone. "all" stays: relaxing it would
// turn off strict filtering on every other interface of the host.
func dsrSysctls(iface string) []sysctlRule {
	return []sysctlRule{
		{conf: ipv4Conf, dev: "all", key: "arp_ignore", want: "1", keep: []string{"2", "8"}},
		{conf: ipv4Conf, dev: "all", key: "arp_announce", want: "2"},
		{conf: ipv4Conf, dev: iface, key: "arp_ignore", want: "1", keep: []string{"2", "8"}},
		{conf: ipv4Conf, dev: iface, key: "arp_announce", want: "2"},
		{conf: ipv4Conf, dev: iface, key: "rp_filter", want: "2", onlyFrom: "1", maxWith: filepath.Join(ipv4Conf, "all", "rp_filter")},
	}
}

func (r sysctlRule) path() string { return filepath.Join(r.conf, r.dev, r.key) }

// sysctl is a setting the agent changed. The file stays open until it is
// restored: a /proc/sys/net file belongs to the network namespace of the
// thread that opened it, so the restore reaches the right namespace from
// any thread.
type sysctl struct {
	name string // dotted, for messages
	f    *os.File
	// shared: another agent of the host set it, and it has that value.
	shared bool
	// other: the device found at the interface's index once the
	// interface was gone (see readSysctlOf), "" if none.
	other string
	sysctlRecord
}

// setSysctls applies dsrSysctls, recording each change in the state file
// before it makes it.
func (a *Agent) setSysctls() error {
	for _, r := range dsrSysctls(a.iface) {
		s, err := a.checkSysctl(r)
		if err != nil {
			return err
		}
		if s == nil {
			continue
		}
		a.sysctls = append(a.sysctls, s)
		if err := a.saveState(); err != nil {
			return err
		}
		if s.shared {
			continue
		}
		// At offset 0: with the default kernel.sysctl_writes_strict, a
		// write at any other position is ignored. Should it fail, the
		// record holds a value the setting does not have, which a later
		// run takes for someone else's.
		if _, err := s.f.WriteAt([]byte(s.Set), 0); err != nil {
			a.sysctls = a.sysctls[:len(a.sysctls)-1]
			s.f.Close()
			return fmt.Errorf("set sysctl %s=%s: %w", s.name, s.Set, err)
		}
		a.log.Info("sysctl set", "key", s.name, "old", s.Old, "new", s.Set)
	}
	return nil
}

// checkSysctl opens the setting of rule r and returns the change r needs,
// not yet made, or nil if none is needed.
func (a *Agent) checkSysctl(r sysctlRule) (*sysctl, error) {
	name := dotted(r.path())
	path := filepath.Join(procSys, r.path())
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	// /proc/sys mounted read-only (a container that is not privileged):
	// a setting the admin gave the value wanted needs no write.
	readOnly := errors.Is(err, syscall.EROFS)
	if readOnly {
		f, err = os.Open(path)
	}
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("open sysctl %s: %w (run the agent as root)", name, err)
		}
		return nil, fmt.Errorf("open sysctl %s: %w", name, err)
	}
	old, err := readSysctl(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read sysctl %s: %w", name, err)
	}
	inForce := old
	if r.maxWith != "" {
		if inForce, err = maxSysctl(old, r.maxWith); err != nil {
			f.Close()
			return nil, fmt.Errorf("read sysctl %s: %w", name, err)
		}
	}
	if old == r.want || slices.Contains(r.keep, old) || (r.onlyFrom != "" && inForce != r.onlyFrom) {
		// Set by another agent of this host (an "all" setting they share):
		// this one restores it too, with the value that one found, if it
		// stops last. (Read-only, it cannot restore it.)
		if o, other := a.sharedSysctl(r.path(), false); o != nil && o.Set == old && !readOnly {
			s := &sysctl{name: name, f: f, shared: true, sysctlRecord: *o}
			a.log.Info("sysctl set by another agent of this host: shared, the last of them to stop restores it", "key", name, "value", old, "found_before", o.Old, "other_state_file", other)
			return s, nil
		}
		f.Close()
		return nil, nil
	}
	if readOnly {
		f.Close()
		return nil, fmt.Errorf("set sysctl %s=%s (it is %s): %s is mounted read-only, as in a container that is not privileged; "+
			"give it that value before the agent starts (in the container runtime's sysctl settings, or with `sysctl -w %s=%s` run in the agent's network namespace from outside the container), "+
			"or run the agent where %s is writable",
			name, r.want, old, procSys, name, r.want, procSys)
	}
	rec := sysctlRecord{Conf: r.conf, Dev: r.dev, Key: r.key, Old: old, Set: r.want}
	if r.dev == a.iface {
		rec.Ifindex = a.ifindex
	}
	return &sysctl{name: name, f: f, sysctlRecord: rec}, nil
}

// maxSysctl returns the larger of the integer value v and the one of the
// sysctl at path (relative to /proc/sys), as the kernel combines a
// device's setting with "all".
func maxSysctl(v, path string) (string, error) {
	b, err := os.ReadFile(filepath.Join(procSys, path))
	if err != nil {
		return "", err
	}
	w := strings.TrimSpace(string(b))
	a, aerr := strconv.Atoi(v)
	c, cerr := strconv.Atoi(w)
	if aerr != nil || cerr != nil {
		return "", fmt.Errorf("compare %q with %s=%q: not integers", v, strings.ReplaceAll(path, "/", "."), w)
	}
	if c > a {
		return w, nil
	}
	return v, nil
}

// readSysctlOf reads the current value of s. The kernel registers the
// settings of a renamed interface anew, and the file opened under the old
// name then reads ENOENT: the setting is opened again under the
// interface's current name and read from there. The interface is found
// as a record's is (see recordedLink): the device at its index with its
// name, or under another name while the agent's pinned link still drives
// it (deleting the interface detaches the link). Another device given
// the index since (the interface deleted, and `ip link add ... index
// N`, say, before the agent stopped) is not followed: its settings are
// its own, though they may have the values the agent sets. An error
// that wraps ErrInterfaceGone (and fs.ErrNotExist) means the interface
// is gone, and the setting with it.
func (a *Agent) readSysctlOf(s *sysctl) (string, error) {
	cur, err := readSysctl(s.f)
	if !errors.Is(err, fs.ErrNotExist) || s.Ifindex == 0 || a.nl == nil {
		return cur, err
	}
	l, other, lerr := a.interfaceAt(s.Dev, s.Ifindex)
	if lerr != nil {
		return "", fmt.Errorf("find interface %d of sysctl %s: %w", s.Ifindex, s.name, lerr)
	}
	if l == nil {
		if other != "" && s.other != other {
			s.other = other // said once, not at every status call
			a.log.Info(a.sysctlGone(s.sysctlRecord, other))
		}
		return "", fmt.Errorf("%w: %w", ErrInterfaceGone, err) // and its settings with it
	}
	r := s.sysctlRecord
	r.Dev = l.Attrs().Name
	f, oerr := openIn(a.ns, filepath.Join(procSys, r.path()))
	if oerr != nil {
		return "", fmt.Errorf("open sysctl %s again (interface index %d, now named %s): %w", s.name, s.Ifindex, r.Dev, oerr)
	}
	a.log.Info("interface renamed: its sysctl followed", "was", s.name, "now", dotted(r.path()))
	s.f.Close()
	s.f, s.name = f, dotted(r.path())
	return readSysctl(s.f)
}

// openIn opens the sysctl file path read-write in the network namespace
// ns (none: the calling thread's). A /proc/sys/net file is the namespace's
// of the thread that opens it, and the agent's Stop and status may run on
// any thread.
func openIn(ns netns.NsHandle, path string) (*os.File, error) {
	if !ns.IsOpen() {
		return os.OpenFile(path, os.O_RDWR, 0)
	}
	type result struct {
		f   *os.File
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if inNamespace(ns) {
			defer runtime.UnlockOSThread()
		} else if err := netns.Set(ns); err != nil {
			// Locked still: the thread ends with the goroutine, so no
			// other goroutine inherits a half-made switch.
			c <- result{err: fmt.Errorf("enter the agent's network namespace: %w", err)}
			return
		}
		// Switched, the thread stays locked and ends with the goroutine.
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		c <- result{f, err}
	}()
	r := <-c
	return r.f, r.err
}

func readSysctl(f *os.File) (string, error) {
	buf := make([]byte, 256)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// restoreSysctls puts back every value setSysctls changed (or an earlier
// run did, see loadState), newest first.
func (a *Agent) restoreSysctls() error {
	var errs []error
	for i := len(a.sysctls) - 1; i >= 0; i-- {
		if err := a.restoreSysctl(a.sysctls[i]); err != nil {
			errs = append(errs, err)
		}
	}
	a.sysctls = nil
	return errors.Join(errs...)
}

// restoreSysctl puts back the value s found and closes it. A value
// changed again since (by the admin, while the agent ran) is the newest
// choice and stays.
func (a *Agent) restoreSysctl(s *sysctl) error {
	defer func() { s.f.Close() }() // reopenSysctl may replace it
	if s.Ifindex == 0 {
		if _, other := a.sharedSysctl(s.path(), true); other != "" {
			a.log.Info("sysctl left as it is: another running agent of this host shares it", "key", s.name, "value", s.Set, "other_state_file", other)
			return nil
		}
	}
	cur, err := a.readSysctlOf(s)
	if err == nil && cur != s.Set {
		a.log.Info("sysctl changed since the agent set it: left as it is", "key", s.name, "value", cur, "found_at_start", s.Old)
		return nil
	}
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		_, err = s.f.WriteAt([]byte(s.Old), 0)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// The device is gone, and its settings with it.
	case err != nil:
		return fmt.Errorf("restore sysctl %s=%s: %w", s.name, s.Old, err)
	default:
		a.log.Info("sysctl restored", "key", s.name, "value", s.Old)
	}
	return nil
}
