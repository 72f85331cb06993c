package demo

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// The services every lab offers, on the VIP prefixes the topology routes to
// the balancers.
var (
	WebVIP  = netip.AddrPortFrom(netip.MustParseAddr("10.100.0.1"), 80)  // VIP "web", tcp
	Web6VIP = netip.AddrPortFrom(netip.MustParseAddr("fd00:100::1"), 80) // VIP "web6", tcp
	DNSVIP  = netip.AddrPortFrom(netip.MustParseAddr("10.100.0.1"), 53)  // VIP "dns", udp
)

// Names of the lab's VIPs in the balancer configuration.
const (
	VIPWeb  = "web"
	VIPWeb6 = "web6"
	VIPDNS  = "dns"
)

// Spec is the part of the balancer configuration a lab lets its user
// change: the VIPs and their backends. Everything else (interface, pin
// directory, sockets) is fixed by the lab. Render it with Lab.WriteConfig.
type Spec struct {
	VIPs []VIPSpec
}

// VIPSpec is one entry of vips[].
type VIPSpec struct {
	Name     string
	Address  netip.Addr
	Port     int
	Protocol string // tcp or udp
	Hash     string // 5tuple or source
	// TableSize is vips[].table_size; 0 leaves it out (the default).
	TableSize int
	Health    HealthSpec
	Backends  []BackendSpec
}

// HealthSpec is vips[].health. Zero durations and counts are left out of
// the file, so the daemon's defaults apply.
type HealthSpec struct {
	Type     string // tcp, http, udp or none
	Port     int
	Path     string
	Send     string // udp: the request
	Expect   string // udp: the start of the reply
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
	Via      string // direct or tunnel; "" leaves it out (direct)
}

// BackendSpec is vips[].backends[].
type BackendSpec struct {
	Name    string
	Address netip.Addr
	Weight  int
	Drained bool
}

// Clone returns a deep copy, to change without touching the original.
func (s Spec) Clone() Spec {
	out := Spec{VIPs: slices.Clone(s.VIPs)}
	for i := range out.VIPs {
		out.VIPs[i].Backends = slices.Clone(out.VIPs[i].Backends)
	}
	return out
}

// VIP returns the VIP called name, or nil.
func (s *Spec) VIP(name string) *VIPSpec {
	for i := range s.VIPs {
		if s.VIPs[i].Name == name {
			return &s.VIPs[i]
		}
	}
	return nil
}

// RemoveBackend removes the backend called name from every VIP.
func (s *Spec) RemoveBackend(name string) {
	for i := range s.VIPs {
		s.VIPs[i].Backends = slices.DeleteFunc(s.VIPs[i].Backends, func(b BackendSpec) bool { return b.Name == name })
	}
}

// AddBackend adds backend node i (1-based) to every VIP, on the address of
// the VIP's family, with weight w.
func (s *Spec) AddBackend(i, w int) {
	for k := range s.VIPs {
		s.VIPs[k].Backends = append(s.VIPs[k].Backends, backendFor(s.VIPs[k].Address, i, w))
	}
}

// BackendName is the name the lab gives backend node i (1-based) in the
// configuration and on its test server: "be<i>".
func BackendName(i int) string { return fmt.Sprintf("be%d", i) }

func backendFor(vip netip.Addr, i, weight int) BackendSpec {
	addr := topology.BackendIPv4(i)
	if vip.Is6() {
		addr = topology.BackendIPv6(i)
	}
	return BackendSpec{Name: BackendName(i), Address: addr, Weight: weight}
}

