package datapath

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/test/readme"
)

// readmeTerms are the terms a README list defines: each in backquotes and
// followed by sep, as in "`fragment` (IP fragment to a VIP address)".
func readmeTerms(text, sep string) []string {
	var out []string
	for _, m := range regexp.MustCompile("`([a-z0-9_]+)`"+regexp.QuoteMeta(sep)).FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

// The README lists every drop reason and event the balancer counts, and
// every reason of the agent's drops and bad outer headers, each with what
// it means, and none that is not counted: an operator reads a rising
// series' meaning there.
func TestREADMENamesEveryCounter(t *testing.T) {
	var drops, events, agentReasons []string
	for _, n := range statNames {
		if n == "" {
			continue
		}
		if r, ok := strings.CutPrefix(n, "drop_"); ok {
			drops = append(drops, r)
		} else {
			events = append(events, n)
		}
	}
	// Derived in Stats, not counted by the program.
	events = append(events, "conn_evicted")
	for _, n := range decapStatNames {
		for _, p := range []string{"drop_", "bad_outer_"} {
			if r, ok := strings.CutPrefix(n, p); ok {
				agentReasons = append(agentReasons, r)
			}
		}
	}
	for _, tc := range []struct {
		start, sep string // sep follows a term the README defines
		names      []string
	}{
		{"Drop reasons (`switchyard_datapath_drops_total{reason}`", " (", drops},
		{"Events (`switchyard_datapath_events_total{event}`)", " (", events},
		{"**Agent metrics** on", ":", agentReasons},
	} {
		text := strings.ReplaceAll(readme.Item(t, tc.start), "\n", " ")
		for _, n := range tc.names {
			if !strings.Contains(text, "`"+n+"`") {
				t.Errorf("the README's %q... does not name %s", tc.start, n)
			}
		}
		for _, n := range readmeTerms(text, tc.sep) {
			if !slices.Contains(tc.names, n) && !strings.HasPrefix(n, "switchyard_") {
				t.Errorf("the README's %q... names %s, which is not counted", tc.start, n)
			}
		}
	}
}
