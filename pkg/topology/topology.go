// Package topology builds the Switchyard test and demo network on one host:
// a client, a router, balancers and backends, each in its own named network
// namespace, joined to the router by veth pairs.
//
//	client ──cl0── router ──lb1..n── balancers
//	                  └─────be1..n── backends
//
// The router sends the VIP prefixes (10.100.0.0/24, fd00:100::/64) over a
// multipath route to the balancers with an L4 hash, as a real ECMP router
// would; backends answer clients directly through the router.
//
// Every node is identified by its namespace name ("<prefix>-client",
// "<prefix>-lb1", ...), which the Client, Router, Balancer and Backend
// methods return.
package topology

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted, as with
// `ip netns add`; `nsenter --net=NetnsDir/NAME` enters one.
const NetnsDir = "/var/run/netns"

// MaxPrefixLen bounds Config.Prefix so that "<prefix>-client" fits in
// IFNAMSIZ-1 (15) characters, should anyone name a device after a node.
const MaxPrefixLen = 8

// MTUs of the links. The balancer and backend links are larger than the
// client's so that a full-size client packet still fits after the balancer
// adds an outer IPv6 header (40 bytes) or GUE (IPv6 + UDP + GUE).
const (
	ClientMTU = 1500
	CoreMTU   = 1600
)

// Interface names. Inside every node the device towards the router is EthName;
// on the router the device towards the client is RouterClientIf and the ones
// towards balancer and backend i are RouterBalancerIf(i) and RouterBackendIf(i).
const (
	EthName        = "eth0"
	RouterClientIf = "cl0"
)

// Addresses of the client link and the VIP prefixes routed to the balancers.
// They are the same in every Topology: each lives in its own namespaces.
var (
	ClientIPv4       = netip.MustParseAddr("10.0.0.2")
	ClientIPv6       = netip.MustParseAddr("fd00::2")
	RouterClientIPv4 = netip.MustParseAddr("10.0.0.1")
	RouterClientIPv6 = netip.MustParseAddr("fd00::1")
	VIPPrefixIPv4    = netip.MustParsePrefix("10.100.0.0/24")
	VIPPrefixIPv6    = netip.MustParsePrefix("fd00:100::/64")
)

// Errors callers can branch on.
var (
	ErrClosed      = errors.New("topology is closed")
	ErrUnknownNode = errors.New("node is not part of this topology")
	ErrPrefixInUse = errors.New("namespace prefix already in use")
)

// RouterBalancerIf is the router's device towards balancer i (1-based).
func RouterBalancerIf(i int) string { return "lb" + strconv.Itoa(i) }

// RouterBackendIf is the router's device towards backend i (1-based).
func RouterBackendIf(i int) string { return "be" + strconv.Itoa(i) }

// BalancerIPv4 is the eth0 address of balancer i (1-based): 10.1.i.2.
func BalancerIPv4(i int) netip.Addr { return v4(1, i, 2) }

// BalancerIPv6 is the eth0 address of balancer i: fd00:1:i::2.
func BalancerIPv6(i int) netip.Addr { return v6(1, i, 2) }

// RouterBalancerIPv4 is the router's address towards balancer i: 10.1.i.1.
func RouterBalancerIPv4(i int) netip.Addr { return v4(1, i, 1) }

// RouterBalancerIPv6 is the router's address towards balancer i: fd00:1:i::1.
func RouterBalancerIPv6(i int) netip.Addr { return v6(1, i, 1) }

// BackendIPv4 is the eth0 address of backend i (1-based): 10.2.i.2.
func BackendIPv4(i int) netip.Addr { return v4(2, i, 2) }

// BackendIPv6 is the eth0 address of backend i: fd00:2:i::2.
func BackendIPv6(i int) netip.Addr { return v6(2, i, 2) }

// RouterBackendIPv4 is the router's address towards backend i: 10.2.i.1.
func RouterBackendIPv4(i int) netip.Addr { return v4(2, i, 1) }

// RouterBackendIPv6 is the router's address towards backend i: fd00:2:i::1.
func RouterBackendIPv6(i int) netip.Addr { return v6(2, i, 1) }

