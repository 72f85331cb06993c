// Package config reads, defaults and validates the YAML configuration of
// the balancer (Config, configs/switchyard.yaml) and of the backend agent
// (AgentConfig, configs/agent.yaml).
//
// Unknown fields are rejected, and every problem in a file is reported at
// once, each naming the file, the line, the field path and the fix:
//
//	switchyard.yaml:14: vips[0].port: 70000 is out of range; use 0 (all ports) to 65535
//
// Defaults come in two kinds. Static defaults (documented as "Default: X"
// on each field) are in place before the file is decoded over them, so a
// field left out keeps its default while an explicit value, even 0 or "",
// is kept and validated. Derived defaults (documented as "Empty/0 means …")
// depend on other fields and are filled by ApplyDefaults after decoding.
//
// The types are plain values (no pointers, no hidden state). Addresses are
// kept as the strings of the file, for printing; methods such as VIP.Addr
// return them parsed, and a reload compares old and new configs with Same,
// which takes two spellings of one address (fd00::1, fd00:0::1) for one.
package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/switchyard-lb/switchyard/pkg/health"
	"github.com/switchyard-lb/switchyard/pkg/maglev"
)

// Balancer defaults.
const (
	DefaultAttachMode     = AttachNative
	DefaultConnTableSize  = 1 << 20
	DefaultUDPIdleTimeout = 30 * time.Second
	DefaultEncapType      = EncapIPIP
	DefaultGUEPort        = 6080
	DefaultAPISocket      = "/run/switchyard/switchyard.sock"
	DefaultMetricsListen  = "127.0.0.1:9301"
	DefaultPinDirBase     = "/sys/fs/bpf/switchyard" // the pin dir is DefaultPinDirBase/<interface>
	DefaultTableSize      = 65537

	DefaultHealthType     = CheckTCP
	DefaultHealthPath     = "/"
	DefaultExpectStatus   = 200
	DefaultHealthInterval = time.Second
	DefaultHealthTimeout  = 500 * time.Millisecond
	DefaultRise           = 2
	DefaultFall           = 3

	// MinHealthInterval and MinHealthTimeout bound a health check from
	// below: each backend has a goroutine checking it every interval, and a
	// shorter one is a typo (2ns for 2s) that would spin it, not a check
	// any backend could answer in time.
	MinHealthInterval = 100 * time.Millisecond
	MinHealthTimeout  = time.Millisecond

	// MaxHealthInterval and MaxRiseFall bound a health check from above: a
	// dead backend keeps getting new flows for fall intervals, a recovered
	// one waits rise intervals, so a longer interval or a larger count is a
	// typo (1000000h, 30000 for 3), not a check. The bound also keeps the
	// monitor's timer arithmetic (an interval plus its jitter, the first
	// checks spread over one interval) far from overflowing a
	// time.Duration.
	MaxHealthInterval = time.Hour
	MaxRiseFall       = 1000

	// MinUDPIdleTimeout and MaxUDPIdleTimeout bound udp_idle_timeout. The
	// datapath counts a flow's idle time in jiffies modulo 2^32 (49 days
	// at HZ 1000), so a longer timeout would never expire an entry, and an
	// idle time past the wrap would read as short; a day is well inside it.
	// Below a second is a typo (30ns for 30s) that unpins every UDP flow
	// after a tick, as IPVS, whose UDP timeout counts seconds, never does.
	MinUDPIdleTimeout = time.Second
	MaxUDPIdleTimeout = 24 * time.Hour

	MinConnTableSize = 1024
	MaxConnTableSize = 16 << 20

	// MaxVIPs and MaxBackendAddrs are the datapath's limits (MAX_VIPS and
	// MAX_BACKENDS in bpf/consts.h, datapath.MaxVIPs and MaxBackends):
	// VIPs, and distinct backend addresses over all VIPs. A file over
	// them is refused here, whole; applied, it would fail half-way.
	MaxVIPs         = 512
	MaxBackendAddrs = 4096

	// MaxEncapAddrs is the decap program's limit (datapath.MaxDecapAddrs):
	// the agent's encap_addresses, or the interface's addresses it follows.
	MaxEncapAddrs = 64
)

// TableSizes returns the allowed Maglev table sizes per VIP, ascending:
// pkg/maglev's list, the one place they are defined.
func TableSizes() []int {
	var out []int
	for _, n := range maglev.Sizes() {
		out = append(out, int(n))
	}
	return out
}

// exampleConfig is the annotated example that error messages point to.
const exampleConfig = "configs/switchyard.yaml"

// AttachMode says how the XDP program is attached to the interface.
type AttachMode string

const (
	AttachNative  AttachMode = "native"  // in the driver; fails if the driver lacks XDP
	AttachGeneric AttachMode = "generic" // in the kernel's generic (skb) path; slower, works everywhere
	AttachAuto    AttachMode = "auto"    // native, falling back to generic with a warning
)

// EncapType is the encapsulation from balancer to backend.
type EncapType string

const (
	EncapIPIP EncapType = "ipip" // IPIP for IPv4 backends, IP6IP6/IPv4-in-IPv6 for IPv6 ones
	EncapGUE  EncapType = "gue"  // generic UDP encapsulation, to Encap.GUEPort
)

// Protocol is the transport protocol of a VIP.
type Protocol string

const (
	ProtocolTCP Protocol = "tcp"
	ProtocolUDP Protocol = "udp"
)

// HashMode is what a VIP hashes to pick a backend.
type HashMode string

const (
	Hash5Tuple HashMode = "5tuple" // the whole flow: spreads one client's flows
	HashSource HashMode = "source" // the client address only: client affinity
)

// CheckType is the kind of backend health check.
type CheckType string

