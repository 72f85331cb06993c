package balancer

import (
	"errors"
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

// TestHealthViaTunnelNeedsItsProgram: without the program that sends
// checks through the tunnel, a configuration with a check via tunnel is
// refused (sent plain, the check would be balanced to any backend), and
// the running one stays.
func TestHealthViaTunnelNeedsItsProgram(t *testing.T) {
	r := newRig(t, baseConfig, datapath.Options{})
	r.write(strings.Replace(baseConfig, "    health: {type: none}\n", "    health: {type: tcp, via: tunnel}\n", 1))
	_, err := r.b.Reload(r.ctx)
	if !errors.Is(err, ErrNoHealthTunnel) || !strings.Contains(err.Error(), "vips[0].health.via: tunnel, but the tunnel health-check program is not attached; set via: direct") {
		t.Fatalf("reload with a check via tunnel and no program: %v, want %v naming the field", err, ErrNoHealthTunnel)
	}
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.VIPs {
		if v.HealthVia != "" {
			t.Errorf("VIP %s: health_via %q after a refused reload, want the running configuration's (direct)", v.Name, v.HealthVia)
		}
	}
}