func v4(subnet, i, host int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(subnet), byte(i), byte(host)})
}

// v6 writes i in decimal digits, like the IPv4 octet, so that balancer 12
// is 10.1.12.2 and fd00:1:12::2.
func v6(subnet, i, host int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:%d:%d::%d", subnet, i, host))
}

// Config describes a topology.
type Config struct {
	// Prefix starts every namespace name ("<prefix>-client"). Required, at
	// most MaxPrefixLen characters of [A-Za-z0-9_]. Include a random or
	// pid-based token (see RandomPrefix) so that parallel runs never collide.
	Prefix string
	// Balancers is the number of balancer nodes, at least 1 and at most 255.
	Balancers int
	// Backends is the number of backend nodes, at least 1 and at most 255.
	Backends int
	// AttachPass, when not nil, is called for every router-side device that
	// faces a balancer. It must attach an XDP program there (a plain
	// XDP_PASS is enough): XDP_TX from the balancer's veth only delivers
	// when the peer veth has an XDP program. It runs on a thread inside
	// the router's namespace (ns is that namespace), so
	// net.InterfaceByName(ifname) finds the device; goroutines it starts
	// do not run there. Leave it nil when no XDP_TX traffic is sent.
	AttachPass func(ns netns.NsHandle, ifname string) error
}

// Validate reports whether the configuration can be built.
func (c Config) Validate() error {
	if err := validatePrefix(c.Prefix); err != nil {
		return err
	}
	if c.Balancers < 1 || c.Balancers > 255 {
		return fmt.Errorf("topology: Balancers = %d: must be between 1 and 255", c.Balancers)
	}
	if c.Backends < 1 || c.Backends > 255 {
		return fmt.Errorf("topology: Backends = %d: must be between 1 and 255", c.Backends)
	}
	return nil
}

func validatePrefix(p string) error {
	if p == "" {
		return errors.New("topology: Prefix is empty: set it to a short unique token such as RandomPrefix(\"sy\")")
	}
	if len(p) > MaxPrefixLen {
		return fmt.Errorf("topology: Prefix %q is %d characters: use at most %d", p, len(p), MaxPrefixLen)
	}
	for _, r := range p {
		// No '-': Cleanup matches "<prefix>-", which must not also match
		// the names of a longer prefix.
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("topology: Prefix %q contains %q: use only letters, digits and '_'", p, r)
		}
	}
	return nil
}

// Topology is a built test network. Its methods are safe for concurrent use.
type Topology struct {
	cfg Config

	mu     sync.RWMutex
	closed bool
	nodes  map[string]netns.NsHandle // namespace name → open handle
	order  []string                  // creation order, for Close
	owner  owner                     // this process, as the marker names it
	marker *os.File                  // the marker, locked, while New runs
}

// New builds the topology described by cfg. On error it tears down whatever
// it had built.
func New(cfg Config) (*Topology, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Topology{cfg: cfg, nodes: make(map[string]netns.NsHandle)}
	var err error
	if t.owner, err = self(); err != nil {
		return nil, err
	}
	// The marker stays locked until the topology is built, so that no
	// sweep takes a half-built one for the leftovers of a killed run.
	if t.marker, err = claim(cfg.Prefix); err != nil {
		return nil, err
	}
	if err := t.build(); err != nil {
		return nil, errors.Join(err, t.Close())
	}
	t.mu.Lock()
	t.marker.Close()
	t.marker = nil
	t.mu.Unlock()
	return t, nil
}

// Prefix returns the namespace name prefix (for Cleanup, or to tell a
// user how to enter a node).
func (t *Topology) Prefix() string { return t.cfg.Prefix }

// Client returns the client node's name.
func (t *Topology) Client() string { return t.cfg.Prefix + "-client" }

// Router returns the router node's name.
func (t *Topology) Router() string { return t.cfg.Prefix + "-router" }

// Balancer returns the name of balancer node i (1-based).
func (t *Topology) Balancer(i int) string { return t.cfg.Prefix + "-lb" + strconv.Itoa(i) }

