package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/demo"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

const (
	// bulkBackends addresses in VIP "bulk": two sets fill 4003 of the 4096
	// backend slots with web's, a third must take slots of removed ones.
	bulkBackends = 2000
	bulkTable    = 4093
	// bigVIPs VIPs with the largest table (an array of 8 MiB in the
	// kernel: values are 8-byte aligned) are what the memory limit
	// refuses part-way.
	bigVIPs       = 6
	bigTable      = 1048573
	bigTableBytes = 8 << 20
)

// TestReloadFailsPartWayInTheKernel: a valid file that the kernel refuses
// part-way (memory for its new Maglev tables, under a memory cgroup's
// limit) is rolled back as README's `apply the configuration: ...; the
// running configuration stays in force` row says, under live traffic:
// the file had added VIPs, given recycled backend slots to new addresses
// and changed web's backends when the kernel refused; the reload reports
// the failure, every stream keeps flowing on its backend, the recorded
// flows keep their entries, web6 (which the file removes) still answers,
// status keeps its generation and counts the failure. With the limit
// raised the same file applies. Along the way VIP "bulk" fills the 4096
// backend slots through successive reloads of 2000 new addresses each,
// and status and metrics stay right.
func TestReloadFailsPartWayInTheKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the 4096 backend slots and builds tables of a million slots: about 30 s")
	}
	// The daemon's Go heap would share the cgroup's limit with the
	// kernel's tables, and a fault of the heap over it gets the daemon
	// killed. So the heap reaches its size before the daemon goes into
	// the cgroup (its pages stay charged where they were), and the pages
	// it returns to the kernel are only marked free (MADV_FREE): taken
	// again, they are not charged anew. (Read by the processes the lab
	// starts; this one read it when it started.)
	t.Setenv("GODEBUG", "madvdontneed=0")
	lab := newLab(t, demo.LabConfig{Backends: 4, Configured: 3})
	ctx := testContext(t, 3*time.Minute)
	web := openStreams(t, ctx, lab, "be1", "be2", "be3")
	var web6 []*demo.Stream
	t.Cleanup(func() {
		for _, s := range web6 {
			s.Close()
		}
	})
	for range 3 {
		s, err := lab.OpenStream(within(t, ctx, 5*time.Second), demo.Web6VIP, streamInterval)
		if err != nil {
			t.Fatal(err)
		}
		web6 = append(web6, s)
	}
	all := append(append([]*demo.Stream{}, web...), web6...)
	flowing(t, ctx, "start", all)

	// Fill the slots: set 0, then set 1 in its place (set 0's keep their
	// slots, for flows they might have).
	base := lab.Spec()
	reloadSpec(t, ctx, lab, withBulk(base, 0))
	checkBulk(t, ctx, lab, 0)
	reloadSpec(t, ctx, lab, withBulk(base, 1))
	checkBulk(t, ctx, lab, 1)
	flowing(t, ctx, "after filling the backend slots", all)
	running := withBulk(base, 1)

	// The big VIPs, applied and taken back: the daemon's heap grows to
	// what the failing reload needs.
	withBig := running.Clone()
	addBigVIPs(&withBig)
	reloadSpec(t, ctx, lab, withBig)
	reloadSpec(t, ctx, lab, running)
	flowing(t, ctx, "after the big VIPs came and went", all)

	// The daemon goes into a memory cgroup of its own.
	d := lab.Daemon(1)
	cg := newMemCgroup(t, lab.Prefix(), d.Pid())

	// The failing file: the big VIPs (last), set 2 in bulk (its new
	// addresses must take the slots of set 0's), be4 added to web, and
	// web6 removed.
	failing := withBulk(base, 2)
	failing.VIPs = deleteVIP(failing.VIPs, demo.VIPWeb6)
	failing.VIP(demo.VIPWeb).Backends = append(failing.VIP(demo.VIPWeb).Backends,
		demo.BackendSpec{Name: "be4", Address: topology.BackendIPv4(4), Weight: 1})
	addBigVIPs(&failing)

	before := snapshot(t, ctx, lab)
	if len(before.flows) < len(all) {
		t.Fatalf("%d flows recorded, fewer than the %d streams", len(before.flows), len(all))
	}
	// Room for two and a half big tables (arrays of 8-byte values in the
	// kernel): the third fails.
	limit := cg.read("memory.usage_in_bytes") + bigTableBytes*5/2
	kmemBefore := cg.read("memory.kmem.usage_in_bytes")
	cg.write("memory.limit_in_bytes", strconv.FormatInt(limit, 10))
	logOffset := logSize(t, d.Log)
	if err := lab.WriteConfig(failing); err != nil {
		t.Fatal(err)
	}
	// A page fault of the daemon's own heap over the limit stalls (the
	// cgroup's OOM killer is off) until the limit is raised: the watch
	// raises it a MiB at a time, never near the 48 MiB all six big tables
	// would need, so the kernel must still refuse one of them.
	stopWatch := cg.letFaultsThrough(limit, bigVIPs*bigTableBytes-bigTableBytes*5/2-bigTableBytes)
	out, err := lab.Reload(ctx, 1)
	if raised := stopWatch(); raised > 0 {
		t.Logf("the daemon's own memory stalled at the limit during the reload: the limit was raised by %d KiB to let it through", raised>>10)
	}
	if !d.Running() {
		t.Fatalf("the daemon ended during the reload under the memory limit: %v", d.ExitErr())
	}
	if err == nil {
		t.Fatalf("the reload succeeded under a memory limit below its tables:\n%s", out)
	}
	t.Logf("switchyard reload: %v", err)
	for _, want := range []string{"apply the configuration: ", "cannot allocate memory", "; the running configuration stays in force"} {
		if !strings.Contains(out, want) {
			t.Errorf("switchyard reload output lacks %q:\n%s", want, out)
		}
	}
	log := logSince(t, d.Log, logOffset)
	if !strings.Contains(log, "reload failed") {
		t.Errorf("the daemon's log does not say reload failed:\n%s", log)
	}
	// Part-way: the file had taken slots of removed addresses, and the
	// rollback gave them back.
	if !strings.Contains(log, "backend slot of a removed address given to a new one") {
		t.Errorf("the daemon's log shows no backend slot recycled: the failure did not land part-way")
	}
	if !strings.Contains(log, "backend slot given back to the address a failed reload took it from") {
		t.Errorf("the daemon's log shows no recycled slot given back by the rollback")
	}
	t.Logf("the failed reload: peak %d KiB in the cgroup (limit %d KiB), %d KiB of kernel memory",
		cg.read("memory.max_usage_in_bytes")>>10, limit>>10, (cg.read("memory.kmem.max_usage_in_bytes")-kmemBefore)>>10)
	// The rest runs with room again, so that a failure below is not the
	// limit's; the daemon's checks above ran under it.
	cg.write("memory.limit_in_bytes", "-1")

	flowing(t, ctx, "after the failed reload", all)
	checkStreams(t, all)
	after := snapshot(t, ctx, lab)
	checkFlowsKept(t, before.flows, after.flows)
	if after.status.ConfigGeneration != before.status.ConfigGeneration {
		t.Errorf("config_generation %d after the failed reload, want %d", after.status.ConfigGeneration, before.status.ConfigGeneration)
	}
	if after.status.ReloadFailures != before.status.ReloadFailures+1 {
		t.Errorf("reload_failures %d after the failed reload, want %d", after.status.ReloadFailures, before.status.ReloadFailures+1)
	}
	if !strings.Contains(after.status.LastReloadError, "cannot allocate memory") {
		t.Errorf("last_reload_error = %q, want the kernel's reason", after.status.LastReloadError)
	}
	checkRunning(t, after.status, running)
	// web6, which the file removed, answers new connections too.
	if counts := spread(t, ctx, lab, demo.URL(demo.Web6VIP, "/"), 30); counts["be1"]+counts["be2"]+counts["be3"] != 30 {
		t.Errorf("web6 after the failed reload: %s", format(counts))
	}
	counts := spread(t, ctx, lab, demo.URL(demo.WebVIP, "/"), 60)
	onlyFrom(t, "web after the failed reload", counts, "be1", "be2", "be3")
	checkBulk(t, ctx, lab, 1)

	// With room, the same file applies: set 2 takes set 0's slots.
	out, err = lab.Reload(ctx, 1)
	if err != nil {
		t.Fatalf("the failing file with room: %v", err)
	}
	first, _, _ := strings.Cut(out, "\n")
	t.Logf("switchyard reload: %s (%d lines of changes)", first, strings.Count(out, "\n")-1)
	flowing(t, ctx, "after the file applied", web)
	checkBulk(t, ctx, lab, 2)
	counts = spread(t, ctx, lab, demo.URL(demo.WebVIP, "/"), 120)
	if counts["be4"] == 0 {
		t.Errorf("web after adding be4: none of 120 new connections went to it: %s", format(counts))
	}

	// And once more: set 3 takes set 1's slots.
	next := failing.Clone()
	next.VIP("bulk").Backends = bulkSet(3)
	reloadSpec(t, ctx, lab, next)
	checkBulk(t, ctx, lab, 3)
	flowing(t, ctx, "after set 3", web)
	checkStreams(t, web)
	st, err := lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if st.ConfigGeneration != before.status.ConfigGeneration+2 || st.ReloadFailures != 1 {
		t.Errorf("status at the end: generation %d (want %d), reload_failures %d (want 1)",
			st.ConfigGeneration, before.status.ConfigGeneration+2, st.ReloadFailures)
	}
	metrics, err := lab.Metrics(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v := metricValue(metrics, "switchyard_config_reload_failures_total"); v != 1 {
		t.Errorf("switchyard_config_reload_failures_total = %v, want 1", v)
	}
}

