package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/demo"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// soakEnv lengthens TestChurnSoak's churn (a Go duration: "5m"); soakSeedEnv
// repeats a run's random choices (the seed it logged).
const (
	soakEnv     = "SWITCHYARD_SOAK"
	soakSeedEnv = "SWITCHYARD_SOAK_SEED"
)

// soakBackends is the lab's number of backend nodes; be1 is never killed,
// drained or removed, so every VIP always has a backend for new flows.
const soakBackends = 4

// TestChurnSoak runs everything at once through the real lab: long-lived
// streams on web and web6, new HTTP connections and UDP exchanges, while
// three churners change the world at random (seeded; the seed is logged):
// reloads (by `switchyard reload` or SIGHUP) that add, remove and
// re-weight backends and remove and re-add the web6 VIP; drains and
// undrains through the CLI, meanwhile (a drain may race the reload that
// adds or removes its backend); test servers killed and restarted (health
// flaps); network events on the balancer's interface (an address added or
// removed, the neighbour table flushed); the balancer's daemon stopped
// (SIGTERM) or killed (SIGKILL) and started again on its pins, on either
// program variant (a change of variant is an upgrade); a backend's
// agent killed (its successor takes over its pins) or stopped (its clean
// stop takes the backend out until the next agent is up). Readers hammer
// `switchyard status --json`, `switchyard flows` and /metrics meanwhile.
// It checks that
//   - a stream whose backend stayed configured and alive never breaks,
//     the daemon's restarts and agents' kills included;
//   - a new connection or exchange fails only while a backend of its VIP
//     was dead or had no agent (or its VIP removed), and none lands on a
//     backend drained or removed for all of its duration;
//   - every status and metrics reading succeeds but while the daemon is
//     down, and no counter of one goes below the previous reading's
//     (unless its VIP or backend was removed in between, or it is one the
//     daemon keeps in memory and the daemon restarted);
//   - after every change status has the VIPs, backends and drains of the
//     model, also right after a restart;
//   - the daemon logs no error;
//   - at the end, status and the datapath's choices match the last
//     configuration and drains.
//
// The churn lasts 20 s; SWITCHYARD_SOAK=5m makes it a soak.
func TestChurnSoak(t *testing.T) {
	churn := 20 * time.Second
	if v := os.Getenv(soakEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: give a positive duration such as 5m", soakEnv, v)
		}
		churn = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(soakSeedEnv); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: give the seed a run logged (a number)", soakSeedEnv, v)
		}
		seed = s
	}
	t.Logf("churn for %s, seed %d (%s=%d repeats the choices)", churn, seed, soakSeedEnv, seed)

	const interval = 200 * time.Millisecond
	lab := newLab(t, demo.LabConfig{Prefix: "sys", Backends: soakBackends, Configured: 3, HealthInterval: interval})
	ctx := testContext(t, churn+3*time.Minute)
	w := newSoakWorld(lab.Spec())

	// The churners start no change after the deadline; one under way
	// ends under ctx, so that the model never runs ahead of the daemon.
	churnCtx, stopChurn := context.WithCancel(ctx)
	until := time.Now().Add(churn)
	var wg sync.WaitGroup
	// Traffic and readers run until the churn has ended and been checked.
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	var traffic sync.WaitGroup
	// Also when t fails: nothing may report to t once it has ended.
	defer func() {
		stopChurn()
		wg.Wait()
		stopTraffic()
		traffic.Wait()
	}()

	streams := &soakStreams{lab: lab, w: w}
	t.Cleanup(streams.closeAll)
	traffic.Go(func() { streams.run(trafficCtx, t) })
	traffic.Go(func() { soakHTTP(trafficCtx, t, lab, w) })
	traffic.Go(func() { soakUDP(trafficCtx, t, lab, w) })
	readers := &soakReaders{lab: lab, w: w}
	traffic.Go(func() { readers.status(trafficCtx, t) })
	traffic.Go(func() { readers.flows(trafficCtx, t) })
	traffic.Go(func() { readers.metrics(trafficCtx, t) })

	rngA := rand.New(rand.NewPCG(seed, 1))
	rngB := rand.New(rand.NewPCG(seed, 2))
	rngC := rand.New(rand.NewPCG(seed, 3))
	wg.Go(func() { churnConfig(churnCtx, until, t, lab, w, rngA) })
	wg.Go(func() { churnBackends(churnCtx, until, t, lab, w, rngB) })
	wg.Go(func() { churnProcesses(churnCtx, until, t, lab, w, rngC) })
	wg.Wait()
	if t.Failed() {
		return
	}
	// A drain the model cannot tell the outcome of is ended, so that the
	// end is known.
	for _, key := range w.uncertainDrains() {
		if out, err := lab.CLI(ctx, 1, "undrain", key); err != nil {
			t.Fatalf("undrain %s, whose drain raced a removal and re-addition: %v\n%s", key, err, out)
		}
		w.mu.Lock()
		delete(w.uncertain, key)
		w.mu.Unlock()
		w.logf(t, "undrain %s (its drain raced a removal and re-addition) done", key)
	}

	// The end: every server back, every backend healthy, then status and
	// the datapath against the last configuration.
	for j := 2; j <= soakBackends; j++ {
		if lab.Server(j).Running() {
			continue
		}
		if err := lab.StartServer(ctx, j); err != nil {
			t.Fatal(err)
		}
		w.serverUp(j)
	}
	spec, drained := w.final()
	for _, v := range spec.VIPs {
		for _, b := range v.Backends {
			if err := lab.WaitHealth(within(t, ctx, 10*time.Second), 1, v.Name, b.Name, true); err != nil {
				t.Error(err)
			}
		}
	}
	streams.check(ctx, t)
	stopTraffic()
	traffic.Wait()
	t.Logf("%s; %s; %s", streams.summary(), w.summary(), readers.summary())

	checkFinalStatus(t, within(t, ctx, 10*time.Second), lab, spec, drained)
	for _, v := range spec.VIPs {
		if v.Protocol != "tcp" {
			continue
		}
		var serving []string
		for _, b := range v.Backends {
			if !drained[v.Name+"/"+b.Name] {
				serving = append(serving, b.Name)
			}
		}
		addr := demo.WebVIP
		if v.Name == demo.VIPWeb6 {
			addr = demo.Web6VIP
		}
		counts := spread(t, ctx, lab, demo.URL(addr, "/"), 40*len(serving))
		t.Logf("at the end, %s serves %v: %s", v.Name, serving, format(counts))
		onlyFrom(t, "at the end, "+v.Name, counts, serving...)
		for _, b := range serving {
			if counts[b] == 0 {
				t.Errorf("at the end, %s took none of %s's new connections: %s", b, v.Name, format(counts))
			}
		}
	}
	procs := []*demo.Process{lab.Daemon(1)}
	for j := 1; j <= soakBackends; j++ {
		procs = append(procs, lab.Agent(j))
	}
	for _, p := range procs {
		b, err := os.ReadFile(p.Log)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "level=ERROR") {
				t.Errorf("%s logged an error: %s", p.Name, line)
			}
		}
	}
}