const (
	CheckTCP   CheckType = "tcp"   // a TCP connect
	CheckHTTP  CheckType = "http"  // an HTTP GET, compared with ExpectStatus
	CheckHTTPS CheckType = "https" // as http, over TLS without certificate verification
	CheckUDP   CheckType = "udp"   // a datagram sent, a reply expected
	CheckNone  CheckType = "none"  // no check: the backend is always healthy
)

// CheckVia is the path a health check takes to a backend.
type CheckVia string

const (
	// ViaDirect: the check goes to the backend's own address, as a
	// client of the backend host (the default).
	ViaDirect CheckVia = "direct"
	// ViaTunnel: the check goes to the VIP's address, encapsulated to
	// the backend as client packets are (pkg/datapath HCEncap), so it
	// proves the whole path: the backend's decap, the VIP on its lo,
	// the service and the direct return. Needs switchyard agent (or
	// another decap with the VIP on lo) on every backend.
	ViaTunnel CheckVia = "tunnel"
)

// Config is the configuration of a balancer (`switchyard run`).
type Config struct {
	Node     Node     `yaml:"node"`
	Datapath Datapath `yaml:"datapath"`
	Encap    Encap    `yaml:"encap"`
	Nexthop  Nexthop  `yaml:"nexthop"`
	API      API      `yaml:"api"`
	Metrics  Metrics  `yaml:"metrics"`
	VIPs     []VIP    `yaml:"vips"`
}

// Node identifies this machine to the cluster.
type Node struct {
	// Name is unique in the cluster, of visible characters with no space,
	// at most MaxNameLen bytes. Empty means the hostname.
	Name string `yaml:"name"`
}

// Datapath configures the XDP balancer program.
type Datapath struct {
	// Interface receives VIP traffic and, one-arm, sends the encapsulated
	// packets back out. Required.
	Interface string `yaml:"interface"`
	// AttachMode is native, generic or auto. Default: native.
	AttachMode AttachMode `yaml:"attach_mode"`
	// PinDir is the bpffs directory for pinned maps and links. Empty means
	// DefaultPinDirBase/<interface>.
	PinDir string `yaml:"pin_dir"`
	// ConnTableSize is the capacity of the connection table (an LRU), from
	// MinConnTableSize to MaxConnTableSize; the datapath rounds it up to
	// whole sets of 4. Default: 1Mi entries.
	ConnTableSize int `yaml:"conn_table_size"`
	// UDPIdleTimeout ends a UDP flow's pinning to its backend, from
	// MinUDPIdleTimeout to MaxUDPIdleTimeout. Default: 30s.
	UDPIdleTimeout Duration `yaml:"udp_idle_timeout"`
	// MTU is the largest encapsulated packet put on the wire: 0 (the
	// interface's MTU) or 576 to 65535, and at least MinMTU.
	MTU int `yaml:"mtu"`
	// ICMPTooBig sends ICMP "fragmentation needed" / ICMPv6 "packet too
	// big" to clients whose packets would exceed MTU once encapsulated.
	// Default: true.
	ICMPTooBig bool `yaml:"icmp_too_big"`
}

// Encap configures the encapsulation of packets to backends.
type Encap struct {
	// Type is ipip or gue. IPv6 backends get an IPv6 outer header either
	// way. Default: ipip.
	Type EncapType `yaml:"type"`
	// GUEPort is the UDP destination port for gue, 1 to 65535.
	// Default: 6080.
	GUEPort int `yaml:"gue_port"`
	// SourceV4 is the outer IPv4 source, an address routers forward (not
	// link-local or reserved). Empty means the interface's first IPv4
	// address that routers forward (link-local, loopback and 240.0.0.0/4
	// ones are skipped), followed as the interface's addresses change.
	SourceV4 string `yaml:"source_v4" compare:"addr"`
	// SourceV6 is the outer IPv6 source, not link-local. Empty means the
	// interface's first global IPv6 address that is neither tentative,
	// dadfailed nor deprecated, followed as it changes.
	SourceV6 string `yaml:"source_v6" compare:"addr"`
	// SourcePrefixV4, if set, is a CIDR prefix the outer IPv4 source is
	// picked from by hashing the client address, so that backend NICs
	// spread the load over their receive queues. Overrides SourceV4.
	SourcePrefixV4 string `yaml:"source_prefix_v4" compare:"prefix"`
	// SourcePrefixV6 is SourcePrefixV4 for IPv6.
	SourcePrefixV6 string `yaml:"source_prefix_v6" compare:"prefix"`
}

// SourceV4Addr returns SourceV4 parsed; invalid (zero) if unset.
func (e Encap) SourceV4Addr() netip.Addr { return addr(e.SourceV4) }

// SourceV6Addr returns SourceV6 parsed; invalid (zero) if unset.
func (e Encap) SourceV6Addr() netip.Addr { return addr(e.SourceV6) }

// SourcePrefixV4Net returns SourcePrefixV4 parsed; invalid (zero) if unset.
func (e Encap) SourcePrefixV4Net() netip.Prefix { return prefix(e.SourcePrefixV4) }

// SourcePrefixV6Net returns SourcePrefixV6 parsed; invalid (zero) if unset.
func (e Encap) SourcePrefixV6Net() netip.Prefix { return prefix(e.SourcePrefixV6) }

// Nexthop says where encapsulated packets go.
type Nexthop struct {
	// Gateway is the router the balancer sends encapsulated packets to, of
	// either family (a unicast address, not loopback; link-local is fine,
	// the router is on the link); its MAC is resolved through netlink. Empty means the
	// gateway of the default route through the interface: IPv4's if there
	// is one, else IPv6's.
	Gateway string `yaml:"gateway" compare:"addr"`
}

// GatewayAddr returns Gateway parsed; invalid (zero) if unset.
func (n Nexthop) GatewayAddr() netip.Addr { return addr(n.Gateway) }

