package topology

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Do runs fn inside node's network namespace and returns its error.
//
// fn runs on a fresh goroutine locked to its OS thread; the thread switches
// namespace and is never unlocked, so Go ends it when fn returns and no
// other goroutine ever runs in the wrong namespace. Sockets fn creates stay
// in the namespace after it returns. Goroutines that fn starts do NOT run
// in the namespace.
func (t *Topology) Do(node string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The read lock keeps Close from closing the handle (and the fd
		// number from being reused) until the thread has switched.
		t.mu.RLock()
		h, err := t.handle(node)
		if err == nil {
			if err = netns.Set(h); err != nil {
				err = fmt.Errorf("enter namespace %s: %w", node, err)
			}
		}
		t.mu.RUnlock()
		if err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Sysctl writes value to the sysctl key of node's namespace. key is dotted
// ("net.ipv4.ip_forward") or, when a device name contains a dot, a path
// relative to /proc/sys ("net/ipv4/conf/eth0.10/rp_filter").
func (t *Topology) Sysctl(node, key, value string) error {
	path := sysctlPath(key)
	err := t.Do(node, func() error {
		// /proc/sys/net resolves to the namespace of the thread that opens it.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteString(value)
		return errors.Join(err, f.Close())
	})
	if err != nil {
		return fmt.Errorf("%s: sysctl %s=%s: %w", node, key, value, err)
	}
	return nil
}

// SysctlValue reads the sysctl key (as for Sysctl) of node's namespace,
// without the trailing newline.
func (t *Topology) SysctlValue(node, key string) (string, error) {
	var b []byte
	err := t.Do(node, func() error {
		var err error
		b, err = os.ReadFile(sysctlPath(key))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("%s: read sysctl %s: %w", node, key, err)
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

func sysctlPath(key string) string {
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	return filepath.Join("/proc/sys", key)
}

// Command returns a command that runs name with args in node's network
// namespace only, through nsenter: unlike `ip netns exec` it keeps the
// caller's mount namespace, so /sys/fs/bpf pins stay visible.
func (t *Topology) Command(ctx context.Context, node string, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + t.NsPath(node), "--", name}, args...)...)
}

// Dialer dials from inside a node. Base carries the usual net.Dialer
// options (Timeout, LocalAddr, KeepAlive, Control, ...).
type Dialer struct {
	Base net.Dialer

	topo *Topology
	node string
}

// Dialer returns a Dialer whose sockets are created inside node.
func (t *Topology) Dialer(node string) *Dialer {
	return &Dialer{topo: t, node: node}
}

// DialContext connects to addr from inside the Dialer's node. Use IP
// literals: a host name would be resolved by goroutines outside the node.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := d.topo.Do(d.node, func() error {
		var err error
		c, err = d.Base.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.node, err)
	}
	return c, nil
}

// Dial is DialContext with context.Background.
func (d *Dialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

// HTTPClient returns an HTTP client that connects from inside node. Keep-
// alives are off, so every request is a new connection (a new flow through
// the balancers); see HTTPClientKeepAlive. Proxies from the environment are
// ignored.
func (t *Topology) HTTPClient(node string) *http.Client {
	return t.httpClient(node, true)
}

// HTTPClientKeepAlive is HTTPClient with connection reuse.
func (t *Topology) HTTPClientKeepAlive(node string) *http.Client {
	return t.httpClient(node, false)
}

func (t *Topology) httpClient(node string, noKeepAlive bool) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:             nil,
		DialContext:       t.Dialer(node).DialContext,
		DisableKeepAlives: noKeepAlive,
		MaxIdleConns:      16,
	}}
}

// Listen opens a stream listener inside node (net.Listen semantics).
func (t *Topology) Listen(node, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := t.Do(node, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", node, err)
	}
	return l, nil
}

// ListenPacket opens a packet socket inside node (net.ListenPacket
// semantics).
func (t *Topology) ListenPacket(node, network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := t.Do(node, func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", node, err)
	}
	return c, nil
}

// Netlink runs fn with a netlink handle bound to node's namespace.
func (t *Topology) Netlink(node string, fn func(h *netlink.Handle) error) error {
	t.mu.RLock()
	ns, err := t.handle(node)
	var h *netlink.Handle
	if err == nil {
		h, err = netlink.NewHandleAt(ns)
	}
	t.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("%s: netlink: %w", node, err)
	}
	defer h.Close()
	return fn(h)
}

// Link returns a device of node, e.g. to read its MTU, index or MAC.
func (t *Topology) Link(node, ifname string) (netlink.Link, error) {
	var l netlink.Link
	err := t.Netlink(node, func(h *netlink.Handle) error {
		var err error
		l, err = h.LinkByName(ifname)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: find %s: %w", node, ifname, err)
	}
	return l, nil
}

// XDPProgID is the ID of the XDP program ifname of node runs (0: none).
func (t *Topology) XDPProgID(node, ifname string) (uint32, error) {
	l, err := t.Link(node, ifname)
	if err != nil {
		return 0, err
	}
	if x := l.Attrs().Xdp; x != nil {
		return x.ProgId, nil
	}
	return 0, nil
}

// AddAddr adds the address p (e.g. a VIP on "lo") to a device of node and
// returns once it can be used: IPv6 addresses are added without duplicate
// address detection, yet stay "tentative" (bind fails with
// EADDRNOTAVAIL, packets to them are dropped) until a kernel work item
// runs, which can take tens of milliseconds on a busy host.
func (t *Topology) AddAddr(node, ifname string, p netip.Prefix) error {
	return t.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("%s: find %s: %w", node, ifname, err)
		}
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, a); err != nil {
			return fmt.Errorf("%s: add %s to %s: %w", node, p, ifname, err)
		}
		// An IPv4 address changes nothing of IPv6's readiness (and a
		// link that is down never gets a link-local address to wait for).
		if p.Addr().Is6() {
			if err := waitIPv6Ready(h, ifname); err != nil {
				return fmt.Errorf("%s: %w", node, err)
			}
		}
		return nil
	})
}

// DeleteLink deletes a device of node (fault injection: an interface
// removed under a daemon that uses it).
func (t *Topology) DeleteLink(node, ifname string) error {
	return t.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("%s: find %s: %w", node, ifname, err)
		}
		if err := h.LinkDel(l); err != nil {
			return fmt.Errorf("%s: delete %s: %w", node, ifname, err)
		}
		return nil
	})
}

// LinkDown sets a device of node administratively down (fault injection).
// Taking one end of a veth down also drops the peer's carrier.
func (t *Topology) LinkDown(node, ifname string) error {
	return t.setLink(node, ifname, false)
}

// LinkUp sets a device of node up again.
func (t *Topology) LinkUp(node, ifname string) error {
	return t.setLink(node, ifname, true)
}

func (t *Topology) setLink(node, ifname string, up bool) error {
	return t.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("%s: find %s: %w", node, ifname, err)
		}
		if up {
			err = h.LinkSetUp(l)
		} else {
			err = h.LinkSetDown(l)
		}
		if err != nil {
			return fmt.Errorf("%s: set %s up=%t: %w", node, ifname, up, err)
		}
		return nil
	})
}