// checkFinalStatus fails t unless status comes to have exactly spec's
// VIPs and backends, with their weights and the drains, and, every
// backend being healthy, a share of its VIP's table exactly when not
// drained, before ctx ends. It polls: the backends were all healthy once
// (WaitHealth), but a check that outlasts its timeout (100 ms here) is a
// failure, and two in a row on a loaded machine took one down again for
// the rise checks after; read once, status then failed the test.
func checkFinalStatus(t *testing.T, ctx context.Context, lab *demo.Lab, spec demo.Spec, drained map[string]bool) {
	t.Helper()
	var want []string
	for _, v := range spec.VIPs {
		for _, b := range v.Backends {
			d := drained[v.Name+"/"+b.Name]
			want = append(want, fmt.Sprintf("%s/%s %s weight=%d drained=%t in_table=%t healthy=true",
				v.Name, b.Name, b.Address, max(b.Weight, 1), d, !d))
		}
		if len(v.Backends) == 0 {
			want = append(want, v.Name+" (no backends)")
		}
	}
	slices.Sort(want)
	var got []string
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ; ; wait(ctx, tick) {
		st, err := lab.Status(ctx, 1)
		if err != nil && ctx.Err() != nil && got != nil {
			break // the deadline, with a reading to show
		}
		if err != nil {
			t.Errorf("status at the end: %v", err)
			return
		}
		got = got[:0]
		for _, v := range st.VIPs {
			n := 0
			for _, b := range v.Backends {
				if b.Removed {
					continue // a removed backend's row, kept while its flows last
				}
				n++
				got = append(got, fmt.Sprintf("%s/%s %s weight=%d drained=%t in_table=%t healthy=%t",
					v.Name, b.Name, b.Address, b.Weight, b.Drained, b.TableSlots > 0, b.Healthy))
			}
			if n == 0 {
				got = append(got, v.Name+" (no backends)")
			}
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
		if ctx.Err() != nil {
			break
		}
	}
	t.Errorf("status at the end:\n  %s\nwant (the last configuration and drains):\n  %s",
		strings.Join(got, "\n  "), strings.Join(want, "\n  "))
}

// soakWorld is what the churners did, and when: the configuration in force,
// the drains, and the windows in which a backend was dead, removed or
// drained, or a VIP removed, against which the checks judge what they saw.
type soakWorld struct {
	// member is held for reading over a reload and over a drain or
	// undrain, which run concurrently, and for writing over a check of
	// status against the model and over a restart of the daemon, during
	// which nothing may change the VIPs, backends or drains.
	member sync.RWMutex

	mu      sync.Mutex
	spec    demo.Spec
	drained map[string]bool // "vip/backend" drained through the CLI
	// uncertain: "vip/backend" whose drain succeeded while reloads removed
	// and re-added it: it is in force if the daemon took it after the
	// re-addition, ended if before the removal.
	uncertain map[string]bool
	// epoch counts the changes of whether the configuration has
	// "vip/backend", to tell what reloads came during a drain.
	epoch   map[string]int
	dead    map[int]bool // server j killed and not yet back
	windows []soakWindow
	ops     map[string]int
}

// soakWindow is a time during which something was (or may have been) so.
type soakWindow struct {
	// "dead" (server), "agentdown" (no agent on the backend), "absent"
	// (VIP or backend removed; "restart:lb1": the daemon restarted),
	// "drained", "removed", "changing" (a reload adds or removes it),
	// "down" (no daemon on lb1)
	kind     string
	key      string // "be<j>", "vip:<name>", "<vip>/<backend>", "lb1"
	from, to time.Time
}

func newSoakWorld(spec demo.Spec) *soakWorld {
	return &soakWorld{spec: spec, drained: map[string]bool{}, uncertain: map[string]bool{}, epoch: map[string]int{},
		dead: map[int]bool{}, ops: map[string]int{}}
}

func (w *soakWorld) open(kind, key string) {
	w.windows = append(w.windows, soakWindow{kind: kind, key: key, from: time.Now()})
}

func (w *soakWorld) close(kind, key string) {
	for i := range w.windows {
		if x := &w.windows[i]; x.kind == kind && x.key == key && x.to.IsZero() {
			x.to = time.Now()
		}
	}
}

// overlaps tells whether a window of kind for key was open at some time
// in [from, to].
func (w *soakWorld) overlaps(kind, key string, from, to time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, x := range w.windows {
		if x.kind == kind && x.key == key && x.from.Before(to) && (x.to.IsZero() || x.to.After(from)) {
			return true
		}
	}
	return false
}

// covers returns a window of kind for key that was open for all of
// [from, to], if there is one.
func (w *soakWorld) covers(kind, key string, from, to time.Time) (soakWindow, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, x := range w.windows {
		if x.kind == kind && x.key == key && !x.from.After(from) && (x.to.IsZero() || x.to.After(to)) {
			return x, true
		}
	}
	return soakWindow{}, false
}

func (x soakWindow) String() string {
	to := "on"
	if !x.to.IsZero() {
		to = x.to.Format("15:04:05.000")
	}
	return fmt.Sprintf("%s %s from %s to %s", x.key, x.kind, x.from.Format("15:04:05.000"), to)
}

func (w *soakWorld) count(op string) {
	w.mu.Lock()
	w.ops[op]++
	w.mu.Unlock()
}

// logf journals a change with its time, for a failure to be read against.
func (w *soakWorld) logf(t *testing.T, format string, args ...any) {
	t.Logf("%s "+format, append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

func (w *soakWorld) serverUp(j int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.dead, j)
	w.close("dead", demo.BackendName(j))
}

func (w *soakWorld) final() (demo.Spec, map[string]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := map[string]bool{}
	for k, v := range w.drained {
		d[k] = v
	}
	return w.spec.Clone(), d
}

// uncertainDrains returns the keys whose drain the model cannot tell.
func (w *soakWorld) uncertainDrains() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var keys []string
	for k := range w.uncertain {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (w *soakWorld) summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var keys []string
	for k := range w.ops {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, w.ops[k]))
	}
	return "churn: " + strings.Join(parts, " ")
}

