package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/demo"
)

// TestDrainingAVIPsLastBackendWarns: `switchyard drain` of a VIP's last
// backend in service does it (exit 0) and warns that the VIP's new flows
// are dropped from then on; a drain that leaves one in service does not.
func TestDrainingAVIPsLastBackendWarns(t *testing.T) {
	lab := newLab(t, demo.LabConfig{Prefix: "swk"})
	ctx := testContext(t, time.Minute)
	const warning = "switchyard drain: warning: VIP dns has no backend left for new flows"
	for _, be := range []string{"be1", "be2"} {
		out, err := lab.CLI(ctx, 1, "drain", "dns/"+be)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "warning") {
			t.Errorf("switchyard drain dns/%s with a backend left warns:\n%s", be, out)
		}
	}
	out, err := lab.CLI(ctx, 1, "drain", "dns/be3")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "drained: dns/be3") || !strings.Contains(out, warning) {
		t.Errorf("switchyard drain dns/be3, the last of dns, printed\n%s\nwant it drained and %q", out, warning)
	}
}
