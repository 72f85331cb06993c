package datapath

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// AttachMode selects how the XDP program is attached.
type AttachMode int

const (
	// AttachNative runs the program in the driver (fast path).
	AttachNative AttachMode = iota
	// AttachGeneric runs it on the skb path: works everywhere, slower.
	AttachGeneric
	// AttachAuto tries native and falls back to generic with a warning.
	AttachAuto
)

// ParseAttachMode parses "native", "generic" or "auto".
func ParseAttachMode(s string) (AttachMode, error) {
	switch s {
	case "", "native":
		return AttachNative, nil
	case "generic":
		return AttachGeneric, nil
	case "auto":
		return AttachAuto, nil
	}
	return 0, fmt.Errorf("unknown attach mode %q: use native, generic or auto", s)
}

func (m AttachMode) String() string {
	switch m {
	case AttachNative:
		return "native"
	case AttachGeneric:
		return "generic"
	}
	return "auto"
}

// ErrNoInterface: the configured interface does not exist.
var ErrNoInterface = errors.New("no such interface")

// LookupInterface returns the interface called name in the caller's network
// namespace, or an error wrapping ErrNoInterface that says how to find the
// right name. A daemon calls it before it loads anything, so that a wrong
// name leaves no pins behind.
func LookupInterface(name string) (*net.Interface, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w (check the name with `ip link`; inside a namespace, run switchyard in that namespace)", name, ErrNoInterface)
	}
	return ifc, nil
}

// attachHints are the fixes an attach error suggests: they differ between
// the balancer, whose mode is datapath.attach_mode in its file, and the
// agent, whose mode is a flag.
type attachHints struct {
	mode   string // how to choose another attach mode
	remove string // how to remove a stale Switchyard attachment
	native string // how to ask for native mode
}

var (
	balancerHints = attachHints{
		mode:   "set datapath.attach_mode to auto or generic",
		native: "set datapath.attach_mode to native",
		// remove alone is refused: it must be told which datapath.
		remove: "run `switchyard remove --config FILE` with the configuration that attached it",
	}
	decapHints = attachHints{
		mode:   "run the agent with --attach-mode auto or generic",
		native: "run the agent with --attach-mode native",
		remove: "run `switchyard remove --agent --config FILE` with the agent configuration that attached it",
	}
)

const linkPinName = "link"

// attachedAdvice says whose XDP program the interface of index ifindex
// already has, and how to take it off. Switchyard's own programs are
// attached through links, which `ip link set dev IF xdp off` cannot
// remove: for them the advice is switchyard's, and a running daemon must
// be stopped, not removed from under it.
func attachedAdvice(ifindex int, iface string, hints attachHints) string {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil || l.Attrs().Xdp.ProgId == 0 {
		return fmt.Sprintf("; remove it with `ip link set dev %s xdp off` or %s", iface, hints.remove)
	}
	// `xdp off` takes off a program of the driver's mode only: on an
	// interface whose driver has one, it leaves a generic one in place
	// and says nothing.
	off := "xdp"
	switch l.Attrs().Xdp.AttachMode {
	case nl.XDP_ATTACHED_SKB:
		off = "xdpgeneric"
	case nl.XDP_ATTACHED_HW:
		off = "xdpoffload"
	}
	generic := fmt.Sprintf("; remove it with `ip link set dev %s %s off` or %s", iface, off, hints.remove)
	id := l.Attrs().Xdp.ProgId
	name := ""
	if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id)); err == nil {
		if info, err := p.Info(); err == nil {
			name = info.Name
		}
		p.Close()
	}
	var whose, stop, remove string
	switch name {
	case "xdp_balancer":
		whose, stop, remove = "a switchyard balancer's", "switchyard run", balancerHints.remove
	case "xdp_decap":
		whose, stop, remove = "a switchyard agent's decap program", "switchyard agent", decapHints.remove
	default:
		return fmt.Sprintf(": program ID %d %q (`bpftool prog show id %d` says more)%s", id, name, id, generic)
	}
	return fmt.Sprintf(": program ID %d is %s, attached with another pin directory; if a %s of this interface runs, stop it first (or give this one another interface), otherwise %s", id, whose, stop, remove)
}