// excused tells whether a failure of a flow to vip (to backend be, if
// known) in [from, to] is explained by the churn: the VIP removed, or a
// backend it might have gone to dead, without its agent or (for a known
// one) removed.
func (w *soakWorld) excused(vip, be string, from, to time.Time) bool {
	if w.overlaps("absent", "vip:"+vip, from, to) {
		return true
	}
	down := func(be string) bool {
		return w.overlaps("dead", be, from, to) || w.overlaps("agentdown", be, from, to)
	}
	if be != "" {
		return down(be) || w.overlaps("absent", vip+"/"+be, from, to)
	}
	for j := 1; j <= soakBackends; j++ {
		if down(demo.BackendName(j)) {
			return true
		}
	}
	return false
}

// churnConfig changes the configuration at random until ctx ends: adds,
// removes or re-weights a backend, or removes or re-adds web6, each
// applied by `switchyard reload` or SIGHUP.
func churnConfig(ctx context.Context, until time.Time, t *testing.T, lab *demo.Lab, w *soakWorld, rng *rand.Rand) {
	initial := lab.Spec()
	web6 := *initial.VIP(demo.VIPWeb6)
	for pause(ctx, until, rng, 400*time.Millisecond) {
		if !churnConfigOnce(ctx, t, lab, w, rng, web6) {
			return
		}
	}
}

// churnConfigOnce makes one change of churnConfig; false means stop.
func churnConfigOnce(ctx context.Context, t *testing.T, lab *demo.Lab, w *soakWorld, rng *rand.Rand, web6 demo.VIPSpec) bool {
	w.member.RLock()
	locked := true
	defer func() {
		if locked {
			w.member.RUnlock()
		}
	}()
	w.mu.Lock()
	old := w.spec.Clone()
	spec := w.spec.Clone()
	var op string
	switch r := rng.IntN(10); {
	case r < 6:
		// Add or remove a backend, in one VIP or in all.
		v := &spec.VIPs[rng.IntN(len(spec.VIPs))]
		j := 2 + rng.IntN(soakBackends-1)
		name := demo.BackendName(j)
		has := func(v *demo.VIPSpec) bool {
			return slices.ContainsFunc(v.Backends, func(b demo.BackendSpec) bool { return b.Name == name })
		}
		all := rng.IntN(2) == 0
		had := has(v)
		for k := range spec.VIPs {
			x := &spec.VIPs[k]
			if x != v && !all {
				continue
			}
			if had {
				x.Backends = slices.DeleteFunc(x.Backends, func(b demo.BackendSpec) bool { return b.Name == name })
			} else if !has(x) {
				addr := topology.BackendIPv4(j)
				if x.Address.Is6() {
					addr = topology.BackendIPv6(j)
				}
				x.Backends = append(x.Backends, demo.BackendSpec{Name: name, Address: addr, Weight: 1 + rng.IntN(3)})
			}
		}
		op = "add "
		if had {
			op = "remove "
		}
		if all {
			op += name
		} else {
			op += v.Name + "/" + name
		}
	case r < 8:
		v := &spec.VIPs[rng.IntN(len(spec.VIPs))]
		k := rng.IntN(len(v.Backends))
		v.Backends[k].Weight = 1 + rng.IntN(3)
		op = fmt.Sprintf("weight %s/%s=%d", v.Name, v.Backends[k].Name, v.Backends[k].Weight)
	default:
		if spec.VIP(demo.VIPWeb6) != nil {
			op = "remove web6"
			spec.VIPs = slices.DeleteFunc(spec.VIPs, func(v demo.VIPSpec) bool { return v.Name == demo.VIPWeb6 })
		} else {
			op = "add web6"
			v := web6
			v.Backends = nil
			for _, b := range spec.VIP(demo.VIPWeb).Backends {
				var j int
				fmt.Sscanf(b.Name, "be%d", &j)
				v.Backends = append(v.Backends, demo.BackendSpec{Name: b.Name, Address: topology.BackendIPv6(j), Weight: b.Weight})
			}
			spec.VIPs = append(spec.VIPs, v)
		}
	}
	before, after := soakKeys(old), soakKeys(spec)
	var removed, added []string // "absent" keys
	for k := range before {
		if !after[k] {
			removed = append(removed, k)
		}
	}
	for k := range after {
		if !before[k] {
			added = append(added, k)
		}
	}
	for _, key := range removed {
		w.open("absent", key)
	}
	// New connections may go to an added backend as soon as the
	// reload has begun.
	for _, key := range added {
		w.close("removed", key)
	}
	// A drain that meets this reload may be refused at the daemon (the
	// backend is not there yet, or no longer).
	changed := append(slices.Clone(removed), added...)
	for _, key := range changed {
		w.epoch[key]++
		w.open("changing", key)
	}
	// A removed backend's drains end with it.
	for key := range w.drained {
		if slices.Contains(removed, key) {
			delete(w.drained, key)
			w.close("drained", key)
		}
	}
	for _, key := range removed {
		delete(w.uncertain, key)
	}
	w.spec = spec
	w.mu.Unlock()

	if err := lab.WriteConfig(spec); err != nil {
		t.Errorf("write the configuration: %v", err)
		return false
	}
	how := "reload"
	if rng.IntN(3) == 0 {
		how = "SIGHUP"
		if err := sighupReload(ctx, lab); err != nil {
			if ctx.Err() == nil {
				t.Errorf("%s by SIGHUP: %v", op, err)
			}
			return false
		}
	} else if out, err := lab.Reload(ctx, 1); err != nil {
		if ctx.Err() == nil {
			t.Errorf("%s: switchyard reload: %v\n%s", op, err, out)
		}
		return false
	}
	w.count(how)
	w.count(strings.Fields(op)[0])
	w.logf(t, "%s: %s done", how, op)
	w.mu.Lock()
	for _, key := range removed {
		if strings.HasPrefix(key, "vip:") || strings.HasPrefix(key, "addr:") {
			continue
		}
		// From now on no new connection may land on it.
		w.open("removed", key)
	}
	for _, key := range added {
		w.close("absent", key)
	}
	for _, key := range changed {
		w.close("changing", key)
	}
	w.mu.Unlock()
	w.member.RUnlock()
	locked = false
	w.member.Lock()
	defer w.member.Unlock()
	return checkMembers(ctx, t, lab, w, how+": "+op)
}

