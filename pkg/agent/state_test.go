package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
	"golang.org/x/sys/unix"
)

// crash drops a running agent as its process dying would: every file
// descriptor it holds is closed (the pinned link keeps the program
// attached) and nothing it changed on the host is undone.
func crash(t *testing.T, a *Agent) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.running {
		t.Fatal("crash: the agent is not running")
	}
	if a.watch != nil {
		a.watch.stop()
	}
	a.decap.Close()
	for _, s := range a.sysctls {
		s.f.Close()
	}
	a.lock.Close()
	a.runLock.Close()
	a.nl.Close()
	a.eth.Close()
	a.eth, a.gro = nil, nil
	a.running, a.ownPins, a.stateHeld = false, false, false
	a.watch, a.decap, a.lock, a.runLock, a.nl = nil, nil, nil, nil, nil
	a.sysctls, a.added = nil, nil
}

func loHas(t *testing.T, topo *topology.Topology, node string, p netip.Prefix) bool {
	t.Helper()
	return slices.ContainsFunc(snapshot(t, topo, node).lo, func(s string) bool { return strings.HasPrefix(s, p.String()+" ") })
}

func requireNoState(t *testing.T, a *Agent) {
	t.Helper()
	if _, err := os.Stat(a.statePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file %s is still there after a clean stop (stat: %v)", a.statePath, err)
	}
	if _, err := os.Stat(runLockPath(a.statePath)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run lock %s is still there after a clean stop (stat: %v)", runLockPath(a.statePath), err)
	}
}

// requireNextRunUndoesAll starts the next agent of c in node, which takes
// over what an earlier run left, and stops it: the host must be as before
// the earlier run, with no pins and no state file left.
func requireNextRunUndoesAll(t *testing.T, topo *topology.Topology, node string, c config.AgentConfig, before hostState) {
	t.Helper()
	next := startAgent(t, topo, node, c)
	if err := next.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, node))
	requireNoPins(t, c.PinDir)
	requireNoState(t, next)
}

// crashedRun starts an agent of testConfig on a fresh topology's first
// backend, with eth0.rp_filter at 1 so that the agent changes it, and
// crashes it: it returns the topology, the backend, the configuration
// and the host as it was before the agent started.
func crashedRun(t *testing.T) (*topology.Topology, string, config.AgentConfig, hostState) {
	t.Helper()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	crash(t, startAgent(t, topo, be, c))
	return topo, be, c, before
}

// readStateRecord reads and decodes the state file at path, failing t
// with gone, which says what the file's absence means, if it cannot be
// read. It returns the file's text too, for messages.
func readStateRecord(t *testing.T, path, gone string) (stateRecord, []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s (read %s: %v)", gone, path, err)
	}
	var rec stateRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatalf("state file %s: %v\n%s", path, err, data)
	}
	return rec, data
}

// TestCrashedRunUndoneByNext: an agent that died without stopping leaves
// its VIPs and sysctls; the next run takes them over and its clean stop
// leaves the host as it was before the first run. It used to take them for
// the admin's and leave them for good.
func TestCrashedRunUndoneByNext(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.all.rp_filter", "1")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "1")
	before := snapshot(t, topo, be)
	c := testConfig(topo)

	crash(t, startAgent(t, topo, be, c))
	if !loHas(t, topo, be, netip.PrefixFrom(vip4, 32)) {
		t.Fatal("the crashed agent's VIP is not on lo: the crash undid it")
	}

	requireNextRunUndoesAll(t, topo, be, c, before)
}

