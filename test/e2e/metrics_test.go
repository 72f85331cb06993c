package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/switchyard-lb/switchyard/pkg/demo"
)

// TestMetricsLint runs promlint, Prometheus' own rules for names, units,
// help texts and types, over what the balancer and an agent really serve
// on /metrics once traffic has crossed them (the Go runtime's and process
// collectors' series included), before and after a drain and a reload
// that removes a VIP. Dashboards and alerts are written against these
// names: a problem is a bug to fix, and none is allowed. After the reload
// the removed VIP has no series left (its rows went, so must its series:
// stale series would be summed into dashboards), and no counter of the
// rest went backwards (rate() would read a drop as a reset, a spike).
func TestMetricsLint(t *testing.T) {
	lab := newLab(t, demo.LabConfig{})
	ctx := testContext(t, time.Minute)
	spread(t, ctx, lab, demo.URL(demo.WebVIP, "/"), 20)
	spread(t, ctx, lab, demo.URL(demo.Web6VIP, "/"), 20)
	if _, err := lab.UDP(ctx, demo.DNSVIP, "lint", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	before := lintScrapes(t, ctx, lab, "after traffic")

	if out, err := lab.CLI(ctx, 1, "drain", demo.VIPWeb+"/"+demo.BackendName(2)); err != nil {
		t.Fatalf("switchyard drain: %v\n%s", err, out)
	}
	spec := lab.Spec()
	spec.VIPs = slices.DeleteFunc(spec.VIPs, func(v demo.VIPSpec) bool { return v.Name == demo.VIPDNS })
	if err := lab.WriteConfig(spec); err != nil {
		t.Fatal(err)
	}
	if out, err := lab.Reload(ctx, 1); err != nil {
		t.Fatalf("switchyard reload: %v\n%s", err, out)
	}
	spread(t, ctx, lab, demo.URL(demo.WebVIP, "/"), 10)
	after := lintScrapes(t, ctx, lab, "after a drain and a reload that removed "+demo.VIPDNS)

	for series := range after {
		if strings.Contains(series, `vip="`+demo.VIPDNS+`"`) {
			t.Errorf("%s is still exported after its VIP was removed", series)
		}
	}
	for series, v := range before {
		name, _, _ := strings.Cut(series, "{")
		if !strings.HasSuffix(name, "_total") {
			continue
		}
		if w, ok := after[series]; ok && w < v {
			t.Errorf("%s went backwards over a drain and a reload: %v -> %v", series, v, w)
		}
	}
	if v, ok := after[`switchyard_backend_drained{address="10.2.2.2",backend="be2",vip="web"}`]; v != 1 {
		t.Errorf("switchyard_backend_drained of the drained web/be2 = %v (exported: %v), want 1", v, ok)
	}
}

// lintScrapes scrapes balancer 1 and agent 1, fails t for every problem
// promlint finds, and returns every sample of both, by series.
func lintScrapes(t *testing.T, ctx context.Context, lab *demo.Lab, when string) map[string]float64 {
	t.Helper()
	samples := map[string]float64{}
	for _, d := range []struct {
		name   string
		scrape func() (string, error)
	}{
		{"switchyard run", func() (string, error) { return lab.Metrics(ctx, 1) }},
		{"switchyard agent", func() (string, error) { return lab.AgentMetrics(ctx, 1) }},
	} {
		text, err := d.scrape()
		if err != nil {
			t.Fatalf("%s, %s: scrape /metrics: %v", d.name, when, err)
		}
		problems, err := promlint.New(strings.NewReader(text)).Lint()
		if err != nil {
			t.Fatalf("%s, %s: promlint cannot parse /metrics: %v\n%s", d.name, when, err, text)
		}
		for _, p := range problems {
			t.Errorf("%s, %s: %s: %s", d.name, when, p.Metric, p.Text)
		}
		for _, line := range strings.Split(text, "\n") {
			i := strings.LastIndexByte(line, ' ')
			if i < 0 || strings.HasPrefix(line, "#") {
				continue
			}
			samples[line[:i]] = metricValue(line, line[:i])
		}
	}
	return samples
}
