package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Most tests here are about what checks' results do, not about the
// timeout, yet a check that outlasts it fails, a successful one too: a
// target went down, or a count the test waited for started again. 15 ms
// was a scheduling delay away from that: a check of a loopback listener
// took up to 12 ms beside a busy loop per core on a 2-core machine under
// -race, and CI machines can be three times slower. 200 ms is over
// fifteen times what was seen; the interval may not be shorter. The
// deadline only bounds waits for what must come, the longest being
// TestHysteresis's 23 checks (about 5 s).
const (
	interval = 200 * time.Millisecond
	timeout  = 200 * time.Millisecond
	deadline = 20 * time.Second
)

// checkerFunc is a scripted Checker. Funcs are never DeepEqual, so Set
// treats a target holding one as changed every time; tests that re-Set
// targets use real TCP checks instead.
type checkerFunc func(ctx context.Context) error

func (f checkerFunc) Check(ctx context.Context) error { return f(ctx) }

func newMonitor(t *testing.T, startHealthy bool) (*Monitor, chan Transition) {
	t.Helper()
	ch := make(chan Transition, 16)
	cfg := DefaultConfig()
	cfg.StartHealthy = startHealthy
	cfg.Transitions = ch
	m := New(cfg)
	t.Cleanup(m.Close)
	return m, ch
}

func target(key string, c Checker, rise, fall int) Target {
	return Target{Key: key, Checker: c, Interval: interval, Timeout: timeout, Rise: rise, Fall: fall}
}

// waitTransition waits for the next transition of key and checks its
// direction.
func waitTransition(t *testing.T, ch <-chan Transition, key string, healthy bool) Transition {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for {
		select {
		case tr := <-ch:
			if tr.Key != key {
				continue
			}
			if tr.Healthy != healthy {
				t.Fatalf("transition of %s to healthy=%v (%s), want healthy=%v", key, tr.Healthy, tr.Reason, healthy)
			}
			return tr
		case <-timer.C:
			t.Fatalf("no transition of %s to healthy=%v within %s", key, healthy, deadline)
		}
	}
}

// poll waits until cond holds.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %s", what, deadline)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustState(t *testing.T, m *Monitor, key string) Status {
	t.Helper()
	st, ok := m.State(key)
	if !ok {
		t.Fatalf("no state for %s", key)
	}
	return st
}

// TestTCPDownAndUp: a backend whose listener closes is reported down after
// Fall failures, and up again after Rise successes once it listens again.
func TestTCPDownAndUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go acceptAndClose(ln)
	addr := ln.Addr().String()
	m, ch := newMonitor(t, true)
	if err := m.Set([]Target{target("web/be1", TCPChecker{Addr: netip.MustParseAddrPort(addr)}, 2, 3)}); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, m, "web/be1"); !st.Healthy {
		t.Fatalf("new target is %+v, want healthy (StartHealthy)", st)
	}
	poll(t, "first successful check", func() bool { return mustState(t, m, "web/be1").Successes > 0 })

	ln.Close()
	tr := waitTransition(t, ch, "web/be1", false)
	if !strings.Contains(tr.Reason, "3 consecutive failed checks") || !strings.Contains(tr.Reason, "connection refused") {
		t.Errorf("down reason = %q, want 3 failures and the last error", tr.Reason)
	}
	st := mustState(t, m, "web/be1")
	if st.Healthy || st.Failures < 3 || !strings.Contains(st.LastError, "connection refused") || st.Since.IsZero() {
		t.Errorf("state after down = %+v", st)
	}

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	tr = waitTransition(t, ch, "web/be1", true)
	if tr.Reason != "2 consecutive successful checks" {
		t.Errorf("up reason = %q", tr.Reason)
	}
	st = mustState(t, m, "web/be1")
	if !st.Healthy || st.Successes < 2 || st.Failures != 0 || st.LastError != "" || st.LastCheck.IsZero() {
		t.Errorf("state after up = %+v", st)
	}
}

