package health

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"sync"
	"time"
)

// Target is one thing to check, usually one backend of one VIP.
type Target struct {
	// Key names the target in Status, Snapshot and Transition; unique
	// within one Set call.
	Key string
	// Name is how logs and transitions call the target ("" means Key).
	// Unlike the fields below it may change without restarting the
	// check: a backend renamed, say, whose key is its address.
	Name string
	// Checker probes the target. nil means no check (health type "none"):
	// the target is always healthy and no goroutine runs for it. Checkers
	// are compared with reflect.DeepEqual by Set, so they must not change
	// after being passed to Set.
	Checker Checker
	// Interval is the time from the start of one check to the start of the
	// next, plus a random jitter of up to a tenth of Interval (see
	// Monitor.run); Timeout bounds each check and may not exceed Interval.
	Interval, Timeout time.Duration
	// Rise consecutive successes mark an unhealthy target healthy; Fall
	// consecutive failures mark a healthy target unhealthy. Both >= 1.
	Rise, Fall int
}

// Status is the health of one target.
type Status struct {
	Healthy bool
	// Since is when Healthy last changed, or when the target was added.
	Since time.Time
	// LastCheck is when the last completed check started; zero before the
	// first one.
	LastCheck time.Time
	// LastDuration is how long the last completed check took.
	LastDuration time.Duration
	// LastError is why the last check failed; "" if it succeeded.
	LastError string
	// Successes and Failures count the consecutive successful and failed
	// checks up to the last one; one of them is always 0.
	Successes, Failures int
	// Checks and Failed count every completed check and every failed one
	// since the target was added, across restarts by Set: counters for
	// metrics.
	Checks, Failed uint64
}

// Transition reports that a target became healthy or unhealthy.
type Transition struct {
	Key     string
	Name    string // Target.Name (or Key) when the change was made
	Healthy bool
	// Reason says what made the change, e.g. "3 consecutive failed checks,
	// last: tcp check: dial tcp 10.2.1.2:80: connect: connection refused".
	Reason string
	Time   time.Time
}