// xdpNow says which XDP program the interface of index ifindex runs, for a
// message that ends with it. The index is looked up through nl, in its
// network namespace (nil: the calling thread's).
func xdpNow(nl *netlink.Handle, ifindex int) string {
	lookup := netlink.LinkByIndex
	if nl != nil {
		lookup = nl.LinkByIndex
	}
	l, err := lookup(ifindex)
	if err != nil {
		return ""
	}
	x := l.Attrs().Xdp
	if x == nil || x.ProgId == 0 {
		return "; the interface runs no XDP program now: its packets go to the host's stack"
	}
	name := ""
	if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId)); err == nil {
		if pi, err := p.Info(); err == nil {
			name = pi.Name
		}
		p.Close()
	}
	return fmt.Sprintf("; the interface runs XDP program ID %d %q now (`bpftool prog show id %d` says more)", x.ProgId, name, x.ProgId)
}

// linkIfindex is the index of the interface the XDP link l drives (0:
// none), remembered at attach for checkAttached, which names what the
// interface runs once the link no longer says.
func linkIfindex(l link.Link) int {
	if info, err := l.Info(); err == nil && info.XDP() != nil {
		return int(info.XDP().Ifindex)
	}
	return 0
}

// ErrAttachCheckFailed: the daemon could not read its link or program to
// check its attachment (EPERM from a seccomp profile or an LSM that
// changed, ENOMEM): what runs on the interface is unknown, not changed, and
// the daemon keeps what it last found.
var ErrAttachCheckFailed = errors.New("could not check the program's attachment")

// checkAttached checks that prog still runs, through the link l, on the
// interface of index ifindex it was attached to: the balancer's and the
// agent's check (Balancer.CheckAttached, Decap.CheckAttached). The link
// can be detached from under the daemon (`bpftool link detach`, which
// another tool may follow with an XDP program of its own), or made to run
// another program (BPF_LINK_UPDATE through the pin): the error then wraps
// detached and says what runs on the interface now, looked up through nl
// (see xdpNow). program names prog ("decap program"), daemon what holds
// it ("agent"). A link or program it cannot read is an error wrapping
// ErrAttachCheckFailed, which says nothing of the attachment. Before the
// attach (l nil) there is nothing to check.
func checkAttached(l link.Link, prog *ebpf.Program, ifindex int, nl *netlink.Handle, detached error, program, daemon string) error {
	if l == nil {
		return nil
	}
	info, err := l.Info()
	if err != nil {
		return fmt.Errorf("%w: read the %s's link: %w (%s)", ErrAttachCheckFailed, program, err, checkFailedAdvice(daemon))
	}
	pi, err := prog.Info()
	if err != nil {
		return fmt.Errorf("%w: read the %s: %w (%s)", ErrAttachCheckFailed, program, err, checkFailedAdvice(daemon))
	}
	ours, _ := pi.ID()
	xdp := info.XDP()
	switch {
	case xdp == nil || xdp.Ifindex == 0:
		return fmt.Errorf("%w: its link (ID %d) was detached from the interface (`bpftool link detach`?)%s", detached, info.ID, xdpNow(nl, ifindex))
	case info.Program != ours:
		return fmt.Errorf("%w: its link (ID %d) runs program ID %d instead of the %s's (ID %d): something updated the link", detached, info.ID, info.Program, daemon, ours)
	}
	return nil
}

// checkFailedAdvice ends the errors that wrap ErrAttachCheckFailed.
func checkFailedAdvice(daemon string) string {
	return fmt.Sprintf("the %s needs CAP_BPF and CAP_SYS_ADMIN and the bpf() system call, which a seccomp profile or an LSM policy may deny; "+
		"check it with `bpftool link show` as the %s's user; the %s checks again on its next round", daemon, daemon, daemon)
}

// AttachResult says what attachProgram did.
type AttachResult struct {
	Mode     AttachMode // native or generic: what is in force
	Replaced bool       // an existing pinned link was updated in place
	OldTag   string     // tag of the program that was replaced
	NewTag   string
	// Taken: a program of this pin directory ran on the interface
	// before: Replaced, or attached afresh in another mode than the
	// pinned link's. Without it, the interface ran none of its programs
	// (no pinned link, or a stale one), and the attach put one there.
	Taken bool
}