// checkMembers fails t unless status has the VIPs, backends and drains of
// the model, right after op (w.member held for writing: nothing else
// changes them). A drain the model cannot tell may be either.
func checkMembers(ctx context.Context, t *testing.T, lab *demo.Lab, w *soakWorld, op string) bool {
	st, err := lab.Status(ctx, 1)
	if err != nil {
		if ctx.Err() == nil {
			t.Errorf("status after %s: %v", op, err)
		}
		return false
	}
	spec, drained := w.final()
	uncertain := w.uncertainDrains()
	state := func(key string, d bool) string {
		if slices.Contains(uncertain, key) {
			return "either"
		}
		return strconv.FormatBool(d)
	}
	var got, want []string
	for _, v := range st.VIPs {
		for _, b := range v.Backends {
			if b.Removed {
				// A removed backend's row, kept while its flows last: no
				// backend of the configuration.
				continue
			}
			key := v.Name + "/" + b.Name
			got = append(got, fmt.Sprintf("%s drained=%s", key, state(key, b.Drained)))
		}
	}
	for _, v := range spec.VIPs {
		for _, b := range v.Backends {
			key := v.Name + "/" + b.Name
			want = append(want, fmt.Sprintf("%s drained=%s", key, state(key, drained[key])))
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("status after %s:\n  %s\nwant:\n  %s", op, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		return false
	}
	return true
}

// soakKeys names what spec has that can go away: "vip:<name>" for each
// VIP, "<vip>/<backend>" for each of their backends, "addr:<address>" for
// each backend address (whose datapath counters last while a VIP has it).
func soakKeys(spec demo.Spec) map[string]bool {
	keys := map[string]bool{}
	for _, v := range spec.VIPs {
		keys["vip:"+v.Name] = true
		for _, b := range v.Backends {
			keys[v.Name+"/"+b.Name] = true
			keys["addr:"+b.Address.String()] = true
		}
	}
	return keys
}

// pause waits a random time of up to longest between two changes (the
// pace of the churn, not a wait for an event) and tells whether to make
// another: not once ctx has ended or the time is past until.
func pause(ctx context.Context, until time.Time, rng *rand.Rand, longest time.Duration) bool {
	if time.Now().After(until) {
		return false
	}
	timer := time.NewTimer(time.Duration(rng.Int64N(int64(longest))))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// sighupReload sends balancer 1's daemon a SIGHUP and waits until a
// reload is counted, applied or failed. (The generation would not do: a
// weight changed to the one it had changes nothing, and keeps it.)
func sighupReload(ctx context.Context, lab *demo.Lab) error {
	before, err := lab.Status(ctx, 1)
	if err != nil {
		return err
	}
	if err := lab.Daemon(1).Signal(syscall.SIGHUP); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := lab.Status(wctx, 1)
		if err != nil {
			return err
		}
		if st.ReloadFailures != before.ReloadFailures {
			return fmt.Errorf("the reload failed: %s", st.LastReloadError)
		}
		if st.Reloads > before.Reloads {
			return nil
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("no reload counted (still %d): %w", st.Reloads, wctx.Err())
		case <-tick.C:
		}
	}
}

// churnBackends drains and undrains backends through the CLI, and kills
// and restarts test servers, at random until ctx ends.
func churnBackends(ctx context.Context, until time.Time, t *testing.T, lab *demo.Lab, w *soakWorld, rng *rand.Rand) {
	extra := false // soakExtraAddr is on lb1's eth0
	for pause(ctx, until, rng, 400*time.Millisecond) {
		switch r := rng.IntN(12); {
		case r >= 10:
			// A network event on the balancer's interface: an address
			// comes or goes, or the neighbour table is flushed (the
			// next hop is resolved again).
			var err error
			op := "flushed lb1's neighbours"
			if r == 10 {
				extra = !extra
				op = "added " + soakExtraAddr.String() + " to lb1's eth0"
				if !extra {
					op = "removed " + soakExtraAddr.String() + " from lb1's eth0"
				}
				err = soakToggleAddr(lab, extra)
			} else {
				err = soakFlushNeighbours(lab)
			}
			if err != nil {
				t.Errorf("%s: %v", op, err)
				return
			}
			w.count("network")
			w.logf(t, "%s", op)
		case r < 5:
			if !soakDrain(ctx, t, lab, w, rng) {
				return
			}
		case r < 8:
			// Kill a live server.
			var live []int
			w.mu.Lock()
			for j := 2; j <= soakBackends; j++ {
				if !w.dead[j] {
					live = append(live, j)
				}
			}
			if len(live) == 0 {
				w.mu.Unlock()
				continue
			}
			j := live[rng.IntN(len(live))]
			w.dead[j] = true
			w.open("dead", demo.BackendName(j))
			w.mu.Unlock()
			lab.KillServer(j)
			w.count("kill")
			w.logf(t, "killed %s's server", demo.BackendName(j))
			// Let the health checks see it, sometimes: a flap that
			// lasts, not only a blip.
			if rng.IntN(2) == 0 {
				if err := waitUnhealthy(ctx, lab, w, demo.BackendName(j)); err != nil {
					if ctx.Err() != nil {
						return
					}
					t.Error(err)
					return
				}
			}
		case r < 10:
			var dead []int
			w.mu.Lock()
			for j := 2; j <= soakBackends; j++ {
				if w.dead[j] {
					dead = append(dead, j)
				}
			}
			w.mu.Unlock()
			if len(dead) == 0 {
				continue
			}
			j := dead[rng.IntN(len(dead))]
			if err := lab.StartServer(ctx, j); err != nil {
				if ctx.Err() != nil {
					return
				}
				t.Errorf("restart %s's server: %v", demo.BackendName(j), err)
				return
			}
			w.serverUp(j)
			w.count("restart")
			w.logf(t, "restarted %s's server", demo.BackendName(j))
		}
	}
}

// soakDrain drains or undrains one of a VIP's backends (be1 stays) while
// reloads may add or remove it: sometimes one that a reload under way
// adds or removes; false means stop.
func soakDrain(ctx context.Context, t *testing.T, lab *demo.Lab, w *soakWorld, rng *rand.Rand) bool {
	w.member.RLock()
	w.mu.Lock()
	var keys []string
	if rng.IntN(3) == 0 {
		for _, x := range w.windows {
			if x.kind == "changing" && x.to.IsZero() && strings.Contains(x.key, "/") && !strings.HasSuffix(x.key, "/be1") {
				keys = append(keys, x.key)
			}
		}
	}
	if len(keys) == 0 {
		v := w.spec.VIPs[rng.IntN(len(w.spec.VIPs))]
		for _, b := range v.Backends {
			if b.Name != "be1" {
				keys = append(keys, v.Name+"/"+b.Name)
			}
		}
	}
	if len(keys) == 0 {
		w.mu.Unlock()
		w.member.RUnlock()
		return true
	}
	key := keys[rng.IntN(len(keys))]
	epoch := w.epoch[key]
	verb := "drain"
	if w.drained[key] || w.uncertain[key] {
		// Undrained whatever reloads come meanwhile: refused before a
		// removal, ended by it, or followed by an addition that
		// follows the file (not drained).
		verb = "undrain"
		w.close("drained", key)
		delete(w.drained, key)
		delete(w.uncertain, key)
	}
	w.mu.Unlock()
	start := time.Now()
	out, err := lab.CLI(ctx, 1, verb, key)
	end := time.Now()
	outcome := "done"
	w.mu.Lock()
	switch present := soakKeys(w.spec)[key]; {
	case err != nil, verb == "undrain":
	case !present:
		// Removed by a reload under way or since: the daemon took the
		// drain before the removal (after it, it would have refused
		// it), which ended it.
		outcome = "done, then ended by its removal"
	case w.epoch[key] == epoch:
		// Any reload that added it had begun before: it came first.
		w.drained[key] = true
		w.open("drained", key)
	default:
		// Removed and added again meanwhile (or added while a removal
		// was under way): taken before the removal (ended) or after
		// the addition (in force).
		w.uncertain[key] = true
		outcome = "done, before its removal or after its re-addition"
	}
	w.mu.Unlock()
	w.member.RUnlock()
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		// A reload that adds or removes the backend may come first.
		if !w.overlaps("changing", key, start, end) || !strings.Contains(out, "has no backend") && !strings.Contains(out, "no VIP") {
			t.Errorf("switchyard %s %s: %v\n%s", verb, key, err, out)
			return false
		}
		outcome = "refused while a reload added or removed it"
	}
	w.count(verb)
	w.logf(t, "%s %s %s", verb, key, outcome)
	w.member.Lock()
	defer w.member.Unlock()
	return checkMembers(ctx, t, lab, w, verb+" "+key)
}

// churnProcesses restarts processes at random until ctx ends: the
// balancer's daemon, stopped (SIGTERM) or killed (SIGKILL) and started
// again on its pins, and a backend's agent, killed (the next one takes
// over its pins without a break) or stopped (its clean stop takes the
// backend out of direct server return until the next one is up).
func churnProcesses(ctx context.Context, until time.Time, t *testing.T, lab *demo.Lab, w *soakWorld, rng *rand.Rand) {
	for pause(ctx, until, rng, 2*time.Second) {
		r := rng.IntN(10)
		j := 1 + rng.IntN(soakBackends)
		variant := rng.IntN(2)
		var ok bool
		switch {
		case r < 6:
			ok = soakRestartDaemon(ctx, t, lab, w, r < 3, variant)
		default:
			// be1 always takes new flows: its agent is only killed.
			ok = soakRestartAgent(ctx, t, lab, w, j, r < 8 || j == 1)
		}
		if !ok {
			return
		}
	}
}

// soakRestartDaemon stops (or kills) lb1's daemon and starts it again,
// with nothing else changing the configuration or the drains meanwhile,
// on the program variant given (one other than the running one's makes
// the restart an upgrade: the program is swapped in the pinned link);
// false means stop.
func soakRestartDaemon(ctx context.Context, t *testing.T, lab *demo.Lab, w *soakWorld, kill bool, variant int) bool {
	w.member.Lock()
	defer w.member.Unlock()
	w.mu.Lock()
	w.open("down", "lb1")
	w.open("absent", "restart:lb1")
	w.mu.Unlock()
	how := "stopped (SIGTERM)"
	if kill {
		how = "killed (SIGKILL)"
		lab.Daemon(1).Kill()
	} else if err := lab.StopDaemon(1); err != nil {
		t.Errorf("stop lb1's daemon with SIGTERM: %v\n%s", err, lab.Daemon(1).Tail(20))
		return false
	}
	w.logf(t, "lb1's daemon %s", how)
	if err := lab.StartDaemon(ctx, 1, "--program-variant", strconv.Itoa(variant)); err != nil {
		if ctx.Err() == nil {
			t.Errorf("start lb1's daemon again after it was %s: %v", how, err)
		}
		return false
	}
	w.mu.Lock()
	w.close("down", "lb1")
	w.close("absent", "restart:lb1")
	w.mu.Unlock()
	w.count("daemon")
	w.logf(t, "lb1's daemon started again (program variant %d)", variant)
	return checkMembers(ctx, t, lab, w, "a restart of lb1's daemon "+how)
}

// soakRestartAgent kills (or stops) backend j's agent and starts it again;
// false means stop.
func soakRestartAgent(ctx context.Context, t *testing.T, lab *demo.Lab, w *soakWorld, j int, kill bool) bool {
	be := demo.BackendName(j)
	how := "killed (SIGKILL)"
	if kill {
		lab.Agent(j).Kill()
	} else {
		how = "stopped (SIGTERM)"
		w.mu.Lock()
		w.open("agentdown", be)
		w.mu.Unlock()
		if err := lab.StopAgent(j); err != nil {
			t.Errorf("stop %s's agent with SIGTERM: %v\n%s", be, err, lab.Agent(j).Tail(20))
			return false
		}
	}
	w.logf(t, "%s's agent %s", be, how)
	if err := lab.StartAgent(ctx, j); err != nil {
		if ctx.Err() == nil {
			t.Errorf("start %s's agent again after it was %s: %v", be, how, err)
		}
		return false
	}
	w.mu.Lock()
	w.close("agentdown", be)
	w.mu.Unlock()
	w.count("agent")
	w.logf(t, "%s's agent started again", be)
	return true
}

// soakExtraAddr is the address a network event adds to and removes from
// the balancer's interface (TEST-NET-1: nothing routes to it).
var soakExtraAddr = netip.MustParsePrefix("192.0.2.1/32")

func soakToggleAddr(lab *demo.Lab, on bool) error {
	node := lab.Topology().Balancer(1)
	if on {
		return lab.Topology().AddAddr(node, topology.EthName, soakExtraAddr)
	}
	return lab.Topology().Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		a, err := netlink.ParseAddr(soakExtraAddr.String())
		if err != nil {
			return err
		}
		return h.AddrDel(l, a)
	})
}

