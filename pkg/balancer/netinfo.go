package balancer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ifaceInfo is what the balancer needs to know about its interface.
type ifaceInfo struct {
	Index  int
	Name   string // now: the interface may have been renamed since the start
	MAC    net.HardwareAddr
	MTU    int
	AddrV4 netip.Addr   // first IPv4 address routers forward; invalid if none
	AddrV6 netip.Addr   // first IPv6 address routers forward; invalid if none
	Addrs  []netip.Addr // every address of the interface
}

// classE is 240.0.0.0/4, reserved ("for future use"): IsGlobalUnicast
// takes it, but routers drop packets from it.
var classE = netip.MustParsePrefix("240.0.0.0/4")

func readIface(name string) (ifaceInfo, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return ifaceInfo{}, fmt.Errorf("interface %q: %w (check the name with `ip link`)", name, err)
	}
	return ifaceOf(l)
}

// readIfaceAt reads the interface of index, whatever its name now: the XDP
// program stays on an interface that is renamed. name is the one it had.
func readIfaceAt(index int, name string) (ifaceInfo, error) {
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return ifaceInfo{}, fmt.Errorf("interface %s (index %d): %w", name, index, err)
	}
	return ifaceOf(l)
}

func ifaceOf(l netlink.Link) (ifaceInfo, error) {
	name := l.Attrs().Name
	info := ifaceInfo{Index: l.Attrs().Index, Name: name, MAC: l.Attrs().HardwareAddr, MTU: l.Attrs().MTU}
	// netlink reports an all-zero address (lo's) as none, like the missing
	// one of a device without Ethernet framing (tun): the datapath refuses
	// the latter, so give the former back its six bytes.
	if len(info.MAC) == 0 && (l.Attrs().EncapType == "ether" || l.Attrs().EncapType == "loopback") {
		info.MAC = make(net.HardwareAddr, 6)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return info, fmt.Errorf("addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		info.Addrs = append(info.Addrs, ip)
		// The address is the outer source of packets that cross the
		// next hop: a link-local one (169.254.0.0/16, fe80::/10, which
		// DHCP-less hosts and every IPv6 link have) or a loopback one
		// would be dropped there, as config refuses them given
		// explicitly.
		if !ip.IsGlobalUnicast() || classE.Contains(ip) {
			continue
		}
		// Nor one the kernel does not take as a source itself: an IPv6
		// address whose duplicate detection has not finished (tentative)
		// or failed (dadfailed: another host has it), or whose preferred
		// lifetime is over (deprecated: on its way out, renumbered).
		if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED|unix.IFA_F_DEPRECATED) != 0 {
			continue
		}
		switch {
		case ip.Is4() && !info.AddrV4.IsValid():
			info.AddrV4 = ip
		case ip.Is6() && !info.AddrV6.IsValid():
			info.AddrV6 = ip
		}
	}
	return info, nil
}

// nextHopsFor returns the configured gateway, or the next hops of the
// default route on the interface (IPv4 first, then IPv6), lowest address
// first. A multipath (ECMP) default route names its next hops apart from
// the route (the kernel lists it with no gateway or interface of its own,
// or, for IPv6 routes added one by one, as routes of one metric): the next
// hops through the interface of the default routes with the lowest metric
// are returned, sorted, so that the choice among them (chooseNextHop) does
// not follow the kernel's order, which changes when a next hop is removed
// and added again.
func nextHopsFor(ifindex int, configured netip.Addr) ([]netip.Addr, error) {
	if configured.IsValid() {
		return []netip.Addr{configured}, nil
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		// Unfiltered: netlink's interface filter compares the route's
		// own interface, which a multipath route does not have.
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{}, 0)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		var gws []netip.Addr
		metric := 0
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			hops := r.MultiPath
			if len(hops) == 0 {
				hops = []*netlink.NexthopInfo{{LinkIndex: r.LinkIndex, Gw: r.Gw, Via: r.Via}}
			}
			var found []netip.Addr
			for _, h := range hops {
				if h.LinkIndex != ifindex {
					continue
				}
				gw, _ := netip.AddrFromSlice(h.Gw)
				// An IPv4 route through an IPv6 router (`via inet6
				// fe80::1`, BGP unnumbered) names it apart: its MAC
				// is what the datapath needs, whatever the family.
				if v, ok := h.Via.(*netlink.Via); ok && !gw.IsValid() {
					gw, _ = netip.AddrFromSlice(v.Addr)
				}
				if gw.IsValid() {
					found = append(found, gw.Unmap())
				}
			}
			switch {
			case len(found) == 0:
			case len(gws) == 0 || r.Priority < metric:
				gws, metric = found, r.Priority
			case r.Priority == metric:
				gws = append(gws, found...)
			}
		}
		if len(gws) > 0 {
			slices.SortFunc(gws, netip.Addr.Compare)
			return slices.Compact(gws), nil
		}
	}
	return nil, errNoGateway
}

