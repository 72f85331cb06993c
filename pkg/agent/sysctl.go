package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const procSys = "/proc/sys"

// sysctlRule is one setting direct server return needs.
type sysctlRule struct {
	path string // relative to /proc/sys
	want string
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
	conf := func(dev, key string) string { return filepath.Join("net/ipv4/conf", dev, key) }
	return []sysctlRule{
		{path: conf("all", "arp_ignore"), want: "1", keep: []string{"2", "8"}},
		{path: conf("all", "arp_announce"), want: "2"},
		{path: conf(iface, "arp_ignore"), want: "1", keep: []string{"2", "8"}},
		{path: conf(iface, "arp_announce"), want: "2"},
		{path: conf(iface, "rp_filter"), want: "2", onlyFrom: "1", maxWith: conf("all", "rp_filter")},
	}
}

// sysctl is a setting the agent changed. The file stays open until it is
// restored: a /proc/sys/net file belongs to the network namespace of the
// thread that opened it, so the restore reaches the right namespace from
// any thread.
type sysctl struct {
	name string // dotted, for messages
	f    *os.File
	old  string
	set  string // what the agent wrote
}

// setSysctls applies dsrSysctls, recording what it changed.
func (a *Agent) setSysctls() error {
	for _, r := range dsrSysctls(a.iface) {
		s, err := applySysctl(r)
		if err != nil {
			return err
		}
		if s != nil {
			a.sysctls = append(a.sysctls, s)
			a.log.Info("sysctl set", "key", s.name, "old", s.old, "new", r.want)
		}
	}
	return nil
}

// applySysctl sets one rule and returns the change, or nil if none was
// needed.
func applySysctl(r sysctlRule) (*sysctl, error) {
	name := strings.ReplaceAll(r.path, "/", ".")
	f, err := os.OpenFile(filepath.Join(procSys, r.path), os.O_RDWR, 0)
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
		f.Close()
		return nil, nil
	}
	// At offset 0: with the default kernel.sysctl_writes_strict, a write
	// at any other position is ignored.
	if _, err := f.WriteAt([]byte(r.want), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("set sysctl %s=%s: %w", name, r.want, err)
	}
	return &sysctl{name: name, f: f, old: old, set: r.want}, nil
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

func readSysctl(f *os.File) (string, error) {
	buf := make([]byte, 256)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// restoreSysctls puts back every value setSysctls changed, newest first.
// A value changed again since (by the admin, while the agent ran) is the
// newest choice and stays.
func (a *Agent) restoreSysctls() error {
	var errs []error
	for i := len(a.sysctls) - 1; i >= 0; i-- {
		s := a.sysctls[i]
		cur, err := readSysctl(s.f)
		if err == nil && cur != s.set {
			a.log.Info("sysctl changed since the agent set it: left as it is", "key", s.name, "value", cur, "found_at_start", s.old)
			s.f.Close()
			continue
		}
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			_, err = s.f.WriteAt([]byte(s.old), 0)
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// The device is gone, and its settings with it.
		case err != nil:
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", s.name, s.old, err))
		default:
			a.log.Info("sysctl restored", "key", s.name, "value", s.old)
		}
		s.f.Close()
	}
	a.sysctls = nil
	return errors.Join(errs...)
}