// rewriteAsPreviousRelease makes the state file at path what the previous
// release writes: the same record, format /1, no pin_dir.
func rewriteAsPreviousRelease(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	rec["format"] = stateFormatV1
	delete(rec, "pin_dir")
	if data, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCrashedRunOfPreviousReleaseUndone: the record of a previous
// release's agent (format /1, without pin_dir) that was killed is taken
// over as this release's own.
func TestCrashedRunOfPreviousReleaseUndone(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	crashed := startAgent(t, topo, be, c)
	crash(t, crashed)
	rewriteAsPreviousRelease(t, crashed.StatePath())

	a := startAgent(t, topo, be, c)
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoState(t, a)
}

// TestCrashedRunAdminChangeKept: a setting the admin changed between the
// crash and the next run is the admin's, as one changed while an agent
// runs; the crashed run's other changes are undone.
func TestCrashedRunAdminChangeKept(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "0")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_ignore", "0")
	c := testConfig(topo)
	crash(t, startAgent(t, topo, be, c))
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "1")
	crashed := snapshot(t, topo, be)

	a := startAgent(t, topo, be, c)
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := sysctlValue(t, topo, be, "net.ipv4.conf.eth0.arp_announce"); got != "1" {
		t.Errorf("eth0.arp_announce = %s after Stop, want 1, as the admin set it after the crash", got)
	}
	if got := sysctlValue(t, topo, be, "net.ipv4.conf.eth0.arp_ignore"); got != "0" {
		t.Errorf("eth0.arp_ignore = %s after Stop, want 0, as found before the first run", got)
	}
	after := snapshot(t, topo, be)
	for _, p := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
		if slices.ContainsFunc(after.lo, func(s string) bool { return strings.HasPrefix(s, p.String()+" ") }) {
			t.Errorf("VIP %s the crashed run added is still on lo", p)
		}
	}
	const allIgnore = "/proc/sys/net/ipv4/conf/all/arp_ignore"
	if after.sysctls[allIgnore] == crashed.sysctls[allIgnore] {
		t.Errorf("all.arp_ignore = %s after Stop, as the crashed run set it", after.sysctls[allIgnore])
	}
	requireNoState(t, a)
}

// TestCrashedRunVIPNoLongerConfigured: a VIP the crashed run added that the
// configuration no longer has goes as soon as the next run starts.
func TestCrashedRunVIPNoLongerConfigured(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	crash(t, startAgent(t, topo, be, c))

	c.VIPs = []string{vip4.String()}
	a := startAgent(t, topo, be, c)
	if loHas(t, topo, be, netip.PrefixFrom(vip6, 128)) {
		t.Errorf("VIP %s, no longer configured, is still on lo after the next start", vip6)
	}
	if !loHas(t, topo, be, netip.PrefixFrom(vip4, 32)) {
		t.Errorf("VIP %s is not on lo", vip4)
	}
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoState(t, a)
}

// TestCrashedRunInterfaceRenamed: after the interface was renamed (and the
// configuration with it), the next run finds the crashed run's settings of
// the interface under its new name.
func TestCrashedRunInterfaceRenamed(t *testing.T) {
	t.Parallel()
	const renamed = "aGren0"
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_ignore", "0")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_announce", "0")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	crash(t, startAgent(t, topo, be, c))

	renameEth(t, topo, be, renamed)
	c.Interface = renamed // the pin directory stays as configured
	a := startAgent(t, topo, be, c)
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for _, key := range []string{"arp_ignore", "arp_announce", "rp_filter"} {
		want := before.sysctls["/proc/sys/net/ipv4/conf/eth0/"+key]
		if got := sysctlValue(t, topo, be, "net.ipv4.conf."+renamed+"."+key); got != want {
			t.Errorf("%s.%s = %s after Stop, want %s, as found before the first run", renamed, key, got, want)
		}
	}
	for _, key := range []string{"arp_ignore", "arp_announce"} {
		want := before.sysctls["/proc/sys/net/ipv4/conf/all/"+key]
		if got := sysctlValue(t, topo, be, "net.ipv4.conf.all."+key); got != want {
			t.Errorf("all.%s = %s after Stop, want %s", key, got, want)
		}
	}
	requireNoState(t, a)
}

// TestStateFileUnusable: a state file that cannot be read, or that another
// release wrote, is refused with an error that names it and says what to
// do, and the agent changes nothing: guessing would undo the admin's
// settings or keep the crashed run's for good.
func TestStateFileUnusable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, content, want string
	}{
		{"garbage", "{not json", "remove the file"},
		{"other format", `{"format": "switchyard-agent-state/99"}`, `format "switchyard-agent-state/99"`},
		{"unknown field", `{"format": "switchyard-agent-state/1", "routes": []}`, "remove the file"},
		{"foreign sysctl", `{"format": "switchyard-agent-state/1", "sysctls": [{"conf": "kernel", "dev": "..", "key": "x", "old": "0", "set": "1"}]}`, "is not one the agent sets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topo := newTopology(t)
			be := topo.Backend(1)
			setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
			before := snapshot(t, topo, be)
			c := testConfig(topo)
			a := newAgent(t, c)
			if err := os.WriteFile(a.statePath, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			err := topo.Do(be, a.Start)
			if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), a.statePath) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want ErrState naming %s and saying %q", err, a.statePath, tc.want)
			}
			t.Logf("Start: %v", err)
			requireSame(t, before, snapshot(t, topo, be))
			requireNoPins(t, c.PinDir)
			if b, err := os.ReadFile(a.statePath); err != nil || string(b) != tc.content {
				t.Errorf("state file after the refused start: %q, %v; want it left as it was", b, err)
			}
		})
	}
}

