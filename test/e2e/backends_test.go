package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/demo"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

const streamInterval = 100 * time.Millisecond

// openStreams opens long-lived /stream connections through the web VIP
// until every backend in want carries at least one (new connections land
// at random, so it takes a few), at most 40.
func openStreams(t *testing.T, ctx context.Context, lab *demo.Lab, want ...string) []*demo.Stream {
	t.Helper()
	var streams []*demo.Stream
	t.Cleanup(func() {
		for _, s := range streams {
			s.Close()
		}
	})
	have := map[string]int{}
	for len(streams) < 40 {
		missing := false
		for _, b := range want {
			missing = missing || have[b] == 0
		}
		if !missing {
			break
		}
		s, err := lab.OpenStream(within(t, ctx, 5*time.Second), demo.WebVIP, streamInterval)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
		have[s.Backend()]++
	}
	for _, b := range want {
		if have[b] == 0 {
			t.Fatalf("40 streams and none on %s: %v", b, have)
		}
	}
	t.Logf("%d streams: %v", len(streams), have)
	return streams
}

// flowing fails t unless every stream (except those on a backend in skip)
// receives 5 more lines within 5 s: at one line per 100 ms, a stall of a
// few seconds is a broken connection.
func flowing(t *testing.T, ctx context.Context, step string, streams []*demo.Stream, skip ...string) {
	t.Helper()
	want := make([]int, len(streams))
	for i, s := range streams {
		want[i] = s.Lines() + 5
	}
	wctx := within(t, ctx, 5*time.Second)
	for i, s := range streams {
		if slices.Contains(skip, s.Backend()) {
			continue
		}
		if err := s.WaitLines(wctx, want[i]); err != nil {
			t.Errorf("%s: a stream on %s stopped: %v", step, s.Backend(), err)
		}
	}
}

