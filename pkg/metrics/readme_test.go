package metrics_test

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-lb/switchyard/pkg/agent"
	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/metrics"
	"github.com/switchyard-lb/switchyard/test/readme"
)

// readmeMetrics are the metrics a README item names, each with the label
// sets written after it (sorted, joined by commas; "" for none), its
// shorthand expanded: `switchyard_vip_{packets,bytes}_total{vip,address}`
// names switchyard_vip_packets_total and switchyard_vip_bytes_total, each
// with the labels vip and address. A label set written alone (as in
// "each `{vip,backend,address}`") belongs to every metric before it that
// was written without one.
func readmeMetrics(item string) map[string][]string {
	out := map[string][]string{}
	var bare []string
	span := regexp.MustCompile("`([^`]*)`")
	name := regexp.MustCompile(`^(switchyard_[a-z_]*)(?:\{([a-z_,]+)\}([a-z_]+))?(?:\{([a-z_,]+)\})?$`)
	labelSet := func(s string) string {
		l := strings.Split(s, ",")
		slices.Sort(l)
		return strings.Join(l, ",")
	}
	for _, m := range span.FindAllStringSubmatch(strings.ReplaceAll(item, "\n", " "), -1) {
		s := m[1]
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") && !strings.Contains(s, "=") {
			for _, n := range bare {
				out[n] = append(out[n], labelSet(s[1:len(s)-1]))
			}
			bare = nil
			continue
		}
		p := name.FindStringSubmatch(s)
		if p == nil {
			continue
		}
		names := []string{p[1]}
		if p[2] != "" {
			names = nil
			for _, mid := range strings.Split(p[2], ",") {
				names = append(names, p[1]+mid+p[3])
			}
		}
		for _, n := range names {
			if p[4] == "" {
				out[n] = append(out[n], "")
				bare = append(bare, n)
			} else {
				out[n] = append(out[n], labelSet(p[4]))
			}
		}
		if p[4] != "" {
			bare = nil
		}
	}
	return out
}

// described are the metrics c describes, each with its labels (sorted,
// joined by commas).
func described(c prometheus.Collector) map[string]string {
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	desc := regexp.MustCompile(`fqName: "([^"]*)".*variableLabels: \{([^}]*)\}`)
	out := map[string]string{}
	for d := range ch {
		m := desc.FindStringSubmatch(d.String())
		l := strings.Split(m[2], ",")
		slices.Sort(l)
		out[m[1]] = strings.Join(l, ",")
	}
	return out
}

// The README's Metrics and Agent metrics items name every metric the
// balancer and the agent export, each with its labels, and no metric
// that neither exports: dashboards and alerts are written from them.
func TestREADMENamesEveryMetric(t *testing.T) {
	ac := config.DefaultAgentConfig()
	ac.Interface = "eth0"
	a, err := agent.New(agent.Config{Agent: ac, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]string{}
	for _, tc := range []struct {
		start string
		c     prometheus.Collector
	}{
		{"- **Metrics** on", metrics.NewCollector(func(context.Context) (api.Status, error) { return api.Status{}, nil }, nil)},
		{"- **Agent metrics** on", a.Collector()},
	} {
		readme := readmeMetrics(readme.Item(t, tc.start))
		for name, labels := range described(tc.c) {
			exported[name] = labels
			sets, ok := readme[name]
			switch {
			case !ok:
				t.Errorf("the README's %q item does not name %s", tc.start, name)
			case !slices.Contains(sets, labels):
				t.Errorf("the README's %q item gives %s the labels %q, not {%s}", tc.start, name, sets, labels)
			}
		}
	}
	for _, start := range []string{"- **Metrics** on", "- **Agent metrics** on"} {
		for name := range readmeMetrics(readme.Item(t, start)) {
			// A prefix ("no other `switchyard_agent_` series") is no name.
			if _, ok := exported[name]; !ok && !strings.HasSuffix(name, "_") {
				t.Errorf("the README's %q item names %s, which is not exported", start, name)
			}
		}
	}
}
