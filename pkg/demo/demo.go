package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// Prefix is the namespace prefix of `switchyard demo`: fixed, so that a run
// can clean up after an interrupted one.
const Prefix = "sydemo"

// Config configures the demo scenario.
type Config struct {
	// Binary is the switchyard binary to run in the lab. Required.
	Binary string
	// Out receives the demo's narration. Required.
	Out io.Writer
	// Requests is the number of requests of the spread step (default 300).
	Requests int
	// Keep leaves the lab running at the end, and says how to reach it and
	// how to remove it (Cleanup).
	Keep bool
}

// WorkDir is where the demo keeps its configuration files, sockets and
// logs.
func WorkDir() string { return filepath.Join(os.TempDir(), "switchyard-demo") }

// Cleanup removes whatever a demo left behind (after --keep, or an
// interrupted run): processes, namespaces, pins and the work directory.
// found reports whether there was anything to remove. While a demo runs it
// removes nothing and returns an error wrapping ErrRunning.
func Cleanup(binary string) (found bool, err error) {
	release, err := lock()
	if err != nil {
		return false, err
	}
	defer release()
	found = leftovers()
	return found, cleanup(binary)
}

func cleanup(binary string) error {
	return errors.Join(CleanupLeftovers(Prefix, binary), os.RemoveAll(WorkDir()))
}

const demoSteps = 8

// leftovers reports whether an earlier demo left anything behind.
func leftovers() bool {
	_, err := os.Stat(PinBase(Prefix))
	_, werr := os.Stat(WorkDir())
	return len(topology.Leftovers(Prefix)) > 0 || err == nil || werr == nil
}

// Run runs the demo: one balancer and three backends in namespaces, real
// HTTP through the VIP, a drain under a live connection, metrics and
// status; then it tears everything down, also when ctx ends (Ctrl-C) or a
// step fails. While another demo runs it touches nothing and returns an
// error wrapping ErrRunning.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Binary == "" || cfg.Out == nil {
		return errors.New("demo: Binary and Out are required")
	}
	// Held until the lab is gone, so that a second demo cannot take it for
	// an earlier run's leftovers and tear it down.
	release, err := lock()
	if err != nil {
		return err
	}
	defer release()
	if cfg.Requests <= 0 {
		cfg.Requests = 300
	}
	d := &demo{out: cfg.Out}
	start := time.Now()

	// An interrupted run leaves namespaces, processes and pins behind.
	if leftovers() {
		d.printf("removing what an earlier demo left behind…\n")
	}
	if err := cleanup(cfg.Binary); err != nil {
		return fmt.Errorf("remove the leftovers of an earlier demo: %w", err)
	}

	phases := map[string]int{"creating namespaces": 1, "starting backends": 2, "starting the balancer": 3}
	lab, err := NewLab(ctx, LabConfig{
		Prefix:   Prefix,
		Binary:   cfg.Binary,
		WorkDir:  WorkDir(),
		Progress: cfg.Out,
		OnPhase: func(p string) {
			d.step(phases[p], "%s…", p)
		},
	})
	if err != nil {
		os.RemoveAll(WorkDir())
		return err
	}
	keep := false
	defer func() {
		if keep {
			return
		}
		if err != nil && ctx.Err() == nil {
			d.printf("\nlast lines of the lab's logs:\n%s\n", indent(lab.Logs(8)))
		}
		d.step(demoSteps, "tearing down (processes, XDP programs and pins, namespaces)…")
		cerr := lab.Close()
		cerr = errors.Join(cerr, os.RemoveAll(WorkDir()))
		if cerr != nil {
			err = errors.Join(err, fmt.Errorf("teardown: %w", cerr))
		} else if err == nil {
			d.printf("done in %.1f s\n", time.Since(start).Seconds())
		}
	}()

	drained, err := d.scenario(ctx, lab, cfg.Requests)
	if err != nil {
		return err
	}
	if cfg.Keep {
		keep = true
		d.keepMessage(lab, drained)
	}
	return nil
}

type demo struct {
	out io.Writer
}

func (d *demo) step(n int, format string, args ...any) {
	fmt.Fprintf(d.out, "[%d/%d] "+format+"\n", append([]any{n, demoSteps}, args...)...)
}

