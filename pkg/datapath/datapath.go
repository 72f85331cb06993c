// Package datapath loads, pins, attaches and upgrades Switchyard's XDP
// programs and gives typed access to their maps. It is the only package that
// imports cilium/ebpf, with its test-support package datapathtest
// (TestOnlyDatapathImportsEbpf checks it).
//
// Pinned state lives under a directory in bpffs (by default
// /sys/fs/bpf/switchyard/<interface>): every map and the XDP link. Loading a
// newer program reuses the pinned maps and swaps the program on the pinned
// link with link.Update, so a restart or an upgrade keeps every VIP, table and
// established flow.
package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// DefaultConnTableSize is the connection-table capacity when none is set.
const DefaultConnTableSize = 1 << 20

// BPFFSRoot is where bpffs is expected to be mounted.
const BPFFSRoot = "/sys/fs/bpf"

// Limits compiled into the programs (bpf/consts.h).
const (
	MaxVIPs     = 512
	MaxBackends = 4096
	// MaxDecapAddrs is the size of the decap program's address set
	// (decap_addrs in bpf/decap.bpf.c). Changing it makes the maps an
	// agent pinned incompatible: its upgrade then needs a remove.
	MaxDecapAddrs = 64
)

// MaglevEmpty marks a table slot with no backend.
const MaglevEmpty = ^uint32(0)

var (
	// ErrBPFFSNotMounted: the pin directory is not on a bpffs mount.
	ErrBPFFSNotMounted = errors.New("bpffs is not mounted")
	// ErrPinnedIncompatible: maps pinned by an earlier run cannot be reused
	// (a size or layout changed).
	ErrPinnedIncompatible = errors.New("pinned maps are incompatible with this program")
	// ErrNotPinDir: a directory given to RemoveBalancer or RemoveDecap
	// holds something Switchyard does not pin (or is a bpffs root), so it
	// is not removed.
	ErrNotPinDir = errors.New("not a Switchyard pin directory")
	// ErrNoSuchVIP: the VIP is not in the datapath.
	ErrNoSuchVIP = errors.New("no such VIP in the datapath")
	// ErrTooManyDecapAddrs: Decap.SetAddrs was given more addresses than
	// the decap program holds (MaxDecapAddrs).
	ErrTooManyDecapAddrs = errors.New("more encap addresses than the decap program holds")
)

// DefaultPinDir is the pin directory of the balancer on an interface.
func DefaultPinDir(iface string) string {
	return filepath.Join(BPFFSRoot, "switchyard", iface)
}

// DefaultAgentPinDir is the pin directory of the decap program on an interface.
func DefaultAgentPinDir(iface string) string {
	return filepath.Join(BPFFSRoot, "switchyard-agent", iface)
}

// CheckBPFFS verifies that dir (or its nearest existing parent) is on bpffs;
// its error wraps ErrBPFFSNotMounted and says how to mount it.
func CheckBPFFS(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		var st unix.Statfs_t
		err := unix.Statfs(d, &st)
		if err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("%s is not on a bpffs mount; mount it with `mount -t bpf bpf %s`: %w",
					d, BPFFSRoot, ErrBPFFSNotMounted)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) || d == "/" || d == "." {
			return fmt.Errorf("stat %s: %w", d, err)
		}
	}
}

// loadCollection loads spec with every named map pinned by name under
// pinDir (reusing maps an earlier run pinned), or unpinned if pinDir is "".
// replace: maps to use instead of the pinned ones (successors, see
// upgradePins), by map spec name. fresh says how the user starts afresh
// when the pinned maps do not fit.
func loadCollection(spec *ebpf.CollectionSpec, pinDir string, replace map[string]*ebpf.Map, assign any, fresh string) error {
	opts := &ebpf.CollectionOptions{MapReplacements: replace}
	if pinDir != "" {
		if err := CheckBPFFS(pinDir); err != nil {
			return err
		}
		if err := os.MkdirAll(pinDir, 0o700); err != nil {
			return fmt.Errorf("create pin directory: %w", err)
		}
		// Data sections keep their dotted names and stay unpinned,
		// unless the caller named them.
		for _, m := range spec.Maps {
			if !strings.HasPrefix(m.Name, ".") {
				m.Pinning = ebpf.PinByName
			}
		}
		opts.Maps.PinPath = pinDir
	}
	if err := spec.LoadAndAssign(assign, opts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return fmt.Errorf("%w (%v); %s", ErrPinnedIncompatible, err, fresh)
		}
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("the kernel's verifier rejected the program: %+v", verr)
		}
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("load BPF objects: %w (run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)", err)
		}
		return fmt.Errorf("load BPF objects: %w", err)
	}
	return nil
}