// chooseNextHop picks the next hop the datapath sends VIP traffic to among
// hops (lowest first), and returns its MAC, nil if its neighbour entry is
// not usable, and whether current is one of hops and its entry is not
// usable. The datapath holds one next-hop MAC, and with a multipath
// default route the kernel keeps a dead router's next hop in the route
// when nothing withdraws it (static ECMP): so a next hop whose neighbour
// entry is usable is taken before one whose entry is not (FAILED: the
// router stopped answering ARP/ND; INCOMPLETE; none yet). Among those, the
// lowest, so that balancers that see the same routes choose the same
// router, whichever answered first; but not one of left (the next hops
// VIP traffic was moved away from because they stopped answering) while
// another answers: current stays then, because every switch moves all VIP
// traffic to another router, and a flapping one would move it back and
// forth. If none answers: current if it is one of hops, else the lowest,
// which the caller probes.
func chooseNextHop(ifindex int, hops []netip.Addr, current netip.Addr, left []netip.Addr) (gw netip.Addr, mac net.HardwareAddr, currentFailed bool) {
	macs := make([]net.HardwareAddr, len(hops)) // nil: not usable
	cur := slices.Index(hops, current)
	for i, h := range hops {
		macs[i], _ = neighbourMAC(ifindex, h)
	}
	currentFailed = cur >= 0 && macs[cur] == nil
	for i, h := range hops {
		if macs[i] != nil && !slices.Contains(left, h) {
			return h, macs[i], currentFailed
		}
	}
	if cur >= 0 && macs[cur] != nil {
		return current, macs[cur], false
	}
	for i, h := range hops {
		if macs[i] != nil {
			return h, macs[i], currentFailed
		}
	}
	if cur >= 0 {
		return current, nil, true
	}
	return hops[0], nil, false
}

// unresolvedError says why VIP traffic has no next hop when gw's MAC is not
// resolved: gw has not answered ARP/ND (yet), or it cannot, because it is
// not on the interface's link: the kernel reaches it through another
// router (a nexthop.gateway on another subnet, say), so the probes resolve
// that router and gw's neighbour entry never appears.
func unresolvedError(ifindex int, ifname string, gw netip.Addr) error {
	routes, err := netlink.RouteGetWithOptions(gw.AsSlice(), &netlink.RouteGetOptions{OifIndex: ifindex})
	if err == nil && len(routes) > 0 {
		if via, ok := netip.AddrFromSlice(routes[0].Gw); ok && via.Unmap() != gw {
			return fmt.Errorf("next hop %s is not on the link of %s: the kernel routes to it through %s, so it never answers ARP/ND there, and VIP traffic is dropped (counted as no_nexthop); "+
				"set nexthop.gateway to a router on %s's subnet, or add an on-link route to it (`ip route add %s dev %s`)",
				gw, ifname, via.Unmap(), ifname, gw, ifname)
		}
	}
	return fmt.Errorf("next hop %s: MAC not resolved yet; VIP traffic is dropped (counted as no_nexthop) until it is", gw)
}

var errNoGateway = errors.New("no default route on the interface; set nexthop.gateway to the router's address")

// ErrInterfaceGone: the balancer's interface was removed (or moved to
// another network namespace) while the daemon ran, and its XDP program with
// it.
var ErrInterfaceGone = errors.New("the balancer's interface is gone")

