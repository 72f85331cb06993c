package e2e

import (
	"slices"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/demo"
)

// TestFlowsNameBackendsAsTheirVIP: `switchyard flows` names each flow's
// backend as the flow's VIP names it. VIPs may give one address different
// names; flows named the address by the last VIP of the file that had it,
// so web's flows showed dns's names.
func TestFlowsNameBackendsAsTheirVIP(t *testing.T) {
	lab := newLab(t, demo.LabConfig{Prefix: "swk"})
	ctx := testContext(t, time.Minute)
	spec := lab.Spec()
	var webNames []string
	for i := range spec.VIPs {
		v := &spec.VIPs[i]
		for k := range v.Backends {
			switch v.Name {
			case demo.VIPWeb:
				webNames = append(webNames, v.Backends[k].Name)
			case demo.VIPDNS:
				// dns comes after web in the file.
				v.Backends[k].Name = "dns-" + v.Backends[k].Name
			}
		}
	}
	if err := lab.WriteConfig(spec); err != nil {
		t.Fatal(err)
	}
	if out, err := lab.Reload(ctx, 1); err != nil {
		t.Fatalf("switchyard reload: %v\n%s", err, out)
	}
	spread(t, ctx, lab, demo.URL(demo.WebVIP, "/"), 20)

	fl, err := lab.API(1).Flows(ctx, demo.VIPWeb, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(fl.Flows) < 20 {
		t.Fatalf("switchyard flows --vip web lists %d flows after 20 new connections", len(fl.Flows))
	}
	for _, f := range fl.Flows {
		if f.VIPName != demo.VIPWeb || !slices.Contains(webNames, f.Backend) {
			t.Errorf("flow %s -> %s (%s) is to backend %q (id %d); want one of web's backends %v",
				f.Client, f.VIP, f.VIPName, f.Backend, f.BackendID, webNames)
		}
	}
}