// attachProgram attaches prog to iface and pins the link at pinDir/link, or,
// when a link is already pinned there, swaps prog into it (the hitless
// upgrade path) unless it runs in another mode than an explicit one
// asked. It returns the link; the caller closes it (the pin keeps the
// attachment alive).
func attachProgram(prog *ebpf.Program, iface string, mode AttachMode, pinDir string, hints attachHints, log *slog.Logger) (link.Link, AttachResult, error) {
	res := AttachResult{}
	ifc, err := LookupInterface(iface)
	if err != nil {
		return nil, res, err
	}
	if info, err := prog.Info(); err == nil {
		res.NewTag = info.Tag
	}

	linkPath := ""
	// restore: the mode a pinned link ran in before it went for an
	// explicit other mode; -1 if none.
	restore := AttachMode(-1)
	if pinDir != "" {
		linkPath = filepath.Join(pinDir, linkPinName)
		sweepRestorePins(pinDir, true, log)
		if l, err := link.LoadPinnedLink(linkPath, nil); err == nil {
			ok, oldTag, oldMode := pinnedLinkUsable(l, ifc.Index)
			switch {
			case ok && (mode == AttachAuto || mode == oldMode):
				res.OldTag = oldTag
				if err := l.Update(prog); err != nil {
					l.Close()
					return nil, res, fmt.Errorf("replace program on pinned link %s: %w; the program attached before keeps running: fix the cause (run as root) and start again, or %s, then start afresh (drops established flows)", linkPath, err, hints.remove)
				}
				res.Replaced, res.Taken = true, true
				res.Mode = oldMode
				if mode == AttachAuto && oldMode == AttachGeneric {
					// Native is not tried: the kernel runs one mode
					// at a time, so trying would take the program
					// off for a moment, at every restart of a driver
					// without native XDP. But auto said why it runs
					// generic only at the start that fell back.
					log.Warn("pinned XDP link runs in generic (skb) mode: kept, so that the restart has no gap, and native mode is not tried: expect lower performance; "+
						"to try native mode, "+hints.native+" and restart (packets reach the host's stack for a moment while the mode changes), or ask for generic mode to say so and silence this warning",
						"pin", linkPath, "interface", iface)
				}
				return l, res, nil
			case ok:
				// An explicit mode is what runs, as on a first attach.
				// The kernel runs one mode at a time: the link goes,
				// and a new one is made. The maps stay, and with them
				// every flow, but packets reach the host stack between
				// the two.
				log.Warn("pinned XDP link runs in another mode than asked: attaching afresh",
					"pin", linkPath, "running", oldMode, "asked", mode)
				if err := l.Detach(); err != nil {
					l.Close()
					return nil, res, fmt.Errorf("detach pinned link %s (%s mode) to attach in %s mode: %w; the program keeps running in %s mode: ask for that mode again, or %s, then start afresh (drops established flows)", linkPath, oldMode, mode, err, oldMode, hints.remove)
				}
				l.Unpin()
				l.Close()
				restore = oldMode
				res.Taken = true
			default:
				// The interface went away (or was recreated): the link
				// is defunct. Drop the pin and attach afresh.
				log.Warn("pinned XDP link is stale, attaching afresh", "pin", linkPath)
				l.Unpin()
				l.Close()
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, res, fmt.Errorf("load pinned link %s: %w; run as root, and if something else is pinned there (not a BPF link), %s", linkPath, err, hints.remove)
		}
	}

	try := func(m AttachMode) (link.Link, error) {
		flags := link.XDPDriverMode
		if m == AttachGeneric {
			flags = link.XDPGenericMode
		}
		return link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: flags})
	}
	var l link.Link
	switch mode {
	case AttachAuto:
		l, err = try(AttachNative)
		res.Mode = AttachNative
		if err != nil && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EEXIST) {
			log.Warn("native XDP attach failed, falling back to generic (skb) mode: expect lower performance",
				"interface", iface, "error", err)
			l, err = try(AttachGeneric)
			res.Mode = AttachGeneric
		}
	default:
		l, err = try(mode)
		res.Mode = mode
	}
	if err != nil && restore >= 0 {
		// The program ran in the other mode a moment ago: it runs so
		// again, and packets stay balanced while the mode is fixed.
		if rl, rerr := try(restore); rerr != nil {
			err = fmt.Errorf("%w; attaching it again in %s mode failed too: %w", err, restore, rerr)
		} else if perr := rl.Pin(linkPath); perr != nil {
			rl.Close()
			err = fmt.Errorf("%w; pinning it again in %s mode at %s failed too: %w", err, restore, linkPath, perr)
		} else {
			rl.Close() // the pin keeps it attached
			err = fmt.Errorf("%w; the program stays attached in %s mode", err, restore)
		}
	}
	if err != nil {
		switch {
		case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EEXIST):
			return nil, res, fmt.Errorf("attach XDP to %s: another XDP program is already attached (not by this switchyard pin dir)%s: %w", iface, attachedAdvice(ifc.Index, iface, hints), err)
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
			return nil, res, fmt.Errorf("attach XDP to %s in %s mode: %w (the driver may not support native XDP; %s)", iface, res.Mode, err, hints.mode)
		}
		return nil, res, fmt.Errorf("attach XDP to %s: %w", iface, err)
	}
	if linkPath != "" {
		if err := l.Pin(linkPath); err != nil {
			l.Close()
			return nil, res, fmt.Errorf("pin XDP link at %s: %w; the program is not left attached: the pin directory must be on a bpffs mounted read-write, with nothing else pinned at that name; fix that and start again", linkPath, err)
		}
	}
	return l, res, nil
}

