package balancer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/health"
	"github.com/switchyard-lb/switchyard/pkg/maglev"
)

// The control loop is tested against the real datapath (unpinned maps in
// the kernel): what matters is what ends up in the maps.

const baseConfig = `
datapath:
  interface: lo
  conn_table_size: 4096
api:
  socket: /tmp/unused.sock
metrics:
  listen: ""
vips:
  - name: web
    address: 10.100.0.1
    port: 80
    protocol: tcp
    table_size: 251
    health: {type: none}
    backends:
      - {name: be1, address: 10.2.1.2}
      - {name: be2, address: 10.2.2.2}
      - {name: be3, address: 10.2.3.2, weight: 2}
  - name: dns
    address: 10.100.0.1
    port: 53
    protocol: udp
    hash: source
    table_size: 251
    health: {type: none}
    backends:
      - {name: be1, address: 10.2.1.2}
`

type rig struct {
	t      testing.TB
	dir    string
	path   string
	drains string // the drains file
	dp     *datapath.Balancer
	seen   Datapath // dp as the control loop sees it
	dialer health.Dialer
	b      *Balancer
	logs   logRecords // what the control loop logged, over restarts
	ctx    context.Context
	stop   func() // ends Run and waits for it
}

func newRig(t testing.TB, yaml string, opts datapath.Options) *rig {
	t.Helper()
	return newWrappedRig(t, yaml, opts, nil)
}

// newWrappedRig is newRig with the control loop seeing the datapath through
// wrap (if not nil), for injecting failures.
func newWrappedRig(t testing.TB, yaml string, opts datapath.Options, wrap func(*datapath.Balancer) Datapath) *rig {
	t.Helper()
	return newCheckedRig(t, yaml, opts, wrap, nil)
}

// newCheckedRig is newWrappedRig with health checks dialling through
// dialer (if not nil).
func newCheckedRig(t testing.TB, yaml string, opts datapath.Options, wrap func(*datapath.Balancer) Datapath, dialer health.Dialer) *rig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to load BPF programs (CI runs as root)")
	}
	r := &rig{t: t, dir: t.TempDir()}
	r.path = filepath.Join(r.dir, "switchyard.yaml")
	r.write(yaml)
	cfg, err := config.Load(r.path)
	if err != nil {
		t.Fatal(err)
	}
	if opts.ConnTableSize == 0 {
		opts.ConnTableSize = 4096
	}
	r.dp, err = datapath.LoadBalancer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.dp.Close() })
	r.seen, r.dialer = r.dp, dialer
	if wrap != nil {
		r.seen = wrap(r.dp)
	}
	r.drains = filepath.Join(r.dir, "drains.json")
	r.start(cfg)
	t.Cleanup(func() { r.stop() })
	return r
}

// start runs a control loop of cfg over the rig's datapath and drains file.
func (r *rig) start(cfg *config.Config) {
	r.t.Helper()
	var err error
	r.b, err = New(Config{ConfigPath: r.path, Initial: cfg, Datapath: r.seen, HealthDialer: r.dialer, DrainFile: r.drains,
		Logger: slog.New(&r.logs)})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b := r.b
	go func() { b.Run(ctx); close(done) }()
	r.stop = func() { cancel(); <-done }
	r.ctx = ctx
}

