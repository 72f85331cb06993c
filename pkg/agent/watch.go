package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Bounds of the back-off between attempts to subscribe again after the
// address subscription broke.
const (
	resubscribeMinDelay = 100 * time.Millisecond
	resubscribeMaxDelay = 10 * time.Second
)

// interfaceAddrs returns the addresses the balancers may use as outer
// destination for this host: the interface's IPv4 addresses and its global
// IPv6 addresses. Link-local ones (169.254.0.0/16, fe80::/10) are left
// out: routers do not forward them, so no balancer beyond the link reaches
// them, and the configuration refuses them as encap_addresses for that
// reason.
// An IPv6 address is this host's only once duplicate address detection
// has passed (the kernel accepts no packet to it before, but for an
// optimistic one): one still tentative joins when the kernel announces it
// usable, one whose detection failed belongs to another host and stays
// out.
func (a *Agent) interfaceAddrs() ([]netip.Addr, error) {
	dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: a.ifindex}}
	list, err := a.nl.AddrList(dev, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", a.iface, err)
	}
	var out []netip.Addr
	for _, ad := range list {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLinkLocalUnicast() {
			continue
		}
		if ad.Flags&unix.IFA_F_DADFAILED != 0 || ad.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_OPTIMISTIC) == unix.IFA_F_TENTATIVE {
			continue
		}
		if ip.Is4() || ad.Scope == unix.RT_SCOPE_UNIVERSE {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	out = slices.Compact(out)
	if len(out) == 0 {
		a.log.Warn("the interface has no address the balancers can reach (link-local ones are not followed): nothing is decapsulated until one is added")
	}
	return out, nil
}

// syncEncap writes the interface's current addresses to the decap program
// if they changed.
func (a *Agent) syncEncap() error {
	addrs, err := a.interfaceAddrs()
	if err != nil {
		return err
	}
	if slices.Equal(addrs, a.EncapAddrs()) {
		return nil
	}
	if err := a.setEncap(addrs); err != nil {
		return err
	}
	a.log.Info("encap addresses follow the interface", "encap_addresses", fmt.Sprint(addrs))
	return nil
}

// watcher follows the interface through netlink notifications: it keeps
// the decap program's address set in step with the interface's addresses
// (unless they are configured), and reports through the agent's Lost
// channel when the interface goes, taking the decap program with it. It
// also keeps the decap program's link and maps pinned (see checkLinkPin,
// checkMapPins), and
// checks that the program still runs on the interface (checkDetached).
type watcher struct {
	a  *Agent
	ns netns.NsHandle // the agent's namespace, to subscribe again from any thread
	lo int            // lo's index: a VIP removed from it is no longer the agent's
	// ctx ends with the watcher (stop cancels it): a wait of the watcher
	// for the host lock (see forgetVIPs) ends with it, so that a stop
	// waits for that lock once, for itself, not first for the watcher.
	ctx    context.Context
	cancel context.CancelFunc
	quit   chan struct{}
	done   chan struct{}
}

// subscription is one netlink subscription to address and link changes.
type subscription struct {
	addrs chan netlink.AddrUpdate
	links chan netlink.LinkUpdate
	done  chan struct{}
}

// close ends the subscription. netlink's reader goroutines close addrs and
// links once their sockets are closed; draining them until then keeps the
// readers from blocking on a send forever.
func (s *subscription) close() {
	close(s.done)
	for range s.addrs {
	}
	if s.links != nil {
		for range s.links {
		}
	}
}

// startWatch subscribes to address and link changes in the calling
// thread's namespace and starts following them.
func (a *Agent) startWatch() (*watcher, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("open the network namespace to watch %s: %w", a.iface, err)
	}
	w := &watcher{a: a, ns: ns, quit: make(chan struct{}), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	lo, err := a.nl.LinkByName(loopback)
	if err != nil {
		w.cancel()
		ns.Close()
		return nil, fmt.Errorf("find %s: %w", loopback, err)
	}
	w.lo = lo.Attrs().Index
	sub, err := w.subscribe()
	if err != nil {
		w.cancel()
		ns.Close()
		return nil, err
	}
	// The interface was resolved by name at the beginning of Start, and
	// the program attached by name since: one replaced (deleted and
	// created again, as a driver reload does) or renamed meanwhile is not
	// the one resolved, and its removal came before the subscription,
	// which reports every later one.
	if l, err := a.nl.LinkByIndex(a.ifindex); err != nil || l.Attrs().Name != a.iface {
		sub.close()
		w.cancel()
		ns.Close()
		if err != nil && !errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil, fmt.Errorf("find interface %s (index %d): %w", a.iface, a.ifindex, err)
		}
		return nil, fmt.Errorf("%w: %s (index %d) was removed, replaced or renamed while the agent started; start the agent again",
			ErrInterfaceGone, a.iface, a.ifindex)
	}
	// A VIP removed between addVIPs and the subscription.
	w.checkVIPs()
	// An address that changed between the first listing and the
	// subscription would otherwise be missed until the next change.
	if a.encapFixed == nil {
		if err := a.syncEncap(); err != nil {
			sub.close()
			w.cancel()
			ns.Close()
			return nil, err
		}
	}
	go w.run(sub)
	return w, nil
}

