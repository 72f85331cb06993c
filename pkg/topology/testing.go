package topology

import (
	"errors"
	"math/rand/v2"
	"os"
	"testing"
)

const prefixAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// RandomPrefix returns base followed by random letters and digits up to
// MaxPrefixLen characters, so that parallel runs get distinct namespace
// names. base is cut to MaxPrefixLen-2 characters so that at least two
// random characters remain. Few random characters can collide; New then
// fails with ErrPrefixInUse (it never takes over existing namespaces), and
// the caller draws again, as NewForTest does.
func RandomPrefix(base string) string {
	if len(base) > MaxPrefixLen-2 {
		base = base[:MaxPrefixLen-2]
	}
	b := []byte(base)
	for len(b) < MaxPrefixLen {
		b = append(b, prefixAlphabet[rand.IntN(len(prefixAlphabet))])
	}
	return string(b)
}

// NewForTest builds a topology for a test and closes it in tb.Cleanup.
// cfg.Prefix is the base of a RandomPrefix ("sytopo", "sye2e"); on a name
// collision NewForTest draws another. It skips the test, loudly, when not
// running as root, and fails it when the topology cannot be built. First
// it sweeps what killed test runs left (SweepTestOrphans).
func NewForTest(tb testing.TB, cfg Config) *Topology {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("SKIPPED: NOT ROOT — this test builds network namespaces and needs root (run `sudo go test`)")
	}
	SweepTestOrphans(tb.Logf)
	base := cfg.Prefix
	for attempt := 0; ; attempt++ {
		cfg.Prefix = RandomPrefix(base)
		topo, err := New(cfg)
		if errors.Is(err, ErrPrefixInUse) && attempt < 10 {
			continue
		}
		if err != nil {
			tb.Fatalf("build topology: %v", err)
		}
		tb.Cleanup(func() {
			if err := topo.Close(); err != nil {
				tb.Errorf("close topology %s: %v", cfg.Prefix, err)
			}
		})
		return topo
	}
}

// SweepTestOrphans runs SweepOrphans and logs a line for each topology it
// removed, and its error: leftovers that cannot be removed are reported,
// not a reason to fail a test that does not build on them.
func SweepTestOrphans(logf func(format string, args ...any)) {
	swept, err := SweepOrphans()
	for _, o := range swept {
		logf("swept the leftovers of a killed run: %s", o)
	}
	if err != nil {
		logf("sweeping the leftovers of killed runs: %v", err)
	}
}
