package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	loopback = "lo"
	// vipReadyTimeout bounds the wait for an IPv6 VIP to leave the
	// tentative state; the kernel work item that clears it normally runs
	// within milliseconds.
	vipReadyTimeout = 2 * time.Second
	vipReadyPoll    = 5 * time.Millisecond
)

// addVIPs puts every VIP on lo as a host address, recording each in the
// state file before it adds it; a VIP already on lo (with any prefix
// length) is left to whoever put it there, unless an earlier run put it
// there (loadState took it over). One that another agent of this host
// added is shared: it is recorded as this agent's too, and whichever of
// them stops last removes it. It returns once every IPv6 VIP can be bound
// to. It runs under the host lock.
func (a *Agent) addVIPs() error {
	lo, err := a.nl.LinkByName(loopback)
	if err != nil {
		return fmt.Errorf("find %s: %w", loopback, err)
	}
	present, err := a.loAddrs(lo)
	if err != nil {
		return err
	}
	var v6 []netip.Addr
	for _, vip := range a.vips {
		if vip.Is6() {
			v6 = append(v6, vip)
		}
		p := netip.PrefixFrom(vip, vip.BitLen())
		if _, ok := present[vip]; ok {
			if slices.Contains(a.added, p) {
				continue
			}
			if err := a.shareVIP(p); err != nil {
				return err
			}
			continue
		}
		addr := &netlink.Addr{IPNet: ipNet(p)}
		if vip.Is6() {
			// Duplicate address detection makes no sense for an address
			// every backend shares, and would hold it back for a second.
			addr.Flags = unix.IFA_F_NODAD
		}
		a.added = append(a.added, p)
		if err := a.saveState(); err != nil {
			return err
		}
		if err := a.nl.AddrAdd(lo, addr); err != nil {
			a.added = a.added[:len(a.added)-1]
			if errors.Is(err, unix.EEXIST) { // added by someone else meanwhile
				if err := a.saveState(); err != nil {
					return err
				}
				if err := a.shareVIP(p); err != nil {
					return err
				}
				continue
			}
			if vip.Is6() && errors.Is(err, unix.EACCES) && ipv6Disabled(loopback) {
				return fmt.Errorf("add VIP %s to %s: %w: IPv6 is disabled on %s (sysctl %s = 1); set it to 0, or remove the IPv6 VIPs from the agent's vips",
					p, loopback, err, loopback, strings.ReplaceAll(disableIPv6Path(loopback), "/", "."))
			}
			return fmt.Errorf("add VIP %s to %s: %w", p, loopback, err)
		}
		a.log.Info("VIP added to lo", "vip", p)
	}
	return a.waitVIPsUsable(lo, v6)
}

// shareVIP records p, found on lo, as this agent's too if another agent of
// the host recorded adding it; otherwise it is the admin's and stays.
func (a *Agent) shareVIP(p netip.Prefix) error {
	other := a.sharedVIP(p, false)
	if other == "" {
		a.log.Info("VIP already on lo, leaving it as it is", "vip", p.Addr())
		return nil
	}
	a.added = append(a.added, p)
	if err := a.saveState(); err != nil {
		return err
	}
	a.log.Info("VIP on lo added by another agent of this host: shared, the last of them to stop removes it", "vip", p, "other_state_file", other)
	return nil
}

// waitVIPsUsable polls until none of vips is tentative: a socket cannot
// bind to a tentative IPv6 address (EADDRNOTAVAIL) and packets to it are
// dropped. Even with IFA_F_NODAD the flag is cleared by a kernel work item,
// not by the netlink request.
func (a *Agent) waitVIPsUsable(lo netlink.Link, vips []netip.Addr) error {
	if len(vips) == 0 {
		return nil
	}
	deadline := time.Now().Add(vipReadyTimeout)
	for {
		present, err := a.loAddrs(lo)
		if err != nil {
			return err
		}
		var waiting []netip.Addr
		for _, vip := range vips {
			flags := present[vip]
			if flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("VIP %s on %s: duplicate address detection failed", vip, loopback)
			}
			if flags&unix.IFA_F_TENTATIVE != 0 {
				waiting = append(waiting, vip)
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("VIPs %v on %s are still tentative after %.0f s, so servers cannot bind to them; check that %s is up (`ip link set lo up`)",
				waiting, loopback, vipReadyTimeout.Seconds(), loopback)
		}
		time.Sleep(vipReadyPoll)
	}
}

