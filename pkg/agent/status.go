package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/buildinfo"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"golang.org/x/sys/unix"
)

// AgentStatus reports what the agent keeps in force, read from the host
// and the decap program at the time of the call: lo's addresses, the
// sysctls' values and GRO are read again, so a VIP someone removed from
// lo, or a sysctl or GRO changed behind the agent's back, shows. It fails with
// ErrNotRunning while the agent is not running. It implements
// api.AgentService.
func (a *Agent) AgentStatus(context.Context) (api.AgentStatus, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if !a.running {
		return api.AgentStatus{}, ErrNotRunning
	}
	st := api.AgentStatus{
		Node:                  a.node,
		Interface:             a.iface,
		AttachMode:            a.attached.Mode.String(),
		ProgramTag:            a.attached.NewTag,
		Build:                 buildinfo.Read(),
		ConfigFile:            a.cfgPath,
		PinDir:                a.pinDir,
		StateFile:             a.statePath,
		StartedAt:             a.started,
		EncapFollowsInterface: a.encapFixed == nil,
		GUEPort:               a.guePort,
		EncapAddresses:        []string{},
		VIPs:                  []api.AgentVIP{},
		Sysctls:               []api.AgentSysctl{},
	}
	// One renamed while the agent runs keeps the decap program, and
	// shows under its name now; another device given its index since is
	// not it (see currentInterface).
	if l, err := a.currentInterface(); err == nil && l != nil && l.Attrs().Name != a.iface {
		st.Interface, st.ConfiguredInterface = l.Attrs().Name, a.iface
	}
	for _, e := range a.EncapAddrs() {
		st.EncapAddresses = append(st.EncapAddresses, e.String())
	}
	// A status is a moment someone looks: the pin and the attachment are
	// checked then too, besides the watcher's rounds.
	if err := a.checkLinkPin(); err != nil {
		// The status says "not pinned" by itself.
		st.LinkPinError = strings.TrimPrefix(err.Error(), datapath.ErrLinkNotPinned.Error()+": ")
	} else {
		st.LinkPinned = true
	}
	if err := a.checkMapPins(); err != nil {
		st.MapPinError = strings.TrimPrefix(err.Error(), datapath.ErrMapsNotPinned.Error()+": ")
	} else {
		st.MapsPinned = true
	}
	detached, checkErr := a.checkDetached()
	if detached != nil {
		// The status says "not attached" by itself.
		st.ProgramDetached = strings.TrimPrefix(detached.Error(), datapath.ErrDecapDetached.Error()+": ")
	}
	st.ProgramAttached = st.ProgramDetached == ""
	if checkErr != nil {
		st.AttachCheckError = strings.TrimPrefix(checkErr.Error(), datapath.ErrAttachCheckFailed.Error()+": ")
	}
	a.linkMu.Lock()
	st.LinkPinRestores, st.ProgramDetachments = a.linkRestores, a.detachments
	st.MapPinRestores = a.mapRestores
	a.linkMu.Unlock()
	var err error
	if st.Counters, err = a.decap.Stats(); err != nil {
		return api.AgentStatus{}, fmt.Errorf("read the decap counters: %w", err)
	}
	lo, err := a.nl.LinkByName(loopback)
	if err != nil {
		return api.AgentStatus{}, fmt.Errorf("find %s: %w", loopback, err)
	}
	present, err := a.loAddrs(lo)
	if err != nil {
		return api.AgentStatus{}, err
	}
	a.addedMu.Lock()
	defer a.addedMu.Unlock()
	for _, vip := range a.vips {
		flags, on := present[vip]
		st.VIPs = append(st.VIPs, api.AgentVIP{
			Address:   vip.String(),
			OnLo:      on,
			Tentative: on && flags&unix.IFA_F_TENTATIVE != 0,
			Added:     slices.Contains(a.added, netip.PrefixFrom(vip, vip.BitLen())),
		})
	}
	a.sysctlMu.Lock()
	defer a.sysctlMu.Unlock()
	// The interface deleted while the agent runs (the watcher then
	// reports it on Lost, and `switchyard agent` stops) takes its
	// settings and its GRO with it: the status shows them gone, as the
	// interface line does (see checkDetached), instead of failing on
	// what it reports.
	for _, s := range a.sysctls {
		now, err := a.readSysctlOf(s)
		gone := errors.Is(err, ErrInterfaceGone)
		if err != nil && !gone {
			return api.AgentStatus{}, fmt.Errorf("read sysctl %s: %w", s.name, err)
		}
		st.Sysctls = append(st.Sysctls, api.AgentSysctl{Name: s.name, Old: s.Old, Set: s.Set, Now: now, Gone: gone})
	}
	if g := a.gro; g != nil {
		// By name and index, a rename followed while the pinned link
		// drives the interface: another device given its index since
		// is not it (see interfaceAt).
		l, _, err := a.interfaceAt(g.Dev, g.Ifindex)
		if err != nil {
			return api.AgentStatus{}, fmt.Errorf("find interface %s (index %d), on which GRO was turned off: %w", g.Dev, g.Ifindex, err)
		}
		st.GRO = &api.AgentGRO{Interface: g.Dev, WasOn: true, Gone: l == nil}
		if l != nil {
			st.GRO.Interface = l.Attrs().Name
			if st.GRO.NowOn, err = a.eth.GRO(st.GRO.Interface); err != nil {
				return api.AgentStatus{}, err
			}
		}
	}
	return st, nil
}
