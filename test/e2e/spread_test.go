package e2e

import (
	"math"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/demo"
)

// TestSpreadFollowsWeights: new connections are spread over the backends in
// proportion to their weights.
//
// Each of n connections (new source port, so a new 5-tuple) picks backend k
// with probability p_k = w_k / Σw, independently, so its count is binomial:
// the share has standard deviation sqrt(p(1-p)/n). With n = 800 that is
// 1.5 points for p = 1/4 and 1.8 points for p = 1/2. The tolerance is 4
// standard deviations plus one point for the Maglev table's own deviation
// from the weights (checked separately, below 1%): a correct balancer fails
// with a probability under 1e-4 per backend, while ignoring the weights
// (1/3 each) puts be3 16 points off.
func TestSpreadFollowsWeights(t *testing.T) {
	weights := []int{1, 1, 2}
	lab := newLab(t, demo.LabConfig{Weights: weights})
	ctx := testContext(t, 2*time.Minute)
	const n = 800
	sum := 0
	for _, w := range weights {
		sum += w
	}

	st, err := lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var newFlows0 uint64
	for _, v := range st.VIPs {
		if v.Name != demo.VIPWeb {
			continue
		}
		newFlows0 = v.NewFlows
		// The table itself: Maglev gives each backend a share of the slots
		// within a fraction of a percent of its weight.
		for k, b := range v.Backends {
			want := float64(weights[k]) / float64(sum)
			got := float64(b.TableSlots) / float64(v.TableSize)
			if math.Abs(got-want) > 0.01 {
				t.Errorf("%s holds %.2f%% of the table, want %.2f%% (weight %d of %d)", b.Name, 100*got, 100*want, weights[k], sum)
			}
		}
	}

	counts := spread(t, ctx, lab, demo.URL(demo.WebVIP, "/"), n)
	t.Logf("%d new connections: %s", n, format(counts))
	for k, w := range weights {
		name := demo.BackendName(k + 1)
		p := float64(w) / float64(sum)
		tol := 4*math.Sqrt(p*(1-p)/n) + 0.01
		share := float64(counts[name]) / n
		if math.Abs(share-p) > tol {
			t.Errorf("%s (weight %d) got %.1f%% of the connections, want %.1f%% ± %.1f", name, w, 100*share, 100*p, 100*tol)
		}
	}

	// Every request was a new flow through the XDP program (not, say, one
	// kept-alive connection).
	st, err = lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.VIPs {
		if v.Name == demo.VIPWeb && v.NewFlows-newFlows0 < n {
			t.Errorf("the datapath counted %d new flows for %d new connections", v.NewFlows-newFlows0, n)
		}
	}
}