// bulkSet is the s-th set of bulkBackends backend addresses, none of the
// lab's.
func bulkSet(s int) []demo.BackendSpec {
	out := make([]demo.BackendSpec, bulkBackends)
	for i := range out {
		a := netip.AddrFrom4([4]byte{10, byte(200 + s), byte(i / 250), byte(i%250 + 1)})
		out[i] = demo.BackendSpec{Name: fmt.Sprintf("s%d-%d", s, i), Address: a, Weight: 1}
	}
	return out
}

// withBulk is spec with VIP "bulk" on port 9000 of web's address over set s.
func withBulk(spec demo.Spec, s int) demo.Spec {
	out := spec.Clone()
	out.VIPs = append(out.VIPs, demo.VIPSpec{
		Name: "bulk", Address: demo.WebVIP.Addr(), Port: 9000, Protocol: "tcp", Hash: "5tuple",
		TableSize: bulkTable, Health: demo.HealthSpec{Type: "none"}, Backends: bulkSet(s),
	})
	return out
}

// addBigVIPs appends bigVIPs VIPs of bigTable slots over be1..be3.
func addBigVIPs(spec *demo.Spec) {
	for i := range bigVIPs {
		var bes []demo.BackendSpec
		for j := 1; j <= 3; j++ {
			bes = append(bes, demo.BackendSpec{Name: demo.BackendName(j), Address: topology.BackendIPv4(j), Weight: 1})
		}
		spec.VIPs = append(spec.VIPs, demo.VIPSpec{
			Name: fmt.Sprintf("big%d", i+1), Address: demo.WebVIP.Addr(), Port: 9100 + i, Protocol: "tcp", Hash: "5tuple",
			TableSize: bigTable, Health: demo.HealthSpec{Type: "none"}, Backends: bes,
		})
	}
}

