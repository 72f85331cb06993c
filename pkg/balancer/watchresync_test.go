package balancer

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// The watch tells of the changes a failed subscription missed only once
// it has subscribed again: it told before, so a change between the sync
// that notice brought and the new subscription (a second, or more, when
// subscribing failed and was retried) was never seen, and a router's new
// MAC, say, waited for the next unrelated event.
func TestNetworkWatchResyncsAfterSubscribingAgain(t *testing.T) {
	const ifindex = 7
	f := &fakeSubscriptions{made: make(chan fakeSub, 4)}
	calls := 0
	resubscribing := make(chan struct{})
	proceed := make(chan struct{})
	subscribe := func(done <-chan struct{}) (netSubscription, error) {
		calls++
		switch calls {
		case 2, 3:
			// Two attempts fail: the operator hears of the first.
			return netSubscription{}, errors.New("no buffer space available")
		case 4:
			close(resubscribing)
			<-proceed
		}
		return f.subscribe(done)
	}
	out := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &logRecords{}
	if err := watchWith(ctx, ifindex, out, slog.New(logs), subscribe); err != nil {
		t.Fatal(err)
	}
	first := <-f.made
	close(first.failNeigh)
	select {
	case <-resubscribing:
	case <-time.After(10 * time.Second):
		t.Fatal("no new subscription tried within 10 s of the first failing")
	}
	// What the control loop syncs here, before the subscription is made,
	// is all it would hear of the changes in between.
	select {
	case <-out:
	default:
	}
	close(proceed)
	second := <-f.made
	select {
	case <-out:
	case <-time.After(10 * time.Second):
		t.Fatal("subscribed again: no event for the changes missed until then within 10 s")
	}
	cancel()
	<-second.othersAreEnded
	// Each step of the outage is logged once.
	for _, want := range []struct {
		level slog.Level
		parts []string
	}{
		{slog.LevelWarn, []string{"a netlink subscription ended"}},
		{slog.LevelWarn, []string{"cannot subscribe to netlink again", "no buffer space available"}},
		{slog.LevelInfo, []string{"subscribed again", "failed_attempts=2"}},
	} {
		if got := logs.matching(want.level, want.parts...); len(got) != 1 {
			t.Errorf("%d %s records with %q, want 1: %q", len(got), want.level, want.parts, logs.matching(want.level))
		}
	}
}