// TestHysteresis: Rise and Fall count consecutive results, so a flapping
// backend keeps its state, and the state changes exactly at the Rise-th
// success or Fall-th failure.
func TestHysteresis(t *testing.T) {
	t.Parallel() // a few seconds of checks at the interval, no sockets
	for _, tc := range []struct {
		name         string
		startHealthy bool
		results      string // one letter per check, o(k) or f(ail); the last repeats
		rise, fall   int
		wantAt       int // the check (1-based) that flips the state; 0 = none
	}{
		{name: "up after rise successes", results: "o", rise: 3, fall: 1, wantAt: 3},
		{name: "down after fall failures", startHealthy: true, results: "f", rise: 1, fall: 4, wantAt: 4},
		{name: "failures must be consecutive", startHealthy: true, results: "ffoffoffofff", rise: 1, fall: 3, wantAt: 12},
		{name: "successes must be consecutive", results: "ofoofoooo", rise: 3, fall: 1, wantAt: 8},
		{name: "flapping stays healthy", startHealthy: true, results: strings.Repeat("fo", 10), rise: 2, fall: 2},
		{name: "flapping stays unhealthy", results: strings.Repeat("of", 10) + "f", rise: 2, fall: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, ch := newMonitor(t, tc.startHealthy)
			// Each check records the state the previous checks left, so
			// the test knows exactly which check flipped it.
			var mu sync.Mutex
			var stateBefore []bool // stateBefore[i]: healthy before check i+1
			check := checkerFunc(func(context.Context) error {
				st, _ := m.State("k")
				mu.Lock()
				stateBefore = append(stateBefore, st.Healthy)
				n := len(stateBefore)
				mu.Unlock()
				if tc.results[min(n, len(tc.results))-1] == 'f' {
					return fmt.Errorf("scripted failure %d", n)
				}
				return nil
			})
			if err := m.Set([]Target{target("k", check, tc.rise, tc.fall)}); err != nil {
				t.Fatal(err)
			}
			upTo := len(tc.results) + 2
			if tc.wantAt != 0 {
				waitTransition(t, ch, "k", !tc.startHealthy)
				upTo = tc.wantAt + 1
			}
			poll(t, "checks to run", func() bool { mu.Lock(); defer mu.Unlock(); return len(stateBefore) >= upTo })
			mu.Lock()
			defer mu.Unlock()
			for i, healthy := range stateBefore[:upTo] {
				want := tc.startHealthy
				if tc.wantAt != 0 && i >= tc.wantAt {
					want = !tc.startHealthy
				}
				if healthy != want {
					t.Fatalf("healthy=%v after check %d, want %v (state before each check: %v)", healthy, i, want, stateBefore[:upTo])
				}
			}
		})
	}
}

// TestHTTPStatusMismatchIsDown: a backend answering with another status
// than the one expected goes down, and the reason names the status. The
// timeout is not the subject, and a check that outlasts it fails with a
// reason that names no status: 40 ms was a loaded CI machine's scheduling
// away from that, so it is 900 ms here, as in pkg/balancer's https and
// udp check tests.
func TestHTTPStatusMismatchIsDown(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	m, ch := newMonitor(t, true)
	tgt := Target{Key: "web/be1", Checker: HTTPChecker{URL: srv.URL + "/healthz"},
		Interval: time.Second, Timeout: 900 * time.Millisecond, Rise: 1, Fall: 2}
	if err := m.Set([]Target{tgt}); err != nil {
		t.Fatal(err)
	}
	tr := waitTransition(t, ch, "web/be1", false)
	if !strings.Contains(tr.Reason, "status 503 Service Unavailable, want 200") {
		t.Errorf("reason %q does not name the status", tr.Reason)
	}
	if st := mustState(t, m, "web/be1"); !strings.Contains(st.LastError, "503") {
		t.Errorf("LastError %q does not name the status", st.LastError)
	}
}