func soakFlushNeighbours(lab *demo.Lab) error {
	return lab.Topology().Netlink(lab.Topology().Balancer(1), func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		neighs, err := h.NeighList(l.Attrs().Index, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, n := range neighs {
			if n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
				continue
			}
			if err := h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete neighbour %s: %w", n.IP, err)
			}
		}
		return nil
	})
}

// waitUnhealthy waits until status reports backend be unhealthy in every
// VIP that has it (or be is no longer configured).
func waitUnhealthy(ctx context.Context, lab *demo.Lab, w *soakWorld, be string) error {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ; ; wait(wctx, tick) {
		from := time.Now()
		st, err := lab.Status(wctx, 1)
		if err != nil && wctx.Err() == nil && w.overlaps("down", "lb1", from, time.Now()) {
			continue // the daemon restarts
		}
		if err != nil {
			return err
		}
		down := true
		for _, v := range st.VIPs {
			for _, b := range v.Backends {
				if b.Name == be && b.Healthy {
					down = false
				}
			}
		}
		if down {
			return nil
		}
		if wctx.Err() != nil {
			return fmt.Errorf("%s's server is dead and status still calls it healthy: %w", be, wctx.Err())
		}
	}
}

// soakStream is a stream with what the check needs to judge it.
type soakStream struct {
	*demo.Stream
	vip    string
	opened time.Time
	// lines and at: the line count the last sweep saw change, and when.
	lines int
	at    time.Time
}