// TestStateFileWritten: while the agent runs, its state file (mode 0600,
// named for its pin directory) lists what it changed.
func TestStateFileWritten(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.arp_ignore", "0")
	c := testConfig(topo)
	a := startAgent(t, topo, be, c)
	st, err := os.Stat(a.statePath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", st.Mode().Perm())
	}
	rec, err := readState(a.statePath)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rec.Sysctls, func(r sysctlRecord) bool {
		return r.Dev == "eth0" && r.Key == "arp_ignore" && r.Old == "0" && r.Set == "1" && r.Ifindex != 0
	}) {
		t.Errorf("state %+v does not record eth0.arp_ignore 0 -> 1", rec.Sysctls)
	}
	if want := []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)}; !slices.Equal(rec.VIPs, want) {
		t.Errorf("state records VIPs %v, want %v", rec.VIPs, want)
	}
	if got, want := filepath.Base(a.statePath), "agent-eth0-"; !strings.HasPrefix(got, want) {
		t.Errorf("state file %s, want one named for the pin directory %s", got, c.PinDir)
	}
}

// TestStateFromElsewhereIgnored: a record from before a reboot, or made in
// another network namespace, describes changes that went with that boot
// or namespace. A setting it lists that now has the value it wrote is
// someone else's: Stop leaves it.
func TestStateFromElsewhereIgnored(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		change func(*stateRecord)
	}{
		{"other boot", func(r *stateRecord) { r.BootID = "00000000-0000-0000-0000-000000000000" }},
		{"other namespace", func(r *stateRecord) { r.NetNS++ }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topo := newTopology(t)
			be := topo.Backend(1)
			// As the admin set it: the agent changes nothing here.
			setSysctl(t, topo, be, "net.ipv4.conf.all.arp_ignore", "1")
			before := snapshot(t, topo, be)
			c := testConfig(topo)
			a := newAgent(t, c)
			rec := stateRecord{Format: stateFormat, Sysctls: []sysctlRecord{{Conf: ipv4Conf, Dev: "all", Key: "arp_ignore", Old: "0", Set: "1"}}}
			err := topo.Do(be, func() (err error) {
				rec.BootID, rec.NetNS, err = hostID()
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			tc.change(&rec)
			data, err := json.Marshal(rec)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(a.statePath, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := topo.Do(be, a.Start); err != nil {
				t.Fatalf("Start: %v", err)
			}
			if err := a.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			requireSame(t, before, snapshot(t, topo, be))
			requireNoState(t, a)
		})
	}
}

// TestRemoveUndoesCrashedRun: switchyard remove --agent after an agent died
// without stopping leaves the host as it was before that agent started:
// its VIPs, sysctls, state file and pins all go. It used to remove the pins
// alone.
func TestRemoveUndoesCrashedRun(t *testing.T) {
	t.Parallel()
	topo, be, c, before := crashedRun(t)
	if !loHas(t, topo, be, netip.PrefixFrom(vip4, 32)) {
		t.Fatal("the crashed agent's VIP is not on lo: the crash undid it")
	}

	r := newAgent(t, c)
	if err := topo.Do(be, r.Remove); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoPins(t, c.PinDir)
	requireNoState(t, r)

	// While an agent runs, Remove touches nothing.
	a := startAgent(t, topo, be, c)
	running := snapshot(t, topo, be)
	r2 := newAgent(t, c)
	if err := topo.Do(be, r2.Remove); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "stop that agent (systemctl stop, or SIGTERM)") || strings.Contains(err.Error(), "before starting another") {
		t.Errorf("Remove while an agent runs = %v, want ErrInUse telling to stop it, not to start another", err)
	}
	requireSame(t, running, snapshot(t, topo, be))
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	requireSame(t, before, snapshot(t, topo, be))
}