// Config configures a Monitor.
type Config struct {
	// StartHealthy is the state of a newly added target. true, the default
	// of DefaultConfig, follows HAProxy: a new backend takes traffic at
	// once and is taken out after Fall failed checks, so that a balancer
	// (re)starting does not drop every VIP until Rise checks have passed.
	// false makes a new target wait for Rise successful checks. The zero
	// Config has false: start from DefaultConfig.
	StartHealthy bool
	// Transitions, if not nil, receives every Transition. A target's
	// goroutine waits until its Transition is received (so none is lost),
	// and its checks pause meanwhile; it gives up when the target is
	// removed or the Monitor closed. Set adds, removes and restarts
	// targets without sending a Transition: read State after Set.
	Transitions chan<- Transition
	// Logger logs transitions at Info; nil means no logging.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with StartHealthy set.
func DefaultConfig() Config {
	return Config{StartHealthy: true}
}

// Monitor checks a changing set of targets, one goroutine per target.
// Its methods are safe for concurrent use.
type Monitor struct {
	cfg Config
	log *slog.Logger

	setMu sync.Mutex // serialises Set and Close
	wg    sync.WaitGroup

	mu      sync.Mutex // guards the fields below and every entry's status
	targets map[string]*entry
	closed  bool
}

// entry is one running target. A restarted target gets a new entry, so a
// goroutine that outlives its entry can tell (m.targets[key] != e) and
// drop its result.
type entry struct {
	target Target
	name   string // the target's Name (or Key), as the last Set gave it; guarded by mu
	status Status
	cancel context.CancelFunc // nil for targets without a Checker
	done   chan struct{}      // closed when the goroutine has returned
}

// New returns a Monitor with no targets; add them with Set.
func New(cfg Config) *Monitor {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Monitor{
		cfg:     cfg,
		log:     log.With("component", "health"),
		targets: map[string]*entry{},
	}
}

// Set makes targets the set of checked targets:
//   - a target with a new key is added, in the state Config.StartHealthy
//     says (always healthy without a Checker);
//   - a key that is not in targets is removed;
//   - a target equal to the running one (same Interval, Timeout, Rise, Fall
//     and a reflect.DeepEqual Checker) keeps running untouched, so that a
//     config reload does not reset health;
//   - a target whose parameters changed is restarted with them. It keeps
//     Healthy and Since (a reload must not flap a backend), the last
//     check's result until the new check has one, and the totals Checks
//     and Failed, but its consecutive counts start again from 0.
//
// The first checks of the targets one call adds or restarts are spread
// evenly over their Interval (the first target's at once), so that they
// do not all run in the same instant, every interval.
//
// Set returns once removed and restarted goroutines have stopped. If a
// target is invalid it returns an error wrapping ErrInvalidTarget and
// changes nothing (ValidateTargets checks that alone); after Close it
// returns ErrClosed. It fails in no other way.
func (m *Monitor) Set(targets []Target) error {
	if err := ValidateTargets(targets); err != nil {
		return err
	}
	m.setMu.Lock()
	defer m.setMu.Unlock()

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	now := time.Now()
	want := make(map[string]bool, len(targets))
	for _, t := range targets {
		want[t.Key] = true
	}
	var stopped, started []*entry
	for key, e := range m.targets {
		if !want[key] {
			e.stop()
			stopped = append(stopped, e)
			delete(m.targets, key)
		}
	}
	for _, t := range targets {
		old, ok := m.targets[t.Key]
		if ok && sameTarget(old.target, t) {
			old.name = nameOf(t)
			continue
		}
		e := &entry{target: t, name: nameOf(t), status: Status{Healthy: m.cfg.StartHealthy, Since: now}}
		if ok {
			old.stop()
			stopped = append(stopped, old)
			// The last result stays until the restarted check has one:
			// a down backend must not show a blank reason meanwhile.
			e.status = Status{Healthy: old.status.Healthy, Since: old.status.Since,
				LastCheck: old.status.LastCheck, LastDuration: old.status.LastDuration, LastError: old.status.LastError,
				Checks: old.status.Checks, Failed: old.status.Failed}
		}
		if t.Checker == nil && !e.status.Healthy {
			e.status.Healthy, e.status.Since = true, now
		}
		m.targets[t.Key] = e
		if t.Checker == nil {
			m.start(e, 0)
			continue
		}
		started = append(started, e)
	}
	// Checks started together would stay in step for good: every
	// interval, a burst of connections (TLS handshakes, for https) that
	// loads the balancer and the backends at once, and with enough
	// targets makes checks miss their timeout. Spread the first checks
	// evenly over the interval, as HAProxy does.
	for i, e := range started {
		m.start(e, e.target.Interval*time.Duration(i)/time.Duration(len(started)))
	}
	m.mu.Unlock()

	for _, e := range stopped {
		<-e.done
	}
	return nil
}

// start runs e's checks, the first after delay; m.mu must be held.
func (m *Monitor) start(e *entry, delay time.Duration) {
	e.done = make(chan struct{})
	if e.target.Checker == nil {
		close(e.done)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	m.wg.Add(1)
	go m.run(ctx, e, delay)
}

func (e *entry) stop() {
	if e.cancel != nil {
		e.cancel()
	}
}

// State returns the status of the target key.
func (m *Monitor) State(key string) (Status, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.targets[key]
	if !ok {
		return Status{}, false
	}
	return e.status, true
}

// Snapshot returns the status of every target, by key.
func (m *Monitor) Snapshot() map[string]Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Status, len(m.targets))
	for k, e := range m.targets {
		out[k] = e.status
	}
	return out
}

// Close stops every check and waits for the goroutines to return. The
// Monitor then has no targets, and Set returns ErrClosed. Close is
// idempotent.
func (m *Monitor) Close() {
	m.setMu.Lock()
	defer m.setMu.Unlock()
	m.mu.Lock()
	m.closed = true
	for _, e := range m.targets {
		e.stop()
	}
	clear(m.targets)
	m.mu.Unlock()
	m.wg.Wait()
}

// jitterShare: each gap between the starts of two checks of a target is
// its Interval plus a random jitter of up to Interval/jitterShare.
const jitterShare = 10

// run checks e's target until ctx ends: first after delay, then each
// check Interval plus a random jitter (up to Interval/jitterShare) after
// the start of the one before, or at once if that one (or the wait for
// its Transition to be received) took longer. Without the jitter,
// balancers started together (a fleet restarted by automation) would
// check a backend in the same instants forever; with it their phases
// drift apart, as HAProxy's spread-checks makes them. The jitter only
// lengthens a gap: a target is never checked more often than once per
// Interval.
func (m *Monitor) run(ctx context.Context, e *entry, delay time.Duration) {
	defer m.wg.Done()
	defer close(e.done)
	wait := time.NewTimer(delay)
	defer wait.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-wait.C:
		}
		start := time.Now()
		if tr, ok := m.check(ctx, e); ok {
			m.report(ctx, tr)
		}
		wait.Reset(time.Until(start.Add(e.target.Interval + rand.N(e.target.Interval/jitterShare+1))))
	}
}

