package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/demo"
)

// TestHealthViaTunnel: a check via tunnel goes to the VIP, encapsulated
// to the backend, so a backend whose agent is stopped (no decap, the VIP
// off lo), which still answers on its own address, fails it, while a
// direct check of the same backend passes; with the agent back, it
// passes again. web (IPv4) and web6 (IPv6) check via tunnel, dns
// directly.
func TestHealthViaTunnel(t *testing.T) {
	lab := newLab(t, demo.LabConfig{Backends: 2})
	ctx := testContext(t, 2*time.Minute)
	s := lab.Spec()
	s.VIP(demo.VIPWeb).Health.Via = "tunnel"
	s.VIP(demo.VIPWeb6).Health.Via = "tunnel"
	if err := lab.WriteConfig(s); err != nil {
		t.Fatal(err)
	}
	if out, err := lab.Reload(ctx, 1); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	for _, vip := range []string{demo.VIPWeb, demo.VIPWeb6, demo.VIPDNS} {
		for _, be := range []string{"be1", "be2"} {
			if err := lab.WaitHealth(ctx, 1, vip, be, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.VIPs {
		want := map[string]string{demo.VIPWeb: "tunnel", demo.VIPWeb6: "tunnel", demo.VIPDNS: ""}[v.Name]
		if v.HealthVia != want {
			t.Errorf("status: VIP %s health_via %q, want %q", v.Name, v.HealthVia, want)
		}
	}
	if st.HealthTunnel["encapsulated"] == 0 || st.HealthTunnel["no_backend"]+st.HealthTunnel["too_big"]+st.HealthTunnel["error"] != 0 {
		t.Errorf("status: health_tunnel %v, want packets encapsulated and none dropped", st.HealthTunnel)
	}
	if out, err := lab.CLI(ctx, 1, "status"); err != nil || !strings.Contains(out, "checks via tunnel") {
		t.Errorf("switchyard status does not say the checks go via tunnel (%v):\n%s", err, out)
	}

	dns0 := backendOf(t, st, demo.VIPDNS, "be1")
	if err := lab.StopAgent(1); err != nil {
		t.Fatalf("agent stop: %v", err)
	}
	for _, vip := range []string{demo.VIPWeb, demo.VIPWeb6} {
		if err := lab.WaitHealth(ctx, 1, vip, "be1", false); err != nil {
			t.Fatal(err)
		}
	}
	st, err = lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, vip := range []string{demo.VIPWeb, demo.VIPWeb6} {
		if b := backendOf(t, st, vip, "be1"); !strings.Contains(b.HealthInfo, "through the tunnel to backend") {
			t.Errorf("%s/be1 down with reason %q, want one that says the check went through the tunnel", vip, b.HealthInfo)
		}
		if b := backendOf(t, st, vip, "be2"); !b.Healthy {
			t.Errorf("%s/be2 went down with be1's agent: %s", vip, b.HealthInfo)
		}
	}
	// The direct check of be1 goes on passing: its service still
	// answers on be1's own address.
	for tick := time.NewTicker(20 * time.Millisecond); ; {
		st, err := lab.Status(ctx, 1)
		if err == nil && backendOf(t, st, demo.VIPDNS, "be1").Checks >= dns0.Checks+4 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("dns/be1 not checked 4 more times: %v", ctx.Err())
		case <-tick.C:
		}
	}
	st, err = lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if b := backendOf(t, st, demo.VIPDNS, "be1"); !b.Healthy || b.FailedChecks != dns0.FailedChecks {
		t.Errorf("dns/be1 (checked directly) with its agent stopped: healthy=%t, failed checks %d -> %d (%s); want healthy, no failure",
			b.Healthy, dns0.FailedChecks, b.FailedChecks, b.HealthInfo)
	}

	if err := lab.StartAgent(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, vip := range []string{demo.VIPWeb, demo.VIPWeb6} {
		if err := lab.WaitHealth(ctx, 1, vip, "be1", true); err != nil {
			t.Fatal(err)
		}
	}
}

func backendOf(t *testing.T, st api.Status, vip, name string) api.Backend {
	t.Helper()
	for _, v := range st.VIPs {
		if v.Name != vip {
			continue
		}
		for _, b := range v.Backends {
			if b.Name == name {
				return b
			}
		}
	}
	t.Fatalf("status has no backend %s of VIP %s", name, vip)
	return api.Backend{}
}