// interfaceGone returns an error wrapping ErrInterfaceGone when no
// interface has index in this network namespace any more. An interface
// created again under its name is another one, without the program. Only
// the kernel's answer counts, not the link deletion message that woke the
// caller: a bridge announces that a port left it with a deletion message
// for the port's index (family AF_BRIDGE), and the port stays.
func interfaceGone(name string, index int) error {
	if _, err := netlink.LinkByIndex(index); !errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	return fmt.Errorf("%w: %s (index %d) was removed or moved to another network namespace, and the XDP program with it: "+
		"no VIP traffic is balanced; start switchyard run again once the interface is back (it attaches anew and keeps the pinned flows)",
		ErrInterfaceGone, name, index)
}

// neighbourMAC returns the MAC of gw in the neighbour table, if usable.
func neighbourMAC(ifindex int, gw netip.Addr) (net.HardwareAddr, bool) {
	n, ok := neighbourOf(ifindex, gw)
	if !ok || len(n.HardwareAddr) != 6 || n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) != 0 || n.State == netlink.NUD_NONE {
		return nil, false
	}
	return n.HardwareAddr, true
}

// neighbourOf returns gw's entry in the neighbour table of the interface.
func neighbourOf(ifindex int, gw netip.Addr) (netlink.Neigh, bool) {
	fam := netlink.FAMILY_V4
	if gw.Is6() {
		fam = netlink.FAMILY_V6
	}
	neighs, err := netlink.NeighList(ifindex, fam)
	if err != nil {
		return netlink.Neigh{}, false
	}
	for _, n := range neighs {
		ip, ok := netip.AddrFromSlice(n.IP)
		if ok && ip.Unmap() == gw {
			return n, true
		}
	}
	return netlink.Neigh{}, false
}

// neighbourState names the state of gw's neighbour entry as `ip neigh`
// does, for logs.
func neighbourState(ifindex int, gw netip.Addr) string {
	n, ok := neighbourOf(ifindex, gw)
	if !ok {
		return "none"
	}
	for _, s := range []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_REACHABLE, "REACHABLE"}, {netlink.NUD_STALE, "STALE"},
		{netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"}, {netlink.NUD_FAILED, "FAILED"},
		{netlink.NUD_NOARP, "NOARP"}, {netlink.NUD_PERMANENT, "PERMANENT"},
	} {
		if n.State&s.bit != 0 {
			return s.name
		}
	}
	return "none"
}

// probeGateway makes the kernel resolve gw's MAC by sending it one UDP
// datagram (to the discard port) through the interface ifname: the
// neighbour watch then sees the answer. The socket is bound to ifname: a
// routed datagram leaves wherever the routing table prefers, so for a gw
// reached `onlink`, or through another interface too, it resolved (or
// checked) gw on the wrong interface, and ifname's entry never. A
// link-local gw (an IPv6 router's usual address) is reached through
// ifname's zone: without one, connect refuses it (EINVAL) and nothing is
// sent.
func probeGateway(gw netip.Addr, ifname string) {
	if gw.IsLinkLocalUnicast() && gw.Is6() {
		gw = gw.WithZone(ifname)
	}
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) { err = unix.BindToDevice(int(fd), ifname) }); cerr != nil {
			return cerr
		}
		return err
	}}
	c, err := d.Dial("udp", netip.AddrPortFrom(gw, 9).String())
	if err != nil {
		return
	}
	c.Write([]byte{0})
	c.Close()
}

// watchNetwork sends on out (without blocking) whenever a neighbour, the
// link, an address or a route of interface ifindex changes, until ctx ends.
// Watching, not polling: the kernel tells us when the router's MAC or our
// interface changes; events of other interfaces are ignored, so busy
// neighbour tables elsewhere cause no work here.
func watchNetwork(ctx context.Context, ifindex int, out chan<- struct{}, log *slog.Logger) error {
	return watchWith(ctx, ifindex, out, log, subscribeNetlink)
}