// soakStall is how long a stream may go without a line (one is due every
// streamInterval) before it counts as broken.
const soakStall = 3 * time.Second

// soakStreams keeps streams open on web and web6, replacing those that
// ended with an excuse and failing t for those that ended without one.
type soakStreams struct {
	lab *demo.Lab
	w   *soakWorld

	mu       sync.Mutex
	open     []*soakStream
	opened   int
	excused  int
	broken   int
	maxLines int
}

func (s *soakStreams) run(ctx context.Context, t *testing.T) {
	tick := time.NewTicker(100 * time.Millisecond) // the pace of the checks, not a wait for an event
	defer tick.Stop()
	dumped := 0
	for {
		s.sweep(t)
		s.mu.Lock()
		broken := s.broken
		s.mu.Unlock()
		if broken > dumped && dumped < 3 {
			dumped = broken
			s.dump(ctx, t)
		}
		for _, vip := range []string{demo.VIPWeb, demo.VIPWeb, demo.VIPWeb, demo.VIPWeb6, demo.VIPWeb6} {
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			n := 0
			for _, x := range s.open {
				if x.vip == vip {
					n++
				}
			}
			s.mu.Unlock()
			want := 3
			if vip == demo.VIPWeb6 {
				want = 2
			}
			if n >= want {
				continue
			}
			addr := demo.WebVIP
			if vip == demo.VIPWeb6 {
				addr = demo.Web6VIP
			}
			start := time.Now()
			st, err := s.lab.OpenStream(within(t, ctx, 5*time.Second), addr, streamInterval)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if !s.w.excused(vip, "", start, time.Now()) {
					t.Errorf("open a stream on %s at %s: %v", vip, start.Format("15:04:05.000"), err)
				}
				continue
			}
			s.mu.Lock()
			s.open = append(s.open, &soakStream{Stream: st, vip: vip, opened: start, lines: st.Lines(), at: time.Now()})
			s.opened++
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sweep removes the streams that ended or stalled, failing t for those
// whose backend and VIP stayed configured and alive.
func (s *soakStreams) sweep(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.open = slices.DeleteFunc(s.open, func(x *soakStream) bool {
		if n := x.Lines(); n != x.lines {
			x.lines, x.at = n, now
		}
		err := x.Err()
		if err == nil && now.Sub(x.at) > soakStall {
			err = fmt.Errorf("no line since %s", x.at.Format("15:04:05.000"))
		}
		if err == nil {
			return false
		}
		x.Close()
		if s.w.excused(x.vip, x.Backend(), x.opened, now) {
			s.excused++
			return true
		}
		t.Errorf("a stream on %s/%s opened at %s broke after %d lines, its backend configured and alive: %v",
			x.vip, x.Backend(), x.opened.Format("15:04:05.000"), x.Lines(), err)
		s.broken++
		return true
	})
}

// check fails t for every open stream that does not flow now, unless the
// churn excuses it, and logs what the daemon says of flows and counters
// when one does not.
func (s *soakStreams) check(ctx context.Context, t *testing.T) {
	s.sweep(t)
	s.mu.Lock()
	open := slices.Clone(s.open)
	s.mu.Unlock()
	want := make([]int, len(open))
	for i, x := range open {
		want[i] = x.Lines() + 5
		s.maxLines = max(s.maxLines, x.Lines())
	}
	wctx := within(t, ctx, 5*time.Second)
	stalled := false
	for i, x := range open {
		if err := x.WaitLines(wctx, want[i]); err != nil {
			if s.w.excused(x.vip, x.Backend(), x.opened, time.Now()) {
				continue
			}
			stalled = true
			t.Errorf("at the end of the churn, a stream on %s/%s opened at %s stopped: %v",
				x.vip, x.Backend(), x.opened.Format("15:04:05.000"), err)
		}
	}
	if stalled {
		s.dump(ctx, t)
	}
	s.sweep(t)
}

// dump logs the daemon's flows and status, to read a broken stream by.
func (s *soakStreams) dump(ctx context.Context, t *testing.T) {
	for _, cmd := range [][]string{{"flows"}, {"status", "--json"}} {
		out, err := s.lab.CLI(ctx, 1, cmd[0], cmd[1:]...)
		t.Logf("%s switchyard %s (%v):\n%s", time.Now().Format("15:04:05.000"), strings.Join(cmd, " "), err, out)
	}
}

func (s *soakStreams) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.open {
		x.Close()
	}
	s.open = nil
}

func (s *soakStreams) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("streams: %d opened, %d ended by the churn, %d open at the end (longest %d lines)",
		s.opened, s.excused, len(s.open), s.maxLines)
}

