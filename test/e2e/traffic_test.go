package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/demo"
)

// TestTraffic sends what clients send through the VIPs of one lab: HTTP to
// an IPv6 VIP, bulk transfers both ways whose every byte is checked (a
// wrong MTU or MSS would stall or drop full-size segments once
// encapsulated), ICMP echo to the VIPs, and UDP datagrams.
func TestTraffic(t *testing.T) {
	lab := newLab(t, demo.LabConfig{})
	ctx := testContext(t, 2*time.Minute)

	t.Run("IPv6VIP", func(t *testing.T) {
		counts := spread(t, ctx, lab, demo.URL(demo.Web6VIP, "/"), 90)
		t.Logf("90 connections to %s: %s", demo.Web6VIP, format(counts))
		for _, b := range []string{"be1", "be2", "be3"} {
			if counts[b] == 0 {
				t.Errorf("%s took none of 90 connections to the IPv6 VIP", b)
			}
		}
	})

	t.Run("Bulk", func(t *testing.T) {
		const size = 10 << 20
		before, err := lab.Status(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, vip := range []netip.AddrPort{demo.WebVIP, demo.Web6VIP} {
			start := time.Now()
			be, err := lab.Upload(within(t, ctx, 30*time.Second), vip, size)
			if err != nil {
				t.Error(err)
			} else {
				t.Logf("uploaded 10 MiB to %s (%s) in %s", vip, be, time.Since(start).Round(time.Millisecond))
			}
			start = time.Now()
			be, err = lab.Download(within(t, ctx, 30*time.Second), vip, size)
			if err != nil {
				t.Error(err)
			} else {
				t.Logf("downloaded 10 MiB from %s (%s) in %s", vip, be, time.Since(start).Round(time.Millisecond))
			}
		}
		after, err := lab.Status(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		// The uploads crossed the balancer (downloads return directly).
		for _, name := range []string{demo.VIPWeb, demo.VIPWeb6} {
			if d := vipBytes(after, name) - vipBytes(before, name); d < size {
				t.Errorf("the datapath balanced %d bytes for %s during a %d-byte upload", d, name, size)
			}
		}
		// Full-size segments fit once encapsulated: nothing was too big.
		for _, c := range []string{"drop_too_big", "icmp_too_big_sent"} {
			if d := after.Counters[c] - before.Counters[c]; d != 0 {
				t.Errorf("datapath counter %s rose by %d during the transfers", c, d)
			}
		}
	})

	t.Run("ICMPEcho", func(t *testing.T) {
		before, err := lab.Status(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, vip := range []netip.Addr{demo.WebVIP.Addr(), demo.Web6VIP.Addr()} {
			rtt, err := lab.Ping(ctx, vip, 5*time.Second)
			if err != nil {
				t.Errorf("ping %s: %v", vip, err)
				continue
			}
			t.Logf("echo reply from %s in %s", vip, rtt)
		}
		after, err := lab.Status(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		// The balancer answers itself: a backend's reply would not count.
		if d := after.Counters["icmp_echo_reply"] - before.Counters["icmp_echo_reply"]; d < 2 {
			t.Errorf("datapath answered %d echo requests, want 2", d)
		}
	})

	t.Run("UDP", func(t *testing.T) {
		// The dns VIP hashes on the client address only: every flow of the
		// one client goes to the same backend.
		var first string
		for i := range 20 {
			payload := fmt.Sprintf("query-%d", i)
			got, err := lab.UDP(ctx, demo.DNSVIP, payload, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			be, rest, ok := strings.Cut(strings.TrimPrefix(got, "backend="), " ")
			if !strings.HasPrefix(got, "backend=") || !ok || rest != payload {
				t.Fatalf("UDP echo of %q = %q, want \"backend=<name> %s\"", payload, got, payload)
			}
			if first == "" {
				first = be
				t.Logf("UDP flows from the client go to %s", be)
			} else if be != first {
				t.Errorf("UDP flow %d went to %s, flow 0 to %s: source hashing must keep a client on one backend", i, be, first)
			}
		}
	})
}

func vipBytes(st api.Status, name string) uint64 {
	for _, v := range st.VIPs {
		if v.Name == name {
			return v.Bytes
		}
	}
	return 0
}