// Backend returns the name of backend node i (1-based).
func (t *Topology) Backend(i int) string { return t.cfg.Prefix + "-be" + strconv.Itoa(i) }

// Balancers returns the number of balancer nodes.
func (t *Topology) Balancers() int { return t.cfg.Balancers }

// Backends returns the number of backend nodes.
func (t *Topology) Backends() int { return t.cfg.Backends }

// Nodes returns every node name, in creation order.
func (t *Topology) Nodes() []string {
	names := []string{t.Client(), t.Router()}
	for i := 1; i <= t.cfg.Balancers; i++ {
		names = append(names, t.Balancer(i))
	}
	for i := 1; i <= t.cfg.Backends; i++ {
		names = append(names, t.Backend(i))
	}
	return names
}

// NsPath returns the bind-mount path of a node's namespace, for
// `nsenter --net=PATH`. It does not check that node exists.
func (t *Topology) NsPath(node string) string { return filepath.Join(NetnsDir, node) }

// NsHandle returns the open handle of a node's namespace, or netns.None()
// when node is unknown or the topology is closed. The handle belongs to the
// Topology: do not close it, and do not use it after Close.
func (t *Topology) NsHandle(node string) netns.NsHandle {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if h, ok := t.nodes[node]; ok && !t.closed {
		return h
	}
	return netns.None()
}

// Close deletes every namespace the topology created. Namespaces vanish
// once the last socket or process inside them is gone: close listeners and
// connections, and stop commands, before (or soon after) calling Close.
// Close is idempotent.
func (t *Topology) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	for _, name := range slices.Backward(t.order) {
		h := t.nodes[name]
		if err := h.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close handle of %s: %w", name, err))
		}
		if err := deleteNamed(name); err != nil {
			errs = append(errs, err)
		}
	}
	t.nodes, t.order = nil, nil
	if len(errs) == 0 {
		if err := t.releaseMarker(); err != nil {
			errs = append(errs, fmt.Errorf("remove the marker of topology %s: %w", t.cfg.Prefix, err))
		}
	} else if t.marker != nil {
		// Kept, naming this process: once it ends, a sweep tries again.
		t.marker.Close()
		t.marker = nil
	}
	return errors.Join(errs...)
}