// soakHTTP makes new connections to web and web6 until ctx ends: each must
// succeed unless the churn excuses it, and none may land on a backend
// drained or removed for all of its duration.
func soakHTTP(ctx context.Context, t *testing.T, lab *demo.Lab, w *soakWorld) {
	for i := 0; ctx.Err() == nil; i++ {
		vip, addr := demo.VIPWeb, demo.WebVIP
		if i%3 == 2 {
			vip, addr = demo.VIPWeb6, demo.Web6VIP
		}
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		be, _, err := lab.Get(rctx, demo.URL(addr, "/"))
		cancel()
		end := time.Now()
		if ctx.Err() != nil {
			return
		}
		w.count("http")
		if err != nil {
			if !w.excused(vip, "", start, end) {
				t.Errorf("new connection to %s at %s: %v", vip, start.Format("15:04:05.000"), err)
			}
			continue
		}
		for _, kind := range []string{"drained", "removed"} {
			if x, ok := w.covers(kind, vip+"/"+be, start, end); ok {
				t.Errorf("new connection to %s from %s to %s went to %s: %s", vip, start.Format("15:04:05.000"), end.Format("15:04:05.000"), be, x)
			}
		}
	}
}

// soakUDP exchanges datagrams with dns, each from a new socket, until ctx
// ends: each must be answered unless the churn excuses it.
func soakUDP(ctx context.Context, t *testing.T, lab *demo.Lab, w *soakWorld) {
	tick := time.NewTicker(2 * time.Millisecond) // the pace of the exchanges, not a wait for an event
	defer tick.Stop()
	for i := 0; ctx.Err() == nil; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		start := time.Now()
		payload := fmt.Sprintf("soak-%d", i)
		reply, err := lab.UDP(ctx, demo.DNSVIP, payload, 2*time.Second)
		end := time.Now()
		if ctx.Err() != nil {
			return
		}
		w.count("udp")
		if err != nil {
			if !w.excused(demo.VIPDNS, "", start, end) {
				t.Errorf("UDP exchange with dns at %s: %v", start.Format("15:04:05.000"), err)
			}
			continue
		}
		if !strings.HasPrefix(reply, "backend=") || !strings.HasSuffix(reply, " "+payload) {
			t.Errorf("UDP exchange with dns: reply %q to %q", reply, payload)
		}
	}
}

// soakReaders read status, flows and metrics over and over, and compare
// each reading's counters with the previous one's.
type soakReaders struct {
	lab *demo.Lab
	w   *soakWorld

	mu                       sync.Mutex
	statuses, flowsN, scrape int
}

// soakReading is one reading's counters by name, with the entities
// ("vip:<name>", "be<j>") whose removal may reset each, and when it was
// taken.
type soakReading struct {
	from, to time.Time
	values   map[string]uint64
	owners   map[string][]string
}

