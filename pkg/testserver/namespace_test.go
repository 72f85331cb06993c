package testserver

import (
	"io"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// TestServesInsideBackendNamespace starts the server the way the demo
// does, inside a backend node, and reaches it from the client node.
func TestServesInsideBackendNamespace(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "sytsrv", Balancers: 1, Backends: 2})
	checkGoroutines(t)
	s, err := New(Config{Name: "be2", HTTPAddr: ":8080", UDPAddr: ":5353"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Do(topo.Backend(2), s.Start); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	client := topo.HTTPClient(topo.Client())
	for _, host := range []string{topology.BackendIPv4(2).String(), "[" + topology.BackendIPv6(2).String() + "]"} {
		resp, err := client.Get("http://" + host + ":8080/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "backend=be2\n" {
			t.Errorf("GET http://%s:8080/ = %q", host, body)
		}

		c, err := topo.Dialer(topo.Client()).DialContext(t.Context(), "udp", host+":5353")
		if err != nil {
			t.Fatal(err)
		}
		if got := udpRoundTrip(t, c, "q"); got != "backend=be2 q" {
			t.Errorf("UDP echo via %s = %q", host, got)
		}
		c.Close()
	}

}