// TestSetKeepsUnchanged: a config reload that passes the same targets again
// must not reset their health; removed targets go, new ones start.
func TestSetKeepsUnchanged(t *testing.T) {
	up, down := listen(t), closedAddr(t)
	m, ch := newMonitor(t, false)
	a := target("a", TCPChecker{Addr: up}, 2, 2)
	b := target("b", TCPChecker{Addr: down}, 2, 2)
	if err := m.Set([]Target{a, b}); err != nil {
		t.Fatal(err)
	}
	waitTransition(t, ch, "a", true)
	poll(t, "b to fail and a to succeed", func() bool {
		return mustState(t, m, "b").Failures >= 2 && mustState(t, m, "a").Successes >= 3
	})
	before := mustState(t, m, "a")

	// The same targets rebuilt from a reloaded config: equal, not identical.
	n := before.Successes
	if err := m.Set([]Target{target("a", TCPChecker{Addr: up}, 2, 2), target("c", TCPChecker{Addr: up}, 3, 2)}); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, m, "c"); st.Healthy {
		t.Errorf("new target c = %+v, want unhealthy (StartHealthy false) until it rises", st)
	}
	after := mustState(t, m, "a")
	if !after.Healthy || !after.Since.Equal(before.Since) || after.Successes < n {
		t.Errorf("a after Set = %+v, want untouched: healthy since %v with at least %d successes", after, before.Since, n)
	}

	// Pointer checkers are compared by what they point to.
	if err := m.Set([]Target{target("a", &TCPChecker{Addr: up}, 2, 2), target("c", TCPChecker{Addr: up}, 3, 2)}); err != nil {
		t.Fatal(err)
	}
	poll(t, "a to count successes again", func() bool { return mustState(t, m, "a").Successes >= 3 })
	n = mustState(t, m, "a").Successes
	if err := m.Set([]Target{target("a", &TCPChecker{Addr: up}, 2, 2), target("c", TCPChecker{Addr: up}, 3, 2)}); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, m, "a"); st.Successes < n || !st.Healthy || !st.Since.Equal(before.Since) {
		t.Errorf("a after Set with an equal pointer checker = %+v, want untouched (at least %d successes)", st, n)
	}
	if _, ok := m.State("b"); ok {
		t.Error("removed target b still has a state")
	}
	waitTransition(t, ch, "c", true)
	snap := m.Snapshot()
	if len(snap) != 2 || !snap["a"].Healthy || !snap["c"].Healthy {
		t.Errorf("Snapshot() = %+v, want a and c healthy", snap)
	}
}

// TestSetRestartsChanged: a target whose check changed runs the new check,
// keeping its health until the new check says otherwise.
func TestSetRestartsChanged(t *testing.T) {
	up, down := listen(t), closedAddr(t)
	m, ch := newMonitor(t, true)
	if err := m.Set([]Target{target("a", TCPChecker{Addr: up}, 1, 2)}); err != nil {
		t.Fatal(err)
	}
	poll(t, "a checked", func() bool { return mustState(t, m, "a").Successes > 0 })
	before := mustState(t, m, "a")
	if before.Checks != uint64(before.Successes) || before.Failed != 0 {
		t.Errorf("after %d successful checks: %d checks, %d failed; want as many checks, none failed", before.Successes, before.Checks, before.Failed)
	}

	changed := target("a", TCPChecker{Addr: down}, 1, 2)
	changed.Interval = 2 * interval
	if err := m.Set([]Target{changed}); err != nil {
		t.Fatal(err)
	}
	st := mustState(t, m, "a")
	if !st.Healthy || !st.Since.Equal(before.Since) || st.Successes != 0 || st.Checks < before.Checks {
		t.Errorf("restarted target = %+v, want healthy since %v with counts reset and at least %d checks in total", st, before.Since, before.Checks)
	}
	tr := waitTransition(t, ch, "a", false)
	if !strings.Contains(tr.Reason, down.String()) {
		t.Errorf("reason %q does not come from the new check of %s", tr.Reason, down)
	}
	// The totals go on over the restart: the failures that took it down
	// are added to the successes before.
	st = mustState(t, m, "a")
	if st.Failed < 2 || st.Checks < before.Checks+st.Failed {
		t.Errorf("after the restart and 2 failures: %d checks, %d failed; want at least %d checks, 2 failed", st.Checks, st.Failed, before.Checks+2)
	}
}

func TestNoCheckerIsAlwaysHealthy(t *testing.T) {
	m, _ := newMonitor(t, false)
	if err := m.Set([]Target{{Key: "none"}}); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, m, "none"); !st.Healthy || st.Since.IsZero() {
		t.Errorf("target without checker = %+v, want healthy", st)
	}
}

func TestCheckBoundedByTimeout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		check   checkerFunc
		wantErr string
	}{
		{"check that honours its context", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
			"deadline exceeded"},
		{"check that ignores its context", func(ctx context.Context) error { time.Sleep(2 * timeout); return nil },
			ErrSlow.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ch := newMonitor(t, true)
			if err := m.Set([]Target{{Key: "slow", Checker: tc.check, Interval: 4 * timeout, Timeout: timeout, Rise: 1, Fall: 1}}); err != nil {
				t.Fatal(err)
			}
			tr := waitTransition(t, ch, "slow", false)
			if !strings.Contains(tr.Reason, tc.wantErr) {
				t.Errorf("reason %q, want %q", tr.Reason, tc.wantErr)
			}
			if st := mustState(t, m, "slow"); st.LastDuration < timeout {
				t.Errorf("LastDuration %s, want at least the timeout %s", st.LastDuration, timeout)
			}
		})
	}
}