// restart stops the control loop and starts another with the file yaml, on
// the same datapath and drains file: a daemon restarted after the file was
// edited.
func (r *rig) restart(yaml string) {
	r.t.Helper()
	r.stop()
	r.write(yaml)
	cfg, err := config.Load(r.path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.start(cfg)
}

func (r *rig) write(yaml string) {
	if err := os.WriteFile(r.path, []byte(yaml), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// vips reads the datapath's VIPs. A read error fails the test: two failed
// reads compare equal, and "the datapath did not change" would pass.
func (r *rig) vips() map[datapath.VIPKey]datapath.VIPMeta {
	r.t.Helper()
	m, err := r.dp.VIPs()
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

func (r *rig) backends() map[uint32]datapath.Backend {
	r.t.Helper()
	m, err := r.dp.Backends()
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

// table is the active lookup table of the VIP k.
func (r *rig) table(k datapath.VIPKey) []uint32 {
	r.t.Helper()
	table, err := r.dp.Table(k, r.vips()[k].Gen)
	if err != nil {
		r.t.Fatal(err)
	}
	return table
}

// slots counts, per backend address, the active table's slots of a VIP.
func (r *rig) slots(name string) map[string]int {
	r.t.Helper()
	st, err := r.b.Status(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[string]int{}
	for _, v := range st.VIPs {
		if v.Name != name {
			continue
		}
		vk := vipKeyOf(r.t, r.b.cfg.VIPByName(name))
		table, bes := r.table(vk), r.backends()
		for _, id := range table {
			if id == datapath.MaglevEmpty {
				out["empty"]++
			} else {
				out[bes[id].Addr.String()]++
			}
		}
	}
	return out
}

func vipKeyOf(t testing.TB, v *config.VIP) datapath.VIPKey {
	if v == nil {
		t.Fatal("no such VIP")
	}
	return vipKey(v)
}

func TestApplyInstallsVIPsBackendsAndWeightedTables(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	vips, err := r.dp.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	if len(vips) != 2 {
		t.Fatalf("%d VIPs in the datapath, want 2", len(vips))
	}
	dns := vips[vipKeyOf(t, r.b.cfg.VIPByName("dns"))]
	if dns.Flags&datapath.VIPHashSource == 0 {
		t.Errorf("dns VIP lacks source hashing: %+v", dns)
	}
	s := r.slots("web")
	if s["10.2.3.2"] < s["10.2.1.2"]*3/2 {
		t.Errorf("weight 2 backend has %d slots vs %d for weight 1", s["10.2.3.2"], s["10.2.1.2"])
	}
	if sum := s["10.2.1.2"] + s["10.2.2.2"] + s["10.2.3.2"]; sum != 251 {
		t.Errorf("table covers %d slots, want 251", sum)
	}
	// Status reports each backend's share of the active table.
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.VIPs {
		if v.Name != "web" {
			continue
		}
		for _, be := range v.Backends {
			if be.TableSlots != s[be.Address] {
				t.Errorf("status: %s has %d slots, the datapath's table %d", be.Name, be.TableSlots, s[be.Address])
			}
		}
	}
}

// Backends reordered in the file give the same table: nothing is
// published, though the inputs' order changed.
func TestReorderedBackendsKeepTheTable(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	before := r.vips()
	reordered := strings.Replace(baseConfig, `      - {name: be1, address: 10.2.1.2}
      - {name: be2, address: 10.2.2.2}
      - {name: be3, address: 10.2.3.2, weight: 2}`, `      - {name: be3, address: 10.2.3.2, weight: 2}
      - {name: be1, address: 10.2.1.2}
      - {name: be2, address: 10.2.2.2}`, 1)
	if reordered == baseConfig {
		t.Fatal("the fixture's backends were not found")
	}
	r.write(reordered)
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	after := r.vips()
	web := vipKeyOf(t, r.b.cfg.VIPByName("web"))
	if after[web].Gen != before[web].Gen {
		t.Errorf("web's table was republished (generation %d to %d) though only its backends' order changed",
			before[web].Gen, after[web].Gen)
	}
}

// Tables are built on several goroutines, each with its own builders: every
// VIP still gets exactly the table of its own size and backends, also when
// one drain rebuilds them all at once.
func TestParallelBuildsGiveEachVIPItsTable(t *testing.T) {
	sizes := []int{251, 509, 65537, 251, 1021, 65537, 509, 131071}
	var sb strings.Builder
	sb.WriteString("datapath:\n  interface: lo\n  conn_table_size: 4096\napi:\n  socket: /tmp/unused.sock\nmetrics:\n  listen: \"\"\nvips:\n")
	for v, size := range sizes {
		fmt.Fprintf(&sb, "  - name: v%d\n    address: 10.100.0.%d\n    port: 80\n    protocol: tcp\n    table_size: %d\n    health: {type: none}\n    backends:\n",
			v, 1+v, size)
		sb.WriteString("      - {name: shared, address: 10.9.0.1}\n")
		for i := range 2 + v {
			fmt.Fprintf(&sb, "      - {name: be%d, address: 10.2.0.%d, weight: %d}\n", i, 1+i, 1+i%3)
		}
	}
	r := newRig(t, sb.String(), datapath.Options{})
	check := func(drained bool) {
		t.Helper()
		metas, err := r.dp.VIPs()
		if err != nil {
			t.Fatal(err)
		}
		bes, err := r.dp.Backends()
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]uint32{}
		for id, be := range bes {
			ids[be.Addr.String()] = id
		}
		for v, size := range sizes {
			cv := r.b.cfg.VIPByName(fmt.Sprintf("v%d", v))
			var in []maglev.Backend
			for _, be := range cv.Backends {
				if drained && be.Name == "shared" {
					continue
				}
				a := be.Addr().String()
				in = append(in, maglev.Backend{ID: a, Weight: uint32(be.Weight), Value: ids[a]})
			}
			mb, err := maglev.New(maglev.Config{Size: uint64(size)})
			if err != nil {
				t.Fatal(err)
			}
			want, err := mb.Build(in)
			if err != nil {
				t.Fatal(err)
			}
			k := vipKeyOf(t, cv)
			got, err := r.dp.Table(k, metas[k].Gen)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("VIP v%d (size %d, drained %v): active table is not its own (%d of %d slots)",
					v, size, drained, len(got), len(want))
			}
		}
	}
	check(false)
	if _, err := r.b.Drain(r.ctx, "shared", true); err != nil {
		t.Fatal(err)
	}
	check(true)
}

func TestDrainUndrain(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	if _, err := r.b.Drain(r.ctx, "web/be2", true); err != nil {
		t.Fatal(err)
	}
	if s := r.slots("web"); s["10.2.2.2"] != 0 {
		t.Errorf("drained backend still has %d slots", s["10.2.2.2"])
	}
	// be1 is in both VIPs: a bare name drains it everywhere.
	resp, err := r.b.Drain(r.ctx, "be1", true)
	if err != nil || len(resp.Matched) != 2 {
		t.Fatalf("drain be1: %v %v", resp, err)
	}
	if s := r.slots("dns"); len(s) != 1 || s["empty"] != 251 {
		// its only backend is drained: every slot is empty
		t.Errorf("dns table with its only backend drained: %v", s)
	}
	if _, err := r.b.Drain(r.ctx, "web/be2", false); err != nil {
		t.Fatal(err)
	}
	if s := r.slots("web"); s["10.2.2.2"] == 0 {
		t.Errorf("undrained backend got no slots")
	}
	for name, want := range map[string]string{
		"nope":     `no backend "nope" in any VIP`,
		"web/be9":  `VIP "web" has no backend "be9"`,
		"nope/be1": `no VIP "nope"`,
	} {
		if _, err := r.b.Drain(r.ctx, name, true); !errors.Is(err, api.ErrNotFound) || !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("drain %s: %v, want ErrNotFound saying %s", name, err, want)
		}
	}
}

func TestReloadAppliesChangesAndRefusesInvalid(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	before := r.vips()
	webKey := vipKeyOf(t, r.b.cfg.VIPByName("web"))
	genBefore := before[webKey].Gen

	// Invalid: refused whole, running config untouched.
	r.write(strings.Replace(baseConfig, "port: 80", "port: 80000", 1))
	_, err := r.b.Reload(r.ctx)
	if !errors.Is(err, api.ErrRejected) || !strings.Contains(err.Error(), "switchyard.yaml:") {
		t.Fatalf("invalid reload: %v, want a rejection naming file:line", err)
	}
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ReloadFailures != 1 || st.LastReloadError == "" {
		t.Errorf("reload failure not recorded: %d %q", st.ReloadFailures, st.LastReloadError)
	}
	after := r.vips()
	if !mapsEqual(before, after) {
		t.Errorf("datapath changed on a refused reload")
	}

	// A change of the interface needs a restart.
	r.write(strings.Replace(baseConfig, "interface: lo", "interface: eth9", 1))
	if _, err := r.b.Reload(r.ctx); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Errorf("interface change: %v, want a refusal saying to restart", err)
	}

	// Valid: a backend added to web; dns untouched.
	added := strings.Replace(baseConfig, "      - {name: be3, address: 10.2.3.2, weight: 2}",
		"      - {name: be3, address: 10.2.3.2, weight: 2}\n      - {name: be4, address: 10.2.4.2}", 1)
	r.write(added)
	resp, err := r.b.Reload(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(resp.Changed, "vip web: backend be4 added") || len(resp.Changed) != 1 {
		t.Errorf("changes %q", resp.Changed)
	}
	now := r.vips()
	if now[webKey].Gen == genBefore {
		t.Errorf("web table did not flip generation")
	}
	dnsKey := vipKeyOf(t, r.b.cfg.VIPByName("dns"))
	if now[dnsKey].Gen != before[dnsKey].Gen {
		t.Errorf("dns table was republished though it did not change")
	}
	if s := r.slots("web"); s["10.2.4.2"] == 0 {
		t.Errorf("new backend has no slots: %v", s)
	}
	if st, err := r.b.Status(r.ctx); err != nil || st.LastReloadError != "" {
		t.Errorf("last reload error after a reload that succeeded: %q (%v), want none", st.LastReloadError, err)
	}

	// Reloading the same file changes nothing, and is no new generation
	// of the configuration; the reload counts all the same.
	gen := resp.Generation
	st, err = r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	reloads := st.Reloads
	resp, err = r.b.Reload(r.ctx)
	if err != nil || len(resp.Changed) != 0 || len(resp.Changes) != 0 {
		t.Errorf("no-op reload: %v %v", resp, err)
	}
	if again := r.vips(); !mapsEqual(now, again) {
		t.Errorf("no-op reload touched the datapath")
	}
	if st, err = r.b.Status(r.ctx); err != nil {
		t.Fatal(err)
	}
	if resp.Generation != gen || st.ConfigGeneration != gen || st.Reloads != reloads+1 {
		t.Errorf("no-op reload: generation %d (status %d), reloads %d; want generation %d kept, reloads %d",
			resp.Generation, st.ConfigGeneration, st.Reloads, gen, reloads+1)
	}

	// A changed backend says what changed: it said "backend be1 changed".
	r.write(strings.Replace(added, "{name: be1, address: 10.2.1.2}", "{name: be1, address: 10.2.1.2, weight: 3}", 1))
	resp, err = r.b.Reload(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"vip web: backend be1 changed: weight 1 -> 3"}; !slices.Equal(resp.Changed, want) {
		t.Errorf("changes %q, want %q", resp.Changed, want)
	}
	// A SIGHUP's sender sees no answer: the log says what changed.
	if got := r.logs.matching(slog.LevelInfo, "reload changed", "change=vip web: backend be1 changed: weight 1 -> 3"); len(got) != 1 {
		t.Errorf("log of the weight change: %q, want one record; reload records: %q", got, r.logs.matching(slog.LevelInfo, "reload"))
	}
	if resp.Generation != gen+1 {
		t.Errorf("generation %d after a reload that changed a weight, want %d", resp.Generation, gen+1)
	}
}

// A reload logs its change lines, at most maxLoggedChanges of them and how
// many more there were, so that one of thousands of backends does not flood
// the log.
func TestReloadLogsItsChangesBounded(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	const added = maxLoggedChanges + 5
	var more strings.Builder
	for i := range added {
		fmt.Fprintf(&more, "\n      - {name: new%02d, address: 10.3.%d.2}", i, i)
	}
	r.write(strings.Replace(baseConfig, "{name: be3, address: 10.2.3.2, weight: 2}",
		"{name: be3, address: 10.2.3.2, weight: 2}"+more.String(), 1))
	resp, err := r.b.Reload(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Changed) != added {
		t.Fatalf("reload: %d changes, want %d: %q", len(resp.Changed), added, resp.Changed)
	}
	logged := r.logs.matching(slog.LevelInfo, "reload changed")
	var want []string
	for _, line := range resp.Changed[:maxLoggedChanges] {
		want = append(want, "reload changed change="+line)
	}
	want = append(want, "reload changed change=and 5 more, not logged")
	if !slices.Equal(logged, want) {
		t.Errorf("reload of %d changes logged\n%s\nwant\n%s", added, strings.Join(logged, "\n"), strings.Join(want, "\n"))
	}
	if got := r.logs.matching(slog.LevelInfo, "configuration reloaded", fmt.Sprintf("changes=%d", added)); len(got) != 1 {
		t.Errorf("configuration reloaded records: %q, want one with changes=%d", got, added)
	}
}

func mapsEqual(a, b map[datapath.VIPKey]datapath.VIPMeta) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestRestartAdoptsPinnedState: a second control loop over the same pinned
// maps keeps VIP numbers, backend ids and tables (no flow moves).
func TestRestartAdoptsPinnedState(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root")
	}
	pin := filepath.Join(datapath.BPFFSRoot, fmt.Sprintf("switchyard-unit-%d", time.Now().UnixNano()))
	t.Cleanup(func() { datapath.RemoveBalancer(pin) })
	r1 := newRig(t, baseConfig, datapath.Options{PinDir: pin})
	web := vipKeyOf(t, r1.b.cfg.VIPByName("web"))
	vips1, bes1, table1 := r1.vips(), r1.backends(), r1.table(web)
	if len(vips1) != 2 || len(bes1) == 0 || len(table1) != 251 {
		t.Fatalf("first loop: %d VIPs, %d backends, web table of %d slots; want 2, some, 251", len(vips1), len(bes1), len(table1))
	}

	r2 := newRig(t, baseConfig, datapath.Options{PinDir: pin})
	vips2, bes2 := r2.vips(), r2.backends()
	if !mapsEqual(vips1, vips2) {
		t.Errorf("VIPs changed across restart:\n%v\n%v", vips1, vips2)
	}
	if fmt.Sprint(bes1) != fmt.Sprint(bes2) {
		t.Errorf("backend ids changed across restart")
	}
	if table2 := r2.table(web); !slices.Equal(table1, table2) {
		t.Errorf("table changed across restart")
	}
}

func TestDrainsSurviveRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root")
	}
	file := filepath.Join(t.TempDir(), "drains.json")
	dp, err := datapath.LoadBalancer(datapath.Options{ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(path, []byte(baseConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	b1, err := New(Config{ConfigPath: path, Initial: cfg, Datapath: dp, DrainFile: file})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b1.Run(ctx); close(done) }()
	if _, err := b1.Drain(ctx, "web/be2", true); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	b2, err := New(Config{ConfigPath: path, Initial: cfg, Datapath: dp, DrainFile: file})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.health.Close()
	if !b2.drained("web", *cfg.VIPByName("web").BackendByName("be2")) {
		t.Errorf("drain of web/be2 forgotten across restart")
	}
}

// An upgrade to a release that names the drains file otherwise finds the
// drains in the file of the earlier name, and keeps them in the new one
// from then on.
func TestDrainsFromAnEarlierFileName(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root")
	}
	dir := t.TempDir()
	legacy, file := filepath.Join(dir, "drains-pins.json"), filepath.Join(dir, "drains-pins-0123456789ab.json")
	if err := os.WriteFile(legacy, []byte(`{"web/be2":true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	dp, err := datapath.LoadBalancer(datapath.Options{ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	path := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(path, []byte(baseConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{ConfigPath: path, Initial: cfg, Datapath: dp, DrainFile: file, LegacyDrainFile: legacy})
	if err != nil {
		t.Fatal(err)
	}
	defer b.health.Close()
	if !b.drained("web", *cfg.VIPByName("web").BackendByName("be2")) {
		t.Errorf("drain of web/be2 in %s (the earlier name of %s) forgotten", legacy, file)
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != `{"web/be2":true,"web/be2 address=10.2.2.2":true,"web/be2 config_drained":false}` {
		t.Errorf("%s after the start: %q, %v; want the drains read from %s", file, data, err, legacy)
	}
}

// failoverConfig is 64 VIPs of 100 backends and 65,537 slots each, all of
// them sharing the backend "shared".
func failoverConfig(vips, backends int) string {
	var sb strings.Builder
	sb.WriteString("datapath:\n  interface: lo\n  conn_table_size: 4096\napi:\n  socket: /tmp/unused.sock\nmetrics:\n  listen: \"\"\nvips:\n")
	for v := range vips {
		fmt.Fprintf(&sb, "  - name: v%d\n    address: 10.100.%d.%d\n    port: 80\n    protocol: tcp\n    health: {type: none}\n    backends:\n",
			v, v/250, 1+v%250)
		sb.WriteString("      - {name: shared, address: 10.9.0.1}\n")
		for i := range backends {
			fmt.Fprintf(&sb, "      - {name: be%d, address: 10.2.%d.%d}\n", i, i/250, 1+i%250)
		}
	}
	return sb.String()
}

// BenchmarkRetainedHeap reports the Go heap the control loop keeps per VIP
// once 64 VIPs of 65,537 slots are published (after a GC).
func BenchmarkRetainedHeap(b *testing.B) {
	const vips = 64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r := newRig(b, failoverConfig(vips, 100), datapath.Options{})
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/vips/1024, "KiB/VIP")
		runtime.KeepAlive(r)
	}
}

// BenchmarkFailover times what the control loop does when a backend that
// every VIP shares leaves (drained here; a failed health check takes the
// same path): a new 65,537-slot table for each of 64 VIPs of 100 backends,
// published in one datapath batch. "parallel" builds the tables on
// GOMAXPROCS goroutines, as the product does; the baseline builds them one
// after another, as before.
func BenchmarkFailover(b *testing.B) {
	const vips = 64
	cfg := failoverConfig(vips, 100)
	for _, c := range []struct {
		name     string
		parallel bool
	}{{"sequential-baseline", false}, {"parallel", true}} {
		b.Run(c.name, func(b *testing.B) {
			parallelBuilds = c.parallel
			defer func() { parallelBuilds = true }()
			r := newRig(b, cfg, datapath.Options{})
			ctx := context.Background()
			drain := true
			b.ResetTimer()
			for b.Loop() {
				if _, err := r.b.Drain(ctx, "shared", drain); err != nil {
					b.Fatal(err)
				}
				drain = !drain
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*vips)/1e6, "ms/VIP")
		})
	}
}

// BenchmarkLoopLatencyUnderStatus times how long a request waits for the
// control loop (a no-op: the wait a health transition, network event,
// drain or reload meets) while 4 status requests (scrapes, `switchyard
// status`) run one after another each, against the default-sized (1Mi)
// connection table. The baseline counts the table on the loop, as status
// did before; "own-count" counts it on each request's goroutine;
// "shared-count" as the product does (requests within flowCountsMaxAge
// share a count). Measured in the same run (use -benchtime=3s: the others
// are too quick for a count-based one); count-ms is one count's time.
// The table holds no flows here (only pkg/datapath can record them): its
// count still reads every set's tags, through a mapping of 64 MiB.
func BenchmarkLoopLatencyUnderStatus(b *testing.B) {
	const scrapers = 4
	for _, c := range []string{"count-on-loop-baseline", "own-count", "shared-count"} {
		b.Run(c, func(b *testing.B) {
			r := newRig(b, baseConfig, datapath.Options{ConnTableSize: datapath.DefaultConnTableSize})
			start := time.Now()
			if _, err := r.dp.CountFlows(); err != nil {
				b.Fatal(err)
			}
			countTime := time.Since(start)
			if c == "own-count" {
				r.b.countsMaxAge = 0
			}
			status := func(ctx context.Context) error {
				if c != "count-on-loop-baseline" {
					_, err := r.b.Status(ctx)
					return err
				}
				var rerr error
				err := r.b.do(ctx, func() {
					st, names, err := r.b.status()
					if err == nil {
						var flows datapath.FlowCounts
						if flows, err = r.b.dp.CountFlows(); err == nil {
							err = r.b.addFlows(&st, names, flows)
						}
					}
					rerr = err
				})
				return cmp.Or(err, rerr)
			}
			ctx, cancel := context.WithCancel(r.ctx)
			var statuses atomic.Int64
			done := make(chan error, scrapers)
			for range scrapers {
				go func() {
					for ctx.Err() == nil {
						if err := status(ctx); err != nil && ctx.Err() == nil {
							done <- err
							return
						}
						statuses.Add(1)
					}
					done <- nil
				}()
			}
			// Timed once every request has had a status.
			for statuses.Load() < scrapers {
				runtime.Gosched()
			}
			var worst time.Duration
			for b.Loop() {
				start := time.Now()
				if err := r.b.do(r.ctx, func() {}); err != nil {
					b.Fatal(err)
				}
				worst = max(worst, time.Since(start))
			}
			cancel()
			for range scrapers {
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(worst.Microseconds())/1e3, "worst-ms")
			b.ReportMetric(float64(countTime.Microseconds())/1e3, "count-ms")
			b.ReportMetric(float64(statuses.Load())/b.Elapsed().Seconds(), "statuses/s")
		})
	}
}

// An interface MTU above 65535 (lo's is 65536) exceeds any IP packet: the
// datapath must be told 65535, not the MTU cut to 16 bits (65536 became 0,
// which SetSettings refuses, so no settings reached the datapath at all).
func TestInterfaceMTUAbove65535(t *testing.T) {
	ifi, err := readIface("lo")
	if err != nil {
		t.Fatal(err)
	}
	if ifi.MTU <= 65535 {
		t.Skipf("lo's MTU is %d; this test needs one above 65535", ifi.MTU)
	}
	r := newRig(t, baseConfig, datapath.Options{})
	var mtu uint16
	if err := r.b.do(r.ctx, func() { mtu = r.b.settings.MTU }); err != nil {
		t.Fatal(err)
	}
	if mtu != 65535 {
		t.Errorf("datapath MTU for lo (MTU %d) is %d, want 65535", ifi.MTU, mtu)
	}
}

// lo frames packets in Ethernet with an all-zero MAC, which netlink
// reports as no address at all: readIface must still give six bytes, or
// the datapath refuses lo's settings as those of a device without
// Ethernet framing (tun).
func TestReadIfaceZeroMAC(t *testing.T) {
	ifi, err := readIface("lo")
	if err != nil {
		t.Fatal(err)
	}
	if len(ifi.MAC) != 6 {
		t.Errorf("lo's MAC %q has %d bytes, want 6 (all zero)", ifi.MAC, len(ifi.MAC))
	}
}

// manyVIPsConfig is baseConfig's VIPs followed by extra VIPs of one backend
// each, on addresses of their own.
func manyVIPsConfig(extra, backendsEach, tableSize int) string {
	var sb strings.Builder
	sb.WriteString(baseConfig)
	for v := range extra {
		fmt.Fprintf(&sb, "  - name: x%d\n    address: 10.101.%d.%d\n    port: 80\n    table_size: %d\n    health: {type: none}\n    backends:\n",
			v, v/250, 1+v%250, tableSize)
		for i := range backendsEach {
			n := v*backendsEach + i
			fmt.Fprintf(&sb, "      - {name: be%d, address: 10.3.%d.%d}\n", i, n/250, 1+n%250)
		}
	}
	return sb.String()
}

// A configuration over the datapath's limits must be refused whole by the
// reload, like any other invalid file: applied, it failed half-way, with
// some VIPs created and the new configuration in force over a datapath
// that holds only part of it.
func TestReloadOverDatapathLimitsIsRefusedWhole(t *testing.T) {
	tests := []struct {
		name                           string
		extra, backendsEach, tableSize int
		want                           string
	}{
		{name: "VIPs", extra: datapath.MaxVIPs - 1, backendsEach: 1, tableSize: 251, want: "VIPs"},
		{name: "backend addresses", extra: 2, backendsEach: datapath.MaxBackends / 2, tableSize: 4093, want: "backend addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, baseConfig, datapath.Options{})
			before := r.vips()
			r.write(manyVIPsConfig(tt.extra, tt.backendsEach, tt.tableSize))
			_, err := r.b.Reload(r.ctx)
			if !errors.Is(err, api.ErrRejected) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("reload over the datapath's limit: %v, want a rejection about %s", err, tt.want)
			}
			if after := r.vips(); !mapsEqual(before, after) {
				t.Errorf("a refused reload changed the datapath: %d VIPs before, %d after", len(before), len(after))
			}
			var vips int
			if err := r.b.do(r.ctx, func() { vips = len(r.b.cfg.VIPs) }); err != nil {
				t.Fatal(err)
			}
			if vips != 2 {
				t.Errorf("the running configuration has %d VIPs after a refused reload, want 2", vips)
			}
		})
	}
}

// failingPublish is the real datapath, except that publishing a table for
// the VIP *fail fails, as a kernel out of memory would make it.
type failingPublish struct {
	*datapath.Balancer
	fail *datapath.VIPKey // nil: nothing fails
}

func (f *failingPublish) PublishTable(k datapath.VIPKey, table []uint32) (uint32, error) {
	if f.fail != nil && k == *f.fail {
		return 0, errors.New("injected failure")
	}
	return f.Balancer.PublishTable(k, table)
}

// A valid file that the datapath fails to take half-way leaves the running
// configuration in force: the new VIP goes again, the changed VIP gets its
// old table back, and the loop still works from the running configuration.
func TestReloadThatFailsHalfWayRestoresTheRunningConfig(t *testing.T) {
	newKey := datapath.VIPKey{Addr: netip.MustParseAddr("10.100.0.9"), Port: 80, Proto: datapath.ProtoTCP}
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return &failingPublish{dp, &newKey}
	})
	b, dp, ctx, path := r.b, r.dp, r.ctx, r.path
	cfg := b.cfg
	webKey := vipKey(cfg.VIPByName("web"))
	activeWeb := func() []uint32 {
		t.Helper()
		metas, err := dp.VIPs()
		if err != nil {
			t.Fatal(err)
		}
		table, err := dp.Table(webKey, metas[webKey].Gen)
		if err != nil {
			t.Fatal(err)
		}
		return table
	}
	webBefore := activeWeb()
	statusBefore, err := b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// web gains a backend (published first, in file order), then the new
	// VIP's table fails.
	changed := strings.Replace(baseConfig, "      - {name: be3, address: 10.2.3.2, weight: 2}",
		"      - {name: be3, address: 10.2.3.2, weight: 2}\n      - {name: be4, address: 10.2.4.2}", 1) +
		"  - name: zz\n    address: 10.100.0.9\n    port: 80\n    table_size: 251\n    health: {type: none}\n    backends:\n      - {name: be1, address: 10.2.1.2}\n"
	if err := os.WriteFile(path, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reload(ctx); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("reload with a failing datapath: %v, want the datapath's error", err)
	}

	vips, err := dp.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := vips[newKey]; ok || len(vips) != 2 {
		t.Errorf("after the failed reload the datapath has %d VIPs (the new one: %v), want the 2 running ones", len(vips), ok)
	}
	if !slices.Equal(activeWeb(), webBefore) {
		t.Errorf("after the failed reload web's active table is the new configuration's, not the running one's")
	}
	st, err := b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.VIPs) != 2 || st.ConfigGeneration != statusBefore.ConfigGeneration || st.ReloadFailures != 1 {
		t.Errorf("after the failed reload: %d VIPs, generation %d (was %d), %d reload failures; want 2, unchanged, 1",
			len(st.VIPs), st.ConfigGeneration, statusBefore.ConfigGeneration, st.ReloadFailures)
	}
}

