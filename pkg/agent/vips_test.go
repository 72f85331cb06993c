package agent

import (
	"strings"
	"testing"
)

// TestIPv6VIPWithIPv6DisabledOnLo: with IPv6 turned off on lo the kernel
// refuses an IPv6 VIP with EACCES, which the agent passed on as a bare
// "permission denied" to a user who is root. The error names the VIP, the
// sysctl and the fix, and the partial start is undone.
func TestIPv6VIPWithIPv6DisabledOnLo(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	setSysctl(t, topo, be, "net.ipv6.conf.lo.disable_ipv6", "1")
	setSysctl(t, topo, be, "net.ipv4.conf.eth0.rp_filter", "1")
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	a := newAgent(t, c)
	err := topo.Do(be, a.Start)
	if err == nil {
		t.Fatal("Start succeeded with IPv6 disabled on lo")
	}
	t.Logf("Start: %v", err)
	for _, want := range []string{vip6.String(), "net.ipv6.conf.lo.disable_ipv6", "set it to 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start: %v; want it to name %q", err, want)
		}
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoPins(t, c.PinDir)
}