// TestHostLockWaitIsBounded: an agent that holds the host lock too long
// (hung) makes another one fail with a message naming the lock, not wait
// forever; once it lets go, the lock is taken.
func TestHostLockWaitIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), hostLockName)
	holder, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = flockWithin(context.Background(), f, path, 100*time.Millisecond, slog.New(slog.DiscardHandler))
	if !errors.Is(err, errLockHeld) || !strings.Contains(err.Error(), "fuser -v "+path) {
		t.Fatalf("flockWithin() with the lock held = %v, want errLockHeld naming fuser -v %s", err, path)
	}
	// A stop asked for meanwhile (the agent's SIGTERM) ends the wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := flockWithin(ctx, f, path, time.Minute, slog.New(slog.DiscardHandler)); !errors.Is(err, context.Canceled) {
		t.Fatalf("flockWithin() with the lock held and the context cancelled = %v, want context.Canceled", err)
	}
	holder.Close() // releases the flock
	if err := flockWithin(context.Background(), f, path, 5*time.Second, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("flockWithin() once released = %v", err)
	}
}

// TestRefusedStartKeepsEarlierRun: an agent killed outright leaves its
// program attached on its pins, decapsulating to the VIPs it put on lo.
// A start that cannot load those pins (another release's, as in a
// downgrade) changes nothing: the VIPs, sysctls and record stay for the
// run that can, and the backend keeps serving. It used to undo the
// changes it had taken over, and the attached program then decapsulated
// packets for VIPs no longer on lo, which the stack dropped.
func TestRefusedStartKeepsEarlierRun(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	first := startAgent(t, topo, be, c)
	crash(t, first)
	record, err := os.ReadFile(first.statePath)
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, topo, be)
	// Pins this release cannot use, as another release's: one map pin
	// moved onto another's name (the counters onto the addresses, as
	// a start pins again the counters of the program on the link). The
	// attached program keeps its maps.
	addrs := filepath.Join(c.PinDir, "decap_addrs")
	if err := os.Remove(addrs); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(c.PinDir, "decap_stats"), addrs); err != nil {
		t.Fatal(err)
	}

	a := newAgent(t, c)
	err = topo.Do(be, a.Start)
	if !errors.Is(err, datapath.ErrPinnedIncompatible) {
		t.Fatalf("Start on another release's pins: %v, want %v", err, datapath.ErrPinnedIncompatible)
	}
	t.Logf("Start: %v", err)
	requireSame(t, before, snapshot(t, topo, be))
	for _, v := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
		if !loHas(t, topo, be, v) {
			t.Errorf("VIP %s left lo at the refused start, while the earlier run's program decapsulates to it", v)
		}
	}
	if before.xdp == "" {
		t.Error("the earlier run's decap program is not attached: the test proves nothing")
	}
	if got, err := os.ReadFile(a.statePath); err != nil {
		t.Errorf("the earlier run's record is gone after the refused start: %v", err)
	} else if string(got) != string(record) {
		t.Errorf("the refused start changed the earlier run's record:\n%s\nwas\n%s", got, record)
	}
}