// check runs one check and updates e's status. It returns the transition
// the result caused, if any.
func (m *Monitor) check(ctx context.Context, e *entry) (Transition, bool) {
	t := e.target
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, t.Timeout)
	err := t.Checker.Check(cctx)
	cancel()
	end := time.Now()
	if ctx.Err() != nil {
		return Transition{}, false // stopped mid-check: the result means nothing
	}
	took := end.Sub(start)
	switch {
	case err == nil && took > t.Timeout:
		err = fmt.Errorf("took %s, timeout %s: %w", took, t.Timeout, ErrSlow)
	case err != nil && took >= t.Timeout:
		// The checker's own words for it are Go's ("context deadline
		// exceeded", "i/o timeout"), which name neither the timeout
		// nor that it is the check's.
		err = fmt.Errorf("took %s, timeout %s: no answer within the timeout: %w", took.Round(time.Millisecond), t.Timeout, err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.targets[t.Key] != e {
		return Transition{}, false // removed or restarted meanwhile
	}
	st := &e.status
	st.LastCheck, st.LastDuration = start, took
	st.Checks++
	if err == nil {
		st.Successes++
		st.Failures = 0
		st.LastError = ""
		if !st.Healthy && st.Successes >= t.Rise {
			st.Healthy, st.Since = true, end
			return Transition{Key: t.Key, Name: e.name, Healthy: true, Time: end,
				Reason: fmt.Sprintf("%d consecutive successful checks", st.Successes)}, true
		}
		return Transition{}, false
	}
	st.Failures++
	st.Failed++
	st.Successes = 0
	st.LastError = err.Error()
	if st.Healthy && st.Failures >= t.Fall {
		st.Healthy, st.Since = false, end
		return Transition{Key: t.Key, Name: e.name, Healthy: false, Time: end,
			Reason: fmt.Sprintf("%d consecutive failed checks, last: %v", st.Failures, err)}, true
	}
	return Transition{}, false
}

func (m *Monitor) report(ctx context.Context, tr Transition) {
	m.log.Info("health changed", "key", tr.Name, "healthy", tr.Healthy, "reason", tr.Reason)
	if m.cfg.Transitions == nil {
		return
	}
	select {
	case m.cfg.Transitions <- tr:
	case <-ctx.Done():
	}
}

// ValidateTargets returns the error Set would return for targets (wrapping
// ErrInvalidTarget), without changing anything: a caller that must not
// fail once it has called Set checks them first.
func ValidateTargets(targets []Target) error {
	seen := make(map[string]bool, len(targets))
	for _, t := range targets {
		if t.Key == "" {
			return fmt.Errorf("target with an empty key: %w", ErrInvalidTarget)
		}
		if seen[t.Key] {
			return fmt.Errorf("target %q given twice: %w", t.Key, ErrInvalidTarget)
		}
		seen[t.Key] = true
		if t.Checker == nil {
			continue
		}
		switch {
		case t.Interval <= 0:
			return fmt.Errorf("target %q: interval %s is not positive: %w", t.Key, t.Interval, ErrInvalidTarget)
		case t.Timeout <= 0 || t.Timeout > t.Interval:
			return fmt.Errorf("target %q: timeout %s is not in (0, interval %s]: %w", t.Key, t.Timeout, t.Interval, ErrInvalidTarget)
		case t.Rise < 1 || t.Fall < 1:
			return fmt.Errorf("target %q: rise %d and fall %d must be at least 1: %w", t.Key, t.Rise, t.Fall, ErrInvalidTarget)
		}
	}
	return nil
}

// nameOf is how logs and transitions name a target: its Name, or its Key
// without one.
func nameOf(t Target) string {
	if t.Name != "" {
		return t.Name
	}
	return t.Key
}

// sameTarget reports whether b can keep running as a. The cheap fields
// come first so that DeepEqual only runs when they match.
func sameTarget(a, b Target) bool {
	return a.Interval == b.Interval && a.Timeout == b.Timeout && a.Rise == b.Rise && a.Fall == b.Fall &&
		reflect.DeepEqual(a.Checker, b.Checker)
}