// TestLongLivedConnectionsSurviveBackendChanges: while streams run on every
// backend, a backend is added (config + reload), one is drained (CLI) and
// one is removed (config + reload). Established connections keep flowing
// through each change, on their backend (the stream checks the name and
// sequence of every line), and new connections follow the new table: the
// added backend takes some, the drained and removed ones none.
func TestLongLivedConnectionsSurviveBackendChanges(t *testing.T) {
	lab := newLab(t, demo.LabConfig{Backends: 4, Configured: 3})
	ctx := testContext(t, 2*time.Minute)
	web := demo.URL(demo.WebVIP, "/")
	streams := openStreams(t, ctx, lab, "be1", "be2", "be3")
	flowing(t, ctx, "start", streams)

	// (a) Add be4.
	spec := lab.Spec()
	spec.AddBackend(4, 1)
	if err := lab.WriteConfig(spec); err != nil {
		t.Fatal(err)
	}
	out, err := lab.Reload(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "backend be4 added") {
		t.Errorf("reload output does not mention be4:\n%s", out)
	}
	flowing(t, ctx, "after adding be4", streams)
	counts := spread(t, ctx, lab, web, 200)
	t.Logf("after adding be4: %s", format(counts))
	onlyFrom(t, "after adding be4", counts, "be1", "be2", "be3", "be4")
	if counts["be4"] == 0 {
		t.Errorf("after adding be4: none of 200 new connections went to be4")
	}

	// (b) Drain be1: its streams continue too.
	out, err = lab.CLI(ctx, 1, "drain", "web/be1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("switchyard drain web/be1: %s", strings.TrimSpace(out))
	flowing(t, ctx, "after draining be1", streams)
	counts = spread(t, ctx, lab, web, 200)
	t.Logf("after draining be1: %s", format(counts))
	onlyFrom(t, "after draining be1", counts, "be2", "be3", "be4")

	// (c) Remove be2 from the configuration: the other streams continue,
	// be1 stays drained (an operator's drain outlives a reload).
	spec.RemoveBackend("be2")
	if err := lab.WriteConfig(spec); err != nil {
		t.Fatal(err)
	}
	if out, err = lab.Reload(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "backend be2 removed") {
		t.Errorf("reload output does not mention be2's removal:\n%s", out)
	}
	flowing(t, ctx, "after removing be2", streams, "be2")
	removedBackendShown(t, ctx, lab, streams, "be2", topology.BackendIPv4(2).String())
	counts = spread(t, ctx, lab, web, 200)
	t.Logf("after removing be2: %s", format(counts))
	onlyFrom(t, "after removing be2", counts, "be3", "be4")

	for _, s := range streams {
		if s.Backend() == "be2" {
			// Not promised: the removed backend's flows keep their pinning
			// while its datapath slot is not reused.
			t.Logf("stream on the removed be2: %d lines, error %v", s.Lines(), s.Err())
			continue
		}
		if err := s.Err(); err != nil {
			t.Errorf("stream on %s: %v", s.Backend(), err)
		}
		if g := s.MaxGap(); g > time.Second {
			t.Errorf("stream on %s stalled for %s (a line is due every %s)", s.Backend(), g, streamInterval)
		}
	}
}

// removedBackendShown fails t unless status and the metrics show backend
// name, removed from web, in a row of web marked removed and named by its
// address addr, with web's flows that the connection table still pins to
// it (as many as switchyard flows lists) and at least its streams among
// the active ones.
func removedBackendShown(t *testing.T, ctx context.Context, lab *demo.Lab, streams []*demo.Stream, name, addr string) {
	t.Helper()
	live := 0
	for _, s := range streams {
		if s.Backend() == name {
			live++
		}
	}
	st, err := lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var row *api.Backend
	for _, v := range st.VIPs {
		for i, b := range v.Backends {
			if v.Name == demo.VIPWeb && b.Address == addr {
				row = &v.Backends[i]
			}
		}
	}
	if row == nil || !row.Removed || row.Name != addr {
		t.Fatalf("status after removing %s: web's row of %s is %+v, want one marked removed, named %s", name, addr, row, addr)
	}
	fl, err := lab.API(1).Flows(ctx, demo.VIPWeb, api.MaxFlowsLimit)
	if err != nil {
		t.Fatal(err)
	}
	listed := 0
	for _, f := range fl.Flows {
		if f.Backend == addr {
			listed++
		}
	}
	// No new flow goes to the removed backend: both walks see the same.
	if row.Flows != uint64(listed) || row.ActiveFlows < uint64(live) || row.ActiveFlows > row.Flows {
		t.Errorf("removed %s: %d flows, %d active; want the %d that switchyard flows lists, at least its %d streams active",
			name, row.Flows, row.ActiveFlows, listed, live)
	}
	text, err := lab.Metrics(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	series := `switchyard_backend_active_flows{address="` + addr + `",backend="` + addr + `",vip="web"}`
	if v := metricValue(text, series); !(v >= float64(live)) {
		t.Errorf("%s = %v, want at least the %d streams on the removed %s", series, v, live, name)
	}
}

// TestDeadBackendAvoided: when a backend's server dies, new flows avoid it
// within interval × fall + 1 s of the death, with nothing but the health
// checks to tell; when it comes back, it takes flows again.
func TestDeadBackendAvoided(t *testing.T) {
	const (
		interval = 200 * time.Millisecond
		fall     = 2 // demo.DefaultSpec's
	)
	lab := newLab(t, demo.LabConfig{HealthInterval: interval})
	ctx := testContext(t, time.Minute)
	web := demo.URL(demo.WebVIP, "/")
	if counts := spread(t, ctx, lab, web, 60); counts["be2"] == 0 {
		t.Fatalf("be2 took none of 60 connections before the test: %s", format(counts))
	}

	killed := time.Now()
	lab.KillServer(2)
	bound := interval*fall + time.Second

	// Flows avoid be2 once a run of new connections never meets it: with be2
	// still in the table a connection avoids it with probability 2/3, 30 in
	// a row with 5e-6. The run's first connection dates the switch.
	const run = 30
	var streak int
	var streakStart time.Time
	failures := 0
	deadline := killed.Add(bound + 5*time.Second)
	for streak < run && time.Now().Before(deadline) {
		at := time.Now()
		be, _, err := lab.Get(within(t, ctx, time.Second), web)
		if err != nil || be == "be2" {
			streak = 0
			failures++
			continue
		}
		if streak == 0 {
			streakStart = at
		}
		streak++
	}
	if streak < run {
		t.Fatalf("new connections still met be2 %s after its server died", time.Since(killed).Round(time.Millisecond))
	}
	took := streakStart.Sub(killed)
	t.Logf("new flows avoid the dead be2 %s after its death (bound %s); %d connections failed meanwhile", took.Round(time.Millisecond), bound, failures)
	if took > bound {
		t.Errorf("new flows avoided the dead be2 only %s after its death, want at most interval×fall + 1s = %s", took.Round(time.Millisecond), bound)
	}
	if err := lab.WaitHealth(within(t, ctx, time.Second), 1, demo.VIPWeb, "be2", false); err != nil {
		t.Error(err)
	}
	// dns checks be2's UDP echo with a datagram: its host answers with a
	// port unreachable now.
	if err := lab.WaitHealth(within(t, ctx, time.Second), 1, demo.VIPDNS, "be2", false); err != nil {
		t.Error(err)
	}
	counts := spread(t, ctx, lab, web, 100)
	onlyFrom(t, "be2 dead", counts, "be1", "be3")

	// Back to life: after rise checks it takes new flows again.
	if err := lab.StartServer(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitHealth(within(t, ctx, 5*time.Second), 1, demo.VIPWeb, "be2", true); err != nil {
		t.Fatal(err)
	}
	// ... and rise answered datagrams bring it back for dns.
	if err := lab.WaitHealth(within(t, ctx, 5*time.Second), 1, demo.VIPDNS, "be2", true); err != nil {
		t.Fatal(err)
	}
	counts = spread(t, ctx, lab, web, 100)
	if counts["be2"] == 0 {
		t.Errorf("be2 back up, yet none of 100 new connections went to it: %s", format(counts))
	}
}