func TestSetRejectsInvalidTargets(t *testing.T) {
	ok := target("ok", TCPChecker{}, 1, 1)
	for _, tc := range []struct {
		name    string
		targets []Target
	}{
		{"empty key", []Target{target("", TCPChecker{}, 1, 1)}},
		{"duplicate key", []Target{ok, ok}},
		{"zero interval", []Target{{Key: "x", Checker: TCPChecker{}, Timeout: timeout, Rise: 1, Fall: 1}}},
		{"zero timeout", []Target{{Key: "x", Checker: TCPChecker{}, Interval: interval, Rise: 1, Fall: 1}}},
		{"timeout over interval", []Target{{Key: "x", Checker: TCPChecker{}, Interval: interval, Timeout: 2 * interval, Rise: 1, Fall: 1}}},
		{"zero rise", []Target{target("x", TCPChecker{}, 0, 1)}},
		{"zero fall", []Target{target("x", TCPChecker{}, 1, 0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newMonitor(t, true)
			if err := m.Set([]Target{{Key: "keep"}}); err != nil {
				t.Fatal(err)
			}
			if err := m.Set(tc.targets); !errors.Is(err, ErrInvalidTarget) {
				t.Errorf("Set() = %v, want ErrInvalidTarget", err)
			}
			if _, ok := m.State("keep"); !ok {
				t.Error("a rejected Set changed the targets")
			}
		})
	}
}

// TestCloseLeaksNoGoroutines: Close stops every check goroutine, even one
// blocked handing a transition to a reader that has gone away.
func TestCloseLeaksNoGoroutines(t *testing.T) {
	up, down := listen(t), closedAddr(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	before := runtime.NumGoroutine()

	cfg := DefaultConfig()
	cfg.Transitions = make(chan Transition) // never read
	m := New(cfg)
	var targets []Target
	for i := range 5 {
		targets = append(targets,
			target(fmt.Sprintf("up%d", i), TCPChecker{Addr: up}, 1, 1),
			target(fmt.Sprintf("down%d", i), TCPChecker{Addr: down}, 1, 1), // blocks reporting
			Target{Key: fmt.Sprintf("http%d", i), Checker: HTTPChecker{URL: srv.URL}, Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 1, Fall: 1},
			Target{Key: fmt.Sprintf("none%d", i)},
		)
	}
	if err := m.Set(targets); err != nil {
		t.Fatal(err)
	}
	poll(t, "every down target to fail", func() bool {
		for i := range 5 {
			if mustState(t, m, fmt.Sprintf("down%d", i)).Failures == 0 {
				return false
			}
		}
		return true
	})
	if err := m.Set(targets[:8]); err != nil { // removes some, with goroutines blocked
		t.Fatal(err)
	}

	closed := make(chan struct{})
	go func() { m.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(deadline):
		t.Fatal("Close did not return")
	}
	m.Close() // idempotent
	if err := m.Set(targets); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close = %v, want ErrClosed", err)
	}
	if len(m.Snapshot()) != 0 {
		t.Error("targets left after Close")
	}
	end := time.Now().Add(deadline)
	for runtime.NumGoroutine() > before {
		if time.Now().After(end) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}

// gate scripts the checks of a gateChecker: each check hands the test its
// context on started, then returns what the test sends on results (or its
// context's error).
type gate struct {
	started chan context.Context
	results chan error
}

func newGate() *gate {
	return &gate{started: make(chan context.Context), results: make(chan error)}
}

// gateChecker is a scripted Checker that Set can compare: two holding the
// same gate are DeepEqual, so a target passed again unchanged keeps running.
type gateChecker struct{ g *gate }

func (c gateChecker) Check(ctx context.Context) error {
	select {
	case c.g.started <- ctx:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.g.results:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next waits for the next check to start and returns its context.
func (g *gate) next(t *testing.T) context.Context {
	t.Helper()
	select {
	case ctx := <-g.started:
		return ctx
	case <-time.After(deadline):
		t.Fatalf("no check started within %s", deadline)
		return nil
	}
}

// TestSetRestartsOnAnyParameter: a reload that changes only a target's
// interval, timeout, rise or fall restarts it with the new value in force;
// one that changes nothing leaves it running with its counts. Interval and
// Timeout are an hour, so every check after the first is one the test
// caused.
func TestSetRestartsOnAnyParameter(t *testing.T) {
	base := func(g *gate) Target {
		return Target{Key: "a", Checker: gateChecker{g}, Interval: time.Hour, Timeout: time.Hour, Rise: 2, Fall: 3}
	}
	for _, tc := range []struct {
		name string
		// down makes the first check's failure take the target down.
		down   bool
		change func(*Target)
		// then runs the first check of the restarted target and checks
		// that the new value is the one in force.
		then func(t *testing.T, m *Monitor, ch <-chan Transition, g *gate, ctx context.Context)
	}{
		{name: "interval", change: func(tg *Target) { tg.Interval = 2 * time.Hour }},
		{name: "timeout", change: func(tg *Target) { tg.Timeout = time.Minute },
			then: func(t *testing.T, _ *Monitor, _ <-chan Transition, _ *gate, ctx context.Context) {
				if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > time.Minute {
					t.Errorf("check deadline %v, want at most the new timeout of 1m from now", dl)
				}
			}},
		{name: "fall", change: func(tg *Target) { tg.Fall = 1 },
			then: func(t *testing.T, _ *Monitor, ch <-chan Transition, g *gate, _ context.Context) {
				g.results <- errors.New("scripted failure")
				if tr := waitTransition(t, ch, "a", false); !strings.Contains(tr.Reason, "1 consecutive failed checks") {
					t.Errorf("reason %q, want the new fall of 1", tr.Reason)
				}
			}},
		{name: "rise", down: true, change: func(tg *Target) { tg.Rise = 1 },
			then: func(t *testing.T, _ *Monitor, ch <-chan Transition, g *gate, _ context.Context) {
				g.results <- nil
				if tr := waitTransition(t, ch, "a", true); tr.Reason != "1 consecutive successful checks" {
					t.Errorf("reason %q, want the new rise of 1", tr.Reason)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ch := newMonitor(t, true)
			g := newGate()
			orig := base(g)
			if tc.down {
				orig.Fall = 1
			}
			if err := m.Set([]Target{orig}); err != nil {
				t.Fatal(err)
			}
			g.next(t)
			g.results <- errors.New("scripted failure")
			poll(t, "the failure to count", func() bool { return mustState(t, m, "a").Failures == 1 })
			if tc.down {
				waitTransition(t, ch, "a", false)
			}

			// Passed again unchanged (a reload of the same file): running
			// on, its count kept.
			same := orig
			same.Checker = gateChecker{g}
			if err := m.Set([]Target{same}); err != nil {
				t.Fatal(err)
			}
			if st := mustState(t, m, "a"); st.Failures != 1 {
				t.Fatalf("unchanged target after Set = %+v, want its failure still counted", st)
			}

			changed := orig
			tc.change(&changed)
			if err := m.Set([]Target{changed}); err != nil {
				t.Fatal(err)
			}
			if st := mustState(t, m, "a"); st.Failures != 0 || st.Healthy == tc.down {
				t.Fatalf("target after its %s changed = %+v, want it restarted: health kept, counts from 0", tc.name, st)
			}
			ctx := g.next(t) // the restarted target checks at once
			if tc.then != nil {
				tc.then(t, m, ch, g, ctx)
			}
		})
	}
}

// TestChecksSpacedByInterval: a target is checked once per Interval, not
// more often: the k-th check (from 0) starts no earlier than k intervals
// after Set.
func TestChecksSpacedByInterval(t *testing.T) {
	const every = 50 * time.Millisecond
	m, _ := newMonitor(t, true)
	var mu sync.Mutex
	var starts []time.Time
	check := checkerFunc(func(context.Context) error {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return nil
	})
	t0 := time.Now()
	if err := m.Set([]Target{{Key: "k", Checker: check, Interval: every, Timeout: every / 2, Rise: 1, Fall: 1}}); err != nil {
		t.Fatal(err)
	}
	poll(t, "4 checks", func() bool { mu.Lock(); defer mu.Unlock(); return len(starts) >= 4 })
	mu.Lock()
	defer mu.Unlock()
	for k, s := range starts[:4] {
		if earliest := t0.Add(time.Duration(k) * every); s.Before(earliest) {
			t.Errorf("check %d started %s after Set, want at least %s", k, s.Sub(t0), time.Duration(k)*every)
		}
	}
}

// TestChecksJittered: the gap from one check of a target to the next is
// its interval plus a random jitter of up to a tenth of it, so that
// balancers started together do not check a backend in the same instants
// forever: every gap was the interval, and the checks kept their phase.
// The backend is a real listener, which tells when each check connected;
// the gaps' sum is checked, not each gap (see below).
func TestChecksJittered(t *testing.T) {
	const (
		n      = 15 // checks, n-1 gaps
		every  = 300 * time.Millisecond
		jitter = every / jitterShare
		// slack covers the scheduling of the listener's goroutine at
		// the first and last check, on a loaded machine.
		slack = 50 * time.Millisecond
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepts := make(chan time.Time, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepts <- time.Now():
			default:
			}
			c.Close()
		}
	}()
	m, _ := newMonitor(t, true)
	if err := m.Set([]Target{{Key: "k", Checker: TCPChecker{Addr: netip.MustParseAddrPort(ln.Addr().String())},
		Interval: every, Timeout: every / 2, Rise: 1, Fall: 1}}); err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	timer := time.NewTimer(n*(every+jitter) + deadline)
	defer timer.Stop()
	for len(at) < n {
		select {
		case a := <-accepts:
			at = append(at, a)
		case <-timer.C:
			t.Fatalf("%d of %d checks within %s", len(at), n, n*(every+jitter)+deadline)
		}
	}
	// One gap carries the scheduling noise of both its ends (on this
	// 2-core machine under load, a gap of 406ms then one of 193ms were
	// seen without jitter), which cancels out in the sum of the gaps:
	// the span from the first check to the last is n-1 intervals plus
	// the sum of n-1 jitters, each up to a tenth of the interval, about
	// half of that on average. Without jitter, the checks kept their
	// phase: the span was n-1 intervals, within a millisecond.
	span := at[n-1].Sub(at[0])
	if lo, hi := (n-1)*every-slack, (n-1)*(every+jitter)+slack; span < lo || span > hi {
		t.Errorf("%d checks spanned %s, want %s to %s: %d intervals of %s, each with a jitter of up to %s", n, span, (n-1)*every, (n-1)*(every+jitter), n-1, every, jitter)
	}
	if drift := span - (n-1)*every; drift < (n-1)*jitter/8 {
		t.Errorf("check %d started %s later than %d intervals after the first: the checks kept their phase; want it about %s later, the sum of %d jitters", n-1, drift, n-1, (n-1)*jitter/2, n-1)
	}
}

// TestRestartKeepsTheLastResult: a target restarted by Set (a reload that
// changes its check) shows its last result until the new check has one:
// a down backend showed no reason, and the status "ok", meanwhile.
func TestRestartKeepsTheLastResult(t *testing.T) {
	m, ch := newMonitor(t, true)
	down := closedAddr(t)
	if err := m.Set([]Target{target("a", TCPChecker{Addr: down}, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	waitTransition(t, ch, "a", false)
	before := mustState(t, m, "a")
	if before.LastError == "" || before.LastCheck.IsZero() {
		t.Fatalf("state after a failed check = %+v, want its error and time", before)
	}
	// The restarted check never completes here: only the kept result
	// can show.
	blocked := target("a", TCPChecker{Addr: down, Dialer: &recordingDialer{block: true}}, 1, 1)
	blocked.Timeout = time.Hour
	blocked.Interval = 2 * time.Hour
	if err := m.Set([]Target{blocked}); err != nil {
		t.Fatal(err)
	}
	st := mustState(t, m, "a")
	if st.Healthy || st.LastError != before.LastError || !st.LastCheck.Equal(before.LastCheck) || st.LastDuration != before.LastDuration {
		t.Errorf("restarted target = %+v, want down with the last result kept: %q at %v", st, before.LastError, before.LastCheck)
	}
}

// TestRenameKeepsTheCheck: a target whose Name alone changes (a backend
// renamed, keyed by its address) keeps its running check, and its next
// transition carries the new name.
func TestRenameKeepsTheCheck(t *testing.T) {
	t.Parallel() // ten checks at the interval; it only listens, so it takes no port another test expects closed
	m, ch := newMonitor(t, false)
	up := listen(t)
	tg := target("web/10.2.1.2", TCPChecker{Addr: up}, 10, 1)
	tg.Name = "web/be1"
	if err := m.Set([]Target{tg}); err != nil {
		t.Fatal(err)
	}
	since := mustState(t, m, tg.Key).Since
	tg.Name = "web/be1-renamed"
	if err := m.Set([]Target{tg}); err != nil {
		t.Fatal(err)
	}
	tr := waitTransition(t, ch, tg.Key, true)
	if tr.Name != "web/be1-renamed" {
		t.Errorf("transition after the rename names %q, want web/be1-renamed", tr.Name)
	}
	if st := mustState(t, m, tg.Key); st.Checks < 10 || !st.Since.After(since) {
		t.Errorf("state after the rename %+v: want the check kept (10 successes in a row), not restarted", st)
	}
}

// TestSinceMarksEachChange: Since is when the target was added, then when
// it last changed state: down after its failures, and up at once when its
// check is turned off.
func TestSinceMarksEachChange(t *testing.T) {
	m, ch := newMonitor(t, true)
	failing := checkerFunc(func(context.Context) error { return errors.New("refused") })
	before := time.Now()
	// web/be2 has no check, so nothing changes its state after Set.
	if err := m.Set([]Target{target("web/be1", failing, 1, 1), {Key: "web/be2"}}); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, m, "web/be2"); st.Since.Before(before) || st.Since.After(time.Now()) {
		t.Errorf("new target: Since %v, want the time of Set", st.Since)
	}
	tr := waitTransition(t, ch, "web/be1", false)
	if st := mustState(t, m, "web/be1"); !st.Since.Equal(tr.Time) {
		t.Errorf("after going down: Since %v, want the transition's time %v", st.Since, tr.Time)
	}
	before = time.Now()
	if err := m.Set([]Target{{Key: "web/be1"}}); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, m, "web/be1"); !st.Healthy || st.Since.Before(before) {
		t.Errorf("check turned off: healthy %v since %v, want healthy since the Set at %v", st.Healthy, st.Since, before)
	}
}

// TestFirstChecksSpread: targets added together are not checked in the
// same instant, every interval: 100 https backends (interval 1s, timeout
// 100ms) failed most of their checks that way on a 2-core balancer, from
// the load of the handshakes at once. Each backend is a real listener,
// which tells when its first check connected.
func TestFirstChecksSpread(t *testing.T) {
	const n, every = 5, time.Second
	firsts := make(chan time.Time, n)
	var targets []Target
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			firsts <- time.Now()
			c.Close()
			acceptAndClose(ln)
		}()
		targets = append(targets, Target{Key: fmt.Sprint(i), Checker: TCPChecker{Addr: netip.MustParseAddrPort(ln.Addr().String())},
			Interval: every, Timeout: every / 2, Rise: 1, Fall: 1})
	}
	m, _ := newMonitor(t, true)
	if err := m.Set(targets); err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for len(at) < n {
		select {
		case a := <-firsts:
			at = append(at, a)
		case <-timer.C:
			t.Fatalf("%d of %d targets checked within %s", len(at), n, deadline)
		}
	}
	// Spread evenly, they are every/n apart; in step, microseconds.
	for i := 1; i < n; i++ {
		if gap := at[i].Sub(at[i-1]); gap < every/(2*n) {
			t.Errorf("first checks %d and %d of %d targets (interval %s) %s apart, want at least %s", i-1, i, n, every, gap, every/(2*n))
		}
	}
}

// TestTimeoutNamedInReason: a check that gets no answer within its timeout
// says so, with the timeout, in its reason: an http check said only
// `Get "http://...": context deadline exceeded`. The backends are real
// servers that never answer.
func TestTimeoutNamedInReason(t *testing.T) {
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hung.Close()
	silent := udpServer(t, "udp4", "127.0.0.1:0", func([]byte) []byte { return nil })
	want := fmt.Sprintf("timeout %s: no answer within the timeout: ", timeout)
	for _, tc := range []struct {
		name string
		c    Checker
	}{
		{"http", HTTPChecker{URL: hung.URL + "/"}},
		{"udp", UDPChecker{Addr: silent, Send: "ping"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ch := newMonitor(t, true)
			if err := m.Set([]Target{target("hung", tc.c, 1, 1)}); err != nil {
				t.Fatal(err)
			}
			tr := waitTransition(t, ch, "hung", false)
			if !strings.Contains(tr.Reason, want+tc.name+" check: ") {
				t.Errorf("reason %q, want it to say %q", tr.Reason, want)
			}
		})
	}
}