// TestStateTempFilesOfKilledRunRemoved: an agent killed while it writes
// its record (between creating the temporary file and renaming it over the
// record, which each change at start does) leaves the temporary file; the
// next run, which holds the pin directory and so is the only writer of
// this record, removes it. They used to pile up in /run, one per such
// kill. Another agent's temporary file stays.
func TestStateTempFilesOfKilledRunRemoved(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	a := newAgent(t, c)
	dir := filepath.Dir(a.StatePath())
	stale := a.StatePath() + ".tmp2445199416"
	others := filepath.Join(dir, "agent-eth9.json.tmp558371805")
	for _, f := range []string{stale, others} {
		if err := os.WriteFile(f, []byte(`{"format":"switchyard-agent-state/2","sysc`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed run's temporary record %s is still there (stat: %v)", stale, err)
	}
	if _, err := os.Stat(others); err != nil {
		t.Errorf("another agent's temporary record %s: %v, want it left", others, err)
	}
}

// TestFailedTakeoverLeavesKilledRun: a start over a killed agent's pins
// that fails after it took over the killed run's changes leaves them as
// they are, recorded: the pinned program stays attached (a failed start
// does not remove pins it did not create) and goes on decapsulating to
// the VIPs on lo, so the backend keeps serving. The late failure used to
// remove the VIPs and restore the sysctls it had taken over, and the
// program then handed the stack packets for addresses no longer local,
// while a direct health check still passed; a failure while taking them
// over removed the state file, so the next start took the killed run's
// VIPs for the admin's. The next normal start takes everything over and
// its stop undoes it.
func TestFailedTakeoverLeavesKilledRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// prepare, after the kill, makes the start fail for a real
		// reason, which restore takes away; start starts a.
		prepare, restore func(t *testing.T, topo *topology.Topology, be string)
		start            func(topo *topology.Topology, be string, a *Agent) error
		want             string // in the start's error
	}{
		{
			// Late: adding the IPv6 VIP, after the program was loaded
			// and the killed run's VIPs and sysctls taken over.
			name: "IPv6 disabled on lo",
			prepare: func(t *testing.T, topo *topology.Topology, be string) {
				setSysctl(t, topo, be, "net.ipv6.conf.lo.disable_ipv6", "1")
			},
			restore: func(t *testing.T, topo *topology.Topology, be string) {
				setSysctl(t, topo, be, "net.ipv6.conf.lo.disable_ipv6", "0")
			},
			start: func(topo *topology.Topology, be string, a *Agent) error { return topo.Do(be, a.Start) },
			want:  "IPv6 is disabled on lo",
		},
		{
			// While taking over: the killed run's sysctls cannot be
			// opened for the write that would restore them.
			name:    "read-only /proc/sys",
			prepare: func(*testing.T, *topology.Topology, string) {},
			restore: func(*testing.T, *topology.Topology, string) {},
			start:   startReadOnlyProcSys,
			want:    "read-only file system",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topo, be, c, before := crashedRun(t)
			a := newAgent(t, c)
			killed, err := os.ReadFile(a.statePath)
			if err != nil {
				t.Fatalf("the killed agent's state file: %v", err)
			}
			tc.prepare(t, topo, be)
			afterKill := snapshot(t, topo, be)
			err = tc.start(topo, be, a)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want an error saying %q", err, tc.want)
			}
			t.Logf("Start: %v", err)
			if afterKill.xdp == "" {
				t.Fatal("the killed agent's program is not attached")
			}
			// Program, VIPs and sysctls as the killed run left them.
			requireSame(t, afterKill, snapshot(t, topo, be))
			if !loHas(t, topo, be, netip.PrefixFrom(vip4, 32)) {
				t.Error("the killed agent's VIP is no longer on lo while its program stays attached")
			}
			rec, got := readStateRecord(t, a.statePath, "the state file is gone after the failed start: the next start would take the killed run's changes for the admin's")
			if !slices.Contains(rec.VIPs, netip.PrefixFrom(vip4, 32)) || len(rec.Sysctls) == 0 {
				t.Errorf("the state file after the failed start no longer records the killed run's changes:\n%s\nwas\n%s", got, killed)
			}

			tc.restore(t, topo, be)
			requireNextRunUndoesAll(t, topo, be, c, before)
		})
	}
}

// TestFailedTakeoverInEmptyPinDirKeepsRecord: a killed agent whose pins
// are gone (a clean-up of bpffs) leaves its VIPs and sysctls recorded.
// A start in the empty pin directory (or `remove --agent`) that failed
// while it took them over removed the record all the same, as a failed
// start that owns its pins undoes what it did and drops the record: the
// VIPs and sysctls it had not yet taken over stayed on the host with no
// record, and the next start took the VIPs for the admin's and left them
// for good. The record now stays as the killed run wrote it, and the next
// start takes everything over.
func TestFailedTakeoverInEmptyPinDirKeepsRecord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		run  func(topo *topology.Topology, be string, a *Agent) error
	}{
		{"start", startReadOnlyProcSys},
		{"remove --agent", func(topo *topology.Topology, be string, a *Agent) error {
			return inReadOnlyProcSys(topo, be, a.Remove)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topo, be, c, before := crashedRun(t)
			if err := datapath.RemoveDecap(c.PinDir); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(c.PinDir, 0o700); err != nil {
				t.Fatal(err)
			}

			a := newAgent(t, c)
			// The killed run's first sysctl cannot be opened for the
			// write that would restore it.
			err := tc.run(topo, be, a)
			if err == nil || !strings.Contains(err.Error(), "read-only file system") {
				t.Fatalf("%s with /proc/sys read-only: %v, want a read-only file system error", tc.name, err)
			}
			t.Logf("%s: %v", tc.name, err)
			rec, data := readStateRecord(t, a.statePath, "the killed run's record is gone after the failed "+tc.name+": its VIPs are left on lo unrecorded")
			for _, p := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
				if !slices.Contains(rec.VIPs, p) {
					t.Errorf("the record after the failed %s lacks VIP %s:\n%s", tc.name, p, data)
				}
				if !loHas(t, topo, be, p) {
					t.Errorf("VIP %s left lo at the failed %s", p, tc.name)
				}
			}
			if len(rec.Sysctls) == 0 {
				t.Errorf("the record after the failed %s lists no sysctl:\n%s", tc.name, data)
			}

			requireNextRunUndoesAll(t, topo, be, c, before)
		})
	}
}