// The newest word on a backend's drain wins: an operator's undrain must
// not outvote a later `drained: true` in the file (and, kept in the drain
// file, keep outvoting it across restarts).
func TestConfigDrainAfterUndrainTakesEffect(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	if _, err := r.b.Drain(r.ctx, "web/be2", true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.b.Drain(r.ctx, "web/be2", false); err != nil {
		t.Fatal(err)
	}
	r.write(strings.Replace(baseConfig, "{name: be2, address: 10.2.2.2}", "{name: be2, address: 10.2.2.2, drained: true}", 1))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	if s := r.slots("web"); s["10.2.2.2"] != 0 {
		t.Errorf("be2, drained in the file after an operator undrain, still has %d slots", s["10.2.2.2"])
	}
}

// A table that failed to publish is tried again at the next rebuild: a
// drain (or failed check) whose publish failed once must not leave the
// backend in the table for good.
func TestFailedPublishIsRetried(t *testing.T) {
	fp := &failingPublish{}
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		fp.Balancer = dp
		return fp
	})
	web := vipKey(r.b.cfg.VIPByName("web"))
	// failOn makes publishing k's table fail (nil: nothing fails), from the
	// control loop's goroutine.
	failOn := func(k *datapath.VIPKey) {
		t.Helper()
		if err := r.b.do(r.ctx, func() { fp.fail = k }); err != nil {
			t.Fatal(err)
		}
	}
	failOn(&web)
	if _, err := r.b.Drain(r.ctx, "web/be2", true); err == nil {
		t.Fatal("drain with a failing publish: no error")
	}
	failOn(nil)
	// The loop tries again by itself; so does any later rebuild.
	for deadline := time.Now().Add(10 * time.Second); r.slots("web")["10.2.2.2"] != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("be2 is drained but, its first publish having failed, still has %d slots 10 s later", r.slots("web")["10.2.2.2"])
		}
		time.Sleep(50 * time.Millisecond)
	}
	failOn(&web)
	if _, err := r.b.Drain(r.ctx, "web/be2", false); err == nil {
		t.Fatal("undrain with a failing publish: no error")
	}
	failOn(nil)
	if _, err := r.b.Drain(r.ctx, "dns/be1", false); err != nil {
		t.Fatal(err)
	}
	if s := r.slots("web"); s["10.2.2.2"] == 0 {
		t.Errorf("be2 was undrained, its publish failed, and the next rebuild (for dns) left it out of web")
	}
}

// TestRequestsAfterStopFailAtOnce stops the control loop and sends it
// requests: each fails at once with ErrStopped. Before, a request waited
// for a loop that would never take it until its own deadline, and held up
// the API server's shutdown that long.
func TestRequestsAfterStopFailAtOnce(t *testing.T) {
	r := newRig(t, failoverConfig(1, 2), datapath.Options{})
	if _, err := r.b.Status(r.ctx); err != nil {
		t.Fatal(err)
	}
	r.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.b.Status(ctx); !errors.Is(err, ErrStopped) {
		t.Errorf("status after Run returned: %v, want ErrStopped", err)
	}
	if _, err := r.b.Reload(ctx); !errors.Is(err, ErrStopped) {
		t.Errorf("reload after Run returned: %v, want ErrStopped", err)
	}
	if ctx.Err() != nil {
		t.Error("the requests waited for their deadline")
	}
}

// refusingDialer fails every health check's connect to an address in
// down, as a backend whose service is stopped does, and connects nothing
// else either (no check leaves the test's process). Checks of other
// addresses succeed without a connection: net.Pipe stands for it.
type refusingDialer struct{ down map[string]bool }

func (d refusingDialer) DialContext(_ context.Context, _, address string) (net.Conn, error) {
	if d.down[address] {
		return nil, syscall.ECONNREFUSED
	}
	c, s := net.Pipe()
	s.Close()
	return c, nil
}

// failingCheckConfig has web's be2 fail its checks through
// refusingDialer{down: be2Down}.
const failingCheckConfig = `
datapath:
  interface: lo
  conn_table_size: 4096
api:
  socket: /tmp/unused.sock
metrics:
  listen: ""
vips:
  - name: web
    address: 10.100.0.1
    port: 80
    table_size: 251
    health: {type: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 3}
    backends:
      - {name: be1, address: 10.2.1.2}
      - {name: be2, address: 10.2.2.2}
`

var be2Down = map[string]bool{"10.2.2.2:80": true}

// be2State returns whether web's be2 is down, and its slots, by the status.
func (r *rig) be2State() (down bool, slots int) {
	r.t.Helper()
	st, err := r.b.Status(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, be := range st.VIPs[0].Backends {
		if be.Name == "be2" {
			return !be.Healthy, be.TableSlots
		}
	}
	r.t.Fatal("no be2 in the status")
	return false, 0
}

// waitBe2Down waits for be2, failing its checks, to be down and out of the
// table.
func (r *rig) waitBe2Down() {
	r.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if down, slots := r.be2State(); down && slots == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatal("be2 fails its checks but is not down and out of the table 10 s later")
		}
	}
}

// A reload that turns a VIP's checks off puts its backends that had
// failed them back into its table at once.
func TestReloadWithoutChecksTakesFailedBackendsBack(t *testing.T) {
	r := newCheckedRig(t, failingCheckConfig, datapath.Options{}, nil, refusingDialer{down: be2Down})
	r.waitBe2Down()
	r.write(strings.Replace(failingCheckConfig, "health: {type: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 3}", "health: {type: none}", 1))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	if down, slots := r.be2State(); down || slots == 0 {
		t.Errorf("after a reload without checks be2 is down: %v, with %d table slots; want up, in the table", down, slots)
	}
	if s := r.slots("web"); s["10.2.2.2"] == 0 {
		t.Errorf("after a reload without checks the datapath gives be2 none of web's slots")
	}
}

// A reload that fails half-way is rolled back, and the rollback must keep
// what the health checks found: a backend that had failed its checks, and
// that the refused file removed, is still down and out of the table after
// it, not taken back as healthy (and sent new flows) until it fails its
// checks again.
func TestFailedReloadKeepsBackendHealth(t *testing.T) {
	newKey := datapath.VIPKey{Addr: netip.MustParseAddr("10.100.0.9"), Port: 80, Proto: datapath.ProtoTCP}
	r := newCheckedRig(t, failingCheckConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return &failingPublish{dp, &newKey}
	}, refusingDialer{down: be2Down})
	r.waitBe2Down()

	// be2 goes, and a new VIP's table fails to publish: rolled back.
	r.write(strings.Replace(failingCheckConfig, "      - {name: be2, address: 10.2.2.2}\n", "", 1) +
		"  - name: zz\n    address: 10.100.0.9\n    port: 80\n    table_size: 251\n    health: {type: none}\n    backends:\n      - {name: be1, address: 10.2.1.2}\n")
	if _, err := r.b.Reload(r.ctx); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("reload with a failing datapath: %v, want the datapath's error", err)
	}
	if down, slots := r.be2State(); !down || slots != 0 {
		t.Errorf("after the rolled-back reload be2 (failing its checks) is down: %v, with %d table slots; want down, 0", down, slots)
	}
	if s := r.slots("web"); s["10.2.2.2"] != 0 {
		t.Errorf("after the rolled-back reload the datapath gives be2 %d of web's slots", s["10.2.2.2"])
	}
}

