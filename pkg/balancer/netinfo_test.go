package balancer

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// fakeSubscriptions hands out subscriptions whose channels close, as
// netlink's do, when their done closes, or when the test ends one as a
// receive error (ENOBUFS) ends netlink's. Not the kernel under test: how
// the watch goes on after netlink gives up.
type fakeSubscriptions struct {
	made chan fakeSub // each subscription made
}

type fakeSub struct {
	neigh          chan netlink.NeighUpdate
	link           chan netlink.LinkUpdate
	addr           chan netlink.AddrUpdate
	route          chan netlink.RouteUpdate
	done           <-chan struct{}
	failNeigh      chan struct{} // close: the neighbour subscription fails
	neighClosed    chan struct{}
	othersAreEnded chan struct{}
}

func (f *fakeSubscriptions) subscribe(done <-chan struct{}) (netSubscription, error) {
	s := fakeSub{
		neigh: make(chan netlink.NeighUpdate), link: make(chan netlink.LinkUpdate),
		addr: make(chan netlink.AddrUpdate), route: make(chan netlink.RouteUpdate),
		done: done, failNeigh: make(chan struct{}), neighClosed: make(chan struct{}), othersAreEnded: make(chan struct{}),
	}
	go func() {
		select {
		case <-done:
		case <-s.failNeigh:
		}
		close(s.neigh)
		close(s.neighClosed)
		<-done
		close(s.link)
		close(s.addr)
		close(s.route)
		close(s.othersAreEnded)
	}()
	f.made <- s
	return netSubscription{s.neigh, s.link, s.addr, s.route}, nil
}

// A netlink subscription that fails (its channel closed) must not end the
// watch: before, the loop read the closed channel forever, spinning a core,
// and the balancer saw no change of the router's MAC again.
func TestNetworkWatchOutlivesAFailedSubscription(t *testing.T) {
	const ifindex = 7
	f := &fakeSubscriptions{made: make(chan fakeSub, 4)}
	out := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := watchWith(ctx, ifindex, out, slog.New(slog.DiscardHandler), f.subscribe); err != nil {
		t.Fatal(err)
	}
	first := <-f.made
	timeout := time.After(10 * time.Second)
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("%s: not within 10 s", what)
		}
	}

	first.route <- netlink.RouteUpdate{Route: netlink.Route{LinkIndex: ifindex}}
	first.route <- netlink.RouteUpdate{} // read: the first was handled
	wait(out, "an event of the interface reported")

	close(first.failNeigh)
	wait(first.othersAreEnded, "the other subscriptions of the failed one ended")
	wait(out, "an event reported for what the failed subscription missed")
	var second fakeSub
	select {
	case second = <-f.made:
	case <-timeout:
		t.Fatal("no new subscription within 10 s of the first failing")
	}
	second.neigh <- netlink.NeighUpdate{Neigh: netlink.Neigh{LinkIndex: ifindex}}
	second.neigh <- netlink.NeighUpdate{}
	wait(out, "an event of the new subscription reported")

	cancel()
	wait(second.othersAreEnded, "the subscriptions ended with the watch")
}

// A multipath route has no interface of its own (netlink's LinkIndex is
// 0), only its next hops have: the watch, which compared the route's,
// ignored the changes of a multipath default route through the interface,
// and a next hop withdrawn from it (by a routing daemon, say) kept getting
// VIP traffic while it answered ARP. A veth pair without IPv6, up before
// the watch begins, makes no event of its own.
func TestNetworkWatchSeesAMultipathRoute(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "hzwmp", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	const veth, peer = "hzw0", "hzw1"
	var index int
	if err := topo.Netlink(node, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: veth}, PeerName: peer})
	}); err != nil {
		t.Fatalf("add %s in %s: %v", veth, node, err)
	}
	for _, name := range []string{veth, peer} {
		if err := topo.Sysctl(node, "net.ipv6.conf."+name+".disable_ipv6", "1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := topo.Netlink(node, func(h *netlink.Handle) error {
		for _, name := range []string{peer, veth} {
			l, err := h.LinkByName(name)
			if err != nil {
				return err
			}
			if err := h.LinkSetUp(l); err != nil {
				return err
			}
			index = l.Attrs().Index
		}
		l, err := h.LinkByIndex(index)
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("10.8.0.2/24")
		return h.AddrAdd(l, a)
	}); err != nil {
		t.Fatalf("set up %s in %s: %v", veth, node, err)
	}
	out := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := topo.Do(node, func() error { return watchNetwork(ctx, index, out, slog.New(slog.DiscardHandler)) }); err != nil {
		t.Fatal(err)
	}
	_, dst, _ := net.ParseCIDR("10.77.0.0/16")
	route := &netlink.Route{Dst: dst, MultiPath: []*netlink.NexthopInfo{
		{LinkIndex: index, Gw: net.ParseIP("10.8.0.3")},
		{LinkIndex: index, Gw: net.ParseIP("10.8.0.5")},
	}}
	for _, change := range []struct {
		what string
		do   func(h *netlink.Handle) error
	}{
		{"added", func(h *netlink.Handle) error { return h.RouteAdd(route) }},
		{"deleted", func(h *netlink.Handle) error { return h.RouteDel(route) }},
	} {
		if err := topo.Netlink(node, change.do); err != nil {
			t.Fatalf("multipath route %s %s: %v", dst, change.what, err)
		}
		select {
		case <-out:
		case <-time.After(5 * time.Second):
			t.Fatalf("multipath route %s through %s %s: no event within 5 s", dst, veth, change.what)
		}
	}
}
