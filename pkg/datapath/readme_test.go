package datapath

import (
	"os"
	"path/filepath"
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

// The README's datapath benchmark figures name the commands that produced
// them: each `go test` command of its "Datapath, inside the kernel"
// section is one scripts/bench.sh (make bench) runs, flags and all (the
// figures are medians of its -count runs of -benchtime packets), and they
// name both benchmarks the table comes from.
func TestREADMEBenchmarkCommands(t *testing.T) {
	text := strings.ReplaceAll(readme.Section(t, "### Datapath, inside the kernel"), "\n", " ")
	bench, err := os.ReadFile(filepath.Join("..", "..", "scripts", "bench.sh"))
	if err != nil {
		t.Fatal(err)
	}
	cmds := regexp.MustCompile("`(go test [^`]*)`").FindAllStringSubmatch(text, -1)
	var named []string
	for _, c := range cmds {
		if !strings.Contains(string(bench), c[1]+" ") {
			t.Errorf("the README's datapath benchmark command %q is not one make bench runs (scripts/bench.sh)", c[1])
		}
		for _, b := range []string{"BenchmarkDatapath", "BenchmarkRatios"} {
			if strings.Contains(c[1], b) {
				named = append(named, b)
			}
		}
	}
	if len(named) != 2 {
		t.Errorf("the README's datapath benchmark commands name %v, want BenchmarkDatapath and BenchmarkRatios", named)
	}
}
