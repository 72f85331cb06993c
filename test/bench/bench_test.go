//go:build bench

// Package bench measures Switchyard against a direct connection to one
// backend and against HAProxy (TCP mode) on the balancer, with wrk and
// iperf3, all inside namespaces this test creates. `make bench` runs it;
// `make test` does not (build tag "bench").
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/demo"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

const (
	iperfPort   = 5201
	haproxyHTTP = 8080
	duration    = "4s"
)

func TestSideBySide(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root (namespaces, XDP)")
	}
	for _, tool := range []string{"wrk", "iperf3", "haproxy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: run `BENCH=1 scripts/install-deps.sh` (make bench does)", tool)
		}
	}
	bin := os.Getenv("SWITCHYARD_BIN")
	if bin == "" {
		t.Fatal("SWITCHYARD_BIN is not set: run through `make bench`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	demo.CleanupLeftovers("sybench", bin)
	lab, err := demo.NewLab(ctx, demo.LabConfig{Prefix: "sybench", Binary: bin, Progress: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	topo := lab.Topology()

	// An iperf3 VIP with client affinity: iperf3's control and data
	// connections must reach the same server.
	spec := lab.Spec().Clone()
	web := spec.VIP(demo.VIPWeb)
	iperf := *web
	iperf.Name, iperf.Port, iperf.Hash = "iperf", iperfPort, "source"
	iperf.Health = demo.HealthSpec{Type: "tcp", Interval: time.Second, Timeout: 500 * time.Millisecond}
	iperf.Backends = append([]demo.BackendSpec(nil), web.Backends...)
	spec.VIPs = append(spec.VIPs, iperf)
	for j := 1; j <= topo.Backends(); j++ {
		startBG(t, ctx, topo, topo.Backend(j), "iperf3", "-s", "-p", strconv.Itoa(iperfPort))
	}
	if err := lab.WriteConfig(spec); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Reload(ctx, 1); err != nil {
		t.Fatal(err)
	}

	// HAProxy in TCP mode on the balancer node, to the same backends.
	lbAddr := topology.BalancerIPv4(1)
	var servers strings.Builder
	for j := 1; j <= topo.Backends(); j++ {
		fmt.Fprintf(&servers, "    server be%d %s:%%d\n", j, topology.BackendIPv4(j))
	}
	hcfg := fmt.Sprintf(`global
    maxconn 4000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend web
    bind %s:%d
    default_backend web
backend web
    balance roundrobin
%sfrontend iperf
    bind %s:%d
    default_backend iperf
backend iperf
    balance source
%s`, lbAddr, haproxyHTTP, fmt.Sprintf(servers.String(), 80, 80, 80), lbAddr, iperfPort,
		fmt.Sprintf(servers.String(), iperfPort, iperfPort, iperfPort))
	hpath := filepath.Join(lab.Dir(), "haproxy.cfg")
	if err := os.WriteFile(hpath, []byte(hcfg), 0o644); err != nil {
		t.Fatal(err)
	}
	startBG(t, ctx, topo, topo.Balancer(1), "haproxy", "-f", hpath, "-db")

	targets := []struct {
		name string
		http string
		host netip.Addr
		port int
	}{
		{"direct (one backend)", fmt.Sprintf("http://%s/", topology.BackendIPv4(1)), topology.BackendIPv4(1), iperfPort},
		{"switchyard VIP", fmt.Sprintf("http://%s/", demo.WebVIP.Addr()), demo.WebVIP.Addr(), iperfPort},
		{"haproxy (tcp mode)", fmt.Sprintf("http://%s:%d/", lbAddr, haproxyHTTP), lbAddr, iperfPort},
	}
	// Rounds alternate the targets so that a slow spell of the shared VM
	// hits all of them; each ratio is taken within a round, and the median
	// round is reported.
	const rounds = 3
	type result struct{ rps, cps, gbps float64 }
	res := make([][]result, rounds)
	for r := range rounds {
		res[r] = make([]result, len(targets))
		for i, tg := range targets {
			fmt.Fprintf(os.Stderr, "bench: round %d/%d: %s: wrk keep-alive, wrk new connections, iperf3 (%s each)\n", r+1, rounds, tg.name, duration)
			res[r][i].rps = wrk(t, ctx, topo, tg.http, false)
			res[r][i].cps = wrk(t, ctx, topo, tg.http, true)
			res[r][i].gbps = iperf3(t, ctx, topo, tg.host, tg.port)
		}
	}
	median := func(f func(r int) float64) float64 {
		xs := make([]float64, rounds)
		for r := range xs {
			xs[r] = f(r)
		}
		slices.Sort(xs)
		return xs[rounds/2]
	}
	fmt.Printf("\n%-22s %14s %8s %14s %8s %12s %8s\n", "target (median of 3)", "requests/s", "ratio", "connections/s", "ratio", "Gbit/s", "ratio")
	for i, tg := range targets {
		fmt.Printf("%-22s %14.0f %7.2fx %14.0f %7.2fx %12.2f %7.2fx\n", tg.name,
			median(func(r int) float64 { return res[r][i].rps }), median(func(r int) float64 { return res[r][i].rps / res[r][0].rps }),
			median(func(r int) float64 { return res[r][i].cps }), median(func(r int) float64 { return res[r][i].cps / res[r][0].cps }),
			median(func(r int) float64 { return res[r][i].gbps }), median(func(r int) float64 { return res[r][i].gbps / res[r][0].gbps }))
	}
	fmt.Printf("\nswitchyard / direct requests/s: %.2fx (target >= 0.9x); switchyard / haproxy requests/s: %.2fx (target >= 1.5x); per round: ",
		median(func(r int) float64 { return res[r][1].rps / res[r][0].rps }), median(func(r int) float64 { return res[r][1].rps / res[r][2].rps }))
	for r := range rounds {
		fmt.Printf("%.2fx/%.2fx ", res[r][1].rps/res[r][0].rps, res[r][1].rps/res[r][2].rps)
	}
	fmt.Println()
}

func startBG(t *testing.T, ctx context.Context, topo *topology.Topology, node, name string, args ...string) {
	t.Helper()
	cmd := topo.Command(ctx, node, name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Readiness: the measurements retry while a server is still starting.
}

var reqRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

func wrk(t *testing.T, ctx context.Context, topo *topology.Topology, url string, newConns bool) float64 {
	t.Helper()
	args := []string{"-t2", "-c32", "-d" + duration, url}
	if newConns {
		args = append([]string{"-H", "Connection: close"}, args...)
	}
	var out []byte
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		out, err = topo.Command(ctx, topo.Client(), "wrk", args...).CombinedOutput()
		if err == nil && reqRe.Match(out) {
			break
		}
		time.Sleep(time.Second) // the server may still be starting
	}
	m := reqRe.FindSubmatch(out)
	if m == nil {
		t.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func iperf3(t *testing.T, ctx context.Context, topo *topology.Topology, host netip.Addr, port int) float64 {
	t.Helper()
	var out []byte
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		out, err = topo.Command(ctx, topo.Client(), "iperf3", "-c", host.String(), "-p", strconv.Itoa(port),
			"-t", strings.TrimSuffix(duration, "s"), "-J").Output()
		if err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil || res.Error != "" || err != nil {
		t.Fatalf("iperf3 %s:%d: %v %s\n%s", host, port, err, res.Error, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}