func deleteVIP(vips []demo.VIPSpec, name string) []demo.VIPSpec {
	var out []demo.VIPSpec
	for _, v := range vips {
		if v.Name != name {
			out = append(out, v)
		}
	}
	return out
}

// reloadSpec writes spec and reloads balancer 1, failing t on an error.
func reloadSpec(t *testing.T, ctx context.Context, lab *demo.Lab, spec demo.Spec) {
	t.Helper()
	if err := lab.WriteConfig(spec); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Reload(ctx, 1); err != nil {
		t.Fatal(err)
	}
}

// checkBulk fails t unless status and the metrics show VIP bulk over set
// s: its 2000 addresses healthy, each in a slot of its own (no other
// configured backend's, all within the datapath's 4096), and its table's
// slots all given.
func checkBulk(t *testing.T, ctx context.Context, lab *demo.Lab, s int) {
	t.Helper()
	st, err := lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, b := range bulkSet(s) {
		want[b.Address.String()] = true
	}
	ids := map[uint32]string{}
	var bulk *api.VIP
	for i, v := range st.VIPs {
		if v.Name == "bulk" {
			bulk = &st.VIPs[i]
		}
		for _, b := range v.Backends {
			if b.Removed {
				continue
			}
			if o, ok := ids[b.ID]; ok && o != b.Address {
				t.Errorf("backend slot %d holds %s and %s", b.ID, o, b.Address)
			}
			ids[b.ID] = b.Address
			if b.ID >= config.MaxBackendAddrs {
				t.Errorf("%s/%s has slot %d, beyond the datapath's %d", v.Name, b.Name, b.ID, config.MaxBackendAddrs)
			}
		}
	}
	if bulk == nil {
		t.Fatalf("status has no VIP bulk")
	}
	slots, n := 0, 0
	for _, b := range bulk.Backends {
		if b.Removed {
			continue
		}
		n++
		if !want[b.Address] || !b.Healthy {
			t.Errorf("bulk's backend %s (%s, healthy %v) is not one of set %d's healthy addresses", b.Name, b.Address, b.Healthy, s)
		}
		slots += b.TableSlots
	}
	if n != bulkBackends || slots != bulkTable {
		t.Errorf("status of bulk over set %d: %d backends (want %d) with %d table slots (want %d)", s, n, bulkBackends, slots, bulkTable)
	}
	text, err := lab.Metrics(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	msum, series := 0.0, 0
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "switchyard_backend_table_slots{") && strings.Contains(line, `vip="bulk"`) {
			i := strings.LastIndexByte(line, ' ')
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			msum += v
			series++
		}
	}
	if msum != bulkTable || series < bulkBackends {
		t.Errorf("switchyard_backend_table_slots of bulk over set %d: %d series summing to %v, want %d summing to %d", s, series, msum, bulkBackends, bulkTable)
	}
}