// linkRuns tells whether prog runs on the link pinned under pinDir.
func linkRuns(pinDir string, prog *ebpf.Program) bool {
	if pinDir == "" {
		return false
	}
	l, err := link.LoadPinnedLink(filepath.Join(pinDir, linkPinName), nil)
	if err != nil {
		return false
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return false
	}
	pi, err := prog.Info()
	if err != nil {
		return false
	}
	id, ok := pi.ID()
	return ok && id == info.Program
}

// PinnedLinkOn reports whether the XDP link pinned under pinDir drives
// dev: attached to its index, with dev running the link's program. A
// killed daemon's link stays attached to its interface, renamed or not,
// while deleting the interface detaches it: so it tells that interface
// from another device given its index since.
func PinnedLinkOn(pinDir string, dev netlink.Link) bool {
	l, err := link.LoadPinnedLink(filepath.Join(pinDir, linkPinName), nil)
	if err != nil {
		return false
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil || info.XDP() == nil || int(info.XDP().Ifindex) != dev.Attrs().Index {
		return false
	}
	x := dev.Attrs().Xdp
	return x != nil && x.ProgId == uint32(info.Program)
}

// restoreLinkPin pins l again at pinDir/link if someone removed the pin
// (rm, or a tool that cleans bpffs): the handle the daemon holds keeps the
// program attached meanwhile, but only while its process lives. program
// names what the link runs ("decap program"), daemon what holds it
// ("agent"). It reports whether it pinned the link again; an error wraps
// notPinned when the pin stays missing, ErrAttachCheckFailed when a link
// could not be read (which says nothing of the pin). Without a pin directory, or
// before the attach, there is nothing to check.
func restoreLinkPin(l link.Link, pinDir string, notPinned error, program, daemon string, log *slog.Logger) (bool, error) {
	if pinDir == "" || l == nil {
		return false, nil
	}
	path := filepath.Join(pinDir, linkPinName)
	ours, err := l.Info()
	if err != nil {
		return false, fmt.Errorf("%w: read the %s's link: %w (%s)", ErrAttachCheckFailed, program, err, checkFailedAdvice(daemon))
	}
	pinned, err := link.LoadPinnedLink(path, nil)
	if err == nil {
		info, ierr := pinned.Info()
		pinned.Close()
		if ierr != nil {
			return false, fmt.Errorf("%w: read the link pinned at %s: %w (%s)", ErrAttachCheckFailed, path, ierr, checkFailedAdvice(daemon))
		}
		if info.ID != ours.ID {
			return false, fmt.Errorf("%w: %s holds link %d, not the %s's link %d: it was replaced by hand; remove it (the %s then pins its link again)",
				notPinned, path, info.ID, program, ours.ID, daemon)
		}
		return false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("%w: load %s: %w", notPinned, path, err)
	}
	if _, err := os.Stat(pinDir); err != nil {
		return false, fmt.Errorf("%w: the pin directory %s was removed (%w): stop the %s with SIGTERM and start it again", notPinned, pinDir, err, daemon)
	}
	// Pinned under a temporary name first, then renamed without
	// replacing (link.Pin of a pinned link renames with
	// RENAME_NOREPLACE): a pin someone made at path meanwhile is never
	// removed. Through a handle of its own, pinned nowhere yet: l still
	// names path as its pin, and pinning it elsewhere would first move
	// whatever is at path now. The temporary name is this process's
	// (restoreTempName), and nothing at it is removed but what this call
	// pinned there: another pin at it is another's.
	// What a crash of an earlier restore left would stay for good.
	sweepRestorePins(pinDir, false, log)
	own, err := link.NewFromID(ours.ID)
	if err != nil {
		return false, fmt.Errorf("%w: open the %s's link %d: %w", notPinned, program, ours.ID, err)
	}
	defer own.Close()
	tmp := filepath.Join(pinDir, restoreTempName(os.Getpid()))
	if err := own.Pin(tmp); err != nil {
		return false, fmt.Errorf("%w: pin it again at %s: %w", notPinned, tmp, err)
	}
	if err := own.Pin(path); err != nil {
		own.Unpin()
		return false, fmt.Errorf("%w: pin it again at %s: %w", notPinned, path, err)
	}
	return true, nil
}

// restoreTempName is the name under which restoreLinkPin of the process
// pid pins a link for a moment ("link_restore_PID"; bpffs refuses names
// with a dot). A crash can leave it; remove takes it, and the bare
// link_restore of earlier releases (isRestoreTempName).
func restoreTempName(pid int) string {
	return linkPinName + "_restore_" + strconv.Itoa(pid)
}

// isRestoreTempName reports whether name is one restoreLinkPin may have
// pinned (this release's or an earlier one's).
func isRestoreTempName(name string) bool {
	if name == linkPinName+"_restore" {
		return true
	}
	pid, ok := strings.CutPrefix(name, linkPinName+"_restore_")
	if !ok || pid == "" {
		return false
	}
	for _, c := range pid {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// restoreTempPID is the process that pinned name, a restoreTempName, and
// whether the name carries one.
func restoreTempPID(name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, linkPinName+"_restore_")
	if !ok || !isRestoreTempName(name) {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	if err != nil {
		return 0, true // more digits than a PID has: no process's
	}
	return pid, true
}

// processRuns reports whether a process of ID pid runs (one of another
// user's too: kill says EPERM for it).
func processRuns(pid int) bool {
	if pid <= 0 {
		return false // 0 and below name process groups, never a pinner
	}
	return !errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

// sweepRestorePins takes away the temporary pins (restoreTempName) under
// pinDir of processes that no longer run: a crash between restoreLinkPin's
// pin and its rename leaves one, which nothing else removes but
// `switchyard remove`. The pin of a process that runs is never touched,
// this one's included: it may be pinning at that very moment. With
// takeOver (at attach, before the pinned link is looked for), a stale pin
// of a link is first renamed to pinDir/link when nothing is there: the
// crash may have come after the daemon's link pin was removed, and that
// pin is then the one that keeps the program attached, which the attach
// takes over as it does a link at pinDir/link (hitless), where it would
// otherwise find the interface busy. Each pin taken away or moved is
// logged; one that cannot be is logged and left.
func sweepRestorePins(pinDir string, takeOver bool, log *slog.Logger) {
	entries, err := os.ReadDir(pinDir)
	if err != nil {
		return // no directory: nothing to sweep; others: the caller's next step says
	}
	linkPath := filepath.Join(pinDir, linkPinName)
	for _, e := range entries {
		pid, ok := restoreTempPID(e.Name())
		if !ok || processRuns(pid) {
			continue
		}
		path := filepath.Join(pinDir, e.Name())
		if takeOver {
			if l, err := link.LoadPinnedLink(path, nil); err == nil {
				l.Close()
				err := unix.Renameat2(unix.AT_FDCWD, path, unix.AT_FDCWD, linkPath, unix.RENAME_NOREPLACE)
				if err == nil {
					log.Warn("took over the link pinned by a process that no longer runs (it crashed while it pinned its link again): moved into place",
						"pin", path, "to", linkPath, "pid", pid)
					continue
				}
				if !errors.Is(err, unix.EEXIST) {
					log.Warn("could not move the link pinned by a process that no longer runs into place", "pin", path, "to", linkPath, "error", err)
					continue
				}
			}
		}
		if err := os.Remove(path); err != nil {
			log.Warn("could not remove the temporary link pin of a process that no longer runs", "pin", path, "pid", pid, "error", err)
			continue
		}
		log.Warn("removed the temporary link pin of a process that no longer runs (it crashed while it pinned its link again)", "pin", path, "pid", pid)
	}
}

// pinnedLinkUsable reports whether a pinned XDP link is still attached to
// ifindex, with the tag of its program and its mode.
func pinnedLinkUsable(l link.Link, ifindex int) (bool, string, AttachMode) {
	info, err := l.Info()
	if err != nil {
		return false, "", 0
	}
	xdp := info.XDP()
	if xdp == nil || int(xdp.Ifindex) != ifindex {
		return false, "", 0
	}
	tag := ""
	if p, err := ebpf.NewProgramFromID(info.Program); err == nil {
		if pi, err := p.Info(); err == nil {
			tag = pi.Tag
		}
		p.Close()
	}
	mode := AttachNative
	if dev, err := netlink.LinkByIndex(ifindex); err == nil && dev.Attrs().Xdp != nil &&
		dev.Attrs().Xdp.AttachMode == nl.XDP_ATTACHED_SKB {
		mode = AttachGeneric
	}
	return true, tag, mode
}

// removePinned detaches the pinned link under pinDir (if any) and removes
// every pin there, and pinDir itself unless keepDir. Safe to call when
// nothing is pinned.
func removePinned(pinDir string, keepDir bool) error {
	if err := CheckBPFFS(pinDir); err != nil {
		return err
	}
	if err := checkPinDir(pinDir); err != nil {
		return err
	}
	linkPath := filepath.Join(pinDir, linkPinName)
	if l, err := link.LoadPinnedLink(linkPath, nil); err == nil {
		// Detach first: a running daemon may still hold the link open,
		// and unpinning alone would leave the program attached until it
		// exits.
		if err := l.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) {
			l.Close()
			return fmt.Errorf("detach %s: %w", linkPath, err)
		}
		if err := l.Unpin(); err != nil {
			l.Close()
			return fmt.Errorf("unpin %s: %w", linkPath, err)
		}
		l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("load pinned link %s: %w; run as root, and if something else is pinned there (not a BPF link), remove it with rm, then run remove again", linkPath, err)
	}
	if keepDir {
		names, err := os.ReadDir(pinDir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove pins in %s: %w; the program is detached: remove what is left with rm -r", pinDir, err)
		}
		for _, e := range names {
			if err := os.RemoveAll(filepath.Join(pinDir, e.Name())); err != nil {
				return fmt.Errorf("remove pins in %s: %w; the program is detached: remove what is left with rm -r", pinDir, err)
			}
		}
		return nil
	}
	if err := os.RemoveAll(pinDir); err != nil {
		return fmt.Errorf("remove pins in %s: %w; the program is detached: remove what is left with rm -r", pinDir, err)
	}
	// Remove the parent too when this was its last interface.
	parent := filepath.Dir(pinDir)
	if parent != BPFFSRoot && strings.HasPrefix(parent, BPFFSRoot) {
		os.Remove(parent) // fails harmlessly when not empty
	}
	return nil
}

// PinDirOwner says whose pins dir holds, for a daemon refused a pin
// directory another one holds: "switchyard run" for a balancer's (its
// connection table), "switchyard agent" for an agent's (its decap
// counters), "" for neither.
func PinDirOwner(dir string) string {
	if _, err := os.Stat(filepath.Join(dir, balancerMapConns)); err == nil {
		return "switchyard run"
	}
	if _, err := os.Stat(filepath.Join(dir, decapStatsPin)); err == nil {
		return "switchyard agent"
	}
	return ""
}

// PinDirEmpty reports whether the pin directory open as dir holds
// nothing: a daemon that finds it so under the directory's lock starts
// afresh there, and removes what it pinned if its start fails. One that
// cannot be read counts as holding pins, which stay.
func PinDirEmpty(dir *os.File) bool {
	_, err := dir.Readdirnames(1)
	return errors.Is(err, io.EOF)
}

// pinDirAdvice ends the errors of checkPinDir.
const pinDirAdvice = "name the pin directory of one balancer or agent (datapath.pin_dir or the agent's pin_dir; by default /sys/fs/bpf/switchyard/IFACE or /sys/fs/bpf/switchyard-agent/IFACE)"

// checkPinDir refuses a directory that removePinned must not delete: the
// root of a bpffs mount (every BPF program's pins are there), or one that
// holds anything Switchyard does not pin. A missing one is nothing to
// delete.
func checkPinDir(pinDir string) error {
	dir, err := filepath.Abs(pinDir)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("refuse to remove %s: %w (%w); %s", pinDir, err, ErrNotPinDir, pinDirAdvice)
	}
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return fmt.Errorf("stat %s: %w", filepath.Dir(dir), err)
	}
	if st.Dev != parent.Dev || st.Ino == parent.Ino {
		return fmt.Errorf("refuse to remove %s: it is the root of a bpffs mount, which holds every BPF program's pins (%w); %s",
			pinDir, ErrNotPinDir, pinDirAdvice)
	}
	names, err := pinNames()
	if err != nil {
		return err
	}
	var foreign []string
	for _, e := range entries {
		switch {
		case e.IsDir():
			foreign = append(foreign, strconv.Quote(e.Name())+" (a directory)")
		case !names[e.Name()] && !isRestoreTempName(e.Name()):
			foreign = append(foreign, strconv.Quote(e.Name()))
		}
	}
	if len(foreign) == 0 {
		return nil
	}
	const shown = 5
	list := strings.Join(foreign[:min(len(foreign), shown)], ", ")
	if len(foreign) > shown {
		list += fmt.Sprintf(" and %d more", len(foreign)-shown)
	}
	return fmt.Errorf("refuse to remove %s: it holds %s, which Switchyard does not pin (%w); %s, or move what is not Switchyard's out of it first",
		pinDir, list, ErrNotPinDir, pinDirAdvice)
}

// pinNames are the names Switchyard pins in a pin directory: the maps of
// the balancer and of the decap program (data sections under the names
// dataMapNames gives them; they include the maps of earlier releases that
// became data sections), the link (the temporary names restoreLinkPin
// gives it, which a crash can leave, are isRestoreTempName's), and the
// pins an upgrade moves: the previous release's Maglev tables and the
// successors adoptConns and adoptStats pin for a moment, which a crash
// can leave.
func pinNames() (map[string]bool, error) {
	names := map[string]bool{
		linkPinName: true, maglevStdPin: true, legacyMaglevStdPin: true, "conns_new": true, decapStatsPin + "_new": true, statsPin + "_new": true,
		standInName: true, standInName + "_std": true,
	}
	for what, load := range map[string]func() (*ebpf.CollectionSpec, error){"balancer": loadBalancer, "decap": loadDecap} {
		spec, err := load()
		if err != nil {
			return nil, fmt.Errorf("read %s object: %w", what, err)
		}
		for sec, m := range spec.Maps {
			if name, ok := dataMapNames[sec]; ok {
				names[name] = true
			} else if !strings.HasPrefix(m.Name, ".") {
				names[m.Name] = true
			}
		}
	}
	return names, nil
}

// AttachPass attaches a plain XDP_PASS program to ifname in the network
// namespace ns (netlink attach, no link object to keep open). A veth only
// delivers frames that its peer XDP_TXes when it has an XDP program itself;
// test and demo topologies call this for the router side of balancer links.
// The attachment lives until the interface is deleted.
func AttachPass(ns netns.NsHandle, ifname string) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine, so no other
		// goroutine inherits the namespace switch.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		errc <- attachPassHere(ifname)
	}()
	return <-errc
}

func attachPassHere(ifname string) error {
	var objs testprogsObjects
	if err := loadTestprogsObjects(&objs, nil); err != nil {
		return fmt.Errorf("load xdp_pass: %w", err)
	}
	defer objs.Close()
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("interface %s: %w", ifname, err)
	}
	if err := netlink.LinkSetXdpFdWithFlags(l, objs.XdpPass.FD(), xdpFlagsDrvMode); err != nil {
		return fmt.Errorf("attach xdp_pass to %s: %w", ifname, err)
	}
	return nil
}

// xdpFlagsDrvMode is XDP_FLAGS_DRV_MODE from linux/if_link.h.
const xdpFlagsDrvMode = 1 << 2
