package balancer

import (
	"context"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
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
	if err := watchWith(ctx, ifindex, out, f.subscribe); err != nil {
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