// checkRunning fails t unless status shows the VIPs of spec, no other.
func checkRunning(t *testing.T, st api.Status, spec demo.Spec) {
	t.Helper()
	have := map[string]bool{}
	for _, v := range st.VIPs {
		have[v.Name] = true
		if spec.VIP(v.Name) == nil {
			t.Errorf("status shows VIP %s, which the running configuration does not have", v.Name)
		}
	}
	for _, v := range spec.VIPs {
		if !have[v.Name] {
			t.Errorf("status lacks VIP %s of the running configuration", v.Name)
		}
	}
}

// memCgroup is a cgroup v1 memory cgroup a test made.
type memCgroup struct {
	t    *testing.T
	path string
}

// memCgroupRoot is where cgroup v1's memory controller is mounted.
const memCgroupRoot = "/sys/fs/cgroup/memory"

// newMemCgroup makes a memory cgroup named after the lab's prefix, moves
// process pid into it, and on t's end moves it back (if it still runs) and
// removes the cgroup. Without cgroup v1's memory controller t is skipped.
func newMemCgroup(t *testing.T, prefix string, pid int) *memCgroup {
	t.Helper()
	if _, err := os.Stat(filepath.Join(memCgroupRoot, "memory.kmem.usage_in_bytes")); err != nil {
		t.Skipf("SKIPPED: no cgroup v1 memory controller with kernel memory accounting at %s (%v): the test limits the daemon's memory with it", memCgroupRoot, err)
	}
	c := &memCgroup{t: t, path: filepath.Join(memCgroupRoot, "switchyard-e2e-"+prefix)}
	if err := os.Mkdir(c.path, 0o755); err != nil {
		t.Fatal(err)
	}
	// With the OOM killer on, a page fault of the daemon's heap over the
	// limit, at the moment the kernel fills the cgroup with a table it
	// then refuses, kills the daemon (CI saw it). Off, the fault waits
	// for room (see letFaultsThrough), and allocations that may fail (the
	// tables') still fail with ENOMEM.
	c.write("memory.oom_control", "1")
	t.Cleanup(func() {
		// No limit first: it wakes a fault that waits at it (the OOM
		// killer is off), which a move out would leave waiting.
		if err := os.WriteFile(filepath.Join(c.path, "memory.limit_in_bytes"), []byte("-1"), 0); err != nil {
			t.Errorf("lift the limit of %s: %v", c.path, err)
		}
		if err := os.WriteFile(filepath.Join(memCgroupRoot, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil && !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "no such process") {
			t.Errorf("move the daemon out of %s: %v", c.path, err)
		}
		if err := os.Remove(c.path); err != nil {
			t.Errorf("remove the cgroup: %v", err)
		}
	})
	c.write("cgroup.procs", strconv.Itoa(pid))
	return c
}

// sweepMemCgroups removes the memory cgroups of runs killed before their
// cleanup (newMemCgroup's, under memCgroupRoot): those with no process
// left, once SweepTestOrphans has ended the daemons they held. A cgroup a
// live run's daemon is in is busy, and stays.
func sweepMemCgroups(logf func(string, ...any)) {
	dirs, _ := filepath.Glob(filepath.Join(memCgroupRoot, "switchyard-e2e-*"))
	for _, d := range dirs {
		if procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err != nil || len(strings.TrimSpace(string(procs))) > 0 {
			continue
		}
		if err := os.Remove(d); err == nil {
			logf("removed the memory cgroup %s of a run killed before its cleanup", d)
		}
	}
}

// letFaultsThrough watches the cgroup, whose limit is limit, until the
// returned stop is called: while a fault of its process waits at the limit
// (under_oom), it raises the limit a MiB at a time, by at most budget
// bytes in all, and then lifts it. stop returns by how much it raised the
// limit.
func (c *memCgroup) letFaultsThrough(limit, budget int64) (stop func() int64) {
	done := make(chan struct{})
	raisedc := make(chan int64, 1)
	go func() {
		var raised int64
		defer func() { raisedc <- raised }()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			b, err := os.ReadFile(filepath.Join(c.path, "memory.oom_control"))
			if err != nil || !strings.Contains(string(b), "under_oom 1") {
				continue
			}
			value := "-1" // past the budget: no limit, and the test sees the reload's outcome
			if raised < budget {
				raised += 1 << 20
				value = strconv.FormatInt(limit+raised, 10)
			}
			// Not c.write: t.Fatalf is for the test's goroutine.
			if err := os.WriteFile(filepath.Join(c.path, "memory.limit_in_bytes"), []byte(value), 0); err != nil {
				c.t.Errorf("cgroup %s: raise the limit for a stalled fault: %v", c.path, err)
				return
			}
		}
	}()
	return func() int64 {
		close(done)
		return <-raisedc
	}
}

func (c *memCgroup) write(file, value string) {
	c.t.Helper()
	if err := os.WriteFile(filepath.Join(c.path, file), []byte(value), 0); err != nil {
		c.t.Fatalf("cgroup %s: write %s: %v", c.path, file, err)
	}
}

func (c *memCgroup) read(file string) int64 {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.path, file))
	if err != nil {
		c.t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		c.t.Fatalf("cgroup %s: %s: %v", c.path, file, err)
	}
	return v
}

func logSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func logSince(t *testing.T, path string, offset int64) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) < offset {
		return ""
	}
	return string(b[offset:])
}