// loAddrs returns lo's addresses with their IFA_F_* flags.
func (a *Agent) loAddrs(lo netlink.Link) (map[netip.Addr]int, error) {
	list, err := a.nl.AddrList(lo, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", loopback, err)
	}
	out := make(map[netip.Addr]int, len(list))
	for _, ad := range list {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok {
			out[ip.Unmap()] = ad.Flags
		}
	}
	return out, nil
}

// removeVIPs deletes the VIP addresses addVIPs added (or an earlier run
// did, see loadState).
func (a *Agent) removeVIPs() error {
	if len(a.added) == 0 {
		return nil
	}
	defer func() { a.added = nil }()
	return a.deleteVIPs(a.added)
}

// deleteVIPs removes ps from lo; one already gone is no error. One that
// another running agent of the host shares stays on lo for it.
func (a *Agent) deleteVIPs(ps []netip.Prefix) error {
	ps = slices.DeleteFunc(slices.Clone(ps), func(p netip.Prefix) bool {
		other := a.sharedVIP(p, true)
		if other != "" {
			a.log.Info("VIP left on lo: another running agent of this host uses it", "vip", p, "other_state_file", other)
		}
		return other != ""
	})
	if len(ps) == 0 {
		return nil
	}
	lo, err := a.nl.LinkByName(loopback)
	if err != nil {
		return fmt.Errorf("find %s to remove the VIPs %v: %w", loopback, ps, err)
	}
	var errs []error
	for _, p := range ps {
		err := a.nl.AddrDel(lo, &netlink.Addr{IPNet: ipNet(p)})
		switch {
		case errors.Is(err, unix.EADDRNOTAVAIL), errors.Is(err, unix.ENOENT):
			// Someone removed it already.
		case err != nil:
			errs = append(errs, fmt.Errorf("remove VIP %s from %s: %w", p, loopback, err))
		default:
			a.log.Info("VIP removed from lo", "vip", p)
		}
	}
	return errors.Join(errs...)
}

// forgetVIPs drops from what the agent added the VIPs gone says someone
// removed from lo while it ran: the address is no longer the agent's, and
// one that another daemon (keepalived, an admin) adds again is that
// daemon's, which the agent's stop, or after a crash its next run, must
// leave. The record is rewritten without them. It runs on the watcher,
// whose ctx ends its wait for the host lock when the agent stops: the
// stop then takes the lock itself, and its undo, which leaves the
// forgotten VIPs alone, removes the record.
func (a *Agent) forgetVIPs(ctx context.Context, gone func(netip.Prefix) bool) {
	a.addedMu.Lock()
	found := slices.ContainsFunc(a.added, gone)
	a.addedMu.Unlock()
	if !found {
		return
	}
	// The record is written under the host lock, and so read whole by
	// the host's other agents. Only the watcher changes added while the
	// agent runs: what was gone above still is.
	lockErr := a.lockHost(ctx)
	defer a.unlockHost()
	a.addedMu.Lock()
	defer a.addedMu.Unlock()
	a.added = slices.DeleteFunc(a.added, func(p netip.Prefix) bool {
		if gone(p) {
			a.log.Warn("VIP removed from lo behind the agent's back: the host drops what the balancers send to it until it is back on lo (restart the agent to put it back); "+
				"the agent no longer counts it as its own, so one added again by someone else stays at stop", "vip", p)
			return true
		}
		return false
	})
	err := lockErr
	if err == nil {
		err = a.saveState()
	}
	if err != nil {
		a.log.Error("VIP removed from lo: cannot record that it is no longer the agent's", "error", err)
	}
}

// disableIPv6Path is dev's disable_ipv6 sysctl, relative to /proc/sys.
func disableIPv6Path(dev string) string { return filepath.Join("net/ipv6/conf", dev, "disable_ipv6") }

// ipv6Disabled reports whether IPv6 is turned off on dev, in the network
// namespace of the calling thread: the kernel then refuses its IPv6
// addresses with EACCES.
func ipv6Disabled(dev string) bool {
	b, err := os.ReadFile(filepath.Join(procSys, disableIPv6Path(dev)))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