// compare fails t for every counter of cur below its value in prev, unless
// one of its owners was removed at some time between the two readings.
func (r *soakReaders) compare(t *testing.T, what string, prev, cur soakReading) {
	if prev.values == nil {
		return
	}
	for k, v := range cur.values {
		p, ok := prev.values[k]
		if !ok || v >= p {
			continue
		}
		excused := false
		for _, o := range cur.owners[k] {
			excused = excused || r.w.overlaps("absent", o, prev.from, cur.to)
		}
		if !excused {
			t.Errorf("%s: %s went from %d to %d between readings at %s and %s",
				what, k, p, v, prev.from.Format("15:04:05.000"), cur.from.Format("15:04:05.000"))
		}
	}
}

// restarted is the owner of the counters the daemon keeps in memory,
// which a restart starts again from 0.
const restarted = "restart:lb1"

// wait waits for the next tick; false once ctx has ended.
func wait(ctx context.Context, tick *time.Ticker) bool {
	select {
	case <-ctx.Done():
		return false
	case <-tick.C:
		return true
	}
}

func (r *soakReaders) status(ctx context.Context, t *testing.T) {
	var prev soakReading
	tick := time.NewTicker(50 * time.Millisecond) // pace of the readings
	defer tick.Stop()
	for ; ; wait(ctx, tick) {
		from := time.Now()
		out, err := r.lab.CLI(ctx, 1, "status", "--json")
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if r.w.overlaps("down", "lb1", from, time.Now()) {
				continue
			}
			t.Errorf("switchyard status --json: %v", err)
			return
		}
		var st api.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Errorf("switchyard status --json: %v\n%s", err, out)
			return
		}
		cur := soakReading{from: from, to: time.Now(), values: map[string]uint64{}, owners: map[string][]string{}}
		cur.values["config_generation"] = st.ConfigGeneration
		cur.values["reloads"] = st.Reloads
		cur.values["reload_failures"] = st.ReloadFailures
		cur.owners["config_generation"] = []string{restarted}
		cur.owners["reloads"] = []string{restarted}
		cur.owners["reload_failures"] = []string{restarted}
		for k, v := range st.Counters {
			cur.values["counters."+k] = v
		}
		for _, v := range st.VIPs {
			vk := "vip:" + v.Name
			for name, x := range map[string]uint64{"packets": v.Packets, "bytes": v.Bytes, "new_flows": v.NewFlows, "conn_hits": v.ConnHits, "conn_misses": v.ConnMisses} {
				k := v.Name + "." + name
				cur.values[k], cur.owners[k] = x, []string{vk}
			}
			for _, b := range v.Backends {
				for name, x := range map[string]uint64{"checks": b.Checks, "failed_checks": b.FailedChecks} {
					k := v.Name + "/" + b.Name + "." + name
					cur.values[k], cur.owners[k] = x, []string{vk, v.Name + "/" + b.Name, restarted}
				}
				// The datapath counts by address, over all VIPs.
				for name, x := range map[string]uint64{"packets": b.Packets, "bytes": b.Bytes} {
					k := v.Name + "/" + b.Name + "." + name
					cur.values[k], cur.owners[k] = x, []string{"addr:" + b.Address}
				}
			}
		}
		r.compare(t, "status", prev, cur)
		prev = cur
		r.mu.Lock()
		r.statuses++
		r.mu.Unlock()
	}
}

func (r *soakReaders) flows(ctx context.Context, t *testing.T) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ; ; wait(ctx, tick) {
		from := time.Now()
		if _, err := r.lab.CLI(ctx, 1, "flows"); err != nil {
			if ctx.Err() != nil {
				return
			}
			if r.w.overlaps("down", "lb1", from, time.Now()) {
				continue
			}
			t.Errorf("switchyard flows: %v", err)
			return
		}
		r.mu.Lock()
		r.flowsN++
		r.mu.Unlock()
	}
}

func (r *soakReaders) metrics(ctx context.Context, t *testing.T) {
	var prev soakReading
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ; ; wait(ctx, tick) {
		from := time.Now()
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		text, err := r.lab.Metrics(mctx, 1)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if r.w.overlaps("down", "lb1", from, time.Now()) {
				continue
			}
			t.Errorf("scrape /metrics: %v", err)
			return
		}
		cur := soakReading{from: from, to: time.Now(), values: map[string]uint64{}, owners: map[string][]string{}}
		for _, line := range strings.Split(text, "\n") {
			series, value, ok := strings.Cut(line, " ")
			name, labels, _ := strings.Cut(series, "{")
			if !ok || strings.HasPrefix(line, "#") || !strings.HasSuffix(name, "_total") {
				continue
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Errorf("/metrics: %q: %v", line, err)
				continue
			}
			cur.values[series] = uint64(v)
			l := map[string]string{}
			for _, kv := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
				k, val, _ := strings.Cut(kv, "=")
				l[k] = strings.Trim(val, `"`)
			}
			switch {
			case l["vip"] != "" && l["backend"] != "":
				cur.owners[series] = []string{"vip:" + l["vip"], l["vip"] + "/" + l["backend"]}
			case l["vip"] != "":
				cur.owners[series] = []string{"vip:" + l["vip"]}
			case l["address"] != "":
				// backend_*: by address, over all VIPs.
				cur.owners[series] = []string{"addr:" + l["address"]}
			}
			// The datapath's counters live in pinned maps, through
			// restarts; the others in the daemon's memory.
			if !strings.HasPrefix(name, "switchyard_vip_") && !strings.HasPrefix(name, "switchyard_datapath_") &&
				name != "switchyard_backend_packets_total" && name != "switchyard_backend_bytes_total" {
				cur.owners[series] = append(cur.owners[series], restarted)
			}
		}
		if len(cur.values) == 0 {
			t.Errorf("/metrics has no counters:\n%s", text)
			return
		}
		r.compare(t, "metrics", prev, cur)
		prev = cur
		r.mu.Lock()
		r.scrape++
		r.mu.Unlock()
	}
}

func (r *soakReaders) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("readings: %d status, %d flows, %d metrics", r.statuses, r.flowsN, r.scrape)
}