func (t *Topology) build() error {
	if err := t.createNamespaces(); err != nil {
		return err
	}
	// Without duplicate address detection every IPv6 address, link-local
	// included, is usable at once. IFA_F_NODAD covers only the addresses we
	// add: a router forwarding IPv6 solicits neighbours from its link-local
	// address and stays silent while that is tentative, which stalled the
	// first connection through it by about two seconds. Set before any
	// device exists so that every device inherits it from "default".
	for _, name := range t.order {
		for _, key := range []string{"net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"} {
			if err := t.Sysctl(name, key, "0"); err != nil {
				return err
			}
		}
	}

	h := make(map[string]*netlink.Handle, len(t.order))
	defer func() {
		for _, nh := range h {
			nh.Close()
		}
	}()
	for _, name := range t.order {
		nh, err := netlink.NewHandleAt(t.nodes[name])
		if err != nil {
			return fmt.Errorf("netlink handle in %s: %w", name, err)
		}
		h[name] = nh
		if err := setUp(nh, "lo"); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}

	// Before the router's devices exist, so that they inherit rp_filter=0
	// from "default": replies from backends carry the VIP as source and
	// enter on be*, while the route to the VIP points at lb*, which a
	// strict reverse-path filter would drop. New namespaces normally start
	// with rp_filter=0, but not when the host sets
	// net.core.devconf_inherit_init_net.
	router := t.Router()
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
		{"net.ipv6.conf.default.forwarding", "1"},
		{"net.ipv4.fib_multipath_hash_policy", "1"},
		{"net.ipv6.fib_multipath_hash_policy", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
	} {
		if err := t.Sysctl(router, kv[0], kv[1]); err != nil {
			return err
		}
	}

	rh := h[router]
	type link struct {
		node, routerIf string
		mtu            int
		v4, v6         netip.Addr // node side; the router side is .1 / ::1 of the same prefix
		routerV4       netip.Addr
		routerV6       netip.Addr
	}
	links := []link{{
		node: t.Client(), routerIf: RouterClientIf, mtu: ClientMTU,
		v4: ClientIPv4, v6: ClientIPv6, routerV4: RouterClientIPv4, routerV6: RouterClientIPv6,
	}}
	for i := 1; i <= t.cfg.Balancers; i++ {
		links = append(links, link{
			node: t.Balancer(i), routerIf: RouterBalancerIf(i), mtu: CoreMTU,
			v4: BalancerIPv4(i), v6: BalancerIPv6(i),
			routerV4: RouterBalancerIPv4(i), routerV6: RouterBalancerIPv6(i),
		})
	}
	for i := 1; i <= t.cfg.Backends; i++ {
		links = append(links, link{
			node: t.Backend(i), routerIf: RouterBackendIf(i), mtu: CoreMTU,
			v4: BackendIPv4(i), v6: BackendIPv6(i),
			routerV4: RouterBackendIPv4(i), routerV6: RouterBackendIPv6(i),
		})
	}

	for _, l := range links {
		la := netlink.NewLinkAttrs()
		la.Name = l.routerIf
		la.MTU = l.mtu
		veth := &netlink.Veth{
			LinkAttrs:     la,
			PeerName:      EthName,
			PeerMTU:       uint32(l.mtu),
			PeerTxQLen:    -1,
			PeerNamespace: netlink.NsFd(t.nodes[l.node]),
		}
		if err := rh.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s (%s) <-> %s (%s): %w", l.routerIf, router, EthName, l.node, err)
		}
		if err := setUp(rh, l.routerIf); err != nil {
			return fmt.Errorf("%s: %w", router, err)
		}
		if err := setUp(h[l.node], EthName); err != nil {
			return fmt.Errorf("%s: %w", l.node, err)
		}
		if err := addAddrs(rh, l.routerIf, l.routerV4, l.routerV6); err != nil {
			return fmt.Errorf("%s: %w", router, err)
		}
		if err := addAddrs(h[l.node], EthName, l.v4, l.v6); err != nil {
			return fmt.Errorf("%s: %w", l.node, err)
		}
		if err := addDefaultRoutes(h[l.node], EthName, l.routerV4, l.routerV6); err != nil {
			return fmt.Errorf("%s: %w", l.node, err)
		}
	}

	if err := t.addVIPRoutes(rh); err != nil {
		return err
	}
	for _, l := range links {
		if err := waitIPv6Ready(rh, l.routerIf); err != nil {
			return fmt.Errorf("%s: %w", router, err)
		}
		if err := waitIPv6Ready(h[l.node], EthName); err != nil {
			return fmt.Errorf("%s: %w", l.node, err)
		}
	}

	// Packets that enter the balancer's XDP program must carry a complete
	// checksum: native XDP_TX drops the skb's "partial checksum" state, so
	// an offloaded checksum would never be filled in and backends would
	// count TcpInCsumErrors. Those packets come from the client's eth0 and
	// leave through the router's lb*; the balancers' eth0 is turned off too
	// so that generic-mode runs behave the same.
	if err := t.SetTxChecksum(t.Client(), EthName, false); err != nil {
		return err
	}
	for i := 1; i <= t.cfg.Balancers; i++ {
		if err := t.SetTxChecksum(router, RouterBalancerIf(i), false); err != nil {
			return err
		}
		if err := t.SetTxChecksum(t.Balancer(i), EthName, false); err != nil {
			return err
		}
	}

	if t.cfg.AttachPass != nil {
		for i := 1; i <= t.cfg.Balancers; i++ {
			ifname := RouterBalancerIf(i)
			err := t.Do(router, func() error { return t.cfg.AttachPass(t.nodes[router], ifname) })
			if err != nil {
				return fmt.Errorf("attach XDP pass program to %s in %s: %w", ifname, router, err)
			}
		}
	}
	return nil
}

