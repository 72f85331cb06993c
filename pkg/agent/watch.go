package agent

import (
	"fmt"
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

// watcher keeps the decap program's address set in step with the
// interface's addresses, woken by netlink address notifications.
type watcher struct {
	a    *Agent
	ns   netns.NsHandle // the agent's namespace, to subscribe again from any thread
	quit chan struct{}
	done chan struct{}
}

// subscription is one netlink address subscription.
type subscription struct {
	ch   chan netlink.AddrUpdate
	done chan struct{}
}

// close ends the subscription. netlink's reader goroutine closes ch once
// its socket is closed; draining ch until then keeps it from blocking on a
// send forever.
func (s *subscription) close() {
	close(s.done)
	for range s.ch {
	}
}

// startWatch subscribes to address changes in the calling thread's
// namespace and starts following them.
func (a *Agent) startWatch() (*watcher, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("open the network namespace to watch addresses of %s: %w", a.iface, err)
	}
	w := &watcher{a: a, ns: ns, quit: make(chan struct{}), done: make(chan struct{})}
	sub, err := w.subscribe()
	if err != nil {
		ns.Close()
		return nil, err
	}
	// An address that changed between the first listing and the
	// subscription would otherwise be missed until the next change.
	if err := a.syncEncap(); err != nil {
		sub.close()
		ns.Close()
		return nil, err
	}
	go w.run(sub)
	return w, nil
}

func (w *watcher) subscribe() (*subscription, error) {
	s := &subscription{ch: make(chan netlink.AddrUpdate, 64), done: make(chan struct{})}
	opts := netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case <-s.done: // our own close
			default:
				w.a.log.Warn("address watch: netlink error", "error", err)
			}
		},
	}
	// Entering a namespace needs CAP_SYS_ADMIN even when it is the current
	// one: do it only when this thread is elsewhere.
	if !inNamespace(w.ns) {
		opts.Namespace = &w.ns
	}
	if err := netlink.AddrSubscribeWithOptions(s.ch, s.done, opts); err != nil {
		return nil, fmt.Errorf("watch addresses of %s: %w", w.a.iface, err)
	}
	return s, nil
}

func (w *watcher) run(sub *subscription) {
	defer close(w.done)
	for {
		select {
		case <-w.quit:
			sub.close()
			return
		case u, ok := <-sub.ch:
			if !ok {
				// The subscription broke, most likely because its receive
				// buffer overflowed and updates were lost.
				sub.close()
				if sub = w.resubscribe(); sub == nil {
					return
				}
				continue
			}
			if u.LinkIndex == w.a.ifindex {
				w.sync()
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

func (w *watcher) sync() {
	if err := w.a.syncEncap(); err != nil {
		w.a.log.Error("update encap addresses", "error", err)
	}
}

// stop ends the watcher and waits for it.
func (w *watcher) stop() {
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