func (w *watcher) subscribe() (*subscription, error) {
	s := &subscription{addrs: make(chan netlink.AddrUpdate, 64), done: make(chan struct{})}
	onErr := func(err error) {
		select {
		case <-s.done: // our own close
		default:
			w.a.log.Warn("address watch: netlink error", "error", err)
		}
	}
	aopts := netlink.AddrSubscribeOptions{ErrorCallback: onErr}
	lopts := netlink.LinkSubscribeOptions{ErrorCallback: onErr}
	// Entering a namespace needs CAP_SYS_ADMIN even when it is the current
	// one: do it only when this thread is elsewhere.
	if !inNamespace(w.ns) {
		aopts.Namespace, lopts.Namespace = &w.ns, &w.ns
	}
	if err := netlink.AddrSubscribeWithOptions(s.addrs, s.done, aopts); err != nil {
		return nil, fmt.Errorf("watch addresses of %s: %w", w.a.iface, err)
	}
	links := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(links, s.done, lopts); err != nil {
		s.close()
		return nil, fmt.Errorf("watch interface %s: %w", w.a.iface, err)
	}
	s.links = links
	return s, nil
}

func (w *watcher) run(sub *subscription) {
	defer close(w.done)
	// No notification says that a pin was removed: the link's and the
	// maps' are checked now and then.
	pinCheck := time.NewTicker(w.a.linkCheckEvery)
	defer pinCheck.Stop()
	// Nor that the program was detached from the interface.
	attachCheck := time.NewTicker(w.a.attachCheckEvery)
	defer attachCheck.Stop()
	for {
		var broke bool
		select {
		case <-w.quit:
			sub.close()
			return
		case <-pinCheck.C:
			w.a.checkLinkPin()
			w.a.checkMapPins()
		case <-attachCheck.C:
			w.a.checkDetached()
		case u, ok := <-sub.addrs:
			broke = !ok
			switch {
			case !ok:
			case u.LinkIndex == w.a.ifindex:
				w.sync()
			case u.LinkIndex == w.lo && !u.NewAddr:
				w.vipRemoved(u.LinkAddress)
			}
		case u, ok := <-sub.links:
			broke = !ok
			if ok {
				w.linkChanged(u)
			}
		}
		if broke {
			// The subscription broke, most likely because its receive
			// buffer overflowed and updates were lost.
			sub.close()
			if sub = w.resubscribe(); sub == nil {
				return
			}
		}
	}
}

// resubscribe subscribes again, backing off between failures, and resyncs.
// It returns nil when the watcher is stopped meanwhile.
func (w *watcher) resubscribe() *subscription {
	w.a.log.Warn("address watch broke; subscribing again")
	delay := resubscribeMinDelay
	for {
		sub, err := w.subscribe()
		if err == nil {
			w.checkVIPs()
			w.sync()
			return sub
		}
		w.a.log.Error("address watch: subscribe again", "error", err, "retry_in_seconds", delay.Seconds())
		select {
		case <-w.quit:
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, resubscribeMaxDelay)
	}
}

// linkChanged handles the link notification u: a deletion of the agent's
// interface reports it gone, once the kernel confirms that the interface
// is gone (see lost). A bridge announces that a port left it with a
// deletion message of its own (family AF_BRIDGE), and the port stays.
func (w *watcher) linkChanged(u netlink.LinkUpdate) {
	if int(u.Index) != w.a.ifindex || u.Header.Type != unix.RTM_DELLINK {
		return
	}
	if w.lost() {
		w.a.interfaceGone()
	}
}

// lost reports whether the agent's interface is gone: no device has its
// index, or another one has it (see currentInterface), given it since
// the interface was deleted (`ip link add ... index N`, or a device
// moved into the namespace) before the watcher looked. A netlink error
// says nothing of it.
func (w *watcher) lost() bool {
	l, err := w.a.currentInterface()
	return err == nil && l == nil
}

// vipRemoved handles the removal of the address n from lo. The removal
// itself says the VIP is no longer the agent's: by the time the message
// is read, another daemon may have added it again, and it is then that
// daemon's.
func (w *watcher) vipRemoved(n net.IPNet) {
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return
	}
	ones, _ := n.Mask.Size()
	removed := netip.PrefixFrom(ip.Unmap(), ones)
	w.a.forgetVIPs(w.ctx, func(p netip.Prefix) bool { return p == removed })
}

// checkVIPs forgets the VIPs the agent added that are no longer on lo,
// after removals the watcher may have missed.
func (w *watcher) checkVIPs() {
	present, err := w.a.loAddrs(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: w.lo}})
	if err != nil {
		w.a.log.Error("check the VIPs on lo", "error", err)
		return
	}
	w.a.forgetVIPs(w.ctx, func(p netip.Prefix) bool {
		_, on := present[p.Addr()]
		return !on
	})
}

// sync brings the watcher up to date after a change it may have missed.
func (w *watcher) sync() {
	if w.lost() {
		w.a.interfaceGone()
		return
	}
	if w.a.encapFixed != nil {
		return
	}
	if err := w.a.syncEncap(); err != nil {
		w.a.log.Error("update encap addresses", "error", err)
	}
}

// stop ends the watcher and waits for it: at once, as its wait for the
// host lock, if it waits, ends too.
func (w *watcher) stop() {
	w.cancel()
	close(w.quit)
	<-w.done
	w.ns.Close()
}

// inNamespace reports whether the calling thread is in ns.
func inNamespace(ns netns.NsHandle) bool {
	cur, err := netns.Get()
	if err != nil {
		return false
	}
	defer cur.Close()
	return cur.Equal(ns)
}