// createNamespaces creates every node's named namespace. netns.NewNamed
// moves the calling thread into the new namespace, so it runs on a locked
// thread that is thrown away afterwards.
func (t *Topology) createNamespaces() error {
	if err := prepareNetnsDir(); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread ends up in the last namespace created
		// and must not run any other goroutine. Go ends it when this
		// goroutine returns.
		for _, name := range t.Nodes() {
			h, err := netns.NewNamed(name)
			if err != nil {
				if errors.Is(err, fs.ErrExist) {
					err = fmt.Errorf("%w: %s exists (another run, or leftovers: topology.Cleanup(%q))", ErrPrefixInUse, filepath.Join(NetnsDir, name), t.cfg.Prefix)
				} else if _, statErr := os.Stat(filepath.Join(NetnsDir, name)); statErr == nil {
					// NewNamed failed after creating the mount point.
					_ = deleteNamed(name)
				}
				errc <- fmt.Errorf("create namespace %s: %w", name, err)
				return
			}
			t.mu.Lock()
			t.nodes[name] = h
			t.order = append(t.order, name)
			t.mu.Unlock()
			if len(t.order) == 1 {
				// Only now: before, namespaces of this prefix are
				// someone else's, and a sweep must not take them for
				// ours. Killed in between, the one namespace stays.
				if err := writeMarker(t.marker, marker{owner: t.owner}); err != nil {
					errc <- err
					return
				}
			}
		}
		errc <- nil
	}()
	return <-errc
}

// prepareNetnsDir makes NetnsDir a shared mount point of its own, as
// iproute2 does before `ip netns add` mounts a namespace there
// (netns_prepare), and leaves it so, as iproute2 does.
//
// Without it, our namespace mounts sit on the filesystem that holds
// NetnsDir; the first later `ip netns add` or `ip netns del` (by anyone)
// then bind-mounts NetnsDir onto itself, recursively, which copies our
// mounts on top and hides the originals beneath. Unmounting a name then
// removes only the copy, the hidden mount keeps the namespace (and its
// veths) alive, and removing the name fails with EBUSY on every later
// Close or Cleanup.
func prepareNetnsDir() error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", NetnsDir, err)
	}
	// Serialises the check and the bind with other processes of ours
	// (parallel test packages): two binds would stack, and the upper one
	// would hide the lower one's namespaces just the same. The lock is on
	// the directory's inode, which the bind mount shares.
	d, err := os.Open(NetnsDir)
	if err != nil {
		return fmt.Errorf("open %s: %w", NetnsDir, err)
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", NetnsDir, err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)
	err = unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet. Namespaces already named there (by
		// another program, or an older Switchyard) would be hidden by the
		// bind from whoever deletes them; leave them, and NetnsDir, as
		// they are.
		if names, _ := d.Readdirnames(1); len(names) > 0 {
			return nil
		}
		if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s onto itself (as ip netns add does): %w", NetnsDir, err)
		}
		err = unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount (as ip netns add does): %w", NetnsDir, err)
	}
	return nil
}

func (t *Topology) addVIPRoutes(rh *netlink.Handle) error {
	for _, fam := range []struct {
		family int
		prefix netip.Prefix
		gw     func(int) netip.Addr
	}{
		{netlink.FAMILY_V4, VIPPrefixIPv4, BalancerIPv4},
		{netlink.FAMILY_V6, VIPPrefixIPv6, BalancerIPv6},
	} {
		var hops []*netlink.NexthopInfo
		for i := 1; i <= t.cfg.Balancers; i++ {
			l, err := rh.LinkByName(RouterBalancerIf(i))
			if err != nil {
				return fmt.Errorf("%s: find %s: %w", t.Router(), RouterBalancerIf(i), err)
			}
			hops = append(hops, &netlink.NexthopInfo{LinkIndex: l.Attrs().Index, Gw: fam.gw(i).AsSlice()})
		}
		r := &netlink.Route{Family: fam.family, Dst: ipNet(fam.prefix), MultiPath: hops}
		if err := rh.RouteAdd(r); err != nil {
			return fmt.Errorf("%s: add multipath route %s over %d balancers: %w", t.Router(), fam.prefix, len(hops), err)
		}
	}
	return nil
}