// DefaultSpec is the lab's starting configuration: "web" (HTTP on
// 10.100.0.1:80), "web6" (the same on [fd00:100::1]:80) and "dns" (UDP echo
// on 10.100.0.1:53, hashed on the client address), each over backend nodes
// 1..n with the given weights (missing or zero weights are 1). Backends are
// checked every interval (zero: 1s) with the timeout at half of it, rise 2
// and fall 2: over HTTP on /healthz for web and web6, and for dns by a
// datagram the backend's UDP echo must answer.
func DefaultSpec(n int, weights []int, interval time.Duration) Spec {
	if interval <= 0 {
		interval = time.Second
	}
	hc := HealthSpec{Type: "http", Port: 80, Path: "/healthz", Interval: interval, Timeout: interval / 2, Rise: 2, Fall: 2}
	udp := HealthSpec{Type: "udp", Send: "ping", Expect: "backend=", Interval: interval, Timeout: interval / 2, Rise: 2, Fall: 2}
	vips := []VIPSpec{
		{Name: VIPWeb, Address: WebVIP.Addr(), Port: int(WebVIP.Port()), Protocol: "tcp", Hash: "5tuple", Health: hc},
		{Name: VIPWeb6, Address: Web6VIP.Addr(), Port: int(Web6VIP.Port()), Protocol: "tcp", Hash: "5tuple", Health: hc},
		{Name: VIPDNS, Address: DNSVIP.Addr(), Port: int(DNSVIP.Port()), Protocol: "udp", Hash: "source", Health: udp},
	}
	s := Spec{VIPs: vips}
	for i := 1; i <= n; i++ {
		w := 1
		if i <= len(weights) && weights[i-1] > 0 {
			w = weights[i-1]
		}
		s.AddBackend(i, w)
	}
	return s
}

// balancerFile holds what a lab fixes in a balancer's configuration.
type balancerFile struct {
	node    string
	mode    string // datapath.attach_mode ("": native)
	pinDir  string
	socket  string
	metrics string
}

// render writes the configuration file of one balancer.
func render(f balancerFile, s Spec) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Written by the switchyard lab (pkg/demo); rewritten on every change.")
	w("node:")
	w("  name: %s", f.node)
	w("datapath:")
	w("  interface: %s", topology.EthName)
	mode := f.mode
	if mode == "" {
		mode = "native"
	}
	w("  attach_mode: %s", mode)
	w("  pin_dir: %s", f.pinDir)
	// A small table keeps the pinned maps, and the time to create them, small.
	w("  conn_table_size: 65536")
	w("api:")
	w("  socket: %s", f.socket)
	w("metrics:")
	w("  listen: %q", f.metrics)
	w("vips:")
	for _, v := range s.VIPs {
		w("  - name: %s", v.Name)
		w("    address: %q", v.Address)
		w("    port: %d", v.Port)
		if v.Protocol != "" {
			w("    protocol: %s", v.Protocol)
		}
		if v.Hash != "" {
			w("    hash: %s", v.Hash)
		}
		if v.TableSize != 0 {
			w("    table_size: %d", v.TableSize)
		}
		h := v.Health
		if h.Type != "" {
			w("    health:")
			w("      type: %s", h.Type)
			if h.Port != 0 {
				w("      port: %d", h.Port)
			}
			if h.Path != "" && h.Type != "tcp" && h.Type != "none" {
				w("      path: %s", h.Path)
			}
			if h.Send != "" {
				w("      send: %q", h.Send)
			}
			if h.Expect != "" {
				w("      expect: %q", h.Expect)
			}
			if h.Interval > 0 {
				w("      interval: %s", h.Interval)
			}
			if h.Timeout > 0 {
				w("      timeout: %s", h.Timeout)
			}
			if h.Rise > 0 {
				w("      rise: %d", h.Rise)
			}
			if h.Via != "" {
				w("      via: %s", h.Via)
			}
			if h.Fall > 0 {
				w("      fall: %d", h.Fall)
			}
		}
		if len(v.Backends) == 0 {
			w("    backends: []")
			continue
		}
		w("    backends:")
		for _, be := range v.Backends {
			w("      - name: %s", be.Name)
			w("        address: %q", be.Address)
			if be.Weight > 0 {
				w("        weight: %d", be.Weight)
			}
			if be.Drained {
				w("        drained: true")
			}
		}
	}
	return b.String()
}

// agentFile holds what a lab writes into a backend's agent configuration.
type agentFile struct {
	node   string
	index  int
	pinDir string
	socket string
}

func renderAgent(f agentFile) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Written by the switchyard lab (pkg/demo).")
	w("node:")
	w("  name: %s", f.node)
	w("interface: %s", topology.EthName)
	w("encap_addresses: [%q, %q]", topology.BackendIPv4(f.index), topology.BackendIPv6(f.index))
	w("gue_port: 6080")
	w("vips: [%q, %q]", WebVIP.Addr(), Web6VIP.Addr())
	w("pin_dir: %s", f.pinDir)
	w("api:")
	w("  socket: %s", f.socket)
	w("metrics:")
	w("  listen: \"127.0.0.1:%d\"", AgentMetricsPort)
	return b.String()
}