// TestCrashedRunSysctlIndexReused: a killed agent's state file records
// each setting of its interface with the interface's name and index, but
// `remove --agent` and the next run found the interface by the index
// alone: with the interface deleted and its index given to another device
// (`ip link add ... index N`, or one moved into the namespace), they set
// that device's arp_ignore, arp_announce and rp_filter back to the values
// the killed run had found on the deleted one, whenever the admin had
// given the new device the values the agent sets. They are the new
// device's own, and stay, with the line that the recorded interface is
// gone. An interface renamed since the crash, which the killed run's
// pinned link still drives, is followed as before.
func TestCrashedRunSysctlIndexReused(t *testing.T) {
	t.Parallel()
	const other = "syci0"
	keys := []string{"arp_ignore", "arp_announce", "rp_filter"}
	// found: eth0's values before the agent, which it records as old;
	// admin: the values the admin gives the device that takes the
	// index, the ones the agent sets, so that they look the agent's.
	found := map[string]string{"arp_ignore": "0", "arp_announce": "0", "rp_filter": "1"}
	admin := map[string]string{"arp_ignore": "1", "arp_announce": "2", "rp_filter": "2"}
	indexReusedTest{
		crashed: func(t *testing.T) (*topology.Topology, string, config.AgentConfig) {
			topo := newTopology(t)
			be := topo.Backend(1)
			for _, key := range keys {
				setSysctl(t, topo, be, "net.ipv4.conf.eth0."+key, found[key])
			}
			c := testConfig(topo)
			crash(t, startAgent(t, topo, be, c))
			for _, key := range keys {
				if got := sysctlValue(t, topo, be, "net.ipv4.conf.eth0."+key); got != admin[key] {
					t.Fatalf("eth0.%s = %s after the crash, want %s as the agent sets it", key, got, admin[key])
				}
			}
			return topo, be, c
		},
		reuse: func(t *testing.T, topo *topology.Topology, be string) int {
			index := topo.ReuseEthIndex(t, be, other, "syci1")
			for _, key := range keys {
				setSysctl(t, topo, be, "net.ipv4.conf."+other+"."+key, admin[key])
			}
			return index
		},
		requireLeft: func(t *testing.T, topo *topology.Topology, be, when string) {
			t.Helper()
			for _, key := range keys {
				if got := sysctlValue(t, topo, be, "net.ipv4.conf."+other+"."+key); got != admin[key] {
					t.Errorf("%s.%s = %s %s, want %s as the admin set it: it took the index of the deleted eth0 the record names, and its settings were never the agent's", other, key, got, when, admin[key])
				}
			}
		},
		requireGone: func(t *testing.T, logs *logBuffer, index int) {
			t.Helper()
			s := logs.String()
			for _, key := range keys {
				want := fmt.Sprintf("interface eth0 (index %d), whose sysctl net.ipv4.conf.eth0.%s the agent set, is gone: its sysctl record in ", index, key)
				if !strings.Contains(s, want) {
					t.Errorf("the agent did not say %q; it logged:\n%s", want, s)
				}
			}
			if want := fmt.Sprintf("index %d is %s now, left as it is", index, other); logs.count(want) != len(keys) {
				t.Errorf("the agent did not say %d times that %q; it logged:\n%s", len(keys), want, s)
			}
		},
		requireRestored: func(t *testing.T, topo *topology.Topology, be, renamed string) {
			t.Helper()
			for _, key := range keys {
				if got := sysctlValue(t, topo, be, "net.ipv4.conf."+renamed+"."+key); got != found[key] {
					t.Errorf("%s.%s (eth0 renamed) = %s after `remove --agent`, want %s as found before the agent", renamed, key, got, found[key])
				}
			}
		},
	}.run(t)
}