// ipv6ReadyTimeout bounds the wait for IPv6 addresses to leave the
// "tentative" state; it normally takes milliseconds.
const ipv6ReadyTimeout = 5 * time.Second

// waitIPv6Ready polls until ifname has no tentative IPv6 address and, if
// it is not a loopback device, has a link-local address. Even without DAD an address stays tentative until
// a kernel work item runs; meanwhile it cannot be the source of a neighbour
// solicitation, the first solicitation is silently skipped and the next
// comes a second later, so the first connection through a new topology
// would stall for a second now and then.
func waitIPv6Ready(h *netlink.Handle, ifname string) error {
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifname, err)
	}
	deadline := time.Now().Add(ipv6ReadyTimeout)
	for {
		addrs, err := h.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", ifname, err)
		}
		linkLocal := l.Attrs().Flags&net.FlagLoopback != 0
		tentative := false
		for _, a := range addrs {
			linkLocal = linkLocal || a.IP.IsLinkLocalUnicast()
			tentative = tentative || a.Flags&unix.IFA_F_TENTATIVE != 0
		}
		if linkLocal && !tentative {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("IPv6 addresses of %s not ready after %s: %v", ifname, ipv6ReadyTimeout, addrs)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func setUp(h *netlink.Handle, ifname string) error {
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifname, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", ifname, err)
	}
	return nil
}

func addAddrs(h *netlink.Handle, ifname string, a4, a6 netip.Addr) error {
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifname, err)
	}
	for _, a := range []*netlink.Addr{
		{IPNet: ipNet(netip.PrefixFrom(a4, 24))},
		// No duplicate address detection, so the address is usable at once
		// instead of after a second or more of "tentative".
		{IPNet: ipNet(netip.PrefixFrom(a6, 64)), Flags: unix.IFA_F_NODAD},
	} {
		if err := h.AddrAdd(l, a); err != nil {
			return fmt.Errorf("add %s to %s: %w", a.IPNet, ifname, err)
		}
	}
	return nil
}

func addDefaultRoutes(h *netlink.Handle, ifname string, gw4, gw6 netip.Addr) error {
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifname, err)
	}
	for _, r := range []*netlink.Route{
		{Family: netlink.FAMILY_V4, LinkIndex: l.Attrs().Index, Gw: gw4.AsSlice()},
		{Family: netlink.FAMILY_V6, LinkIndex: l.Attrs().Index, Gw: gw6.AsSlice()},
	} {
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("add default route via %s: %w", r.Gw, err)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// deleteNamed removes a namespace's bind mount and mount point. A mount
// point left without a mount (a run killed inside netns.NewNamed) is
// removed too.
func deleteNamed(name string) error {
	path := filepath.Join(NetnsDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	// os.Remove's errors name the path.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		if errors.Is(err, unix.EBUSY) {
			// What prepareNetnsDir prevents, left by a run without it.
			return fmt.Errorf("%w: a mount of %s over it hides the namespace's own mount "+
				"(iproute2's `ip netns add` or `del` bind-mounts %s onto itself when it is not a mount point). "+
				"Run `umount %s` and then this again (namespaces added with ip netns since then lose their names)",
				err, NetnsDir, NetnsDir, NetnsDir)
		}
		return err
	}
	return nil
}

