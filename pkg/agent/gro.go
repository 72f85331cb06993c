package agent

import (
	"context"
	"fmt"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/ethtool"
)

// groRecord is an interface on which the agent turned generic receive
// offload off, having found it on; the balancer records its own the same
// way.
type groRecord = ethtool.GROOff

// groForMode turns GRO off on the interface when the decap program runs
// in generic (skb) mode, recording it first: generic XDP runs after GRO,
// so the program would strip the outer header of a merged super-packet,
// whose segmentation metadata then no longer fits what it carries. (The
// kernel turns LRO and hardware GRO off itself when a generic program is
// attached.) In native mode GRO runs after XDP: GRO an earlier generic
// run turned off is turned on again, as it is in either mode on another
// interface than this run's (see adoptGRO). A failure to turn it off is
// logged, not fatal: the agent decapsulates what GRO did not merge.
//
// The record is written under the host lock, which is taken only then: a
// start that has nothing to record (native mode, or GRO off already) does
// not wait for an agent that holds the lock too long, nor fail on it with
// its program attached.
func (a *Agent) groForMode(ctx context.Context, mode datapath.AttachMode) error {
	if a.gro != nil && (mode != datapath.AttachGeneric || a.gro.Ifindex != a.ifindex) {
		// Another interface's record (see adoptGRO) is restored in
		// either mode: the attach took the earlier run's program off it.
		if err := a.lockHost(ctx); err != nil {
			return err
		}
		defer a.unlockHost()
		err := a.restoreGRO()
		if serr := a.saveState(); err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
	}
	if mode != datapath.AttachGeneric {
		return nil
	}
	if a.gro != nil {
		return nil // off already: an earlier run turned it off
	}
	on, err := a.eth.GRO(a.iface)
	if err != nil || !on {
		if err != nil {
			a.log.Warn(groOffFailed(a.iface), "error", err)
		}
		return nil
	}
	if err := a.lockHost(ctx); err != nil {
		return err
	}
	defer a.unlockHost()
	a.gro = &groRecord{Dev: a.iface, Ifindex: a.ifindex}
	if err := a.saveState(); err != nil {
		a.gro = nil
		return err
	}
	if err := a.eth.SetGRO(a.iface, false); err != nil {
		a.gro = nil
		a.log.Warn(groOffFailed(a.iface), "error", err)
		return a.saveState()
	}
	a.log.Info("generic receive offload (GRO) turned off: in generic mode the decap program would see the packets GRO merged and strip their outer header with segmentation metadata that no longer fits; " +
		"the agent turns it on again when it stops")
	return nil
}

func groOffFailed(iface string) string {
	return "could not turn off generic receive offload (GRO) for the generic-mode decap program: packets GRO merges are decapsulated with segmentation metadata that no longer fits; " +
		"turn it off with `ethtool -K " + iface + " gro off`, or use native mode"
}

// restoreGRO turns GRO on again where the agent (or an earlier run) turned
// it off, unless it is on again already. Gone with its interface, it is
// nothing to restore. a.gro names this run's interface (under its name
// now: see followGRO) or one adoptGRO found to be the recorded one, and
// its index. It may run once the pins are gone, with nothing left to
// tell a rename by: the device at the index is the interface only under
// that name, as the balancer's GRO record is found (ethtool.GROOff.Find).
// Another device given the index since (the interface deleted, and `ip
// link add ... index N`) is left as it is: its GRO was never the agent's.
func (a *Agent) restoreGRO() error {
	g := a.gro
	if g == nil {
		return nil
	}
	l, other, err := g.Find(a.nl.LinkByIndex)
	if err != nil {
		return fmt.Errorf("find interface %s (index %d), on which generic receive offload (GRO) was turned off: %w (turn it on with `ethtool -K %s gro on`)", g.Dev, g.Ifindex, err, g.Dev)
	}
	if l == nil || other != "" {
		a.log.Info(g.Gone("the agent", "in "+a.statePath, other))
		a.gro = nil
		return nil
	}
	name := l.Attrs().Name
	on, err := a.eth.GRO(name)
	if err != nil {
		return fmt.Errorf("turn generic receive offload of %s on again: %w (turn it on with `ethtool -K %s gro on`)", name, err, name)
	}
	if !on {
		if err := a.eth.SetGRO(name, true); err != nil {
			return fmt.Errorf("turn generic receive offload of %s on again: %w (turn it on with `ethtool -K %s gro on`)", name, err, name)
		}
		a.log.Info("generic receive offload (GRO) turned on again", "device", name)
	}
	a.gro = nil
	return nil
}

// followGRO brings a.gro's name up to date with a rename while the pins
// are still there (see restoreGRO): the device at the index is the
// interface under another name while the pinned link drives it (see
// interfaceAt). A device that is not the interface, or a netlink error,
// is left for restoreGRO to find as such.
func (a *Agent) followGRO() {
	if a.gro == nil {
		return
	}
	if l, _, err := a.interfaceAt(a.gro.Dev, a.gro.Ifindex); err == nil && l != nil {
		a.gro.Dev = l.Attrs().Name
	}
}

// adoptGRO takes over GRO an earlier run turned off, if it is still off.
// The record names the interface and its index, found as a sysctl's are
// (see recordedLink): another device at the index, whose GRO the agent
// never touched, is left as it is, and the record dropped as that of an
// interface gone.
func (a *Agent) adoptGRO(g groRecord) error {
	l, other, err := a.recordedLink(g.Dev, g.Ifindex)
	if err != nil {
		return fmt.Errorf("find interface %s (index %d), on which the earlier run turned generic receive offload (GRO) off: %w", g.Dev, g.Ifindex, err)
	}
	if l == nil {
		a.log.Info(g.Gone("the agent", "in "+a.statePath, other))
		return nil
	}
	g.Dev = l.Attrs().Name
	on, err := a.eth.GRO(g.Dev)
	if err != nil {
		return err
	}
	if on {
		a.log.Info("GRO turned on since the earlier run turned it off: left as it is", "device", g.Dev)
		return nil
	}
	// Another interface's (the configured one renamed since, for a
	// remove with the old configuration or a start on an interface
	// created again under the name) is not this run's to keep; but the
	// earlier run's generic-mode program may still run on it, and would
	// see merged packets: it comes back on once that program is off, at
	// Remove's teardown after the detach, or at Start's groForMode after
	// the attach took the earlier run's link off it.
	a.gro = &g
	return nil
}