func (d *demo) printf(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

// scenario runs steps 4 to 7 and returns the backend it drained.
func (d *demo) scenario(ctx context.Context, lab *Lab, requests int) (string, error) {
	var drained string
	web := URL(WebVIP, "/")
	backends := []string{BackendName(1), BackendName(2), BackendName(3)}

	d.step(4, "sending %d HTTP requests from the client to %s, each on a new TCP connection…", requests, web)
	counts, err := lab.Spread(ctx, web, requests, 8, 5*time.Second)
	if err != nil {
		return "", err
	}
	d.table(backends, counts)
	for _, b := range backends {
		if counts[b] == 0 {
			return "", fmt.Errorf("backend %s got none of %d requests", b, requests)
		}
	}

	d.step(5, "opening a long-lived connection through the VIP (GET /stream: a line every 100 ms)…")
	s, err := lab.OpenStream(ctx, WebVIP, 100*time.Millisecond)
	if err != nil {
		return "", err
	}
	defer s.Close()
	if err := s.Advance(withTimeout(ctx, 5*time.Second), 5); err != nil {
		return "", err
	}
	d.printf("      the stream landed on %s and has received %d lines\n", s.Backend(), s.Lines())

	drained = s.Backend()
	d.step(6, "draining %s while the stream runs: switchyard drain %s", drained, drained)
	out, err := lab.CLI(ctx, 1, "drain", drained)
	if err != nil {
		return "", err
	}
	d.printf("%s", indent(out))
	before := s.Lines()
	if err := s.Advance(withTimeout(ctx, 10*time.Second), 20); err != nil {
		return "", fmt.Errorf("the stream on the drained backend stopped: %w", err)
	}
	d.printf("      the stream keeps flowing: %d more lines from %s since the drain (longest gap %d ms)\n",
		s.Lines()-before, s.Backend(), s.MaxGap().Milliseconds())
	n := requests / 2
	d.printf("      %d new requests now:\n", n)
	counts, err = lab.Spread(ctx, web, n, 8, 5*time.Second)
	if err != nil {
		return "", err
	}
	d.table(backends, counts)
	if counts[drained] > 0 {
		return "", fmt.Errorf("the drained backend %s still got %d new requests", drained, counts[drained])
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	d.printf("      %s gets no new connections; its established one continues (%d lines so far)\n", drained, s.Lines())

	d.step(7, "what the operator sees: /metrics (excerpt), switchyard status, and a backend agent's status")
	metrics, err := lab.Metrics(ctx, 1)
	if err != nil {
		return "", err
	}
	d.printf("      $ curl http://127.0.0.1:%d/metrics   # inside %s\n", MetricsPort, lab.Topology().Balancer(1))
	d.printf("%s", indent(metricsExcerpt(metrics)))
	status, err := lab.CLI(ctx, 1, "status")
	if err != nil {
		return "", err
	}
	d.printf("      $ switchyard status --socket %s\n%s", lab.Socket(1), indent(status))
	agent, err := lab.AgentStatus(ctx, 1)
	if err != nil {
		return "", err
	}
	d.printf("      $ switchyard status --agent --socket %s   # %s's agent\n%s", lab.AgentSocket(1), BackendName(1), indent(agent))
	return drained, nil
}

// table prints counts per backend with shares and a bar.
func (d *demo) table(backends []string, counts map[string]int) {
	total := 0
	for _, c := range counts {
		total += c
	}
	d.printf("      %-8s %8s %7s\n", "backend", "requests", "share")
	for _, b := range backends {
		share := 0.0
		if total > 0 {
			share = 100 * float64(counts[b]) / float64(total)
		}
		d.printf("      %-8s %8d %6.1f%%  %s\n", b, counts[b], share, strings.Repeat("█", int(share/2.5+0.5)))
	}
	if f := counts[""]; f > 0 {
		d.printf("      %-8s %8d\n", "failed", f)
	}
}

// metricsExcerpt picks the lines a newcomer cares about from a scrape.
func metricsExcerpt(text string) string {
	want := []string{
		"switchyard_info", `switchyard_vip_new_flows_total{address="10.100.0.1",port="80"`,
		`switchyard_backend_healthy{`, `switchyard_backend_drained{`, "switchyard_conntrack_entries",
		"switchyard_config_generation",
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, w := range want {
			if strings.HasPrefix(line, w) && (!strings.Contains(w, "backend_") || strings.Contains(line, `vip="web"`)) {
				out = append(out, line)
				break
			}
		}
	}
	if len(out) == 0 {
		return "(no switchyard_* series in the scrape)\n"
	}
	slices.Sort(out)
	return strings.Join(out, "\n") + "\n"
}

func (d *demo) keepMessage(lab *Lab, drained string) {
	topo := lab.Topology()
	d.printf("%s", keepText(lab.Binary(), topo.NsPath(topo.Client()), topo.NsPath(topo.Balancer(1)), lab.Socket(1), lab.AgentSocket(1), drained, lab.Dir()))
}

// keepText says how to explore and remove a kept lab. Its commands name
// binary by its path: a demo run as bin/switchyard (make demo) has none on
// PATH.
func keepText(binary, clientNs, balancerNs, socket, agentSocket, drained, dir string) string {
	return fmt.Sprintf(`
The lab keeps running. Try:
  sudo nsenter --net=%s curl http://%s/
  sudo nsenter --net=%s curl -N 'http://%s/stream?count=50'
  sudo %s status --socket %s
  sudo %s undrain --socket %s %s
  sudo %s status --agent --socket %s
  sudo nsenter --net=%s curl http://127.0.0.1:%d/metrics
Configuration and logs: %s
Remove it with: sudo %s demo --cleanup
`, clientNs, WebVIP, clientNs, WebVIP,
		binary, socket, binary, socket, drained, binary, agentSocket, balancerNs, MetricsPort, dir, binary)
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return "      " + strings.Join(lines, "\n      ") + "\n"
}

// withTimeout is a child of ctx that ends after d; its resources are
// released when it ends (the demo is short-lived).
func withTimeout(ctx context.Context, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	context.AfterFunc(c, cancel)
	return c
}