// Cleanup removes the namespaces left by a topology with this prefix whose
// Close never ran (an interrupted demo or test): those with the names of
// its nodes, whatever their number, and no others. Processes still running in
// them (servers started with Command, say) are killed first, and Cleanup
// returns once they have exited: a namespace lives as long as any process
// is inside it, and a daemon's pin directory stays locked until it is
// gone. Cleanup of a prefix with no
// leftovers does nothing.
func Cleanup(prefix string) error {
	if err := validatePrefix(prefix); err != nil {
		return err
	}
	entries, err := os.ReadDir(NetnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", NetnsDir, err)
	}
	var names []string
	targets := make(map[nsID]bool)
	for _, e := range entries {
		if !isNodeName(prefix, e.Name()) {
			continue
		}
		names = append(names, e.Name())
		if id, ok := statNs(filepath.Join(NetnsDir, e.Name())); ok {
			targets[id] = true
		}
	}
	var errs []error
	if len(targets) > 0 {
		if err := killProcessesIn(targets); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range names {
		if err := deleteNamed(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Leftovers returns the names of the namespaces under NetnsDir that
// Cleanup(prefix) would remove: those of a topology's nodes, not every
// name that starts with the prefix.
func Leftovers(prefix string) []string {
	entries, _ := os.ReadDir(NetnsDir)
	var names []string
	for _, e := range entries {
		if isNodeName(prefix, e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names
}

// isNodeName reports whether name is one a topology with prefix gives a
// node: "<prefix>-" followed by client, router, lbN or beN (N from 1 to
// 255, as Config allows). Other names that merely start with the prefix
// are not ours to delete.
func isNodeName(prefix, name string) bool {
	node, ok := strings.CutPrefix(name, prefix+"-")
	if !ok {
		return false
	}
	if node == "client" || node == "router" {
		return true
	}
	for _, kind := range []string{"lb", "be"} {
		if num, ok := strings.CutPrefix(node, kind); ok {
			i, err := strconv.Atoi(num)
			return err == nil && i >= 1 && i <= 255 && strconv.Itoa(i) == num
		}
	}
	return false
}

// nsID identifies a namespace: the nsfs device and inode that both the bind
// mount and /proc/PID/ns/net resolve to.
type nsID struct{ dev, ino uint64 }

func statNs(path string) (nsID, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, false
	}
	if st.Size != 0 || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nsID{}, false
	}
	var fsst unix.Statfs_t
	if err := unix.Statfs(path, &fsst); err != nil || fsst.Type != unix.NSFS_MAGIC {
		// An unmounted mount point: an empty file on the host filesystem.
		return nsID{}, false
	}
	return nsID{st.Dev, st.Ino}, true
}

// killWait bounds how long killProcessesIn waits for the processes it
// killed to exit; it normally takes milliseconds.
const killWait = 10 * time.Second

// killProcessesIn kills the processes in the target namespaces and returns
// once they have exited: SIGKILL only starts a process's exit, and until
// its last thread is gone it holds its files, flocks (a daemon's pin
// directory) and memory. Each is killed and waited for through a pidfd, so
// a pid reused meanwhile is neither killed nor waited for.
func killProcessesIn(targets map[nsID]bool) error {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var errs []error
	var killed []int // pidfds
	defer func() {
		for _, fd := range killed {
			unix.Close(fd)
		}
	}()
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // gone, or a thread's id
		}
		// Checked after the pidfd is open: it is the process checked.
		id, ok := statNs(fmt.Sprintf("/proc/%d/ns/net", pid))
		if !ok || !targets[id] {
			unix.Close(fd)
			continue
		}
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
			unix.Close(fd)
			if !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("kill process %d left in a namespace: %w", pid, err))
			}
			continue
		}
		killed = append(killed, fd)
	}
	// A pidfd polls readable once every thread of its process has exited.
	deadline := time.Now().Add(killWait)
	for _, fd := range killed {
		for {
			wait := time.Until(deadline)
			if wait < 0 {
				wait = 0
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, int(wait.Milliseconds()))
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("wait for a killed process to exit: %w", err))
			} else if n == 0 {
				pid, _ := pidfdPid(fd)
				errs = append(errs, fmt.Errorf("process %d left in a namespace did not exit within %s of SIGKILL: it is stuck in the kernel (see /proc/%d/stack)", pid, killWait, pid))
			}
			break
		}
	}
	return errors.Join(errs...)
}

// pidfdPid is the pid a pidfd refers to, from its fdinfo.
func pidfdPid(fd int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("no Pid in the pidfd's fdinfo")
}

func (t *Topology) handle(node string) (netns.NsHandle, error) {
	if t.closed {
		return netns.None(), ErrClosed
	}
	h, ok := t.nodes[node]
	if !ok {
		return netns.None(), fmt.Errorf("%w: %q", ErrUnknownNode, node)
	}
	return h, nil
}