// API configures the local control socket used by the command line tools.
type API struct {
	// Socket is the unix socket path. Default: DefaultAPISocket for the
	// balancer, DefaultAgentAPISocket for the agent.
	Socket string `yaml:"socket"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen is host:port to serve /metrics on; "" disables it. Default:
	// DefaultMetricsListen for the balancer, DefaultAgentMetricsListen for
	// the agent.
	Listen string `yaml:"listen" compare:"hostport"`
}

// VIP is one virtual service: an address, port and protocol balanced over
// a set of backends.
type VIP struct {
	// Name is unique among VIPs, matches [a-z0-9][a-z0-9._-]* and is at
	// most MaxNameLen bytes. Required.
	Name string `yaml:"name"`
	// Address is the IPv4 or IPv6 virtual address, of one host: not
	// unspecified, loopback, multicast, broadcast, link-local (clients
	// reach it through routers), reserved (240.0.0.0/4) or the next hop's
	// (the router's own). Required.
	Address string `yaml:"address" compare:"addr"`
	// Port is the service port; 0 means every port of Protocol. Required in
	// a file (a forgotten port would make an all-ports VIP), even if 0.
	Port int `yaml:"port"`
	// Protocol is tcp or udp. Default: tcp.
	Protocol Protocol `yaml:"protocol"`
	// Hash is 5tuple or source (client affinity). Default: 5tuple.
	Hash HashMode `yaml:"hash"`
	// Conntrack pins each flow to its backend in the connection table, so
	// that a backend change does not move it. false (pure hashing) is only
	// allowed for udp. Default: true.
	Conntrack bool `yaml:"conntrack"`
	// TableSize is the Maglev table size, one of TableSizes. Default: 65537.
	TableSize int `yaml:"table_size"`
	// Health is the check run against every backend.
	Health Health `yaml:"health"`
	// Backends receive the VIP's flows.
	Backends []Backend `yaml:"backends"`
}

// Addr returns Address parsed; invalid (zero) if Validate rejects it.
func (v VIP) Addr() netip.Addr { return addr(v.Address) }

// BackendByName returns the backend called name, or nil.
func (v *VIP) BackendByName(name string) *Backend {
	for i := range v.Backends {
		if v.Backends[i].Name == name {
			return &v.Backends[i]
		}
	}
	return nil
}

// Health is a VIP's backend health check.
type Health struct {
	// Type is tcp, http, https, udp or none. https does not verify the
	// backend's certificate. udp sends Send and wants a reply. none takes
	// no other field. Default: tcp (a TCP connect, for a udp VIP too: a
	// udp service wants a udp check, or a TCP port its backends serve).
	Type CheckType `yaml:"type"`
	// Port is probed on each backend address, all types but none.
	// 0 means the VIP's port; it is required when the VIP is all-ports and
	// Type is not none.
	Port int `yaml:"port"`
	// Path is the HTTP request path, http and https only. Empty means "/".
	Path string `yaml:"path"`
	// ExpectStatus is the HTTP status of a healthy backend, http and https
	// only. 0 means 200.
	ExpectStatus int `yaml:"expect_status"`
	// SNI is the server name an https check sends in the TLS handshake,
	// for a backend that serves several names or refuses a handshake
	// without one: a DNS name, not an address (RFC 6066). https only.
	// Empty sends none, as HAProxy's checks without check-sni: backend
	// names are labels, not DNS names, and addresses are not sent.
	SNI string `yaml:"sni"`
	// Host is the Host header of the check's request, for a backend that
	// serves several names: a host name or an address, with a port if
	// needed ("app.example.com", "[fd00::1]:8080"). http and https only.
	// Empty means SNI for an https check that sends one (with the check's
	// port unless it is 443: a backend serving several names answers 421
	// when Host and SNI differ), else the backend's address and the
	// check's port.
	Host string `yaml:"host"`
	// Send is the datagram a udp check sends, as text: a request the
	// service answers. udp only, where it or SendBinary is required; 1 to
	// health.MaxUDPPayload bytes.
	Send string `yaml:"send"`
	// SendBinary is Send in hexadecimal (spaces allowed), for binary
	// protocols: "1234 0100 0001 ..." (as HAProxy's send-binary).
	SendBinary string `yaml:"send_binary"`
	// Expect is the start of a healthy backend's reply to the request, as
	// text; udp only. Neither it nor ExpectBinary means any reply. A
	// backend that does not reply within Timeout, or whose host answers
	// with an ICMP port unreachable, is failing.
	Expect string `yaml:"expect"`
	// ExpectBinary is Expect in hexadecimal (spaces allowed).
	ExpectBinary string `yaml:"expect_binary"`
	// Interval between checks, MinHealthInterval to MaxHealthInterval;
	// this field and the ones below are not for type none. Default: 1s.
	Interval Duration `yaml:"interval"`
	// Timeout of one check, at least MinHealthTimeout and shorter than
	// Interval. Default: 500ms.
	Timeout Duration `yaml:"timeout"`
	// Rise is how many consecutive successes mark a backend healthy, 1 to
	// MaxRiseFall. Default: 2.
	Rise int `yaml:"rise"`
	// Fall is how many consecutive failures mark a backend unhealthy, 1 to
	// MaxRiseFall. Default: 3.
	Fall int `yaml:"fall"`
	// Via is direct (the check goes to the backend's address) or tunnel
	// (to the VIP's address, encapsulated to the backend like client
	// packets). Default: direct.
	Via CheckVia `yaml:"via"`
}

// MarshalYAML implements yaml.Marshaler. A type none check is printed as
// its type alone: Parse refuses the other fields with it, and a valid one
// has them at their defaults, so the printed config reads back.
func (h Health) MarshalYAML() (any, error) {
	if h.Type == CheckNone {
		return struct {
			Type CheckType `yaml:"type"`
		}{h.Type}, nil
	}
	type plain Health // without this method
	return plain(h), nil
}

// Backend is one server of a VIP.
type Backend struct {
	// Name is unique within the VIP, of visible characters with no space
	// and no '/', at most MaxNameLen bytes: what status, drains and health
	// checks call the backend. Renaming it moves no flow.
	// Required.
	Name string `yaml:"name"`
	// Address receives the encapsulated packets: IPv4 or IPv6, whatever
	// the VIP's family, of one host reached over the network (not
	// loopback, multicast, broadcast, link-local (the balancer reaches it
	// through its next hop) or 240.0.0.0/4), nor a VIP's (routers send it to
	// the balancers). It is the backend's identity in the Maglev table
	// (pkg/balancer sorts by it), so changing it moves the backend's
	// flows. Required.
	Address string `yaml:"address" compare:"addr"`
	// Weight is the backend's relative share of new flows, 1 to 65535.
	// Default: 1.
	Weight int `yaml:"weight"`
	// Drained backends get no new flows; existing ones continue.
	Drained bool `yaml:"drained"`
}

// Addr returns Address parsed; invalid (zero) if Validate rejects it.
func (b Backend) Addr() netip.Addr { return addr(b.Address) }

// DefaultConfig returns a Config holding every static default and no VIPs.
func DefaultConfig() Config {
	return Config{
		Datapath: Datapath{
			AttachMode:     DefaultAttachMode,
			ConnTableSize:  DefaultConnTableSize,
			UDPIdleTimeout: Duration(DefaultUDPIdleTimeout),
			ICMPTooBig:     true,
		},
		Encap:   Encap{Type: DefaultEncapType, GUEPort: DefaultGUEPort},
		API:     API{Socket: DefaultAPISocket},
		Metrics: Metrics{Listen: DefaultMetricsListen},
	}
}

// DefaultVIP returns a VIP holding every static default, to fill in.
func DefaultVIP() VIP {
	return VIP{
		Protocol:  ProtocolTCP,
		Hash:      Hash5Tuple,
		Conntrack: true,
		TableSize: DefaultTableSize,
		Health: Health{
			Type:     DefaultHealthType,
			Interval: Duration(DefaultHealthInterval),
			Timeout:  Duration(DefaultHealthTimeout),
			Rise:     DefaultRise,
			Fall:     DefaultFall,
			Via:      ViaDirect,
		},
	}
}

// DefaultBackend returns a Backend holding every static default, to fill in.
func DefaultBackend() Backend { return Backend{Weight: 1} }

func (v *VIP) setDefaults()     { *v = DefaultVIP() }
func (b *Backend) setDefaults() { *b = DefaultBackend() }

// Load reads and parses the balancer config file at path.
func Load(path string) (*Config, error) {
	data, err := readFile(path, exampleConfig)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Reload is Load for a running daemon's reload (SIGHUP, `switchyard
// reload`): a file it cannot read is to be restored at path, not replaced
// by another path.
func Reload(path string) (*Config, error) {
	data, err := rereadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse parses a balancer config: it decodes data over DefaultConfig,
// applies the derived defaults and validates. name is the file name used
// in error messages.
func Parse(data []byte, name string) (*Config, error) {
	c := DefaultConfig()
	err := parseInto(data, name, balancerFile, agentFile, &c, func(set func(string) bool) problems {
		c.ApplyDefaults()
		// A forgotten port would silently make an all-ports VIP that
		// takes every connection to the address.
		var p problems
		noPort := map[string]bool{}
		for i := range c.VIPs {
			if path := fmt.Sprintf("vips[%d].port", i); !set(path) {
				p.add(path, "required; write the service port, or 0 for every port")
				noPort[fmt.Sprintf("vips[%d].health.port", i)] = true
			}
		}
		for _, pr := range c.validate(set) {
			if !noPort[pr.Path] { // asking for a check port would be noise
				p = append(p, pr)
			}
		}
		return p
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// ApplyDefaults fills the derived defaults: fields whose empty value means
// something computed from other fields. It is idempotent. Parse calls it;
// call it yourself on a Config built in code (start from DefaultConfig,
// DefaultVIP and DefaultBackend for the static defaults).
func (c *Config) ApplyDefaults() {
	if c.Node.Name == "" {
		c.Node.Name, _ = os.Hostname() // if that fails, Validate asks for a name
	}
	if c.Datapath.PinDir == "" && c.Datapath.Interface != "" {
		c.Datapath.PinDir = filepath.Join(DefaultPinDirBase, c.Datapath.Interface)
	}
	for i := range c.VIPs {
		h := &c.VIPs[i].Health
		if h.Port == 0 && h.Type != CheckNone { // none probes no port: one set is refused
			h.Port = c.VIPs[i].Port
		}
		if h.Type == CheckHTTP || h.Type == CheckHTTPS {
			if h.Path == "" {
				h.Path = DefaultHealthPath
			}
			if h.ExpectStatus == 0 {
				h.ExpectStatus = DefaultExpectStatus
			}
		}
	}
}

// VIPByName returns the VIP called name, or nil.
func (c *Config) VIPByName(name string) *VIP {
	for i := range c.VIPs {
		if c.VIPs[i].Name == name {
			return &c.VIPs[i]
		}
	}
	return nil
}

// Validate checks c as ApplyDefaults would complete it (c itself is not
// changed) and returns every problem joined, each a *FieldError wrapping
// ErrInvalid, or nil. Without a file the messages carry the field path but
// no file or line.
func (c *Config) Validate() error {
	d := *c
	d.VIPs = slices.Clone(c.VIPs) // ApplyDefaults writes VIPs[i].Health, nothing deeper
	d.ApplyDefaults()
	return join(d.validate(nil))
}

// validate checks c; set reports whether the file set the field at a path,
// nil for a config built in code, whose fields count as set where they
// differ from their defaults.
func (c *Config) validate(set func(path string) bool) problems {
	var p problems
	checkNodeName(&p, c.Node.Name, "unique in the cluster")

	d := c.Datapath
	checkInterface(&p, "datapath.interface", d.Interface, "receives the VIP traffic")
	switch d.AttachMode {
	case AttachNative, AttachGeneric, AttachAuto:
	default:
		p.add("datapath.attach_mode", "%q is not an attach mode; use native, generic or auto", userValue(d.AttachMode))
	}
	if d.PinDir != "" || d.Interface != "" {
		checkPinDir(&p, "datapath.pin_dir", d.PinDir, filepath.Join(DefaultPinDirBase, d.Interface))
	}
	if d.ConnTableSize < MinConnTableSize || d.ConnTableSize > MaxConnTableSize {
		p.add("datapath.conn_table_size", "%d is out of range; use %d to %d (default %d)",
			d.ConnTableSize, MinConnTableSize, MaxConnTableSize, DefaultConnTableSize)
	}
	switch t := time.Duration(d.UDPIdleTimeout); {
	case t <= 0:
		p.add("datapath.udp_idle_timeout", "%s is not positive; write e.g. 30s", d.UDPIdleTimeout)
	case t < MinUDPIdleTimeout:
		p.add("datapath.udp_idle_timeout", "%s is below the minimum of %s; write e.g. 30s", d.UDPIdleTimeout, MinUDPIdleTimeout)
	case t > MaxUDPIdleTimeout:
		p.add("datapath.udp_idle_timeout", "%s is above the maximum of %s: a UDP flow idle that long has ended, and past 49 days (at HZ 1000) the datapath's count of kernel ticks wraps, so no entry would expire; write e.g. 30s",
			shortDuration(t), shortDuration(MaxUDPIdleTimeout))
	}
	if d.MTU != 0 && (d.MTU < 576 || d.MTU > 65535) {
		p.add("datapath.mtu", "%d is out of range; use 0 (the interface MTU) or 576 to 65535", d.MTU)
	} else if min, why := c.MinMTU(); d.MTU != 0 && d.MTU < min {
		p.add("datapath.mtu", "%d is below %d: %s; use 0 (the interface MTU) or at least %d", d.MTU, min, why, min)
	}

	e := c.Encap
	switch e.Type {
	case EncapIPIP, EncapGUE:
	default:
		p.add("encap.type", "%q is not an encapsulation; use ipip or gue", userValue(e.Type))
	}
	checkPort(&p, "encap.gue_port", e.GUEPort, 1, "")
	checkFamilyAddr(&p, "encap.source_v4", e.SourceV4, false)
	checkFamilyAddr(&p, "encap.source_v6", e.SourceV6, true)
	checkFamilyPrefix(&p, "encap.source_prefix_v4", e.SourcePrefixV4, false)
	checkFamilyPrefix(&p, "encap.source_prefix_v6", e.SourcePrefixV6, true)

	if c.Nexthop.Gateway != "" {
		if a, ok := parseAddr(&p, "nexthop.gateway", c.Nexthop.Gateway); ok {
			// Reached on the link: a link-local router address is common.
			checkUnicast(&p, "nexthop.gateway", a, true, "write the router's address, or leave it empty for the default route's gateway")
		}
	}
	checkSocket(&p, "api.socket", c.API.Socket, DefaultAPISocket)
	checkListen(&p, "metrics.listen", c.Metrics.Listen, DefaultMetricsListen)

	type vipKey struct {
		addr  netip.Addr
		port  int
		proto Protocol
	}
	if len(c.VIPs) > MaxVIPs {
		p.add("vips", "%d VIPs are more than the datapath's limit of %d; remove some, or spread them over more balancers",
			len(c.VIPs), MaxVIPs)
	}
	backendAddrs := map[netip.Addr]bool{}
	names := map[string]int{}
	keys := map[vipKey]int{}
	for i := range c.VIPs {
		path := fmt.Sprintf("vips[%d]", i)
		v := &c.VIPs[i]
		switch {
		case v.Name == "":
			p.add(path+".name", "required; name the VIP, e.g. web")
		case len(v.Name) > MaxNameLen:
			nameTooLong(&p, path+".name", v.Name)
		case !namePattern.MatchString(v.Name):
			p.add(path+".name", "%q is not a valid name; use lower-case letters, digits, '.', '-' and '_', starting with a letter or digit", userValue(v.Name))
		default:
			if j, dup := names[v.Name]; dup {
				p.add(path+".name", "%q is already the name of vips[%d]; VIP names must be unique", userValue(v.Name), j)
			} else {
				names[v.Name] = i
			}
		}
		a, addrOK := parseUnicast(&p, path+".address", v.Address)
		checkPort(&p, path+".port", v.Port, 0, "all ports")
		switch v.Protocol {
		case ProtocolTCP, ProtocolUDP:
		default:
			p.add(path+".protocol", "%q is not a protocol; use tcp or udp", userValue(v.Protocol))
		}
		if addrOK {
			k := vipKey{a, v.Port, v.Protocol}
			if j, dup := keys[k]; dup {
				p.add(path, "%s port %d %s is already vips[%d] (%s); each address, port and protocol may be one VIP only",
					a, v.Port, v.Protocol, j, userValue(c.VIPs[j].Name))
			} else {
				keys[k] = i
			}
		}
		switch v.Hash {
		case Hash5Tuple, HashSource:
		default:
			p.add(path+".hash", "%q is not a hash mode; use 5tuple or source", userValue(v.Hash))
		}
		if !v.Conntrack && v.Protocol != ProtocolUDP {
			p.add(path+".conntrack", "false is only allowed for udp VIPs; TCP flows need the connection table to keep their backend, so set it to true")
		}
		if !slices.Contains(TableSizes(), v.TableSize) {
			p.add(path+".table_size", "%d is not an allowed size; use %d (the nearest) or another of %s",
				v.TableSize, nearestTableSize(v.TableSize), intList(TableSizes()))
		} else if len(v.Backends) >= v.TableSize {
			p.add(path+".table_size", "%d slots hold at most %d backends, and there are %d; use a larger size from %s",
				v.TableSize, v.TableSize-1, len(v.Backends), intList(TableSizes()))
		}
		given := func(f string) bool { return !v.Health.isDefault(f) }
		if set != nil {
			given = func(f string) bool { return set(path + ".health." + f) }
		}
		v.Health.validate(&p, path+".health", v.Port, given)
		validateBackends(&p, path, v.Backends)
		for _, b := range v.Backends {
			if a := b.Addr(); a.IsValid() {
				backendAddrs[a] = true
			}
		}
	}
	checkVIPAddrUses(&p, c)
	if len(backendAddrs) > MaxBackendAddrs {
		p.add("vips", "%d distinct backend addresses are more than the datapath's limit of %d; remove some, or spread the VIPs over more balancers",
			len(backendAddrs), MaxBackendAddrs)
	}
	return p
}

// checkVIPAddrUses refuses the uses of a VIP address that no packet can
// reach: routers send a VIP's packets to the balancers, so a backend at a
// VIP address never gets the packets encapsulated to it (they come back to
// a balancer, which drops them), and a VIP at the next hop's address is the
// router's own, which takes the clients' packets itself.
func checkVIPAddrUses(p *problems, c *Config) {
	vips := map[netip.Addr]int{}
	for i := range c.VIPs {
		if a := c.VIPs[i].Addr(); a.IsValid() {
			if _, dup := vips[a]; !dup {
				vips[a] = i
			}
		}
	}
	if gw := c.Nexthop.GatewayAddr(); gw.IsValid() {
		for i := range c.VIPs {
			if c.VIPs[i].Addr() == gw {
				p.add(fmt.Sprintf("vips[%d].address", i), "%s is nexthop.gateway, the router's own address: clients' packets to it end at the router and never reach a balancer; use an address the routers send to the balancers, or correct nexthop.gateway", gw)
			}
		}
	}
	for i := range c.VIPs {
		for j, b := range c.VIPs[i].Backends {
			a := b.Addr()
			k, isVIP := vips[a]
			if !a.IsValid() || !isVIP {
				continue
			}
			p.add(fmt.Sprintf("vips[%d].backends[%d].address", i, j), "%s is the address of vips[%d] (%s): routers send packets to it to the balancers, so the backend would never get those encapsulated to it; write the backend's own address (the VIP goes on its lo)",
				a, k, userValue(c.VIPs[k].Name))
		}
	}
}

// unusedBy says, for a health field, what type none does not do with it and
// which check types use it.
type unusedBy struct{ does, types string }

var noneUnused = map[string]unusedBy{
	"port":          {"probes no port", "tcp, http, https or udp"},
	"path":          {"requests no path", "http or https"},
	"expect_status": {"expects no status", "http or https"},
	"sni":           {"sends no server name (SNI)", "https"},
	"host":          {"sends no Host header", "http or https"},
	"send":          {"sends no datagram", "udp"},
	"send_binary":   {"sends no datagram", "udp"},
	"expect":        {"expects no reply", "udp"},
	"expect_binary": {"expects no reply", "udp"},
	"interval":      {"has no interval", "tcp, http, https or udp"},
	"timeout":       {"has no timeout", "tcp, http, https or udp"},
	"rise":          {"counts no successes (rise)", "tcp, http, https or udp"},
	"fall":          {"counts no failures (fall)", "tcp, http, https or udp"},
	"via":           {"sends nothing, directly or through the tunnel (via)", "tcp, http, https or udp"},
}

// isDefault reports whether the health field named by its yaml name holds
// what a type none check gets without it: DefaultVIP's value (zero for
// port, path and expect_status, which ApplyDefaults fills for the other
// types only). A config built in code cannot say which fields it set; one
// that differs from the default was set.
func (h Health) isDefault(field string) bool {
	fs := yamlFields(reflect.TypeFor[Health]())
	i := fs.index[field]
	return reflect.ValueOf(h).Field(i).Equal(reflect.ValueOf(DefaultVIP().Health).Field(i))
}

// validatePayloads checks the request and reply of a udp check, and that
// no other type has them.
func (h Health) validatePayloads(p *problems, path string) {
	for _, f := range []struct {
		text, binary, what, req string
		required                bool
	}{
		{"send", "send_binary", "send a datagram", "a shorter request", true},
		{"expect", "expect_binary", "expect a reply", "a shorter start of the reply", false},
	} {
		text, bin := h.payloadField(f.text), h.payloadField(f.binary)
		switch {
		case h.Type != CheckUDP:
			for _, g := range []struct{ name, v string }{{f.text, text}, {f.binary, bin}} {
				if g.v != "" {
					p.add(path+"."+g.name, "only udp checks %s; remove %s or set type to udp", f.what, g.name)
				}
			}
			continue
		case text != "" && bin != "":
			p.add(path+"."+f.binary, "%s gives the same bytes as %s, in hexadecimal: keep one of them", f.binary, f.text)
			continue
		case text == "" && bin == "" && f.required:
			p.add(path+"."+f.text, `required for a udp check: the datagram each check sends, a request the service answers (e.g. send: ping, or send_binary: "1234 0100" for binary protocols)`)
			continue
		}
		name, n := f.text, len(text)
		if bin != "" {
			b, err := decodeHex(bin)
			if err != nil {
				p.add(path+"."+f.binary, "%v; write pairs of hexadecimal digits, spaces allowed, e.g. \"1234 0100\"", err)
				continue
			}
			name, n = f.binary, len(b)
		}
		if n == 0 && f.required {
			// Spaces only: an empty datagram, which services ignore.
			p.add(path+"."+name, "%q has no hexadecimal digits, so each check would send an empty datagram; write the request as pairs of hexadecimal digits, e.g. \"1234 0100\"", userValue(bin))
			continue
		}
		if n > health.MaxUDPPayload {
			p.add(path+"."+name, "%d bytes are more than one unfragmented datagram carries (%d); use %s", n, health.MaxUDPPayload, f.req)
		}
	}
}

// payloadField returns the udp payload field named by its yaml name.
func (h Health) payloadField(name string) string {
	switch name {
	case "send":
		return h.Send
	case "send_binary":
		return h.SendBinary
	case "expect":
		return h.Expect
	}
	return h.ExpectBinary
}

// Request is the datagram a udp check sends: Send, or SendBinary decoded.
// Valid only for a config that Validate accepts.
func (h Health) Request() []byte {
	if h.SendBinary != "" {
		b, _ := decodeHex(h.SendBinary)
		return b
	}
	return []byte(h.Send)
}

// Reply is the start of a healthy udp check's reply: Expect, or
// ExpectBinary decoded; empty for any reply. Valid only for a config that
// Validate accepts.
func (h Health) Reply() []byte {
	if h.ExpectBinary != "" {
		b, _ := decodeHex(h.ExpectBinary)
		return b
	}
	return []byte(h.Expect)
}

// decodeHex reads hexadecimal digit pairs; spaces between them are
// ignored.
func decodeHex(s string) ([]byte, error) {
	digits := strings.Join(strings.Fields(s), "")
	if len(digits)%2 != 0 {
		return nil, fmt.Errorf("%q has an odd number of hexadecimal digits", userValue(s))
	}
	b, err := hex.DecodeString(digits)
	if err != nil {
		return nil, fmt.Errorf("%q is not hexadecimal", userValue(s))
	}
	return b, nil
}

// validate checks h; given reports whether the file (or, in code, the
// caller) set a field, named by its yaml name.
func (h Health) validate(p *problems, path string, vipPort int, given func(field string) bool) {
	switch h.Type {
	case CheckTCP, CheckHTTP, CheckHTTPS, CheckUDP, CheckNone:
	default:
		p.add(path+".type", "%q is not a check type; use tcp, http, https, udp or none", userValue(h.Type))
		return
	}
	if h.Type == CheckNone {
		// Every other field configures a check, and none runs none: one
		// given is a mistake (a check meant, or a type left from one), not
		// a setting, whether or not it equals the default.
		for _, f := range yamlFields(reflect.TypeFor[Health]()).names {
			if f == "type" || !given(f) {
				continue
			}
			u, ok := noneUnused[f]
			if !ok {
				u = unusedBy{"uses no " + f, "tcp, http, https or udp"}
			}
			p.add(path+"."+f, "type none runs no check, so it %s; remove %s, or set type to %s", u.does, f, u.types)
		}
		return
	}
	switch h.Via {
	case ViaDirect, ViaTunnel:
	default:
		p.add(path+".via", "%q is not a check path; use direct (to each backend's address) or tunnel (to the VIP, encapsulated to each backend)", userValue(h.Via))
	}
	switch {
	case h.Port == 0 && vipPort == 0 && h.Via == ViaTunnel:
		p.add(path+".port", "required because the VIP has port 0 (all ports): a check via tunnel connects to the VIP's address on this port; set the port the backends serve the VIP on")
	case h.Port == 0 && vipPort == 0:
		p.add(path+".port", "required because the VIP has port 0 (all ports); set the port to probe on each backend")
	case h.Port != vipPort: // else the VIP's port is checked already
		checkPort(p, path+".port", h.Port, 1, "")
	}
	httpCheck := h.Type == CheckHTTP || h.Type == CheckHTTPS
	switch {
	case !httpCheck && h.Path != "":
		p.add(path+".path", "only http and https checks have a path; remove it or set type to http")
	case httpCheck && !strings.HasPrefix(h.Path, "/"):
		p.add(path+".path", "%q does not start with /; write e.g. /healthz", userValue(h.Path))
	case httpCheck:
		// The check's URL is parsed at every check: a path it refuses
		// would fail every backend's checks and take the VIP down.
		if _, err := url.Parse("http://192.0.2.1" + h.Path); err != nil {
			why := err
			if ue, ok := errors.AsType[*url.Error](err); ok {
				why = ue.Err
			}
			p.add(path+".path", "%q is not a URL path (%v); percent-encode it, a %% as %%25", userValue(h.Path), why)
		}
	}
	switch {
	case !httpCheck && h.Host != "":
		p.add(path+".host", "only http and https checks send a Host header; remove host or set type to http")
	case h.Host != "":
		checkHostHeader(p, path+".host", h.Host)
	}
	switch {
	case h.Type != CheckHTTPS && h.SNI != "":
		p.add(path+".sni", "only https checks send a server name (SNI); remove sni or set type to https")
	case h.SNI != "":
		checkServerName(p, path+".sni", h.SNI)
	}
	switch {
	case !httpCheck && h.ExpectStatus != 0:
		p.add(path+".expect_status", "only http and https checks have a status; remove it or set type to http")
	case httpCheck && (h.ExpectStatus < 100 || h.ExpectStatus > 599):
		p.add(path+".expect_status", "%d is not an HTTP status; use 100 to 599, e.g. 200", h.ExpectStatus)
	}
	h.validatePayloads(p, path)
	intervalOK := false
	switch {
	case h.Interval <= 0:
		p.add(path+".interval", "%s is not positive; write e.g. 1s", h.Interval)
	case time.Duration(h.Interval) < MinHealthInterval:
		p.add(path+".interval", "%s is below the minimum of %s; write e.g. 1s", h.Interval, MinHealthInterval)
	case time.Duration(h.Interval) > MaxHealthInterval:
		p.add(path+".interval", "%s is above the maximum of %s: a dead backend would keep getting new flows for fall intervals; write e.g. 1s",
			shortDuration(time.Duration(h.Interval)), shortDuration(MaxHealthInterval))
	default:
		intervalOK = true
	}
	switch {
	case h.Timeout <= 0:
		p.add(path+".timeout", "%s is not positive; write e.g. 500ms", h.Timeout)
	case time.Duration(h.Timeout) < MinHealthTimeout:
		p.add(path+".timeout", "%s is below the minimum of %s; write e.g. 500ms", h.Timeout, MinHealthTimeout)
	case intervalOK && h.Timeout >= h.Interval:
		p.add(path+".timeout", "%s is not shorter than interval (%s); lower it or raise the interval", h.Timeout, h.Interval)
	}
	switch {
	case h.Rise < 1:
		p.add(path+".rise", "%d is below 1; it counts the successes that mark a backend healthy, e.g. 2", h.Rise)
	case h.Rise > MaxRiseFall:
		p.add(path+".rise", "%d is above the maximum of %d: a recovered backend would wait that many intervals for new flows; it counts the successes that mark a backend healthy, e.g. 2", h.Rise, MaxRiseFall)
	}
	switch {
	case h.Fall < 1:
		p.add(path+".fall", "%d is below 1; it counts the failures that mark a backend unhealthy, e.g. 3", h.Fall)
	case h.Fall > MaxRiseFall:
		p.add(path+".fall", "%d is above the maximum of %d: a dead backend would keep getting new flows for that many intervals; it counts the failures that mark a backend unhealthy, e.g. 3", h.Fall, MaxRiseFall)
	}
}

func validateBackends(p *problems, vipPath string, bs []Backend) {
	names := map[string]int{}
	addrs := map[netip.Addr]int{}
	for j, b := range bs {
		path := fmt.Sprintf("%s.backends[%d]", vipPath, j)
		if b.Name == "" {
			p.add(path+".name", "required; name the backend, e.g. be1")
		} else if len(b.Name) > MaxNameLen {
			nameTooLong(p, path+".name", b.Name)
		} else if bad, ok := invisibleRune(b.Name); ok {
			p.add(path+".name", "%q contains %q, a space or control character, which would break the status table; write visible characters only, e.g. %s",
				userValue(b.Name), bad, userValue(visibleName(b.Name)))
		} else if strings.Contains(b.Name, "/") {
			p.add(path+".name", "%q contains '/', which switchyard drain and undrain read as VIP/NAME; use e.g. %s",
				userValue(b.Name), userValue(strings.ReplaceAll(b.Name, "/", "-")))
		} else if k, dup := names[b.Name]; dup {
			p.add(path+".name", "%q is already the name of backends[%d]; backend names must be unique within a VIP", userValue(b.Name), k)
		} else {
			names[b.Name] = j
		}
		if a, ok := parseUnicast(p, path+".address", b.Address); ok {
			if k, dup := addrs[a]; dup {
				p.add(path+".address", "%s is already backends[%d] (%s); list each backend once per VIP", a, k, userValue(bs[k].Name))
			} else {
				addrs[a] = j
			}
		}
		if b.Weight < 1 || b.Weight > 65535 {
			p.add(path+".weight", "%d is out of range; use 1 to 65535 (to stop new flows, set drained: true)", b.Weight)
		}
	}
}

// invisibleRune returns the first rune of name that is not a visible
// character: a space, a control or format character, or an invalid byte.
// Names are printed in columns and read back from command lines.
func invisibleRune(name string) (rune, bool) {
	for _, r := range name {
		if r == ' ' || r == utf8.RuneError || !unicode.IsPrint(r) {
			return r, true
		}
	}
	return 0, false
}

// visibleName is name with each invisible rune replaced by '-'.
func visibleName(name string) string {
	return strings.Map(func(r rune) rune {
		if _, bad := invisibleRune(string(r)); bad {
			return '-'
		}
		return r
	}, name)
}

// MinMTU is the smallest MTU this configuration's VIPs can work with, and
// why: IPv4's minimum datagram size (576); 1280, IPv6's minimum link MTU,
// when a backend is IPv6 (its packets go out in IPv6); and with an IPv6 VIP,
// 1280 plus the encapsulation its backends get (20 bytes to an IPv4
// backend, 40 to an IPv6 one, 8 more with GUE), so that a client's packet
// of IPv6's minimum size still fits once encapsulated (a "too big" cannot
// ask an IPv6 client for less).
func (c *Config) MinMTU() (int, string) {
	min, why := 576, "576 is IPv4's minimum datagram size"
	for _, v := range c.VIPs {
		overhead := 0
		for _, b := range v.Backends {
			if b.Addr().Is6() {
				if min < 1280 {
					min, why = 1280, "1280 is the IPv6 minimum, and some backends are IPv6"
				}
				overhead = 40
			} else if overhead == 0 {
				overhead = 20
			}
		}
		if !v.Addr().Is6() || overhead == 0 {
			continue
		}
		if c.Encap.Type == EncapGUE {
			overhead += 8
		}
		if 1280+overhead > min {
			min, why = 1280+overhead, fmt.Sprintf("IPv6 clients need 1280 bytes, IPv6's minimum MTU, after the %d-byte encapsulation", overhead)
		}
	}
	return min, why
}

func nearestTableSize(n int) int {
	sizes := TableSizes()
	best := sizes[0]
	for _, s := range sizes {
		if abs(s-n) < abs(best-n) {
			best = s
		}
	}
	return best
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func intList(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, " ")
}