// An operator's drain is of a backend in the configuration: a reload that
// removes the backend ends it, so the backend is not drained when a later
// file adds one of that name again (the newest word is the file's).
func TestDrainOfARemovedBackendEnds(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	if _, err := r.b.Drain(r.ctx, "web/be2", true); err != nil {
		t.Fatal(err)
	}
	r.write(strings.Replace(baseConfig, "      - {name: be2, address: 10.2.2.2}\n", "", 1))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	r.write(strings.Replace(baseConfig, "{name: be2, address: 10.2.2.2}", "{name: be2, address: 10.2.9.2}", 1))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, be := range st.VIPs[0].Backends {
		if be.Name == "be2" && (be.Drained || be.TableSlots == 0) {
			t.Errorf("be2, removed while drained and added again by the file, is drained: %v, with %d slots", be.Drained, be.TableSlots)
		}
	}
}

// The node name is the running configuration's: a reload that changes it
// shows in the status (and so in switchyard_info).
func TestReloadedNodeNameShows(t *testing.T) {
	r := newRig(t, "node: {name: lb1}\n"+baseConfig, datapath.Options{})
	r.write("node: {name: lb2}\n" + baseConfig)
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != "lb2" {
		t.Errorf("status after a reload renaming the node to lb2: node %q", st.Node)
	}
}

// So does a restart with a file that lost the drained backend meanwhile.
func TestDrainOfABackendRemovedOverARestartEnds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root")
	}
	file := filepath.Join(t.TempDir(), "drains.json")
	dp, err := datapath.LoadBalancer(datapath.Options{ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	start := func(yaml string) *Balancer {
		t.Helper()
		path := filepath.Join(t.TempDir(), "switchyard.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(Config{ConfigPath: path, Initial: cfg, Datapath: dp, DrainFile: file})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.health.Close)
		return b
	}
	b1 := start(baseConfig)
	b1.drain["web/be2"] = override{drained: true} // as Drain leaves it, without running the loop
	if err := b1.saveDrains(); err != nil {
		t.Fatal(err)
	}
	b1.health.Close()
	start(strings.Replace(baseConfig, "      - {name: be2, address: 10.2.2.2}\n", "", 1)).health.Close()
	b3 := start(baseConfig)
	if b3.drained("web", *b3.cfg.VIPByName("web").BackendByName("be2")) {
		t.Errorf("be2, drained, then gone from the file of a restart, is drained when a later file has it again")
	}
}

// A drain whose table fails to publish is in force all the same (the loop
// publishes it on its next tick, TestFailedPublishIsRetried), so it is
// kept over a restart like any other.
func TestDrainWithAFailedPublishSurvivesRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root")
	}
	file := filepath.Join(t.TempDir(), "drains.json")
	real, err := datapath.LoadBalancer(datapath.Options{ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer real.Close()
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	if err := os.WriteFile(path, []byte(baseConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	web := vipKey(cfg.VIPByName("web"))
	fp := &failingPublish{Balancer: real}
	b1, err := New(Config{ConfigPath: path, Initial: cfg, Datapath: fp, DrainFile: file})
	if err != nil {
		t.Fatal(err)
	}
	fp.fail = &web // before Run: its goroutine is the only other reader
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b1.Run(ctx); close(done) }()
	_, err = b1.Drain(ctx, "web/be2", true)
	cancel()
	<-done
	if err == nil || !strings.Contains(err.Error(), "injected failure") || !strings.Contains(err.Error(), "tries again") {
		t.Fatalf("drain with a failing publish: %v, want the datapath's error, saying that it is tried again", err)
	}
	b2, err := New(Config{ConfigPath: path, Initial: cfg, Datapath: real, DrainFile: file})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.health.Close()
	if !b2.drained("web", *cfg.VIPByName("web").BackendByName("be2")) {
		t.Errorf("a drain whose publish failed, but which the loop kept in force, is forgotten over a restart")
	}
}

// deleteRecorder is failingPublish that also records the VIPs deleted.
type deleteRecorder struct {
	*failingPublish
	deleted []datapath.VIPKey
}

func (d *deleteRecorder) DeleteVIP(k datapath.VIPKey) error {
	d.deleted = append(d.deleted, k)
	return d.failingPublish.DeleteVIP(k)
}

// A reload that removes a VIP and then fails is rolled back, and the VIP
// must come out of it as it was: deleted and created again, it would start
// a new epoch (its connection entries no longer used, so its established
// flows placed by Maglev again) and new counters. The VIPs a file removes
// go only once the rest of it is in the datapath.
func TestFailedReloadKeepsTheVIPsItRemoves(t *testing.T) {
	newKey := datapath.VIPKey{Addr: netip.MustParseAddr("10.100.0.9"), Port: 80, Proto: datapath.ProtoTCP}
	var rec *deleteRecorder
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		rec = &deleteRecorder{failingPublish: &failingPublish{dp, &newKey}}
		return rec
	})
	dnsKey := vipKeyOf(t, r.b.cfg.VIPByName("dns"))
	before, _ := r.dp.VIPs()

	// dns goes and zz comes, whose table fails to publish.
	dnsAt := strings.Index(baseConfig, "  - name: dns")
	r.write(baseConfig[:dnsAt] +
		"  - name: zz\n    address: 10.100.0.9\n    port: 80\n    table_size: 251\n    health: {type: none}\n    backends:\n      - {name: be1, address: 10.2.1.2}\n")
	if _, err := r.b.Reload(r.ctx); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("reload with a failing datapath: %v, want the datapath's error", err)
	}
	if slices.Contains(rec.deleted, dnsKey) {
		t.Errorf("the rolled-back reload deleted dns (and created it again), ending its flows' entries")
	}
	if after, _ := r.dp.VIPs(); !mapsEqual(before, after) {
		t.Errorf("after the rolled-back reload the datapath's VIPs are\n%v, want those before\n%v", after, before)
	}

	// Applied, the same file does delete dns.
	if err := r.b.do(r.ctx, func() { rec.fail = nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	if after, _ := r.dp.VIPs(); len(after) != 2 || after[dnsKey] != (datapath.VIPMeta{}) {
		t.Errorf("after the reload the datapath has %d VIPs (dns: %v), want web and zz", len(after), after[dnsKey])
	}
}

// A file of the datapath's full count of VIPs that replaces some of the
// running ones is applied: the VIPs it removes go first then, their
// numbers needed for the new ones.
func TestReloadReplacingVIPsAtTheLimit(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	full := manyVIPsConfig(datapath.MaxVIPs-1, 1, 251)
	dnsAt := strings.Index(full, "  - name: dns")
	xAt := strings.Index(full, "  - name: x0")
	r.write(full[:dnsAt] + full[xAt:]) // web and the x VIPs, no dns
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	if vips, _ := r.dp.VIPs(); len(vips) != datapath.MaxVIPs {
		t.Errorf("%d VIPs in the datapath, want %d", len(vips), datapath.MaxVIPs)
	}
}

// failingSettings is the real datapath, except that it refuses settings
// with GUE, as it refuses any it cannot work with (an MTU under 576, a
// non-Ethernet interface).
type failingSettings struct{ *datapath.Balancer }

func (f failingSettings) SetSettings(s datapath.Settings) error {
	if s.GUEPort != 0 {
		return errors.New("injected refusal")
	}
	return f.Balancer.SetSettings(s)
}

// A reload whose settings the datapath refuses is refused: before, it was
// applied but for its settings (a warning in the log), and reported as
// reloaded, the file's encapsulation in status and generation while the
// datapath kept the old one.
func TestReloadWithRefusedSettingsIsRolledBack(t *testing.T) {
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return failingSettings{dp}
	})
	before, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.write("encap: {type: gue}\n" + baseConfig)
	if _, err := r.b.Reload(r.ctx); err == nil || !strings.Contains(err.Error(), "injected refusal") ||
		!strings.Contains(err.Error(), "the running configuration stays in force") {
		t.Errorf("reload with settings the datapath refuses: %v, want its error, the running configuration in force", err)
	}
	var encap config.EncapType
	if err := r.b.do(r.ctx, func() { encap = r.b.cfg.Encap.Type }); err != nil {
		t.Fatal(err)
	}
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if encap != config.EncapIPIP || st.ConfigGeneration != before.ConfigGeneration {
		t.Errorf("after the refused reload: encap %s, generation %d (was %d); want ipip, unchanged", encap, st.ConfigGeneration, before.ConfigGeneration)
	}

	// A reload that leaves the settings as they were is not held up by
	// a next hop not yet resolved (the rig has none).
	r.write(strings.Replace(baseConfig, "      - {name: be1, address: 10.2.1.2}\n      - {name: be2", "      - {name: be2", 1))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Errorf("reload without a next hop: %v", err)
	}
}

// A backend of a VIP without checks says so in status (CHECK column), as
// the render fixtures and api.Backend.HealthInfo have it.
func TestStatusSaysNoCheck(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.VIPs {
		for _, be := range v.Backends {
			if be.HealthInfo != "no check" || !be.Healthy || be.Check != "" || be.Checks != 0 {
				t.Errorf("%s/%s (health type none): healthy %v, health info %q; want healthy, \"no check\"", v.Name, be.Name, be.Healthy, be.HealthInfo)
			}
		}
	}
}

// A drains file holding JSON null (written by hand, say) is an empty one:
// it became a nil map, and the next drain panicked the control loop.
func TestDrainsFileOfNull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root")
	}
	b, ctx, file := runWithDrainsFile(t, []byte("null"), &logRecords{})
	if _, err := b.Drain(ctx, "web/be2", true); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != `{"web/be2":true,"web/be2 address=10.2.2.2":true,"web/be2 config_drained":false}` {
		t.Errorf("drains file after the drain: %q, %v", data, err)
	}
}

// A new VIP that takes a deleted one's datapath number starts with no
// packet rate: the rate samples were kept by number, and status showed the
// deleted VIP's rate for the new one until the next sample (2 s later).
func TestReusedVIPNumberStartsWithoutARate(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	dnsAt := strings.Index(baseConfig, "  - name: dns")
	withoutDNS := baseConfig[:dnsAt]
	withAPI := withoutDNS + strings.Replace(baseConfig[dnsAt:], "name: dns", "name: api", 1)
	load := func(yaml string) *config.Config {
		t.Helper()
		r.write(yaml)
		cfg, err := config.Load(r.path)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfgWithout, cfgWith := load(withoutDNS), load(withAPI)
	var st api.Status
	var dnsNum, apiNum uint32
	var err error
	// On the control loop, in one go: no tick samples the rates between.
	if e := r.b.do(r.ctx, func() {
		dnsNum = r.b.vipNums[vipKey(r.b.cfg.VIPByName("dns"))]
		// What a sample of a busy dns leaves: its count (the new VIP's
		// counters start from zero, under it) and its rate.
		r.b.rates[dnsNum] = rateSample{at: time.Now(), packets: 1 << 40, rate: 5000}
		if _, err = r.b.apply(cfgWithout); err != nil {
			return
		}
		if _, err = r.b.apply(cfgWith); err != nil {
			return
		}
		apiNum = r.b.vipNums[vipKey(r.b.cfg.VIPByName("api"))]
		st, _, err = r.b.status()
	}); e != nil {
		t.Fatal(e)
	}
	if err != nil {
		t.Fatal(err)
	}
	if apiNum != dnsNum {
		t.Fatalf("api took VIP number %d, not dns's %d: the test shows nothing", apiNum, dnsNum)
	}
	found := false
	for _, v := range st.VIPs {
		if v.Name == "api" {
			found = true
			if v.PacketRate != 0 {
				t.Errorf("new VIP api (number %d, dns's before): packet rate %v, want 0 (it has had no packets)", apiNum, v.PacketRate)
			}
		}
	}
	if !found {
		t.Errorf("status has no VIP api: %+v", st.VIPs)
	}
}

// A reload that cannot read the file says how to fix that for a reload:
// before, it advised passing the path of a config file, which neither
// SIGHUP nor `switchyard reload` can.
func TestReloadOfAMissingFileAdvisesRestoringIt(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	if err := os.Remove(r.path); err != nil {
		t.Fatal(err)
	}
	_, err := r.b.Reload(r.ctx)
	if err == nil {
		t.Fatal("reload of a missing file succeeded")
	}
	if msg := err.Error(); strings.Contains(msg, "pass the path") || !strings.Contains(msg, "restore "+r.path) ||
		!errors.Is(err, os.ErrNotExist) {
		t.Errorf("reload of a missing file: %q; want it to wrap the read error and say to restore %s, not to pass a path", msg, r.path)
	}
}

// The newest word on a backend's drain wins, whether the file changed
// under a running daemon (reload) or while none ran (restart): an
// operator's drain or undrain, redundant with the file or not, ends when
// the file changes that backend's `drained`, and the backend follows the
// file from then on. Across a restart, a stale override used to win, as
// the drains file did not say what the file said when the operator spoke.
func TestFileChangeOutvotesOperator(t *testing.T) {
	be2 := func(drained bool) string {
		return strings.Replace(baseConfig, "{name: be2, address: 10.2.2.2}",
			fmt.Sprintf("{name: be2, address: 10.2.2.2, drained: %v}", drained), 1)
	}
	for _, tc := range []struct {
		name    string
		drain   bool // the operator's word
		file    bool // the file's `drained` when the operator spoke
		restart bool // the file changes while no daemon runs
	}{
		{"drain of an undrained backend, reload", true, false, false},
		{"redundant drain, reload", true, true, false},
		{"redundant undrain, reload", false, false, false},
		{"undrain of a drained backend, reload", false, true, false},
		{"drain of an undrained backend, restart", true, false, true},
		{"redundant drain, restart", true, true, true},
		{"redundant undrain, restart", false, false, true},
		{"undrain of a drained backend, restart", false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, be2(tc.file), datapath.Options{})
			if _, err := r.b.Drain(r.ctx, "web/be2", tc.drain); err != nil {
				t.Fatal(err)
			}
			// The file flips be2's `drained`, then flips it back.
			for _, file := range []bool{!tc.file, tc.file} {
				if tc.restart {
					r.restart(be2(file))
				} else {
					r.write(be2(file))
					if _, err := r.b.Reload(r.ctx); err != nil {
						t.Fatal(err)
					}
				}
				// Said at the first flip, which ends the override, by a
				// reload as by a restart.
				if got := r.logs.matching(slog.LevelInfo, "operator drains ended", "web/be2"); len(got) != 1 {
					t.Errorf("the file outvoted the operator's word on be2: logged %d times (%v), want once", len(got), got)
				}
				if slots := r.slots("web")["10.2.2.2"]; (slots == 0) != file {
					t.Fatalf("be2, %s by the operator when the file said drained: %v, has %d slots once the file says drained: %v; want it to follow the file",
						map[bool]string{true: "drained", false: "undrained"}[tc.drain], tc.file, slots, file)
				}
			}
		})
	}
}

