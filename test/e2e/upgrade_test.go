package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/demo"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// previousRelease is the commit of the last release CI landed, which
// TestUpgradeFromPreviousRelease builds from git history and upgrades
// from. At each release, move it to the commit of the release that
// landed: an upgrade is supported from the previous release only.
const previousRelease = "bada6b7e05a3b3a026d43f43966f6816b7df9c13"

// TestUpgradeFromPreviousRelease: the binaries of the previous release,
// built from git history, run the balancer and the agents with live
// traffic; this tree's binaries then take over their pins and state. No
// established flow breaks or changes backend, every counter carries on
// (the new ones from 0), and the agent takes over the old agent's host
// changes. A downgrade is refused as documented and leaves the datapath
// forwarding; `switchyard remove` removes the upgraded pins.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip(notRoot)
	}
	old := buildPreviousRelease(t)
	lab := newLab(t, demo.LabConfig{Binary: old, Backends: 2})
	ctx := testContext(t, 2*time.Minute)
	web := demo.URL(demo.WebVIP, "/")

	var streams []*demo.Stream
	t.Cleanup(func() {
		for _, s := range streams {
			s.Close()
		}
	})
	for _, vip := range []netip.AddrPort{demo.WebVIP, demo.WebVIP, demo.WebVIP, demo.Web6VIP} {
		s, err := lab.OpenStream(within(t, ctx, 5*time.Second), vip, streamInterval)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	udp := dialUDP(t, ctx, lab)
	udpBackend := udp.echo(t, "before the upgrade")
	spread(t, ctx, lab, web, 20)
	flowing(t, ctx, "under the previous release", streams)

	before := snapshot(t, ctx, lab)
	oldTag := before.status.ProgramTag

	// The balancer: stopped, this tree's binary started on its pins.
	if err := lab.StopDaemon(1); err != nil {
		t.Fatalf("stop the previous release's daemon: %v", err)
	}
	if err := lab.SetBinary(binary); err != nil {
		t.Fatal(err)
	}
	if err := lab.StartDaemon(ctx, 1); err != nil {
		t.Fatalf("start this release's daemon on the previous release's pins: %v", err)
	}
	// The agents: killed, as their clean stop would undo everything
	// (program, pins, VIPs); this release's agent takes over.
	for j := 1; j <= 2; j++ {
		lab.Agent(j).Kill()
		if err := lab.StartAgent(ctx, j); err != nil {
			t.Fatalf("start this release's agent on the previous release's pins: %v", err)
		}
		if log := lab.Agent(j).Tail(100); !strings.Contains(log, "an earlier run did not stop cleanly: taking over its changes") {
			t.Errorf("be%d: this release's agent did not take over the previous one's state file:\n%s", j, log)
		}
	}
	flowing(t, ctx, "after the upgrade", streams)
	if b := udp.echo(t, "after the upgrade"); b != udpBackend {
		t.Errorf("the UDP flow moved from %s to %s in the upgrade", udpBackend, b)
	}
	spread(t, ctx, lab, web, 20)

	after := snapshot(t, ctx, lab)
	// A release whose balancer object changed runs other instructions
	// (unless only line info changed, which the tag does not see); one
	// whose object did not runs the same ones. Either way the daemon
	// replaced the pinned program.
	if !objectChanged(t, balancerObject) && after.status.ProgramTag != oldTag {
		t.Errorf("program tag %s after the upgrade, the previous release's %s, though the balancer object is unchanged", after.status.ProgramTag, oldTag)
	}
	if log := lab.Daemon(1).Tail(100); !strings.Contains(log, "program replaced in place") {
		t.Errorf("the daemon did not report replacing the pinned program:\n%s", log)
	}
	checkFlowsKept(t, before.flows, after.flows)
	checkCountersKept(t, "switchyard status", before.counters(), after.counters())
	checkCountersKept(t, "balancer metrics", before.metrics, after.metrics)
	for j := range before.agents {
		checkCountersKept(t, fmt.Sprintf("be%d status --agent", j+1), toFloat(before.agents[j].Counters), toFloat(after.agents[j].Counters))
		checkCountersKept(t, fmt.Sprintf("be%d agent metrics", j+1), before.agentMetrics[j], after.agentMetrics[j])
	}
	for _, c := range []struct {
		what string
		m    map[string]float64
		key  string
	}{
		{"switchyard status", after.counters(), "counters drop_invalid_source"},
		{"balancer metrics", after.metrics, `switchyard_datapath_drops_total{reason="invalid_source"}`},
		{"be1 status --agent", toFloat(after.agents[0].Counters), "bad_outer_csum"},
		{"be1 status --agent", toFloat(after.agents[0].Counters), "bad_outer_ip_len"},
		{"be1 status --agent", toFloat(after.agents[0].Counters), "bad_outer_udp_len"},
		{"be1 status --agent", toFloat(after.agents[0].Counters), "bad_outer_udp_csum"},
		{"be1 status --agent", toFloat(after.agents[0].Counters), "bad_outer_src"},
		{"be1 agent metrics", after.agentMetrics[0], `switchyard_agent_bad_outer_packets_total{reason="csum"}`},
		{"be1 agent metrics", after.agentMetrics[0], `switchyard_agent_bad_outer_packets_total{reason="ip_len"}`},
		{"be1 agent metrics", after.agentMetrics[0], `switchyard_agent_bad_outer_packets_total{reason="udp_len"}`},
		{"be1 agent metrics", after.agentMetrics[0], `switchyard_agent_bad_outer_packets_total{reason="udp_csum"}`},
		{"be1 agent metrics", after.agentMetrics[0], `switchyard_agent_bad_outer_packets_total{reason="src"}`},
	} {
		if v, ok := c.m[c.key]; !ok || v != 0 {
			t.Errorf("%s after the upgrade: %s = %v (present %t), want 0", c.what, c.key, v, ok)
		}
	}
	checkStreams(t, streams)

	t.Run("Downgrade", func(t *testing.T) {
		// The previous release takes this one's pins if their maps are
		// the same, and refuses them as documented if not. Either way
		// the datapath forwards throughout. An unchanged object must be
		// taken; a changed one may be either, as only line info may have
		// changed.
		if err := lab.StopDaemon(1); err != nil {
			t.Fatalf("daemon stop: %v", err)
		}
		if err := lab.SetBinary(old); err != nil {
			t.Fatal(err)
		}
		downgrade(t, "daemon", balancerObject, lab.StartDaemon(ctx, 1), lab.Daemon(1).Tail(30))
		// The agent: killed, as its clean stop removes its pins. Refusing
		// them, the previous release leaves the killed agent's changes
		// (VIPs on lo, sysctls) in place, so be1 keeps serving.
		lab.Agent(1).Kill()
		downgrade(t, "agent", decapObject, lab.StartAgent(ctx, 1), lab.Agent(1).Tail(30))
		if st, err := lab.BackendState(1); err != nil {
			t.Fatal(err)
		} else if !st.XDPAttached {
			t.Errorf("no XDP program on be1's eth0 after the downgrade of its agent")
		}
		if l, err := lab.Topology().Link(lab.Topology().Balancer(1), topology.EthName); err != nil {
			t.Fatal(err)
		} else if x := l.Attrs().Xdp; x == nil || !x.Attached {
			t.Errorf("no XDP program on lb1's eth0 after the downgrade")
		}
		flowing(t, ctx, "after the downgrade", streams)
		checkStreams(t, streams)
		if err := lab.StopDaemon(1); err != nil {
			t.Errorf("stop the previous release's daemon: %v", err)
		}
		if a := lab.Agent(1); a != nil && a.Running() {
			a.Kill()
		}

		// Back to this release, which finds its own pins.
		if err := lab.SetBinary(binary); err != nil {
			t.Fatal(err)
		}
		if err := lab.StartAgent(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if err := lab.StartDaemon(ctx, 1); err != nil {
			t.Fatal(err)
		}
		flowing(t, ctx, "back on this release", streams)
		spread(t, ctx, lab, web, 20)
		// The downgrade changed no pin: flows and counters go on.
		back := snapshot(t, ctx, lab)
		checkFlowsKept(t, after.flows, back.flows)
		checkCountersKept(t, "switchyard status", after.counters(), back.counters())
		checkCountersKept(t, "balancer metrics", after.metrics, back.metrics)
		for j := range after.agents {
			checkCountersKept(t, fmt.Sprintf("be%d status --agent", j+1), toFloat(after.agents[j].Counters), toFloat(back.agents[j].Counters))
			checkCountersKept(t, fmt.Sprintf("be%d agent metrics", j+1), after.agentMetrics[j], back.agentMetrics[j])
		}
	})

	t.Run("Remove", func(t *testing.T) {
		for _, s := range streams {
			s.Close()
		}
		streams = nil
		if err := lab.StopDaemon(1); err != nil {
			t.Fatalf("daemon stop: %v", err)
		}
		if out, err := exec.CommandContext(ctx, binary, "remove", "--config", lab.ConfigPath(1)).CombinedOutput(); err != nil {
			t.Fatalf("switchyard remove after the upgrade: %v\n%s", err, out)
		}
		if _, err := os.Stat(lab.PinDir(1)); !os.IsNotExist(err) {
			t.Errorf("pin directory %s after switchyard remove: %v, want it gone", lab.PinDir(1), err)
		}
		if l, err := lab.Topology().Link(lab.Topology().Balancer(1), topology.EthName); err != nil {
			t.Fatal(err)
		} else if x := l.Attrs().Xdp; x != nil && x.Attached {
			t.Errorf("XDP program still on lb1's eth0 after switchyard remove")
		}
	})
}

// The compiled objects whose maps the pins hold, relative to the
// module root.
const (
	balancerObject = "pkg/datapath/balancer_bpfel.o"
	decapObject    = "pkg/datapath/decap_bpfel.o"
)

// objectChanged reports whether the object at path (relative to the
// module root) differs between previousRelease and this tree.
func objectChanged(t *testing.T, path string) bool {
	t.Helper()
	err := exec.Command("git", "-C", moduleRoot(), "diff", "--quiet", previousRelease, "--", path).Run()
	if err == nil {
		return false
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		return true
	}
	t.Fatalf("git diff %s -- %s: %v", previousRelease, path, err)
	return false
}

// downgrade judges the start of the previous release's daemon or agent
// on this release's pins: err is what the start returned, log the
// process's last lines.
func downgrade(t *testing.T, what, object string, err error, log string) {
	t.Helper()
	switch {
	case err == nil:
		t.Logf("the previous release's %s took this release's pins", what)
	case !objectChanged(t, object):
		t.Errorf("the previous release's %s refused this release's pins, though %s is unchanged: %v\n%s", what, object, err, log)
	case !strings.Contains(log, "pinned maps are incompatible with this program"):
		t.Errorf("the previous release's %s failed, but not with the documented error: %v\n%s", what, err, log)
	default:
		t.Logf("the previous release's %s refused this release's pins, as documented", what)
	}
}

// buildPreviousRelease builds the switchyard binary of previousRelease
// from this repository's git history, with the module cache and build
// cache of this one, and returns its path.
func buildPreviousRelease(t *testing.T) string {
	t.Helper()
	start := time.Now()
	root := moduleRoot()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("building the previous release (%s) needs git: %v; install git", previousRelease, err)
	}
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", previousRelease+"^{commit}").CombinedOutput(); err != nil {
		t.Fatalf("the previous release's commit %s is not in the git history of %s (%v %s): run the test in a full clone (`git fetch --unshallow`), or, if it is no longer the last landed release, move previousRelease to the commit of the one that is",
			previousRelease, root, err, strings.TrimSpace(string(out)))
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := exec.Command("git", "-C", root, "archive", "--format=tar", previousRelease)
	extract := exec.Command("tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	extract.Stdin = pipe
	var archiveErr, extractErr strings.Builder
	archive.Stderr, extract.Stderr = &archiveErr, &extractErr
	if err := archive.Start(); err != nil {
		t.Fatalf("git archive %s: %v", previousRelease, err)
	}
	if err := extract.Run(); err != nil {
		archive.Wait()
		t.Fatalf("extract the previous release %s: %v %s", previousRelease, err, extractErr.String())
	}
	if err := archive.Wait(); err != nil {
		t.Fatalf("git archive %s: %v %s", previousRelease, err, archiveErr.String())
	}
	out := filepath.Join(dir, "switchyard")
	if err := build(src, out); err != nil {
		t.Fatalf("build the previous release %s: %v", previousRelease, err)
	}
	t.Logf("built the previous release %s in %s", previousRelease[:12], time.Since(start).Round(time.Millisecond))
	return out
}

// udpFlow is one UDP flow from the client to the dns VIP: one socket, so
// one 5-tuple throughout.
type udpFlow struct {
	conn net.Conn
	seq  int
}

func dialUDP(t *testing.T, ctx context.Context, lab *demo.Lab) *udpFlow {
	t.Helper()
	c, err := lab.Topology().Dialer(lab.Topology().Client()).DialContext(ctx, "udp", demo.DNSVIP.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpFlow{conn: c}
}

// echo sends a datagram on the flow (again, up to 5 times, as datagrams
// can be lost) and returns the backend that echoed it.
func (f *udpFlow) echo(t *testing.T, step string) string {
	t.Helper()
	f.seq++
	payload := "seq=" + strconv.Itoa(f.seq)
	buf := make([]byte, 2048)
	for range 5 {
		if _, err := f.conn.Write([]byte(payload)); err != nil {
			t.Fatalf("%s: UDP: %v", step, err)
		}
		f.conn.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, err := f.conn.Read(buf)
			if err != nil {
				break
			}
			// An answer to an earlier, resent datagram is skipped.
			if backend, rest, ok := strings.Cut(string(buf[:n]), " "); ok && rest == payload {
				return strings.TrimPrefix(backend, "backend=")
			}
		}
	}
	t.Fatalf("%s: no UDP echo of %q from the dns VIP in 5 tries", step, payload)
	return ""
}

// upgradeSnapshot is what a user sees of the lab at one moment.
type upgradeSnapshot struct {
	status       api.Status
	flows        []api.Flow
	metrics      map[string]float64
	agents       []api.AgentStatus
	agentMetrics []map[string]float64
}

func snapshot(t *testing.T, ctx context.Context, lab *demo.Lab) upgradeSnapshot {
	t.Helper()
	var s upgradeSnapshot
	var err error
	if s.status, err = lab.Status(ctx, 1); err != nil {
		t.Fatal(err)
	}
	flows, err := lab.API(1).Flows(ctx, "", api.MaxFlowsLimit)
	if err != nil {
		t.Fatal(err)
	}
	s.flows = flows.Flows
	text, err := lab.Metrics(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	s.metrics = counterSeries(text)
	for j := 1; j <= 2; j++ {
		st, err := api.NewClient(lab.AgentSocket(j)).AgentStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.agents = append(s.agents, st)
		text, err := lab.AgentMetrics(ctx, j)
		if err != nil {
			t.Fatal(err)
		}
		s.agentMetrics = append(s.agentMetrics, counterSeries(text))
	}
	return s
}

// counters are the status's counters, global and per VIP and backend.
func (s upgradeSnapshot) counters() map[string]float64 {
	m := map[string]float64{}
	for k, v := range s.status.Counters {
		m["counters "+k] = float64(v)
	}
	for _, v := range s.status.VIPs {
		for k, n := range map[string]uint64{"packets": v.Packets, "bytes": v.Bytes, "new_flows": v.NewFlows, "conn_hits": v.ConnHits, "conn_misses": v.ConnMisses} {
			m["vip "+v.Name+" "+k] = float64(n)
		}
		for _, b := range v.Backends {
			m["backend "+v.Name+"/"+b.Name+" packets"] = float64(b.Packets)
			m["backend "+v.Name+"/"+b.Name+" bytes"] = float64(b.Bytes)
		}
	}
	return m
}

func toFloat(c map[string]uint64) map[string]float64 {
	m := map[string]float64{}
	for k, v := range c {
		m[k] = float64(v)
	}
	return m
}

// counterSeries are the switchyard counters (_total) of a scrape that
// the datapath keeps: the health checks' counters and the scrape and
// reload failures count from the daemon's start.
func counterSeries(text string) map[string]float64 {
	daemonLife := []string{"switchyard_backend_checks_total", "switchyard_backend_check_failures_total",
		"switchyard_config_reload_failures_total", "switchyard_scrape_errors_total", "switchyard_agent_scrape_errors_total"}
	m := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "switchyard_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		name, _, _ := strings.Cut(line[:i], "{")
		if !strings.HasSuffix(name, "_total") || slices.Contains(daemonLife, name) {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// checkCountersKept fails t for every counter of before that is missing
// from after or went backwards.
func checkCountersKept(t *testing.T, what string, before, after map[string]float64) {
	t.Helper()
	for k, v := range before {
		w, ok := after[k]
		switch {
		case !ok:
			t.Errorf("%s: %s = %v before, missing after", what, k, v)
		case w < v:
			t.Errorf("%s: %s went backwards: %v -> %v", what, k, v, w)
		}
	}
}

// checkFlowsKept fails t for every flow recorded before that is gone
// after or recorded with another backend.
func checkFlowsKept(t *testing.T, before, after []api.Flow) {
	t.Helper()
	type key struct{ proto, client, vip string }
	now := map[key]api.Flow{}
	for _, f := range after {
		now[key{f.Protocol, f.Client, f.VIP}] = f
	}
	for _, f := range before {
		g, ok := now[key{f.Protocol, f.Client, f.VIP}]
		switch {
		case !ok:
			t.Errorf("flow %s %s -> %s (%s) is no longer in the connection table", f.Protocol, f.Client, f.VIP, f.Backend)
		case g.Backend != f.Backend || g.BackendID != f.BackendID:
			t.Errorf("flow %s %s -> %s moved from %s (id %d) to %s (id %d)", f.Protocol, f.Client, f.VIP, f.Backend, f.BackendID, g.Backend, g.BackendID)
		}
	}
	t.Logf("%d flows before, %d after", len(before), len(after))
}
