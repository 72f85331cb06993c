package e2e

import (
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/demo"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// TestGenericModeGRO: a balancer in generic (skb) mode turns generic
// receive offload off on its interface, and says so: generic XDP runs
// after GRO, so with it on the program saw the segments of a bulk upload
// merged into packets larger than the MTU, answered them "too big", and
// the upload stalled. In native mode GRO runs after XDP and stays as it
// is. The lab turns GRO on first, as a NIC's driver has it.
//
// The stall itself does not show in the lab: a veth receives each segment
// the router forwards on its own, with nothing to merge it with.
func TestGenericModeGRO(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		wantGRO bool
	}{
		{"generic", false},
		{"native", true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			lb := ""
			lab := newLab(t, demo.LabConfig{Prefix: "syg", Backends: 1, AttachMode: tc.mode, BeforeStart: func(l *demo.Lab) error {
				lb = l.Topology().Balancer(1)
				return l.Topology().SetGRO(lb, topology.EthName, true)
			}})
			on, err := lab.Topology().GRO(lb, topology.EthName)
			if err != nil {
				t.Fatal(err)
			}
			if on != tc.wantGRO {
				t.Errorf("GRO of %s in %s is %t after `switchyard run` attached in %s mode, want %t", topology.EthName, lb, on, tc.mode, tc.wantGRO)
			}
			logged := strings.Contains(lab.Logs(200), "generic receive offload (GRO) turned off")
			if !tc.wantGRO && (!logged || !strings.Contains(lab.Logs(200), "`switchyard remove` or a native-mode start turns it on again") || !strings.Contains(lab.Logs(200), "record=")) {
				t.Errorf("the daemon did not log that it turned GRO off, what turns it on again, and where it recorded it:\n%s", lab.Logs(200))
			}
			if tc.wantGRO && logged {
				t.Errorf("the daemon logged that it turned GRO off in %s mode:\n%s", tc.mode, lab.Logs(200))
			}
		})
	}
}