// netSubscription is the channels of netlink's neighbour, link, address
// and route updates. netlink closes a channel when its subscription fails
// (a receive error, such as ENOBUFS when the kernel's events outran the
// socket's buffer), and when done closes.
type netSubscription struct {
	neigh <-chan netlink.NeighUpdate
	link  <-chan netlink.LinkUpdate
	addr  <-chan netlink.AddrUpdate
	route <-chan netlink.RouteUpdate
}

// drain reads every channel until netlink closes it, once done is closed:
// a subscription's goroutine blocked on a full channel would otherwise
// never see its socket closed, and leak with it.
func (s netSubscription) drain() {
	for range s.neigh {
	}
	for range s.link {
	}
	for range s.addr {
	}
	for range s.route {
	}
}

// subscribeNetlink subscribes to the updates until done closes.
func subscribeNetlink(done <-chan struct{}) (netSubscription, error) {
	neighCh := make(chan netlink.NeighUpdate, 64)
	linkCh := make(chan netlink.LinkUpdate, 16)
	addrCh := make(chan netlink.AddrUpdate, 16)
	routeCh := make(chan netlink.RouteUpdate, 64)
	sub := netSubscription{neighCh, linkCh, addrCh, routeCh}
	if err := netlink.NeighSubscribe(neighCh, done); err != nil {
		return sub, fmt.Errorf("watch neighbours: %w", err)
	}
	if err := netlink.LinkSubscribe(linkCh, done); err != nil {
		return sub, fmt.Errorf("watch links: %w", err)
	}
	if err := netlink.AddrSubscribe(addrCh, done); err != nil {
		return sub, fmt.Errorf("watch addresses: %w", err)
	}
	if err := netlink.RouteSubscribe(routeCh, done); err != nil {
		return sub, fmt.Errorf("watch routes: %w", err)
	}
	return sub, nil
}

// resubscribeDelay is the wait between attempts to subscribe again.
const resubscribeDelay = time.Second

// watchWith is watchNetwork with the subscriptions made by subscribe. A
// subscription that ends is not the end of the watch: a closed channel
// would be read at once forever (a core spinning, and no event reaching
// out again), so all of them are made afresh, and out is told once they
// are, for the changes missed meanwhile. log hears of each lost
// subscription, of the first failure to subscribe again (not of every
// retry) and of the recovery.
func watchWith(ctx context.Context, ifindex int, out chan<- struct{}, log *slog.Logger, subscribe func(done <-chan struct{}) (netSubscription, error)) error {
	done := make(chan struct{})
	sub, err := subscribe(done)
	if err != nil {
		close(done)
		return err
	}
	notify := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		for {
			var idx int
			ok := true
			select {
			case <-ctx.Done():
				close(done)
				sub.drain()
				return
			case u, open := <-sub.neigh:
				idx, ok = u.LinkIndex, open
			case u, open := <-sub.link:
				idx, ok = int(u.Index), open
			case u, open := <-sub.addr:
				idx, ok = u.LinkIndex, open
			case u, open := <-sub.route:
				idx, ok = u.LinkIndex, open
				// A multipath route has no interface of its own
				// (LinkIndex 0): its next hops have.
				for _, h := range u.MultiPath {
					if h.LinkIndex == ifindex {
						idx = ifindex
					}
				}
			}
			if !ok {
				close(done) // ends the subscriptions still open
				go sub.drain()
				log.Warn("network watch: a netlink subscription ended (the kernel may have dropped events, e.g. ENOBUFS); subscribing again, then syncing the next hop and addresses afresh")
				failures := 0
				for {
					done = make(chan struct{})
					if sub, err = subscribe(done); err == nil {
						break
					}
					close(done)
					if failures++; failures == 1 {
						log.Warn("network watch: cannot subscribe to netlink again; retrying every second, and the next hop and addresses are synced only on the 2 s tick meanwhile", "error", err)
					}
					select {
					case <-ctx.Done():
						return
					case <-time.After(resubscribeDelay):
					}
				}
				log.Info("network watch: subscribed again", "failed_attempts", failures)
				// Only now: a sync before the new subscription
				// would miss the changes made until it.
				notify()
				continue
			}
			if idx == ifindex {
				notify()
			}
		}
	}()
	return nil
}

// monotonic is the clock of the connection table's timestamps.
func monotonic() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