// A drains file of the previous release does not say what the file said
// when the operator spoke: its overrides win at the first start, as they
// did, and the file's value is recorded from then on. The file this
// release writes still reads as the operator's words to the previous
// release ({"vip/backend": bool}), so a downgrade keeps them.
func TestDrainsOfThePreviousFormat(t *testing.T) {
	be2 := func(drained bool) string {
		return strings.Replace(baseConfig, "{name: be2, address: 10.2.2.2}",
			fmt.Sprintf("{name: be2, address: 10.2.2.2, drained: %v}", drained), 1)
	}
	r := newRig(t, be2(false), datapath.Options{})
	if err := os.WriteFile(r.drains, []byte(`{"web/be2":true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, step := range []struct {
		file, drained bool
	}{
		{false, true}, // the operator's drain wins, as before
		{true, true},  // the file changed be2's drained since the last start
		{false, false},
	} {
		r.restart(be2(step.file))
		if slots := r.slots("web")["10.2.2.2"]; (slots == 0) != step.drained {
			t.Fatalf("start %d, drained: %v in the file: be2 has %d slots, want it drained: %v", i+1, step.file, slots, step.drained)
		}
		if i == 0 {
			var previous map[string]bool // what the previous release reads
			data, err := os.ReadFile(r.drains)
			if err == nil {
				err = json.Unmarshal(data, &previous)
			}
			if err != nil || !previous["web/be2"] {
				t.Errorf("drains file %q (%v): the previous release would not find web/be2 drained", data, err)
			}
		}
	}
}

// failOncePublish is the real datapath, except that the next publish of
// the VIP *next fails, once, as a kernel short of memory for a moment
// would make it.
type failOncePublish struct {
	*datapath.Balancer
	next *datapath.VIPKey
}

func (f *failOncePublish) PublishTable(k datapath.VIPKey, table []uint32) (uint32, error) {
	if f.next != nil && k == *f.next {
		f.next = nil
		return 0, errors.New("injected failure")
	}
	return f.Balancer.PublishTable(k, table)
}

// A reload whose last publish (after the health checks took the new file)
// failed was rolled back, and the rollback restarted the checks with the
// running file's: be2, which they had found dead, came out of the
// "failed" reload healthy and in web's table, taking new flows until it
// failed `fall` checks again. Once the checks took the file, the file is in
// force; the publish is tried again on the tick.
func TestReloadFailingAfterTheChecksChangedKeepsDeadBackendsOut(t *testing.T) {
	fp := &failOncePublish{}
	r := newCheckedRig(t, failingCheckConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		fp.Balancer = dp
		return fp
	}, refusingDialer{down: be2Down})
	r.waitBe2Down()
	web := vipKey(r.b.cfg.VIPByName("web"))
	if err := r.b.do(r.ctx, func() { fp.next = &web }); err != nil {
		t.Fatal(err)
	}
	// Checks off: be2 is taken back, by a publish of web that fails once.
	r.write(strings.Replace(failingCheckConfig, "health: {type: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 3}", "health: {type: none}", 1))
	resp, err := r.b.Reload(r.ctx)
	if err != nil {
		t.Fatalf("reload failing its last publish: %v; want it taken (rolled back, be2 dead by the running checks was put back in service)", err)
	}
	if resp.Generation != 2 {
		t.Errorf("reload taken: generation %d, want 2", resp.Generation)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if down, slots := r.be2State(); !down && slots > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("reload taken without checks, its publish failed once, and be2 is not up and in web's table 10 s later")
		}
	}
	if err := r.b.do(r.ctx, func() {
		if tp := r.b.cfg.VIPByName("web").Health.Type; tp != config.CheckNone {
			t.Errorf("running configuration's web check is %s, want none", tp)
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// Renaming a backend or its VIP moves no flow, and must not revive the
// backend either: its health goes with its address and the VIP's address,
// port and protocol. A dead backend renamed by a reload came back healthy,
// under a new health target, and took new flows until it failed fall
// checks again; so did every dead backend of a renamed VIP.
func TestRenamedDeadBackendStaysDown(t *testing.T) {
	for _, c := range []struct{ name, from, to, vip, backend string }{
		{"backend renamed", "{name: be2, address: 10.2.2.2}", "{name: be2-renamed, address: 10.2.2.2}", "web", "be2-renamed"},
		{"VIP renamed", "- name: web\n", "- name: web-renamed\n", "web-renamed", "be2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newCheckedRig(t, failingCheckConfig, datapath.Options{}, nil, refusingDialer{down: be2Down})
			r.waitBe2Down()
			r.write(strings.Replace(failingCheckConfig, c.from, c.to, 1))
			if _, err := r.b.Reload(r.ctx); err != nil {
				t.Fatal(err)
			}
			st, err := r.b.Status(r.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.VIPs) != 1 || st.VIPs[0].Name != c.vip {
				t.Fatalf("after the reload: VIPs %+v, want %s alone", st.VIPs, c.vip)
			}
			for _, be := range st.VIPs[0].Backends {
				if be.Name == c.backend && (be.Healthy || be.TableSlots != 0) {
					t.Errorf("be2 after the reload: healthy %v with %d table slots, want still down and out of the table", be.Healthy, be.TableSlots)
				}
			}
			if s := r.slots(c.vip); s["10.2.2.2"] != 0 {
				t.Errorf("the datapath gives the dead backend %d of %s's slots, want none", s["10.2.2.2"], c.vip)
			}
		})
	}
}

// A drain that leaves a VIP no backend for new flows says so: `drain be1`
// drains be1 in every VIP, and in dns it is the only one, whose new flows
// are then dropped. The answer said only which backends it drained.
func TestDrainOfTheLastBackendWarns(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	warned := func(step string, resp api.DrainResponse, err error, vips ...string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		var got []string
		for _, w := range resp.Warnings {
			vip, _, _ := strings.Cut(strings.TrimPrefix(w, "VIP "), " ")
			got = append(got, vip)
			if !strings.Contains(w, "no backend left for new flows") || !strings.Contains(w, "undrain "+vip+"/NAME") {
				t.Errorf("%s: warning %q does not say the VIP has no backend and how to give it one", step, w)
			}
		}
		if !slices.Equal(got, vips) {
			t.Errorf("%s: warnings %q, want one for each of %v", step, resp.Warnings, vips)
		}
	}
	resp, err := r.b.Drain(r.ctx, "be1", true)
	warned("drain be1 (web and dns)", resp, err, "dns")
	if s := r.slots("dns"); s["empty"] != 251 {
		t.Fatalf("dns table with its only backend drained: %v", s)
	}
	resp, err = r.b.Drain(r.ctx, "web/be2", true)
	warned("drain web/be2 (be3 left)", resp, err)
	resp, err = r.b.Drain(r.ctx, "web/be3", true)
	warned("drain web/be3 (the last of web)", resp, err, "web")
	resp, err = r.b.Drain(r.ctx, "be1", false)
	warned("undrain be1", resp, err)
}

// A pin_dir written with a trailing slash names the same directory: a
// reload that only adds one is taken, not refused as needing a restart.
func TestReloadPinDirTrailingSlash(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	var dir string
	if err := r.b.do(r.ctx, func() { dir = r.b.cfg.Datapath.PinDir }); err != nil {
		t.Fatal(err)
	}
	r.write(strings.Replace(baseConfig, "  interface: lo\n", "  interface: lo\n  pin_dir: "+dir+"/\n", 1))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Errorf("reload that writes pin_dir %s/ for %s: %v, want it taken", dir, dir, err)
	}
}

// failingBackendsRead fails reads of the backend table once armed.
type failingBackendsRead struct {
	*datapath.Balancer
	armed *atomic.Bool
}

func (f failingBackendsRead) Backends() (map[uint32]datapath.Backend, error) {
	if f.armed.Load() {
		return nil, errors.New("injected read failure")
	}
	return f.Balancer.Backends()
}

// Flows says so when it cannot read the backends that name the flows'
// addresses, instead of listing flows with an "invalid IP" backend.
func TestFlowsReportsAFailedBackendsRead(t *testing.T) {
	armed := new(atomic.Bool)
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return failingBackendsRead{dp, armed}
	})
	armed.Store(true)
	if _, err := r.b.Flows(r.ctx, "", 10); err == nil || !strings.Contains(err.Error(), "injected read failure") {
		t.Errorf("Flows with the backends unreadable: %v, want the read's error", err)
	}
}

// A drains file that cannot be parsed is kept aside before the next drain
// rewrites it: its drains were lost, and then its contents too.
func TestCorruptDrainsFileIsKept(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root")
	}
	garbage := []byte(`{"web/be2": tru`)
	logs := &logRecords{}
	b, ctx, file := runWithDrainsFile(t, garbage, logs)
	if got := logs.matching(slog.LevelWarn, "operator drains from the previous run are lost", "kept as "+file+".corrupt"); len(got) != 1 {
		t.Errorf("warnings naming the kept file: %v, want one", got)
	}
	if _, err := b.Drain(ctx, "web/be1", true); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(file + ".corrupt"); err != nil || !bytes.Equal(data, garbage) {
		t.Errorf("%s.corrupt after the next drain: %q, %v; want the corrupt file's bytes", file, data, err)
	}
}

// runWithDrainsFile runs a control loop of baseConfig over an unpinned
// datapath, with a drains file holding content, logging to logs; the loop
// ends with the test.
func runWithDrainsFile(t *testing.T, content []byte, logs *logRecords) (*Balancer, context.Context, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "drains.json")
	if err := os.WriteFile(file, content, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	cfg, dp := loadWithDatapath(t, path, baseConfig)
	b, err := New(Config{ConfigPath: path, Initial: cfg, Datapath: dp, DrainFile: file, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return b, ctx, file
}

// failingCounterReads fails reads of VIP or backend counters once armed.
type failingCounterReads struct {
	*datapath.Balancer
	vips, backends *atomic.Bool
}

func (f failingCounterReads) VIPCounters(num uint32) (datapath.VIPCounters, error) {
	if f.vips.Load() {
		return datapath.VIPCounters{}, errors.New("injected VIP counter read failure")
	}
	return f.Balancer.VIPCounters(num)
}

func (f failingCounterReads) BackendCounters(id uint32) (datapath.BackendCounters, error) {
	if f.backends.Load() {
		return datapath.BackendCounters{}, errors.New("injected backend counter read failure")
	}
	return f.Balancer.BackendCounters(id)
}

// Status fails when it cannot read a VIP's or a backend's counters: it
// reported them as 0, and a scrape then showed counters that fell to 0 and
// rose back, which Prometheus takes for resets (rate and increase count
// the whole count again).
func TestStatusReportsAFailedCounterRead(t *testing.T) {
	vips, backends := new(atomic.Bool), new(atomic.Bool)
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return failingCounterReads{dp, vips, backends}
	})
	if _, err := r.b.Status(r.ctx); err != nil {
		t.Fatalf("status with readable counters: %v", err)
	}
	for _, c := range []struct {
		armed *atomic.Bool
		want  []string
	}{
		{vips, []string{"VIP web", "injected VIP counter read failure"}},
		{backends, []string{"VIP web", "backend be1", "injected backend counter read failure"}},
	} {
		c.armed.Store(true)
		st, err := r.b.Status(r.ctx)
		c.armed.Store(false)
		if err == nil {
			t.Errorf("status with %s unreadable: no error, VIPs %+v", c.want[len(c.want)-1], st.VIPs)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("status error %q does not say %q", err, w)
			}
		}
	}
}

// A backend whose VIP no longer checks it (health type none after a
// reload) reports no check counts: status kept those of its earlier check
// while its Check was "", so status --json had checks and failed_checks
// for a backend that has no check, where the metrics have no series.
func TestStatusOfAnUncheckedBackendHasNoCheckCounts(t *testing.T) {
	r := newCheckedRig(t, failingCheckConfig, datapath.Options{}, nil, refusingDialer{down: be2Down})
	r.waitBe2Down()
	r.write(strings.Replace(failingCheckConfig, "health: {type: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 3}", "health: {type: none}", 1))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, be := range st.VIPs[0].Backends {
		if be.Check != "" || be.Checks != 0 || be.FailedChecks != 0 || be.LastCheckSeconds != 0 {
			t.Errorf("%s with health type none: check %q, %d checks, %d failed, last %vs; want none",
				be.Name, be.Check, be.Checks, be.FailedChecks, be.LastCheckSeconds)
		}
	}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(`"checks"`)) || bytes.Contains(data, []byte(`"failed_checks"`)) {
		t.Errorf("status JSON of unchecked backends has check counts: %s", data)
	}
}

// A drain follows the backend's address within its VIP, as its health
// does: a reload or a restart whose file renames a drained backend keeps
// it drained (it was keyed by name, and the rename ended it silently),
// and one that gives the name another address (a new machine) ends it.
func TestDrainFollowsARename(t *testing.T) {
	be2 := func(name, addr string) string {
		return strings.Replace(baseConfig, "{name: be2, address: 10.2.2.2}", "{name: "+name+", address: "+addr+"}", 1)
	}
	r := newRig(t, baseConfig, datapath.Options{})
	if _, err := r.b.Drain(r.ctx, "web/be2", true); err != nil {
		t.Fatal(err)
	}
	drainedAs := func(step, name, addr string, want bool) {
		t.Helper()
		if slots := r.slots("web")[addr]; (slots == 0) != want {
			t.Errorf("%s: %s (%s) has %d slots, want drained: %v", step, name, addr, slots, want)
		}
		st, err := r.b.Status(r.ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, be := range st.VIPs[0].Backends {
			if be.Name == name && be.Drained != want {
				t.Errorf("%s: status shows %s drained: %v, want %v", step, name, be.Drained, want)
			}
		}
	}
	r.write(be2("be2-new", "10.2.2.2"))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	drainedAs("reload renaming be2", "be2-new", "10.2.2.2", true)
	if got := r.logs.matching(slog.LevelInfo, "operator drains kept over a rename", "web/be2 is now web/be2-new"); len(got) != 1 {
		t.Errorf("a reload carried the drain of web/be2 over its rename: logged %v, want once", got)
	}
	if len(r.logs.matching(slog.LevelInfo, "operator drains ended")) != 0 {
		t.Errorf("a rename logged the drain ended")
	}
	// The file names the backend as it is now, for the previous release.
	var m map[string]bool
	data, err := os.ReadFile(r.drains)
	if err == nil {
		err = json.Unmarshal(data, &m)
	}
	if err != nil || !m["web/be2-new"] || !m["web/be2-new address=10.2.2.2"] || len(m) != 3 {
		t.Errorf("drains file after the rename: %s (%v)", data, err)
	}
	r.restart(be2("be2-new", "10.2.2.2"))
	drainedAs("restart", "be2-new", "10.2.2.2", true)
	// Renamed while no daemon ran.
	r.restart(be2("be2-x", "10.2.2.2"))
	drainedAs("restart renaming be2-new", "be2-x", "10.2.2.2", true)
	if got := r.logs.matching(slog.LevelInfo, "operator drains kept over a rename", "web/be2-new is now web/be2-x"); len(got) != 1 {
		t.Errorf("a restart carried the drain of web/be2-new over its rename: logged %v, want once", got)
	}
	// The name, given another address, is another machine.
	r.write(be2("be2-x", "10.2.2.9"))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	drainedAs("reload moving be2-x", "be2-x", "10.2.2.9", false)
	if got := r.logs.matching(slog.LevelInfo, "operator drains ended", "web/be2-x"); len(got) != 1 {
		t.Errorf("a reload gave web/be2-x another address: logged %v, want the drain ended once", got)
	}
}

// A drains file of the current format without addresses (the release
// before this one wrote it) matches its records by name, and records the
// address from then on.
func TestDrainsWithoutAddressesMatchByName(t *testing.T) {
	var logs logRecords
	b, ctx, file := runWithDrainsFile(t, []byte(`{"web/be2":true,"web/be2 config_drained":false}`), &logs)
	if !b.drained("web", *b.cfg.VIPByName("web").BackendByName("be2")) {
		t.Errorf("drain of web/be2 from a file without addresses forgotten")
	}
	if _, err := b.Drain(ctx, "web/be3", true); err != nil {
		t.Fatal(err)
	}
	want := `{"web/be2":true,"web/be2 address=10.2.2.2":true,"web/be2 config_drained":false,"web/be3":true,"web/be3 address=10.2.3.2":true,"web/be3 config_drained":false}`
	if data, err := os.ReadFile(file); err != nil || string(data) != want {
		t.Errorf("drains file: %s (%v), want %s", data, err, want)
	}
}

// TestReloadRefusesChangesThatNeedARestart: every setting the running
// datapath, API socket or metrics listener was built from is refused by a
// reload, naming the field, and the running configuration stays.
func TestReloadRefusesChangesThatNeedARestart(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	before := r.vips()
	for field, change := range map[string][2]string{
		"datapath.interface":       {"  interface: lo\n", "  interface: eth9\n"},
		"datapath.pin_dir":         {"  interface: lo\n", "  interface: lo\n  pin_dir: /sys/fs/bpf/hr-elsewhere\n"},
		"datapath.attach_mode":     {"  interface: lo\n", "  interface: lo\n  attach_mode: generic\n"},
		"datapath.conn_table_size": {"conn_table_size: 4096", "conn_table_size: 8192"},
		"api.socket":               {"socket: /tmp/unused.sock", "socket: /tmp/other.sock"},
		"metrics.listen":           {`listen: ""`, `listen: "127.0.0.1:9999"`},
	} {
		r.write(strings.Replace(baseConfig, change[0], change[1], 1))
		_, err := r.b.Reload(r.ctx)
		if !errors.Is(err, api.ErrRejected) || !strings.Contains(fmt.Sprint(err), field+" changed") || !strings.Contains(fmt.Sprint(err), "restart") {
			t.Errorf("reload changing %s: %v, want it refused, saying to restart", field, err)
		}
	}
	if after := r.vips(); !mapsEqual(before, after) {
		t.Errorf("a refused reload changed the datapath")
	}
}

// TestDrainOfARemovedVIPEnds: a drain of a backend of a VIP the file
// removes ends with the VIP, as one of a removed backend does: the VIP
// added again follows the file.
func TestDrainOfARemovedVIPEnds(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	if _, err := r.b.Drain(r.ctx, "web/be2", true); err != nil {
		t.Fatal(err)
	}
	webAt, dnsAt := strings.Index(baseConfig, "  - name: web"), strings.Index(baseConfig, "  - name: dns")
	r.write(baseConfig[:webAt] + baseConfig[dnsAt:])
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	r.write(baseConfig)
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	if slots := r.slots("web")["10.2.2.2"]; slots == 0 {
		t.Error("be2, drained in a VIP the file removed and added again, is still drained")
	}
}

// TestFailedReloadKeepsOperatorDrains: a reload that would have ended a
// drain (the file removes the backend) but that the datapath fails to take
// leaves the running configuration in force, the drain included.
func TestFailedReloadKeepsOperatorDrains(t *testing.T) {
	newKey := datapath.VIPKey{Addr: netip.MustParseAddr("10.100.0.9"), Port: 80, Proto: datapath.ProtoTCP}
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return &failingPublish{dp, &newKey}
	})
	if _, err := r.b.Drain(r.ctx, "web/be2", true); err != nil {
		t.Fatal(err)
	}
	r.write(strings.Replace(baseConfig, "      - {name: be2, address: 10.2.2.2}\n", "", 1) +
		"  - name: zz\n    address: 10.100.0.9\n    port: 80\n    table_size: 251\n    health: {type: none}\n    backends:\n      - {name: be1, address: 10.2.1.2}\n")
	if _, err := r.b.Reload(r.ctx); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("reload with a failing datapath: %v, want the datapath's error", err)
	}
	if slots := r.slots("web")["10.2.2.2"]; slots != 0 {
		t.Errorf("after the failed reload the drained be2 has %d slots, want it still drained", slots)
	}
}

// TestUndrainOfThePreviousFormatWins: a drains file of the previous
// release records no `drained` of the file, so at the first start the
// operator's word wins over the file's, an undrain of a backend the file
// drains included.
func TestUndrainOfThePreviousFormatWins(t *testing.T) {
	drainedInFile := strings.Replace(baseConfig, "{name: be2, address: 10.2.2.2}", "{name: be2, address: 10.2.2.2, drained: true}", 1)
	r := newRig(t, drainedInFile, datapath.Options{})
	if err := os.WriteFile(r.drains, []byte(`{"web/be2":false}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r.restart(drainedInFile)
	if slots := r.slots("web")["10.2.2.2"]; slots == 0 {
		t.Error("be2, undrained by the operator under the previous release, is drained by the file at the first start")
	}
}

// TestOrphanedFileValueIsForgotten: a file value ("VIP/NAME config_drained")
// whose override is gone is dropped from the drains file at the start.
func TestOrphanedFileValueIsForgotten(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	if err := os.WriteFile(r.drains, []byte(`{"web/be2 config_drained":true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r.restart(baseConfig)
	data, err := os.ReadFile(r.drains)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "config_drained") {
		t.Errorf("drains file after the start: %s, want the orphaned file value gone", data)
	}
}

// TestNewVIPsFirstTableHasItsBackends: a backend the monitor has no state
// for yet is healthy, as a new target starts, so a VIP a reload adds gets
// one table with its backends, not first an empty one that drops its new
// flows (no_backend) until the health targets are in place.
func TestNewVIPsFirstTableHasItsBackends(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	r.write(baseConfig + "  - name: zz\n    address: 10.100.0.9\n    port: 80\n    table_size: 251\n    health: {type: none}\n    backends:\n      - {name: be1, address: 10.2.1.2}\n")
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.logs.matching(slog.LevelInfo, "table published", "vip=zz"); len(got) != 1 || !strings.Contains(got[0], "backends=1") {
		t.Errorf("tables published for the new VIP: %q, want one, with its backend", got)
	}
}

// countersOf is the real datapath, except that its per-VIP and per-backend
// counters are made up: the kernel's counting is tested in pkg/datapath;
// here what is tested is that the control loop copies each counter to its
// own field of the status (which real traffic, raising packets and bytes
// together, cannot tell apart) and turns packet counts into rates.
type countersOf struct {
	*datapath.Balancer
	vipPackets *atomic.Uint64 // nil: every counter of VIP n is distinct, from n
}

func (c countersOf) VIPCounters(num uint32) (datapath.VIPCounters, error) {
	if c.vipPackets != nil {
		return datapath.VIPCounters{Packets: c.vipPackets.Load()}, nil
	}
	n := 10 * uint64(num)
	return datapath.VIPCounters{Packets: n + 1, Bytes: n + 2, NewFlows: n + 3, ConnHits: n + 4, ConnMisses: n + 5}, nil
}

func (c countersOf) BackendCounters(id uint32) (datapath.BackendCounters, error) {
	n := 10 * uint64(id)
	return datapath.BackendCounters{Packets: n + 1, Bytes: n + 2}, nil
}

// TestStatusCarriesEachCounter: the status (and so the metrics) gives each
// VIP and backend its own counters, each in its field, and says which
// backend is drained.
func TestStatusCarriesEachCounter(t *testing.T) {
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath { return countersOf{Balancer: dp} })
	if _, err := r.b.Drain(r.ctx, "web/be2", true); err != nil {
		t.Fatal(err)
	}
	nums := map[string]uint32{}
	if err := r.b.do(r.ctx, func() {
		for i := range r.b.cfg.VIPs {
			nums[r.b.cfg.VIPs[i].Name] = r.b.vipNums[vipKey(&r.b.cfg.VIPs[i])]
		}
	}); err != nil {
		t.Fatal(err)
	}
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.VIPs {
		n := 10 * uint64(nums[v.Name])
		if got, want := [5]uint64{v.Packets, v.Bytes, v.NewFlows, v.ConnHits, v.ConnMisses}, [5]uint64{n + 1, n + 2, n + 3, n + 4, n + 5}; got != want {
			t.Errorf("VIP %s: packets, bytes, new flows, conn hits, conn misses = %v, want %v", v.Name, got, want)
		}
		for _, be := range v.Backends {
			n := 10 * uint64(be.ID)
			if be.Packets != n+1 || be.Bytes != n+2 {
				t.Errorf("%s/%s: packets %d, bytes %d; want %d, %d", v.Name, be.Name, be.Packets, be.Bytes, n+1, n+2)
			}
			if want := v.Name == "web" && be.Name == "be2"; be.Drained != want {
				t.Errorf("%s/%s: drained %v, want %v", v.Name, be.Name, be.Drained, want)
			}
		}
	}
}

// TestPacketRateAfterACounterReset: counters that go down (a datapath
// loaded afresh) give no rate, not the wrap-around of an unsigned
// difference, neither between samples nor from the status's fresher one.
func TestPacketRateAfterACounterReset(t *testing.T) {
	var packets atomic.Uint64
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return countersOf{Balancer: dp, vipPackets: &packets}
	})
	rates := func(step string) {
		t.Helper()
		st, err := r.b.Status(r.ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range st.VIPs {
			if v.PacketRate < 0 || v.PacketRate > 1e6 {
				t.Errorf("%s: VIP %s has a packet rate of %g/s", step, v.Name, v.PacketRate)
			}
		}
	}
	now := time.Now()
	packets.Store(1000)
	if err := r.b.do(r.ctx, func() { r.b.sampleRates(now.Add(-2 * time.Second)) }); err != nil {
		t.Fatal(err)
	}
	packets.Store(10)
	if err := r.b.do(r.ctx, func() { r.b.sampleRates(now.Add(-time.Second)) }); err != nil {
		t.Fatal(err)
	}
	rates("counters reset between two samples")
	packets.Store(5)
	rates("counters reset since the last sample")
}

// TestDrainLeavingOnlyDownBackendsWarns: a drain that leaves a VIP only
// backends that fail their checks leaves it no backend for new flows as
// surely as one that drains the last, and says so.
func TestDrainLeavingOnlyDownBackendsWarns(t *testing.T) {
	r := newCheckedRig(t, failingCheckConfig, datapath.Options{}, nil, refusingDialer{down: be2Down})
	r.waitBe2Down()
	resp, err := r.b.Drain(r.ctx, "web/be1", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Warnings) != 1 || !strings.HasPrefix(resp.Warnings[0], "VIP web has no backend left for new flows") {
		t.Errorf("drain of web's only healthy backend: warnings %q, want one saying web has none left", resp.Warnings)
	}
}

// flowsOf is the real datapath, except that its connection table holds
// the flows given: putting entries there takes traffic through the
// program, which pkg/datapath and test/e2e do; here what is tested is how
// the control loop selects, limits and names them.
type flowsOf struct {
	*datapath.Balancer
	flows func() []datapath.Conn
}

func (f flowsOf) Flows(fn func(datapath.FlowKey, datapath.Conn) bool) error {
	for i, c := range f.flows() {
		k := datapath.FlowKey{Src: netip.MustParseAddr("192.0.2.7"), SrcPort: uint16(40000 + i),
			Dst: netip.MustParseAddr("10.100.0.1"), DstPort: 80, Proto: datapath.ProtoTCP}
		if !fn(k, c) {
			break
		}
	}
	return nil
}

// TestFlowsSelectLimitAndName: flows are listed up to the limit (1000 by
// default), truncated only when more remain, of one VIP when asked, each
// named by its VIP and its backend as that VIP names it, or by the
// backend's address when the VIP names it not.
func TestFlowsSelectLimitAndName(t *testing.T) {
	var conns []datapath.Conn
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return flowsOf{dp, func() []datapath.Conn { return conns }}
	})
	var web, dns, be1, be2, be3 uint32
	if err := r.b.do(r.ctx, func() {
		web, dns = r.b.vipNums[vipKey(r.b.cfg.VIPByName("web"))], r.b.vipNums[vipKey(r.b.cfg.VIPByName("dns"))]
		id := func(a string) uint32 { return r.b.backendIDs[netip.MustParseAddr(a)] }
		be1, be2, be3 = id("10.2.1.2"), id("10.2.2.2"), id("10.2.3.2")
	}); err != nil {
		t.Fatal(err)
	}
	conns = []datapath.Conn{
		{VIPNum: web, BackendID: be1}, {VIPNum: web, BackendID: be3}, {VIPNum: dns, BackendID: be1},
		{VIPNum: web, BackendID: be2}, {VIPNum: dns, BackendID: be2}, // dns has no be2: named by address
	}
	want := []string{"web be1", "web be3", "dns be1", "web be2", "dns 10.2.2.2"}
	list := func(vip string, limit int) ([]string, bool) {
		t.Helper()
		resp, err := r.b.Flows(r.ctx, vip, limit)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range resp.Flows {
			got = append(got, f.VIPName+" "+f.Backend)
		}
		return got, resp.Truncated
	}
	for _, tc := range []struct {
		vip       string
		limit     int
		want      []string
		truncated bool
	}{
		{"", 0, want, false},
		{"", len(want), want, false},
		{"", 2, want[:2], true},
		{"dns", 0, []string{"dns be1", "dns 10.2.2.2"}, false},
		{"web", 1, want[:1], true},
	} {
		if got, truncated := list(tc.vip, tc.limit); !slices.Equal(got, tc.want) || truncated != tc.truncated {
			t.Errorf("flows of VIP %q, limit %d: %q, truncated %v; want %q, truncated %v", tc.vip, tc.limit, got, truncated, tc.want, tc.truncated)
		}
	}
}

// hookedFlows is the real datapath, whose Flows first runs during: the
// walk of the real connection table follows, as the control loop's
// requests would meet it.
type hookedFlows struct {
	*datapath.Balancer
	during func()
}

func (h hookedFlows) Flows(fn func(datapath.FlowKey, datapath.Conn) bool) error {
	h.during()
	return h.Balancer.Flows(fn)
}

// A flows listing walks the connection table outside the control loop: it
// walked it inside, so that with a table of 1Mi entries a drain (or a
// health transition, or a reload) waited for the whole walk. Here a drain
// is asked for while the walk runs, and must be done before it ends.
func TestDrainIsNotHeldUpByAFlowsWalk(t *testing.T) {
	var during func()
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return hookedFlows{dp, func() { during() }}
	})
	var drainErr error
	during = func() {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		_, drainErr = r.b.Drain(ctx, "web/be2", true)
	}
	if _, err := r.b.Flows(r.ctx, "web", 10); err != nil {
		t.Fatal(err)
	}
	if drainErr != nil {
		t.Fatalf("drain of web/be2 while a flows walk runs: %v, want it done", drainErr)
	}
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.VIPs {
		for _, be := range v.Backends {
			if want := v.Name == "web" && be.Name == "be2"; be.Drained != want {
				t.Errorf("%s/%s: drained %v, want %v", v.Name, be.Name, be.Drained, want)
			}
		}
	}
}

// Run returns only once no flows walk reads the datapath: the daemon
// closes the datapath when Run returns, and a walk outside the control
// loop would go on reading maps being closed (their descriptors reused).
func TestRunWaitsForAFlowsWalk(t *testing.T) {
	var during func()
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return hookedFlows{dp, func() { during() }}
	})
	stopped := make(chan struct{})
	during = func() {
		go func() { r.stop(); close(stopped) }()
		<-r.b.stopped
		select {
		case <-stopped:
			t.Error("Run returned while a flows walk read the datapath")
		case <-time.After(time.Second):
		}
	}
	if _, err := r.b.Flows(context.Background(), "", 10); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of the flows walk's end")
	}
}

// reloadingFlows is flowsOf whose walk first runs during, and counts its
// calls.
type reloadingFlows struct {
	flowsOf
	during func()
	calls  *atomic.Int32
}

func (h reloadingFlows) Flows(fn func(datapath.FlowKey, datapath.Conn) bool) error {
	h.calls.Add(1)
	h.during()
	return h.flowsOf.Flows(fn)
}

// newReloadingFlowsRig is a rig whose datapath's connection table holds
// conns, and whose walks of it first run during; it returns the count of
// walks.
func newReloadingFlowsRig(t *testing.T, during *func(), conns *[]datapath.Conn) (*rig, *atomic.Int32) {
	t.Helper()
	calls := new(atomic.Int32)
	*during = func() {}
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return reloadingFlows{flowsOf{dp, func() []datapath.Conn { return *conns }}, func() { (*during)() }, calls}
	})
	return r, calls
}

// A flows walk that reloads overlapped is not named with the labels read
// before it: here they give dns's VIP number to a new VIP, api, whose
// flow the walk then listed as dns's, and its backend by dns's name for
// it. The walk is taken again, with labels of its own.
func TestFlowsOverlappedByAReloadAreListedAgain(t *testing.T) {
	var during func()
	var conns []datapath.Conn
	r, calls := newReloadingFlowsRig(t, &during, &conns)
	dnsAt := strings.Index(baseConfig, "  - name: dns")
	withoutDNS := baseConfig[:dnsAt]
	withAPI := withoutDNS + strings.NewReplacer("name: dns", "name: api", "name: be1", "name: api1").Replace(baseConfig[dnsAt:])
	var dns uint32
	if err := r.b.do(r.ctx, func() { dns = r.b.vipNums[vipKey(r.b.cfg.VIPByName("dns"))] }); err != nil {
		t.Fatal(err)
	}
	conns = []datapath.Conn{{VIPNum: dns, BackendID: 0}}
	if err := r.b.do(r.ctx, func() { conns[0].BackendID = r.b.backendIDs[netip.MustParseAddr("10.2.1.2")] }); err != nil {
		t.Fatal(err)
	}
	var reloadErr error
	during = func() {
		during = func() {}
		for _, yaml := range []string{withoutDNS, withAPI} {
			r.write(yaml)
			if _, reloadErr = r.b.Reload(r.ctx); reloadErr != nil {
				return
			}
		}
	}
	resp, err := r.b.Flows(r.ctx, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if reloadErr != nil {
		t.Fatal(reloadErr)
	}
	var api uint32
	if err := r.b.do(r.ctx, func() { api = r.b.vipNums[vipKey(r.b.cfg.VIPByName("api"))] }); err != nil {
		t.Fatal(err)
	}
	if api != dns {
		t.Fatalf("api took VIP number %d, not dns's %d: the test shows nothing", api, dns)
	}
	var got []string
	for _, f := range resp.Flows {
		got = append(got, f.VIPName+" "+f.Backend)
	}
	if want := []string{"api api1"}; !slices.Equal(got, want) {
		t.Errorf("flows listed over reloads that gave dns's number to api: %q, want %q", got, want)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d walks of the connection table, want 2 (one again after the reloads)", n)
	}
}

// Reloads that overlap every walk outside the loop do not keep a flows
// listing from an answer: its last try walks on the loop, where no reload
// overlaps it.
func TestFlowsOverlappedByReloadsWalkOnTheLoop(t *testing.T) {
	var during func()
	var conns []datapath.Conn
	r, calls := newReloadingFlowsRig(t, &during, &conns)
	var reloadErr error
	during = func() {
		if calls.Load() < flowsTries {
			_, reloadErr = r.b.Reload(r.ctx)
		}
	}
	if _, err := r.b.Flows(r.ctx, "web", 10); err != nil {
		t.Fatal(err)
	}
	if reloadErr != nil {
		t.Fatal(reloadErr)
	}
	// The reloads are of the same file: they count, but move no
	// generation.
	var reloads uint64
	if err := r.b.do(r.ctx, func() { reloads = r.b.reloads }); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != flowsTries || reloads != flowsTries-1 {
		t.Errorf("flows over a reload in each of its walks but the last: %d walks, %d reloads; want %d and %d",
			n, reloads, flowsTries, flowsTries-1)
	}
}

// countsOf is the real datapath, except that its count of the connection
// table is the one given: putting entries there takes traffic through the
// program, which pkg/datapath (TestCountFlowsByBackend) and test/e2e do;
// here what is tested is how the control loop gives the counts to the
// rows of status.
type countsOf struct {
	*datapath.Balancer
	counts func() map[datapath.VIPBackend]datapath.FlowCount
}

func (c countsOf) CountFlows() (datapath.FlowCounts, error) {
	out := datapath.FlowCounts{ByBackend: c.counts()}
	for _, n := range out.ByBackend {
		out.Total += n.Flows
	}
	return out, nil
}

// TestStatusCountsFlowsPerBackend: each backend row of status has the
// flows its VIP pinned to the backend's slot, not those of another VIP
// with the same address; a backend removed from a VIP whose flows of the
// VIP remain gets a row marked removed, named by its address, as long as
// they remain, whether or not another VIP still lists the address.
func TestStatusCountsFlowsPerBackend(t *testing.T) {
	var counts map[datapath.VIPBackend]datapath.FlowCount
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return countsOf{dp, func() map[datapath.VIPBackend]datapath.FlowCount { return counts }}
	})
	var web, dns, be1, be2 uint32
	if err := r.b.do(r.ctx, func() {
		web, dns = r.b.vipNums[vipKey(r.b.cfg.VIPByName("web"))], r.b.vipNums[vipKey(r.b.cfg.VIPByName("dns"))]
		be1, be2 = r.b.backendIDs[netip.MustParseAddr("10.2.1.2")], r.b.backendIDs[netip.MustParseAddr("10.2.2.2")]
	}); err != nil {
		t.Fatal(err)
	}
	counts = map[datapath.VIPBackend]datapath.FlowCount{
		{VIPNum: web, BackendID: be1}: {Flows: 5, Active: 2},
		{VIPNum: web, BackendID: be2}: {Flows: 3, Active: 1},
		{VIPNum: dns, BackendID: be1}: {Flows: 1, Active: 1},
	}
	// The counts change below between two requests, not a second apart:
	// each counts again.
	r.b.countsMaxAge = 0
	rows := func() map[string]api.Backend {
		t.Helper()
		st, err := r.b.Status(r.ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]api.Backend{}
		for _, v := range st.VIPs {
			for _, b := range v.Backends {
				out[v.Name+"/"+b.Name] = b
			}
		}
		return out
	}
	type row struct {
		flows, active uint64
		removed       bool
	}
	check := func(step string, want map[string]row) {
		t.Helper()
		got := rows()
		for name, w := range want {
			b, ok := got[name]
			if !ok {
				t.Errorf("%s: no row %s in %v", step, name, slices.Collect(maps.Keys(got)))
				continue
			}
			if (row{b.Flows, b.ActiveFlows, b.Removed}) != w {
				t.Errorf("%s: %s has %d flows, %d active, removed %v; want %d, %d, %v",
					step, name, b.Flows, b.ActiveFlows, b.Removed, w.flows, w.active, w.removed)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: rows %v, want %v", step, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
	}
	check("configured", map[string]row{
		"web/be1": {5, 2, false}, "web/be2": {3, 1, false}, "web/be3": {0, 0, false}, "dns/be1": {1, 1, false},
	})

	// web loses be1 and be2; dns keeps be1.
	r.write(strings.Replace(baseConfig, "      - {name: be1, address: 10.2.1.2}\n      - {name: be2, address: 10.2.2.2}\n", "", 1))
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	check("after be1 and be2 left web", map[string]row{
		"web/10.2.1.2": {5, 2, true}, "web/10.2.2.2": {3, 1, true}, "web/be3": {0, 0, false}, "dns/be1": {1, 1, false},
	})
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bs := st.VIPs[0].Backends; bs[len(bs)-1].ID != be2 || bs[len(bs)-1].Address != "10.2.2.2" {
		t.Errorf("web's last row is %+v, want the removed be2 (id %d), after the configured backends", bs[len(bs)-1], be2)
	}

	// be2's flows of web are gone: so is its row.
	delete(counts, datapath.VIPBackend{VIPNum: web, BackendID: be2})
	check("after be2's flows ended", map[string]row{
		"web/10.2.1.2": {5, 2, true}, "web/be3": {0, 0, false}, "dns/be1": {1, 1, false},
	})
}

// hookedCounts is the real datapath, whose CountFlows first runs during
// and counts its calls; then counts the real connection table, or gives
// the counts of counts if set.
type hookedCounts struct {
	*datapath.Balancer
	during func()
	calls  *atomic.Int32
	counts func() map[datapath.VIPBackend]datapath.FlowCount
}

func (h hookedCounts) CountFlows() (datapath.FlowCounts, error) {
	h.calls.Add(1)
	h.during()
	if h.counts == nil {
		return h.Balancer.CountFlows()
	}
	return countsOf{h.Balancer, h.counts}.CountFlows()
}

// newCountsRig is a rig whose datapath is a hookedCounts with during and
// counts; it returns the count of CountFlows calls.
func newCountsRig(t *testing.T, during *func(), counts func() map[datapath.VIPBackend]datapath.FlowCount) (*rig, *atomic.Int32) {
	t.Helper()
	calls := new(atomic.Int32)
	*during = func() {}
	r := newWrappedRig(t, baseConfig, datapath.Options{}, func(dp *datapath.Balancer) Datapath {
		return hookedCounts{dp, func() { (*during)() }, calls, counts}
	})
	return r, calls
}

// A status request (and each metrics scrape) counts the connection table
// outside the control loop: it counted it inside, so that with a table of
// 1Mi entries (some 20 ms a count) a drain, a health transition, a
// network event or a reload waited for every scrape's count. Here a drain
// is asked for while the count runs, and must be done before it ends.
func TestDrainIsNotHeldUpByAStatusCount(t *testing.T) {
	var during func()
	r, _ := newCountsRig(t, &during, nil)
	var drainErr error
	during = func() {
		during = func() {}
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		_, drainErr = r.b.Drain(ctx, "web/be2", true)
	}
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if drainErr != nil {
		t.Fatalf("drain of web/be2 while a status count runs: %v, want it done", drainErr)
	}
	if st.VIPs[0].Name != "web" || st.VIPs[0].Backends[1].Name != "be2" || st.VIPs[0].Backends[1].Drained {
		t.Errorf("status read before the drain: %+v, want web/be2 not drained", st.VIPs[0].Backends)
	}
	if st, err = r.b.Status(r.ctx); err != nil {
		t.Fatal(err)
	}
	if !st.VIPs[0].Backends[1].Drained {
		t.Errorf("status after the drain: web/be2 not drained")
	}
}

// Run returns only once no status count reads the datapath, which the
// daemon closes when Run returns.
func TestRunWaitsForAStatusCount(t *testing.T) {
	var during func()
	r, _ := newCountsRig(t, &during, nil)
	stopped := make(chan struct{})
	during = func() {
		go func() { r.stop(); close(stopped) }()
		select {
		case <-r.b.stopped:
		case <-time.After(10 * time.Second):
			t.Error("the control loop did not stop within 10 s while a status count ran: the count holds it up")
			return
		}
		select {
		case <-stopped:
			t.Error("Run returned while a status count read the datapath")
		case <-time.After(time.Second):
		}
	}
	if _, err := r.b.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of the status count's end")
	}
}

// Status requests within countsMaxAge of a count share it, as scrapes of
// several Prometheus servers and `switchyard status` do: one walk of the
// table for all. A reload (which may give VIP numbers and backend ids to
// others) ends the sharing.
func TestStatusRequestsShareACount(t *testing.T) {
	var during func()
	r, calls := newCountsRig(t, &during, nil)
	r.b.countsMaxAge = time.Hour // not the test's to race with
	for range 3 {
		if _, err := r.b.Status(r.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("three status requests counted the connection table %d times, want once", n)
	}
	if _, err := r.b.Reload(r.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.b.Status(r.ctx); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("a status request after a reload: %d counts in all, want 2 (a count of its own)", n)
	}

	// Requests at once wait for the count under way, and take it.
	release := make(chan struct{})
	counting := make(chan struct{})
	during = func() { close(counting); <-release }
	r.b.countsMaxAge = 0
	errs := make(chan error, 4)
	go func() { _, err := r.b.Status(r.ctx); errs <- err }()
	<-counting
	during = func() {}
	r.b.countsMaxAge = time.Hour
	for range 3 {
		go func() { _, err := r.b.Status(r.ctx); errs <- err }()
	}
	close(release)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("four status requests at once: %d counts in all, want 3 (one more)", n)
	}
}

// A count of the connection table that a reload overlapped is not given
// to the status read before it: the reload may have given a VIP number or
// backend id to another, whose entries the count then took for the
// first's. The status is read again, with a count of its own.
func TestStatusCountOverlappedByAReloadIsTakenAgain(t *testing.T) {
	var during func()
	var counts map[datapath.VIPBackend]datapath.FlowCount
	r, calls := newCountsRig(t, &during, func() map[datapath.VIPBackend]datapath.FlowCount { return counts })
	var web, be2 uint32
	if err := r.b.do(r.ctx, func() {
		web, be2 = r.b.vipNums[vipKey(r.b.cfg.VIPByName("web"))], r.b.backendIDs[netip.MustParseAddr("10.2.2.2")]
	}); err != nil {
		t.Fatal(err)
	}
	counts = map[datapath.VIPBackend]datapath.FlowCount{{VIPNum: web, BackendID: be2}: {Flows: 3, Active: 1}}
	var reloadErr error
	during = func() {
		during = func() {}
		r.write(strings.Replace(baseConfig, "      - {name: be2, address: 10.2.2.2}\n", "", 1))
		_, reloadErr = r.b.Reload(r.ctx)
	}
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if reloadErr != nil {
		t.Fatal(reloadErr)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d counts of the connection table, want 2 (one again after the reload)", n)
	}
	var rows []string
	for _, b := range st.VIPs[0].Backends {
		rows = append(rows, fmt.Sprintf("%s flows=%d removed=%v", b.Name, b.Flows, b.Removed))
	}
	want := []string{"be1 flows=0 removed=false", "be3 flows=0 removed=false", "10.2.2.2 flows=3 removed=true"}
	if st.ConfigGeneration != 2 || !slices.Equal(rows, want) {
		t.Errorf("status over a reload: generation %d, web %q; want generation 2, web %q", st.ConfigGeneration, rows, want)
	}
}

// Reloads that overlap every count outside the loop do not keep a status
// request from an answer: its last try counts on the loop, where no
// reload overlaps it.
func TestStatusOverlappedByReloadsCountsOnTheLoop(t *testing.T) {
	var during func()
	r, calls := newCountsRig(t, &during, nil)
	var reloadErr error
	during = func() {
		if calls.Load() < statusTries {
			_, reloadErr = r.b.Reload(r.ctx)
		}
	}
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if reloadErr != nil {
		t.Fatal(reloadErr)
	}
	// The reloads are of the same file: they count, but move no
	// generation.
	if n := calls.Load(); n != statusTries || st.Reloads != statusTries-1 {
		t.Errorf("status over a reload in each of its counts but the last: %d counts, %d reloads; want %d and %d",
			n, st.Reloads, statusTries, statusTries-1)
	}
}

// A status request whose client gives up while the control loop still
// works on it returns nothing of it: it returned the status the loop was
// still filling in, a data race (found with -race) and, without the race
// detector, a half-filled status for a caller that no longer wanted it.
// Here the client gives up during the count on the loop (the last try),
// and the loop goes on writing the status after Status has returned.
func TestStatusGivenUpDuringTheLoopsCountReturnsNothing(t *testing.T) {
	var during func()
	r, calls := newCountsRig(t, &during, nil)
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	returned := make(chan struct{})
	during = func() {
		if calls.Load() < statusTries {
			if _, err := r.b.Reload(r.ctx); err != nil {
				t.Error(err)
			}
			return
		}
		cancel()
		// No synchronisation with the caller on purpose: the loop's
		// writes after this must not race with what Status returns.
		select {
		case <-returned:
		case <-time.After(5 * time.Second):
		}
	}
	var st api.Status
	var err error
	go func() {
		st, err = r.b.Status(ctx)
		close(returned)
	}()
	<-returned
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Status given up: %v, want context.Canceled", err)
	}
	if st.ConfigGeneration != 0 || len(st.VIPs) != 0 {
		t.Errorf("Status given up returned generation %d and %d VIPs, want nothing", st.ConfigGeneration, len(st.VIPs))
	}
}

// Building many Maglev tables takes seconds (512 VIPs of 65,537 slots:
// about 1.5 s on 2 cores), at a start, a reload, or when a backend they
// all share goes: the log says so when it starts, and at the end how many
// it built and published, and in how long. A change of one VIP's table
// keeps its one "table published" line.
func TestManyTablesShowProgress(t *testing.T) {
	r := newRig(t, failoverConfig(3, 2), datapath.Options{})
	// The log of the rig's whole run: n lines so far.
	expect := func(what string, n int, parts ...string) {
		t.Helper()
		if got := r.logs.matching(slog.LevelInfo, parts...); len(got) != n {
			t.Fatalf("%s: %d log lines with %q, want %d: %q", what, len(got), parts, n, got)
		}
	}
	expect("start", 1, "building Maglev tables", "vips=3")
	expect("start", 1, "Maglev tables built", "vips=3", "published=3", "seconds=")
	if _, err := r.b.Drain(r.ctx, "shared", true); err != nil {
		t.Fatal(err)
	}
	expect("drain of a backend of every VIP", 2, "building Maglev tables", "vips=3")
	expect("drain of a backend of every VIP", 2, "Maglev tables built", "vips=3", "published=3", "seconds=")
	if _, err := r.b.Drain(r.ctx, "v0/be0", true); err != nil {
		t.Fatal(err)
	}
	expect("drain of one VIP's backend", 2, "building Maglev tables")
	expect("drain of one VIP's backend", 3+3+1, "table published")
}
