package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// lines joins its arguments as the lines of a file, so that a test case
// can name line numbers by counting arguments.
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

func TestExampleConfigsLoad(t *testing.T) {
	c, err := Load("../../configs/switchyard.yaml")
	if err != nil {
		t.Fatalf("configs/switchyard.yaml: %v", err)
	}
	if c.Datapath.Interface != "eth0" {
		t.Errorf("interface = %q, want eth0", c.Datapath.Interface)
	}
	want := map[string]struct {
		addr     string
		port     int
		proto    Protocol
		hash     HashMode
		backends []string
	}{
		"web":  {"10.100.0.1", 80, ProtocolTCP, Hash5Tuple, []string{"10.2.1.2", "10.2.2.2", "10.2.3.2"}},
		"web6": {"fd00:100::1", 80, ProtocolTCP, Hash5Tuple, []string{"fd00:2:1::2", "fd00:2:2::2", "fd00:2:3::2"}},
		"dns":  {"10.100.0.1", 53, ProtocolUDP, HashSource, []string{"10.2.1.2", "10.2.2.2", "10.2.3.2"}},
		"dns6": {"fd00:100::1", 53, ProtocolUDP, HashSource, []string{"fd00:2:1::2", "fd00:2:2::2", "fd00:2:3::2"}},
	}
	if len(c.VIPs) != len(want) {
		t.Errorf("%d VIPs, want %d", len(c.VIPs), len(want))
	}
	for name, w := range want {
		v := c.VIPByName(name)
		if v == nil {
			t.Errorf("no VIP %q", name)
			continue
		}
		if v.Address != w.addr || v.Port != w.port || v.Protocol != w.proto || v.Hash != w.hash {
			t.Errorf("VIP %s = %s:%d/%s hash %s, want %s:%d/%s hash %s", name,
				v.Address, v.Port, v.Protocol, v.Hash, w.addr, w.port, w.proto, w.hash)
		}
		var got []string
		for _, b := range v.Backends {
			got = append(got, b.Address)
		}
		if !reflect.DeepEqual(got, w.backends) {
			t.Errorf("VIP %s backends = %v, want %v", name, got, w.backends)
		}
	}

	a, err := LoadAgent("../../configs/agent.yaml")
	if err != nil {
		t.Fatalf("configs/agent.yaml: %v", err)
	}
	if a.Interface != "eth0" || len(a.VIPs) != 2 {
		t.Errorf("agent interface %q vips %v, want eth0 and the two demo VIPs", a.Interface, a.VIPs)
	}
}

// TestExampleDocumentsEveryField keeps the annotated example complete: a
// field added to a struct must be added (with its comment) to the example.
func TestExampleDocumentsEveryField(t *testing.T) {
	for _, tc := range []struct {
		file string
		typ  reflect.Type
	}{
		{"../../configs/switchyard.yaml", reflect.TypeFor[Config]()},
		{"../../configs/agent.yaml", reflect.TypeFor[AgentConfig]()},
	} {
		data, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		var root yaml.Node
		if err := yaml.Unmarshal(data, &root); err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		var walk func(n *yaml.Node, path string)
		walk = func(n *yaml.Node, path string) {
			switch n.Kind {
			case yaml.DocumentNode:
				walk(n.Content[0], path)
			case yaml.MappingNode:
				for i := 0; i+1 < len(n.Content); i += 2 {
					p := fieldPath(path, n.Content[i].Value)
					have[p] = true
					walk(n.Content[i+1], p)
				}
			case yaml.SequenceNode:
				for _, item := range n.Content {
					walk(item, path+"[]")
				}
			}
		}
		walk(&root, "")
		var fields func(t reflect.Type, path string)
		fields = func(typ reflect.Type, path string) {
			for i := range typ.NumField() {
				f := typ.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				p := fieldPath(path, name)
				if !have[p] {
					t.Errorf("%s does not show %s", filepath.Base(tc.file), p)
				}
				switch {
				case f.Type.Kind() == reflect.Struct:
					fields(f.Type, p)
				case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
					fields(f.Type.Elem(), p+"[]")
				}
			}
		}
		fields(tc.typ, "")
	}
}

func TestDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skipf("no hostname to compare with: %v", err)
	}
	c, err := Parse([]byte(lines(
		"datapath:",
		"  interface: eth1",
		"vips:",
		"  - name: web",
		"    address: 10.100.0.1",
		"    port: 80",
		"    health: {type: https}",
		"    backends: [{name: be1, address: 10.2.1.2}]",
		"  - {name: any, address: 10.100.0.2, port: 0, health: {type: tcp, port: 22}}",
	)), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Node: Node{Name: host},
		Datapath: Datapath{
			Interface:      "eth1",
			AttachMode:     AttachNative,
			PinDir:         "/sys/fs/bpf/switchyard/eth1",
			ConnTableSize:  1 << 20,
			UDPIdleTimeout: Duration(30 * time.Second),
			ICMPTooBig:     true,
		},
		Encap:   Encap{Type: EncapIPIP, GUEPort: 6080},
		API:     API{Socket: "/run/switchyard/switchyard.sock"},
		Metrics: Metrics{Listen: "127.0.0.1:9301"},
		VIPs: []VIP{{
			Name: "web", Address: "10.100.0.1", Port: 80, Protocol: ProtocolTCP, Hash: Hash5Tuple,
			Conntrack: true, TableSize: 65537,
			Health: Health{Type: CheckHTTPS, Port: 80, Path: "/", ExpectStatus: 200,
				Interval: Duration(time.Second), Timeout: Duration(500 * time.Millisecond), Rise: 2, Fall: 3, Via: ViaDirect},
			Backends: []Backend{{Name: "be1", Address: "10.2.1.2", Weight: 1}},
		}, {
			Name: "any", Address: "10.100.0.2", Port: 0, Protocol: ProtocolTCP, Hash: Hash5Tuple,
			Conntrack: true, TableSize: 65537,
			Health: Health{Type: CheckTCP, Port: 22,
				Interval: Duration(time.Second), Timeout: Duration(500 * time.Millisecond), Rise: 2, Fall: 3, Via: ViaDirect},
		}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}

	// Explicit values, including those equal to a zero value, are kept.
	c, err = Parse([]byte(lines(
		"node: {name: lb9}",
		"datapath: {interface: eth0, icmp_too_big: false, pin_dir: /sys/fs/bpf/x}",
		"metrics: {listen: \"\"}",
		"vips:",
		"  - {name: dns, address: 10.100.0.1, port: 53, protocol: udp, conntrack: false, health: {type: none}}",
	)), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Node.Name != "lb9" || c.Datapath.ICMPTooBig || c.Datapath.PinDir != "/sys/fs/bpf/x" ||
		c.Metrics.Listen != "" || c.VIPs[0].Conntrack {
		t.Errorf("explicit values not kept: %+v", c)
	}

	// "field:" with no value means "not set": the default stays.
	c, err = Parse([]byte(lines("datapath:", "  interface: eth0", "  conn_table_size:", "metrics:")), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Datapath.ConnTableSize != DefaultConnTableSize || c.Metrics.Listen != DefaultMetricsListen {
		t.Errorf("null values replaced defaults: %+v", c)
	}
}

func TestAgentDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skipf("no hostname to compare with: %v", err)
	}
	c, err := ParseAgent([]byte("interface: eth0\n"), "agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &AgentConfig{
		Node:      Node{Name: host},
		Interface: "eth0",
		GUEPort:   6080,
		PinDir:    "/sys/fs/bpf/switchyard-agent/eth0",
		API:       API{Socket: "/run/switchyard/agent.sock"},
		Metrics:   Metrics{Listen: "127.0.0.1:9302"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
	c, err = ParseAgent([]byte("interface: eth0\ngue_port: 0\nvips: []\n"), "agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.GUEPort != 0 || c.VIPs != nil {
		t.Errorf("gue_port 0 must disable GUE and vips: [] must equal no vips; got %+v", c)
	}
}

type errCase struct {
	name string
	yaml string
	want []string // each must appear in the error, e.g. "t.yaml:3: vips[0].port: 70000"
}

func TestParseErrors(t *testing.T) {
	manyBackends := make([]string, 251)
	for i := range manyBackends {
		manyBackends[i] = fmt.Sprintf("{name: b%d, address: 10.3.%d.%d}", i, i/200, i%200+1)
	}
	cases := []errCase{
		// Decoding.
		{"unknown top-level field", lines("datapath: {interface: eth0}", "vipz: []"),
			[]string{"t.yaml:2: vipz: unknown field; did you mean vips?"}},
		{"unknown nested field", lines("datapath:", "  interface: eth0", "  attach: native"),
			[]string{"t.yaml:3: datapath.attach: unknown field", "attach_mode"}},
		{"unknown field in list item", lines("datapath: {interface: eth0}", "vips:",
			"  - {name: web, address: 10.100.0.1, port: 80,", "     weight: 3}"),
			[]string{"t.yaml:4: vips[0].weight: unknown field"}},
		// The key is the user's text: written out as it was, its escape
		// sequence reached the terminal, its tab broke the line.
		{"unknown field with control characters", lines("datapath: {interface: eth0}", `"vi\e[31mps": []`, "\"a\\tb\": 1"),
			[]string{`t.yaml:2: "vi\x1b[31mps": unknown field; valid here: node,`, `t.yaml:3: "a\tb": unknown field`}},
		// A local tag is another program's type: refused, not ignored.
		{"local YAML tag", lines("datapath: !foo {interface: eth0}"),
			[]string{"t.yaml:1: datapath: the YAML tag !foo means nothing here; remove it"}},
		{"local YAML tag on a value", lines("datapath:", "  interface: !iface eth0"),
			[]string{"t.yaml:2: datapath.interface: the YAML tag !iface means nothing here; remove it"}},
		{"field set twice", lines("datapath:", "  interface: eth0", "  interface: eth1"),
			[]string{"t.yaml:3: datapath.interface: set twice (first on line 2)"}},
		{"not a number", lines("datapath:", "  interface: eth0", "  conn_table_size: 1Mi"),
			[]string{`t.yaml:3: datapath.conn_table_size: "1Mi" is not a whole number`}},
		{"port with a leading zero", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 080"),
			[]string{"t.yaml:5: vips[0].port: 080 has a leading zero, which YAML may read as octal; write 80"}},
		// YAML 1.1 reads 010 as octal: 8, not the 10 written.
		{"octal-looking port", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 010"),
			[]string{"t.yaml:5: vips[0].port: 010 has a leading zero, which YAML may read as octal; write 10"}},
		{"negative number with a leading zero", lines("datapath:", "  interface: eth0", "  mtu: -00"),
			[]string{"t.yaml:3: datapath.mtu: -00 has a leading zero, which YAML may read as octal; write 0"}},
		// YAML reads other bases and digit separators too; a port or size
		// is read and compared in decimal everywhere else (status, logs).
		{"hexadecimal port", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 0x50"),
			[]string{"t.yaml:5: vips[0].port: 0x50 is not written in decimal (YAML reads it as 80); write the number in decimal: 80"}},
		{"octal port in YAML 1.2 form", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 0o120"),
			[]string{"t.yaml:5: vips[0].port: 0o120 is not written in decimal (YAML reads it as 80); write the number in decimal: 80"}},
		{"binary weight", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - {name: be1, address: 10.2.1.2, weight: 0b101}"),
			[]string{"t.yaml:7: vips[0].backends[0].weight: 0b101 is not written in decimal (YAML reads it as 5); write the number in decimal: 5"}},
		{"digit separators", lines("datapath:", "  interface: eth0", "  conn_table_size: 1_048_576"),
			[]string{"t.yaml:3: datapath.conn_table_size: 1_048_576 is not written in decimal (YAML reads it as 1048576); write the number in decimal: 1048576"}},
		{"negative hexadecimal", lines("datapath:", "  interface: eth0", "  mtu: -0x10"),
			[]string{"t.yaml:3: datapath.mtu: -0x10 is not written in decimal (YAML reads it as -16); write the number in decimal: -16"}},
		{"explicitly tagged hexadecimal", lines("datapath:", "  interface: eth0", "  mtu: !!int 0x5dc"),
			[]string{"t.yaml:3: datapath.mtu: 0x5dc is not written in decimal (YAML reads it as 1500); write the number in decimal: 1500"}},
		// Digits, so not "write digits only".
		{"number beyond any range", lines("datapath:", "  interface: eth0", "  conn_table_size: 99999999999999999999"),
			[]string{`t.yaml:3: datapath.conn_table_size: 99999999999999999999 is out of range; use 1024 to 16777216`}},
		{"negative number beyond any range", lines("datapath:", "  interface: eth0", "  mtu: -99999999999999999999"),
			[]string{`t.yaml:3: datapath.mtu: -99999999999999999999 is out of range; use 0 (the interface MTU) or 576 to 65535`}},
		{"weight beyond any range", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - {name: be1, address: 10.2.1.2, weight: 99999999999999999999}"),
			[]string{`t.yaml:7: vips[0].backends[0].weight: 99999999999999999999 is out of range; use 1 to 65535`}},
		// Beyond time.Duration, but written as a duration.
		{"duration beyond any range", lines("datapath:", "  interface: eth0", "  udp_idle_timeout: 3000000h"),
			[]string{`t.yaml:3: datapath.udp_idle_timeout: 3000000h is too long for a duration (the longest is 2562047h47m16.854775807s, about 292 years), and this field's maximum is 24h; write e.g. 30s`}},
		{"check interval beyond any range", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health: {interval: -3000000h, timeout: 9999999999999999999ns}"),
			[]string{`t.yaml:6: vips[0].health.interval: -3000000h is too long for a duration (the longest is 2562047h47m16.854775807s, about 292 years), and this field's maximum is 1h; write e.g. 1s`,
				`t.yaml:6: vips[0].health.timeout: 9999999999999999999ns is too long for a duration (the longest is 2562047h47m16.854775807s, about 292 years), and this field's maximum is below the interval, so below 1h; write e.g. 500ms`}},
		{"not a bool", lines("datapath:", "  interface: eth0", "  icmp_too_big: maybe"),
			[]string{`t.yaml:3: datapath.icmp_too_big: "maybe" is not true or false`}},
		{"duration without unit", lines("datapath:", "  interface: eth0", "  udp_idle_timeout: 30"),
			[]string{"t.yaml:3: datapath.udp_idle_timeout: 30 has no unit; write a duration such as 30s"}},
		{"list where a mapping belongs", lines("datapath: [eth0]"),
			[]string{"t.yaml:1: datapath: expected a mapping with the fields interface,"}},
		{"mapping where a list belongs", lines("datapath: {interface: eth0}", "vips: {web: 1}"),
			[]string{"t.yaml:2: vips: expected a list, got a mapping"}},
		{"list where a value belongs", lines("datapath:", "  interface: [eth0]"),
			[]string{"t.yaml:2: datapath.interface: expected a single value, got a list"}},
		{"not YAML", lines("datapath:", "  interface: eth0", "  mtu: [1500", "vips: []"),
			[]string{"t.yaml:", "not valid YAML"}},
		{"alias inside its own anchor", lines("datapath: {interface: eth0}", "vips: [&a {name: x, port: 80, <<: *a}]"),
			[]string{"t.yaml:2: vips[0]: the alias refers to a value that contains it"}},
		{"top level not a mapping", lines("- eth0"),
			[]string{"t.yaml:1: expected a mapping with the fields node, datapath,"}},

		// node, datapath.
		{"interface missing", lines("datapath:", "  mtu: 1500"),
			[]string{"t.yaml:1: datapath.interface: required; name the NIC"}},
		{"interface too long", lines("datapath:", "  interface: enp0s31f6abcdefgh"),
			[]string{`t.yaml:2: datapath.interface: "enp0s31f6abcdefgh" is longer than 15 bytes`}},
		{"interface with slash", lines("datapath:", "  interface: eth0/1"),
			[]string{`t.yaml:2: datapath.interface: "eth0/1" is not a valid interface name`}},
		{"attach mode", lines("datapath:", "  interface: eth0", "  attach_mode: skb"),
			[]string{`t.yaml:3: datapath.attach_mode: "skb" is not an attach mode; use native, generic or auto`}},
		{"pin dir relative", lines("datapath:", "  interface: eth0", "  pin_dir: bpf/x"),
			[]string{`t.yaml:3: datapath.pin_dir: "bpf/x" is not an absolute path`}},
		// switchyard remove deletes the pin directory whole.
		{"pin dir the bpffs root", lines("datapath:", "  interface: eth0", "  pin_dir: /sys/fs/bpf"),
			[]string{`t.yaml:3: datapath.pin_dir: "/sys/fs/bpf" is the root of bpffs`, "/sys/fs/bpf/switchyard/eth0"}},
		{"pin dir the bpffs root, spelt otherwise", lines("datapath:", "  interface: eth0", "  pin_dir: /sys/fs/bpf/x/../"),
			[]string{`t.yaml:3: datapath.pin_dir: "/sys/fs/bpf/x/../" is the root of bpffs`}},
		{"pin dir /", lines("datapath:", "  interface: eth0", "  pin_dir: /"),
			[]string{`t.yaml:3: datapath.pin_dir: "/" is the root`}},
		{"conn table too small", lines("datapath:", "  interface: eth0", "  conn_table_size: 1000"),
			[]string{"t.yaml:3: datapath.conn_table_size: 1000 is out of range; use 1024 to 16777216"}},
		{"conn table too big", lines("datapath:", "  interface: eth0", "  conn_table_size: 16777217"),
			[]string{"t.yaml:3: datapath.conn_table_size: 16777217 is out of range"}},
		{"udp idle timeout zero", lines("datapath:", "  interface: eth0", "  udp_idle_timeout: 0s"),
			[]string{"t.yaml:3: datapath.udp_idle_timeout: 0s is not positive"}},
		{"udp idle timeout a typo for seconds", lines("datapath:", "  interface: eth0", "  udp_idle_timeout: 30ns"),
			[]string{"t.yaml:3: datapath.udp_idle_timeout: 30ns is below the minimum of 1s; write e.g. 30s"}},
		// The datapath counts idle time in 32-bit jiffies: past the wrap
		// (49 days at HZ 1000) no UDP entry would ever expire.
		{"udp idle timeout of a million hours", lines("datapath:", "  interface: eth0", "  udp_idle_timeout: 1000000h"),
			[]string{"t.yaml:3: datapath.udp_idle_timeout: 1000000h is above the maximum of 24h: a UDP flow idle that long has ended, and past 49 days"}},
		{"udp idle timeout the longest a duration holds", lines("datapath:", "  interface: eth0", "  udp_idle_timeout: 9223372036854775807ns"),
			[]string{"t.yaml:3: datapath.udp_idle_timeout: 2562047h47m16.854775807s is above the maximum of 24h"}},
		{"mtu too small", lines("datapath:", "  interface: eth0", "  mtu: 100"),
			[]string{"t.yaml:3: datapath.mtu: 100 is out of range; use 0 (the interface MTU) or 576 to 65535"}},
		{"mtu below the IPv6 minimum", lines("datapath:", "  interface: eth0", "  mtu: 1000", "vips:",
			"  - {name: web, address: 10.100.0.1, port: 80, backends: [{name: be1, address: 'fd00:2:1::2'}]}"),
			[]string{"t.yaml:3: datapath.mtu: 1000 is below 1280: 1280 is the IPv6 minimum, and some backends are IPv6"}},
		{"mtu leaves IPv6 clients less than 1280", lines("datapath:", "  interface: eth0", "  mtu: 1300", "encap: {type: gue}", "vips:",
			"  - {name: web, address: 'fd00:100::1', port: 80, backends: [{name: be1, address: 'fd00:2:1::2'}]}"),
			[]string{"t.yaml:3: datapath.mtu: 1300 is below 1328: IPv6 clients need 1280 bytes, IPv6's minimum MTU, after the 48-byte encapsulation; use 0 (the interface MTU) or at least 1328"}},
		{"mtu leaves IPv6 clients of IPv4 backends less than 1280", lines("datapath:", "  interface: eth0", "  mtu: 1299", "vips:",
			"  - {name: web, address: 'fd00:100::1', port: 80, backends: [{name: be1, address: 10.2.1.2}]}"),
			[]string{"t.yaml:3: datapath.mtu: 1299 is below 1300: IPv6 clients need 1280 bytes, IPv6's minimum MTU, after the 20-byte encapsulation; use 0 (the interface MTU) or at least 1300"}},

		// encap, nexthop, api, metrics.
		{"encap type", lines("datapath: {interface: eth0}", "encap:", "  type: vxlan"),
			[]string{`t.yaml:3: encap.type: "vxlan" is not an encapsulation; use ipip or gue`}},
		{"gue port 0", lines("datapath: {interface: eth0}", "encap:", "  gue_port: 0"),
			[]string{"t.yaml:3: encap.gue_port: 0 is out of range; use 1 to 65535"}},
		{"gue port too big", lines("datapath: {interface: eth0}", "encap:", "  gue_port: 65536"),
			[]string{"t.yaml:3: encap.gue_port: 65536 is out of range; use 1 to 65535"}},
		{"source v4 not an IP", lines("datapath: {interface: eth0}", "encap:", "  source_v4: 10.0.0.256"),
			[]string{`t.yaml:3: encap.source_v4: "10.0.0.256" is not an IP address`}},
		{"source v4 is IPv6", lines("datapath: {interface: eth0}", "encap:", "  source_v4: fd00::1"),
			[]string{"t.yaml:3: encap.source_v4: fd00::1 is not an IPv4 address; put IPv6 ones in encap.source_v6"}},
		{"source v6 is IPv4", lines("datapath: {interface: eth0}", "encap:", "  source_v6: 10.0.0.1"),
			[]string{"t.yaml:3: encap.source_v6: 10.0.0.1 is not an IPv6 address; put IPv4 ones in encap.source_v4"}},
		{"source v4 loopback", lines("datapath: {interface: eth0}", "encap:", "  source_v4: 127.0.0.1"),
			[]string{"t.yaml:3: encap.source_v4: 127.0.0.1 is a loopback address (127.0.0.0/8); use an address of this host that routers forward, or leave it empty"}},
		{"source v6 multicast", lines("datapath: {interface: eth0}", "encap:", "  source_v6: 'ff02::1'"),
			[]string{"t.yaml:3: encap.source_v6: ff02::1 is a multicast address (ff00::/8)"}},
		{"source prefix not a CIDR", lines("datapath: {interface: eth0}", "encap:", "  source_prefix_v4: 172.16.0.0"),
			[]string{`t.yaml:3: encap.source_prefix_v4: "172.16.0.0" is not a CIDR prefix; write one such as 172.16.0.0/16`}},
		{"source prefix host bits", lines("datapath: {interface: eth0}", "encap:", "  source_prefix_v4: 172.16.1.0/16"),
			[]string{"t.yaml:3: encap.source_prefix_v4: 172.16.1.0/16 has host bits set; write 172.16.0.0/16"}},
		// The outer source is drawn from the whole prefix: one that reaches
		// into multicast, loopback or "this network" gives martian sources,
		// which encap.source_v4 refuses one address at a time.
		{"source prefix multicast", lines("datapath: {interface: eth0}", "encap:", "  source_prefix_v4: 224.1.0.0/24"),
			[]string{"t.yaml:3: encap.source_prefix_v4: 224.1.0.0/24 holds multicast addresses (224.0.0.0/4); use a unicast prefix routed to this balancer, e.g. 172.16.0.0/16"}},
		{"source prefix everything", lines("datapath: {interface: eth0}", "encap:", "  source_prefix_v4: 0.0.0.0/0"),
			[]string{"t.yaml:3: encap.source_prefix_v4: 0.0.0.0/0 holds"}},
		{"source prefix around loopback", lines("datapath: {interface: eth0}", "encap:", "  source_prefix_v4: 126.0.0.0/7"),
			[]string{"t.yaml:3: encap.source_prefix_v4: 126.0.0.0/7 holds loopback addresses (127.0.0.0/8)"}},
		{"source prefix loopback", lines("datapath: {interface: eth0}", "encap:", "  source_prefix_v4: 127.0.0.0/8"),
			[]string{"t.yaml:3: encap.source_prefix_v4: 127.0.0.0/8 holds loopback addresses (127.0.0.0/8)"}},
		{"source prefix v6 multicast", lines("datapath: {interface: eth0}", "encap:", "  source_prefix_v6: 'ff05::/64'"),
			[]string{"t.yaml:3: encap.source_prefix_v6: ff05::/64 holds multicast addresses (ff00::/8); use a unicast prefix routed to this balancer, e.g. fd00:16::/64"}},
		{"source prefix v6 everything", lines("datapath: {interface: eth0}", "encap:", "  source_prefix_v6: '::/0'"),
			[]string{"t.yaml:3: encap.source_prefix_v6: ::/0 holds"}},
		{"source prefix v6 is IPv4", lines("datapath: {interface: eth0}", "encap:", "  source_prefix_v6: 172.16.0.0/16"),
			[]string{"t.yaml:3: encap.source_prefix_v6: 172.16.0.0/16 is not an IPv6 prefix"}},
		// The router owns its address: a client's packets to it end there
		// (seen in the lab: connection refused by the router).
		{"vip address the gateway", lines("datapath: {interface: eth0}", "nexthop: {gateway: 10.1.1.1}", "vips:",
			"  - {name: web, address: 10.1.1.1, port: 80}", "  - {name: web6, address: 'fd00:1:1::1', port: 80}"),
			[]string{"t.yaml:4: vips[0].address: 10.1.1.1 is nexthop.gateway, the router's own address: clients' packets to it end at the router and never reach a balancer; use an address the routers send to the balancers, or correct nexthop.gateway"}},
		{"vip address the IPv6 gateway", lines("datapath: {interface: eth0}", "nexthop: {gateway: 'fd00:1:1::1'}", "vips:",
			"  - {name: web6, address: 'fd00:1:1:0::1', port: 80}"),
			[]string{"t.yaml:4: vips[0].address: fd00:1:1::1 is nexthop.gateway"}},
		{"gateway not an IP", lines("datapath: {interface: eth0}", "nexthop:", "  gateway: router1"),
			[]string{`t.yaml:3: nexthop.gateway: "router1" is not an IP address`}},
		{"gateway loopback", lines("datapath: {interface: eth0}", "nexthop:", "  gateway: 127.0.0.1"),
			[]string{"t.yaml:3: nexthop.gateway: 127.0.0.1 is a loopback address (127.0.0.0/8): packets to it never leave the host; write the router's address, or leave it empty for the default route's gateway"}},
		{"gateway broadcast", lines("datapath: {interface: eth0}", "nexthop:", "  gateway: 255.255.255.255"),
			[]string{"t.yaml:3: nexthop.gateway: 255.255.255.255 is a broadcast address"}},
		{"gateway link-local multicast", lines("datapath: {interface: eth0}", "nexthop:", "  gateway: 'ff02::2'"),
			[]string{"t.yaml:3: nexthop.gateway: ff02::2 is a multicast address (ff00::/8)"}},
		{"gateway unspecified", lines("datapath: {interface: eth0}", "nexthop:", "  gateway: '::'"),
			[]string{"t.yaml:3: nexthop.gateway: :: is the unspecified address"}},
		{"gateway with zone", lines("datapath: {interface: eth0}", "nexthop:", "  gateway: fe80::1%eth0"),
			[]string{`t.yaml:3: nexthop.gateway: "fe80::1%eth0" has an IPv6 zone; remove %eth0`}},
		{"api socket empty", lines("datapath: {interface: eth0}", "api:", `  socket: ""`),
			[]string{"t.yaml:3: api.socket: required"}},
		{"api socket relative", lines("datapath: {interface: eth0}", "api:", "  socket: sy.sock"),
			[]string{`t.yaml:3: api.socket: "sy.sock" is not an absolute path`}},
		{"api socket too long", lines("datapath: {interface: eth0}", "api:", "  socket: /"+strings.Repeat("x", 110)),
			[]string{"t.yaml:3: api.socket:", "longer than the 107 a unix socket path may have"}},
		{"metrics not host:port", lines("datapath: {interface: eth0}", "metrics:", "  listen: 9301"),
			[]string{`t.yaml:3: metrics.listen: "9301" is not host:port`}},
		{"metrics bad host", lines("datapath: {interface: eth0}", "metrics:", "  listen: 'lo cal:9301'"),
			[]string{`t.yaml:3: metrics.listen: host "lo cal" in "lo cal:9301" is not an address or host name`}},
		{"metrics bad port", lines("datapath: {interface: eth0}", "metrics:", "  listen: 127.0.0.1:99999"),
			[]string{`t.yaml:3: metrics.listen: port "99999"`}},

		// vips.
		{"vip name missing", lines("datapath: {interface: eth0}", "vips:", "  - address: 10.100.0.1", "    port: 80"),
			[]string{"t.yaml:3: vips[0].name: required"}},
		{"vip name invalid", lines("datapath: {interface: eth0}", "vips:", "  - name: Web Site", "    address: 10.100.0.1", "    port: 80"),
			[]string{`t.yaml:3: vips[0].name: "Web Site" is not a valid name`}},
		{"vip name with a tab", lines("datapath: {interface: eth0}", "vips:", `  - name: "web\t"`, "    address: 10.100.0.1", "    port: 80"),
			[]string{`t.yaml:3: vips[0].name: "web\t" is not a valid name`}},
		{"vip name duplicate", lines("datapath: {interface: eth0}", "vips:",
			"  - {name: web, address: 10.100.0.1, port: 80}", "  - {name: web, address: 10.100.0.1, port: 443}"),
			[]string{`t.yaml:4: vips[1].name: "web" is already the name of vips[0]`}},
		{"vip address missing", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    port: 80"),
			[]string{"t.yaml:3: vips[0].address: required"}},
		{"vip address invalid", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0", "    port: 80"),
			[]string{`t.yaml:4: vips[0].address: "10.100.0" is not an IP address`}},
		{"vip address unspecified", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 0.0.0.0", "    port: 80"),
			[]string{"t.yaml:4: vips[0].address: 0.0.0.0 is the unspecified address"}},
		{"vip address multicast", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: ff02::1", "    port: 80"),
			[]string{"t.yaml:4: vips[0].address: ff02::1 is a multicast address"}},
		{"vip address loopback", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 127.0.0.1", "    port: 80"),
			[]string{"t.yaml:4: vips[0].address: 127.0.0.1 is a loopback address (127.0.0.0/8): packets to it never leave the host; use a unicast address such as 10.0.0.1 or fd00::1"}},
		{"vip address IPv6 loopback", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: '::1'", "    port: 80"),
			[]string{"t.yaml:4: vips[0].address: ::1 is a loopback address (::1/128)"}},
		{"vip address broadcast", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 255.255.255.255", "    port: 80"),
			[]string{"t.yaml:4: vips[0].address: 255.255.255.255 is a broadcast address (255.255.255.255/32): it names every host on the link"}},
		{"vip address this network", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 0.1.2.3", "    port: 80"),
			[]string{`t.yaml:4: vips[0].address: 0.1.2.3 is a "this network" address (0.0.0.0/8): it names no host`}},
		{"backend address loopback", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - {name: be1, address: 127.0.0.1}"),
			[]string{"t.yaml:7: vips[0].backends[0].address: 127.0.0.1 is a loopback address"}},
		{"backend address link-local multicast", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - {name: be1, address: 224.0.0.1}", "      - {name: be2, address: 'ff02::2'}"),
			[]string{"t.yaml:7: vips[0].backends[0].address: 224.0.0.1 is a multicast address (224.0.0.0/4): it names a group of hosts, not one",
				"t.yaml:8: vips[0].backends[1].address: ff02::2 is a multicast address (ff00::/8)"}},
		{"backend address broadcast", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - {name: be1, address: 255.255.255.255}"),
			[]string{"t.yaml:7: vips[0].backends[0].address: 255.255.255.255 is a broadcast address"}},
		// A VIP is reached by clients through routers, and a backend
		// through the balancer's next hop: routers forward neither
		// link-local addresses nor the reserved 240.0.0.0/4.
		{"vip address link-local", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 169.254.10.1", "    port: 80"),
			[]string{"t.yaml:4: vips[0].address: 169.254.10.1 is a link-local address (169.254.0.0/16): routers do not forward it, so only hosts on one link reach it; use a unicast address such as 10.0.0.1 or fd00::1"}},
		{"vip address IPv6 link-local", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 'fe80::10'", "    port: 80"),
			[]string{"t.yaml:4: vips[0].address: fe80::10 is a link-local address (fe80::/10)"}},
		{"vip address reserved", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 240.0.0.1", "    port: 80"),
			[]string{"t.yaml:4: vips[0].address: 240.0.0.1 is a reserved address (240.0.0.0/4): it is set aside for future use, and hosts and routers drop it; use a unicast address such as 10.0.0.1 or fd00::1"}},
		{"backend address link-local", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:",
			"      - {name: be1, address: 169.254.1.2}", "      - {name: be2, address: 'fe80::2'}", "      - {name: be3, address: 255.1.2.3}"),
			[]string{"t.yaml:7: vips[0].backends[0].address: 169.254.1.2 is a link-local address (169.254.0.0/16)",
				"t.yaml:8: vips[0].backends[1].address: fe80::2 is a link-local address (fe80::/10)",
				"t.yaml:9: vips[0].backends[2].address: 255.1.2.3 is a reserved address (240.0.0.0/4)"}},
		{"gateway reserved", lines("datapath: {interface: eth0}", "nexthop:", "  gateway: 250.0.0.1"),
			[]string{"t.yaml:3: nexthop.gateway: 250.0.0.1 is a reserved address (240.0.0.0/4)"}},
		// The outer source must be routed back from the backends.
		{"source v4 link-local", lines("datapath: {interface: eth0}", "encap:", "  source_v4: 169.254.0.9"),
			[]string{"t.yaml:3: encap.source_v4: 169.254.0.9 is a link-local address (169.254.0.0/16); use an address of this host that routers forward, or leave it empty"}},
		{"source v6 link-local", lines("datapath: {interface: eth0}", "encap:", "  source_v6: 'fe80::9'"),
			[]string{"t.yaml:3: encap.source_v6: fe80::9 is a link-local address (fe80::/10)"}},
		{"source prefix link-local", lines("datapath: {interface: eth0}", "encap:", "  source_prefix_v4: 169.254.0.0/24", "  source_prefix_v6: 'fe80::/64'"),
			[]string{"t.yaml:3: encap.source_prefix_v4: 169.254.0.0/24 holds link-local addresses (169.254.0.0/16)",
				"t.yaml:4: encap.source_prefix_v6: fe80::/64 holds link-local addresses (fe80::/10)"}},
		{"source prefix reserved", lines("datapath: {interface: eth0}", "encap:", "  source_prefix_v4: 240.0.0.0/8"),
			[]string{"t.yaml:3: encap.source_prefix_v4: 240.0.0.0/8 holds reserved addresses (240.0.0.0/4)"}},
		{"vip address v4-compatible", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: ::10.100.0.1", "    port: 80", "    backends: [{name: be1, address: '::a02:102'}]"),
			[]string{"t.yaml:4: vips[0].address: ::10.100.0.1 is an IPv4-compatible IPv6 address, deprecated and not routed; write the IPv4 address 10.100.0.1, or an IPv6 one",
				"t.yaml:6: vips[0].backends[0].address: ::a02:102 is an IPv4-compatible IPv6 address, deprecated and not routed; write the IPv4 address 10.2.1.2"}},
		{"vip address v4-mapped", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: ::ffff:10.100.0.1", "    port: 80"),
			[]string{"t.yaml:4: vips[0].address: ::ffff:10.100.0.1 is an IPv4-mapped IPv6 address; write it as 10.100.0.1"}},
		{"vip port out of range", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 70000"),
			[]string{"t.yaml:5: vips[0].port: 70000 is out of range; use 0 (all ports) to 65535"}},
		{"vip port negative", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: -1"),
			[]string{"t.yaml:5: vips[0].port: -1 is out of range"}},
		{"vip port missing", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1"),
			[]string{"t.yaml:3: vips[0].port: required; write the service port, or 0 for every port"}},
		{"vip protocol", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    protocol: sctp"),
			[]string{`t.yaml:6: vips[0].protocol: "sctp" is not a protocol; use tcp or udp`}},
		{"vip duplicate address port protocol", lines("datapath: {interface: eth0}", "vips:",
			"  - {name: a, address: 'fd00:100::1', port: 80}", "  - {name: b, address: 'fd00:100:0::1', port: 80, protocol: tcp}"),
			[]string{"t.yaml:4: vips[1]: fd00:100::1 port 80 tcp is already vips[0] (a)"}},
		{"vip hash", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    hash: roundrobin"),
			[]string{`t.yaml:6: vips[0].hash: "roundrobin" is not a hash mode; use 5tuple or source`}},
		{"conntrack off for tcp", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    conntrack: false"),
			[]string{"t.yaml:6: vips[0].conntrack: false is only allowed for udp VIPs"}},
		{"table size not allowed", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    table_size: 65536"),
			[]string{"t.yaml:6: vips[0].table_size: 65536 is not an allowed size; use 65537 (the nearest)"}},
		{"table size too small for backends", lines("datapath: {interface: eth0}", "vips:",
			"  - {name: web, address: 10.100.0.1, port: 80, table_size: 251, backends: ["+strings.Join(manyBackends, ", ")+"]}"),
			[]string{"t.yaml:3: vips[0].table_size: 251 slots hold at most 250 backends, and there are 251"}},

		// vips[].health.
		{"health type", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: icmp"),
			[]string{`t.yaml:7: vips[0].health.type: "icmp" is not a check type`}},
		{"health port needed for all-ports VIP", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 0", "    health:", "      type: tcp"),
			[]string{"t.yaml:6: vips[0].health.port: required because the VIP has port 0 (all ports)"}},
		{"health port out of range", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      port: 65536"),
			[]string{"t.yaml:7: vips[0].health.port: 65536 is out of range; use 1 to 65535"}},
		{"health path on tcp", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      path: /healthz"),
			[]string{"t.yaml:7: vips[0].health.path: only http and https checks have a path"}},
		{"health path relative", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      path: healthz"),
			[]string{`t.yaml:8: vips[0].health.path: "healthz" does not start with /`}},
		{"health path with a bare percent", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      path: /health%"),
			[]string{`t.yaml:8: vips[0].health.path: "/health%" is not a URL path (invalid URL escape "%"); percent-encode it, a % as %25`}},
		{"health path with a control character", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: https", `      path: "/a\tb"`),
			[]string{`t.yaml:8: vips[0].health.path: "/a\tb" is not a URL path (net/url: invalid control character in URL)`}},
		{"health status on tcp", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      expect_status: 204"),
			[]string{"t.yaml:7: vips[0].health.expect_status: only http and https checks have a status"}},
		{"health status invalid", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: https", "      expect_status: 2000"),
			[]string{"t.yaml:8: vips[0].health.expect_status: 2000 is not an HTTP status"}},
		{"health interval zero", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      interval: 0s"),
			[]string{"t.yaml:7: vips[0].health.interval: 0s is not positive"}},
		{"health timeout zero", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      timeout: -1s"),
			[]string{"t.yaml:7: vips[0].health.timeout: -1s is not positive"}},
		{"health timeout not below interval", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      interval: 2s", "      timeout: 2s"),
			[]string{"t.yaml:8: vips[0].health.timeout: 2s is not shorter than interval (2s)"}},
		{"health bad duration", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      interval: fast"),
			[]string{`t.yaml:7: vips[0].health.interval: "fast" is not a duration`}},
		{"health interval below the minimum", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      interval: 2ns", "      timeout: 1ns"),
			[]string{"t.yaml:7: vips[0].health.interval: 2ns is below the minimum of 100ms", "write e.g. 1s",
				"t.yaml:8: vips[0].health.timeout: 1ns is below the minimum of 1ms"}},
		// Timers of a longer interval overflow in the monitor: an interval
		// plus its jitter beyond time.Duration's range fires at once, every
		// time, spinning the check.
		{"health interval of a million hours", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      interval: 1000000h"),
			[]string{"t.yaml:7: vips[0].health.interval: 1000000h is above the maximum of 1h: a dead backend would keep getting new flows for fall intervals; write e.g. 1s"}},
		{"health interval the longest a duration holds", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      interval: 9223372036854775807ns", "      timeout: 9223372036854775806ns"),
			[]string{"t.yaml:7: vips[0].health.interval: 2562047h47m16.854775807s is above the maximum of 1h"}},
		{"health rise and fall far too large", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      rise: 9223372036854775807", "      fall: 30000"),
			[]string{"t.yaml:7: vips[0].health.rise: 9223372036854775807 is above the maximum of 1000: a recovered backend would wait that many intervals for new flows",
				"t.yaml:8: vips[0].health.fall: 30000 is above the maximum of 1000: a dead backend would keep getting new flows for that many intervals; it counts the failures that mark a backend unhealthy, e.g. 3"}},
		{"health timeout below the minimum", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      timeout: 500us"),
			[]string{"t.yaml:7: vips[0].health.timeout: 500µs is below the minimum of 1ms; write e.g. 500ms"}},
		{"health port with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: none", "      port: 8080"),
			[]string{"t.yaml:8: vips[0].health.port: type none runs no check, so it probes no port; remove port, or set type to tcp, http, https or udp"}},
		{"health port equal to the VIP's with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health: {type: none, port: 80}"),
			[]string{"t.yaml:6: vips[0].health.port: type none runs no check"}},
		{"health path with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: none", "      path: /healthz"),
			[]string{"t.yaml:8: vips[0].health.path: type none runs no check, so it requests no path; remove path, or set type to http or https"}},
		{"health status with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: none", "      expect_status: 204"),
			[]string{"t.yaml:8: vips[0].health.expect_status: type none runs no check, so it expects no status; remove expect_status, or set type to http or https"}},
		// none runs no check: a field that configures one is refused even
		// at its default value, which the file still did not need.
		{"health interval with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: none", "      interval: 5s"),
			[]string{"t.yaml:8: vips[0].health.interval: type none runs no check, so it has no interval; remove interval, or set type to tcp, http, https or udp"}},
		{"health timeout at its default with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: none", "      timeout: 500ms"),
			[]string{"t.yaml:8: vips[0].health.timeout: type none runs no check, so it has no timeout; remove timeout, or set type to tcp, http, https or udp"}},
		{"health rise and fall with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health: {type: none, rise: 2, fall: 0}"),
			[]string{"t.yaml:6: vips[0].health.rise: type none runs no check, so it counts no successes (rise); remove rise, or set type to tcp, http, https or udp",
				"t.yaml:6: vips[0].health.fall: type none runs no check, so it counts no failures (fall); remove fall"}},
		{"health port 0 with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health: {type: none, port: 0}"),
			[]string{"t.yaml:6: vips[0].health.port: type none runs no check, so it probes no port"}},
		{"health send with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: dns", "    address: 10.100.0.1", "    port: 53", "    protocol: udp", "    health: {type: none, send: ping, expect_binary: '00'}"),
			[]string{"t.yaml:7: vips[0].health.send: type none runs no check, so it sends no datagram; remove send, or set type to udp",
				"t.yaml:7: vips[0].health.expect_binary: type none runs no check, so it expects no reply; remove expect_binary, or set type to udp"}},
		{"health udp without send", lines("datapath: {interface: eth0}", "vips:", "  - name: dns", "    address: 10.100.0.1", "    port: 53", "    protocol: udp", "    health:", "      type: udp"),
			[]string{"t.yaml:7: vips[0].health.send: required for a udp check: the datagram each check sends"}},
		{"health send on tcp", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      send_binary: '00'", "      expect: pong"),
			[]string{"t.yaml:7: vips[0].health.send_binary: only udp checks send a datagram; remove send_binary or set type to udp",
				"t.yaml:8: vips[0].health.expect: only udp checks expect a reply; remove expect or set type to udp"}},
		{"health send_binary of spaces", lines("datapath: {interface: eth0}", "vips:", "  - name: dns", "    address: 10.100.0.1", "    port: 53", "    protocol: udp", "    health:", "      type: udp", "      send_binary: '  '"),
			[]string{`t.yaml:9: vips[0].health.send_binary: "  " has no hexadecimal digits, so each check would send an empty datagram; write the request as pairs of hexadecimal digits, e.g. "1234 0100"`}},
		{"health send and send_binary", lines("datapath: {interface: eth0}", "vips:", "  - name: dns", "    address: 10.100.0.1", "    port: 53", "    protocol: udp", "    health:", "      type: udp", "      send: ping", "      send_binary: 70696e67"),
			[]string{"t.yaml:10: vips[0].health.send_binary: send_binary gives the same bytes as send, in hexadecimal: keep one of them"}},
		{"health send_binary not hex", lines("datapath: {interface: eth0}", "vips:", "  - name: dns", "    address: 10.100.0.1", "    port: 53", "    protocol: udp", "    health:", "      type: udp", "      send_binary: 12 3", "      expect_binary: 0x12"),
			[]string{`t.yaml:9: vips[0].health.send_binary: "12 3" has an odd number of hexadecimal digits; write pairs of hexadecimal digits, spaces allowed, e.g. "1234 0100"`,
				`t.yaml:10: vips[0].health.expect_binary: "0x12" is not hexadecimal`}},
		{"health send too long", lines("datapath: {interface: eth0}", "vips:", "  - name: dns", "    address: 10.100.0.1", "    port: 53", "    protocol: udp", "    health:", "      type: udp", "      send: "+strings.Repeat("x", 1453), "      expect_binary: "+strings.Repeat("ab", 1453)),
			[]string{"t.yaml:9: vips[0].health.send: 1453 bytes are more than one unfragmented datagram carries (1452); use a shorter request",
				"t.yaml:10: vips[0].health.expect_binary: 1453 bytes are more than one unfragmented datagram carries (1452)"}},
		{"health path on udp", lines("datapath: {interface: eth0}", "vips:", "  - name: dns", "    address: 10.100.0.1", "    port: 53", "    protocol: udp", "    health: {type: udp, send: ping, path: /}"),
			[]string{"t.yaml:7: vips[0].health.path: only http and https checks have a path"}},
		{"health via unknown", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health: {via: encap}"),
			[]string{`t.yaml:6: vips[0].health.via: "encap" is not a check path; use direct (to each backend's address) or tunnel (to the VIP, encapsulated to each backend)`}},
		{"health via tunnel on all ports without port", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 0", "    health: {via: tunnel}"),
			[]string{"t.yaml:6: vips[0].health.port: required because the VIP has port 0 (all ports): a check via tunnel connects to the VIP's address on this port"}},
		{"health via with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health: {type: none, via: tunnel}"),
			[]string{"t.yaml:6: vips[0].health.via: type none runs no check, so it sends nothing, directly or through the tunnel (via); remove via, or set type to tcp, http, https or udp"}},
		{"health sni on http", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      sni: app.example.com"),
			[]string{"t.yaml:8: vips[0].health.sni: only https checks send a server name (SNI); remove sni or set type to https"}},
		{"health sni on tcp", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health: {sni: app.example.com}"),
			[]string{"t.yaml:6: vips[0].health.sni: only https checks send a server name (SNI)"}},
		{"health sni with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health: {type: none, sni: app.example.com}"),
			[]string{"t.yaml:6: vips[0].health.sni: type none runs no check, so it sends no server name (SNI); remove sni, or set type to https"}},
		{"health sni an IP address", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 443", "    health:", "      type: https", "      sni: 10.2.1.2"),
			[]string{`t.yaml:8: vips[0].health.sni: "10.2.1.2" is an IP address, which TLS does not send as a server name (RFC 6066); write the DNS name the backend serves, e.g. app.example.com, or leave it empty to send none`}},
		{"health sni an IPv6 address", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 443", "    health: {type: https, sni: \"[fd00::1]\"}"),
			[]string{`t.yaml:6: vips[0].health.sni: "[fd00::1]" is an IP address, which TLS does not send`}},
		{"health sni with a port", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 443", "    health:", "      type: https", "      sni: app.example.com:443"),
			[]string{`t.yaml:8: vips[0].health.sni: "app.example.com:443" has a port, which TLS does not send; write the name alone, e.g. app.example.com`}},
		{"health sni a URL", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 443", "    health:", "      type: https", "      sni: https://app.example.com/"),
			[]string{`t.yaml:8: vips[0].health.sni: "https://app.example.com/" is a URL, not a host name; write the DNS name alone, e.g. app.example.com`}},
		{"health sni not ASCII", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 443", "    health:", "      type: https", "      sni: bücher.example"),
			[]string{`t.yaml:8: vips[0].health.sni: "bücher.example" has non-ASCII characters, which are sent in their IDNA (xn--) form: write that form`}},
		{"health sni with a space", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 443", "    health:", "      type: https", "      sni: app example.com"),
			[]string{`t.yaml:8: vips[0].health.sni: "app example.com" contains ' ', which a host name cannot (letters, digits, '-', '_' and '.' only)`}},
		{"health sni with two dots", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 443", "    health:", "      type: https", "      sni: app..example.com"),
			[]string{`t.yaml:8: vips[0].health.sni: "app..example.com" has an empty label (a leading dot, or two dots in a row)`}},
		{"health host on tcp", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health: {host: app.example.com}"),
			[]string{"t.yaml:6: vips[0].health.host: only http and https checks send a Host header; remove host or set type to http"}},
		{"health host with type none", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health: {type: none, host: app.example.com}"),
			[]string{"t.yaml:6: vips[0].health.host: type none runs no check, so it sends no Host header; remove host, or set type to http or https"}},
		{"health host a URL", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      host: http://app.example.com/"),
			[]string{`t.yaml:8: vips[0].health.host: "http://app.example.com/" is a URL, not a host; write a host name or an address, with a port if needed, e.g. app.example.com or [fd00::1]:8080`}},
		{"health host a bare IPv6 address", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      host: fd00::1"),
			[]string{`t.yaml:8: vips[0].health.host: "fd00::1" is an IPv6 address, which a Host header writes in brackets: write [fd00::1]`}},
		{"health host brackets without an IPv6 address", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      host: \"[10.2.1.2]:80\""),
			[]string{`t.yaml:8: vips[0].health.host: "[10.2.1.2]:80": 10.2.1.2 in brackets is not an IPv6 address`}},
		{"health host unclosed bracket", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      host: \"[fd00::1\""),
			[]string{`t.yaml:8: vips[0].health.host: "[fd00::1" has no closing ']'`}},
		{"health host junk after the brackets", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      host: \"[fd00::1]8080\""),
			[]string{`t.yaml:8: vips[0].health.host: "[fd00::1]8080" has "8080" after the address`}},
		{"health host port out of range", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      host: app.example.com:65536"),
			[]string{`t.yaml:8: vips[0].health.host: port "65536" in "app.example.com:65536" is not 1 to 65535`}},
		{"health host empty port", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      host: \"[fd00::1]:\""),
			[]string{`t.yaml:8: vips[0].health.host: port "" in "[fd00::1]:" is not 1 to 65535`}},
		{"health host without a host", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      host: \":8080\""),
			[]string{`t.yaml:8: vips[0].health.host: ":8080" has no host before the port`}},
		{"health host with a space", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      type: http", "      host: app example.com"),
			[]string{`t.yaml:8: vips[0].health.host: "app example.com" contains ' ', which a host name cannot`}},
		{"health rise zero", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      rise: 0"),
			[]string{"t.yaml:7: vips[0].health.rise: 0 is below 1"}},
		{"health fall zero", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      fall: 0"),
			[]string{"t.yaml:7: vips[0].health.fall: 0 is below 1"}},
		{"health unknown field", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    health:", "      intervall: 1s"),
			[]string{"t.yaml:7: vips[0].health.intervall: unknown field; did you mean interval?"}},

		{"node name with a space", lines("node: {name: lb 1}", "datapath: {interface: eth0}"),
			[]string{`t.yaml:1: node.name: "lb 1" contains ' ', a space or control character, which would break status and the metrics' node label; write visible characters only, e.g. lb-1`}},

		// vips[].backends.
		{"backend name missing", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - address: 10.2.1.2"),
			[]string{"t.yaml:7: vips[0].backends[0].name: required"}},
		{"backend name duplicate", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:",
			"      - {name: be1, address: 10.2.1.2}", "      - {name: be1, address: 10.2.2.2}"),
			[]string{`t.yaml:8: vips[0].backends[1].name: "be1" is already the name of backends[0]`}},
		{"backend name with a slash", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - {name: rack1/be1, address: 10.2.1.2}"),
			[]string{`t.yaml:7: vips[0].backends[0].name: "rack1/be1" contains '/', which switchyard drain and undrain read as VIP/NAME; use e.g. rack1-be1`}},
		{"backend name with a tab", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", `      - {name: "be\t1", address: 10.2.1.2}`),
			[]string{`t.yaml:7: vips[0].backends[0].name: "be\t1" contains '\t', a space or control character, which would break the status table; write visible characters only, e.g. be-1`}},
		{"backend name with a newline", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", `      - {name: "be1\n", address: 10.2.1.2}`),
			[]string{`t.yaml:7: vips[0].backends[0].name: "be1\n" contains '\n'`, "e.g. be1-"}},
		{"backend name with a space", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - {name: rack 1, address: 10.2.1.2}"),
			[]string{`t.yaml:7: vips[0].backends[0].name: "rack 1" contains ' '`, "e.g. rack-1"}},
		{"backend name with an invisible character", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", `      - {name: "be\u200b1", address: 10.2.1.2}`),
			[]string{`t.yaml:7: vips[0].backends[0].name: "be\u200b1" contains '\u200b'`}},
		{"backend address missing", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - name: be1"),
			[]string{"t.yaml:7: vips[0].backends[0].address: required"}},
		{"backend address invalid", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - name: be1", "        address: be1.example"),
			[]string{`t.yaml:8: vips[0].backends[0].address: "be1.example" is not an IP address`}},
		{"backend address duplicate", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:",
			"      - {name: be1, address: 10.2.1.2}", "      - {name: be2, address: 10.2.1.2}"),
			[]string{"t.yaml:8: vips[0].backends[1].address: 10.2.1.2 is already backends[0] (be1)"}},
		// Routers send a VIP's packets to the balancers: encapsulated to a
		// backend at a VIP address, they come back to a balancer, which
		// drops them (seen in the lab: every connection times out).
		{"backend address a VIP's", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:",
			"      - {name: be1, address: 10.2.1.2}", "      - {name: be2, address: 10.100.0.1}",
			"  - {name: web6, address: 'fd00:100::1', port: 80, backends: [{name: be1, address: 'fd00:100::1'}]}",
			"  - {name: dns, address: 10.100.0.2, port: 53, protocol: udp, health: {type: none}, backends: [{name: be1, address: 10.100.0.2}]}"),
			[]string{"t.yaml:8: vips[0].backends[1].address: 10.100.0.1 is the address of vips[0] (web): routers send packets to it to the balancers, so the backend would never get those encapsulated to it; write the backend's own address (the VIP goes on its lo)",
				"t.yaml:9: vips[1].backends[0].address: fd00:100::1 is the address of vips[1] (web6)",
				"t.yaml:10: vips[2].backends[0].address: 10.100.0.2 is the address of vips[2] (dns)"}},
		{"backend address another VIP's", lines("datapath: {interface: eth0}", "vips:",
			"  - {name: web, address: 10.100.0.1, port: 80, backends: [{name: be1, address: 10.100.0.2}]}",
			"  - {name: api, address: 10.100.0.2, port: 443, backends: [{name: be1, address: 10.2.1.2}]}"),
			[]string{"t.yaml:3: vips[0].backends[0].address: 10.100.0.2 is the address of vips[1] (api)"}},
		{"backend weight zero", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - name: be1", "        address: 10.2.1.2", "        weight: 0"),
			[]string{"t.yaml:9: vips[0].backends[0].weight: 0 is out of range; use 1 to 65535 (to stop new flows, set drained: true)"}},
		{"backend weight too big", lines("datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:", "      - name: be1", "        address: 10.2.1.2", "        weight: 65536"),
			[]string{"t.yaml:9: vips[0].backends[0].weight: 65536 is out of range"}},
	}
	runErrCases(t, cases, func(data []byte) error { _, err := Parse(data, "t.yaml"); return err })
}

func TestParseAgentErrors(t *testing.T) {
	var encap []string
	for i := range MaxEncapAddrs + 1 {
		encap = append(encap, fmt.Sprintf("10.2.1.%d", i+1))
	}
	manyEncap := strings.Join(encap, ", ")
	cases := []errCase{
		{"unknown field", lines("interface: eth0", "vip: [10.100.0.1]"),
			[]string{"t.yaml:2: vip: unknown field; did you mean vips?"}},
		{"interface missing", lines("gue_port: 6080"),
			[]string{"t.yaml:1: interface: required; name the NIC that receives the encapsulated packets"}},
		{"interface invalid", lines("interface: 'eth 0'"),
			[]string{`t.yaml:1: interface: "eth 0" is not a valid interface name`}},
		{"node name with a tab", lines("node: {name: \"be\\t1\"}", "interface: eth0"),
			[]string{`t.yaml:1: node.name: "be\t1" contains '\t', a space or control character, which would break status and the metrics' node label; write visible characters only, e.g. be-1`}},
		{"encap address invalid", lines("interface: eth0", "encap_addresses:", "  - 10.2.1.2", "  - 10.2.1"),
			[]string{`t.yaml:4: encap_addresses[1]: "10.2.1" is not an IP address`}},
		{"encap address duplicate", lines("interface: eth0", "encap_addresses: [10.2.1.2, 10.2.1.2]"),
			[]string{"t.yaml:2: encap_addresses[1]: 10.2.1.2 is already encap_addresses[0]"}},
		{"encap addresses over the decap program's limit", lines("interface: eth0", "encap_addresses: ["+manyEncap+"]"),
			[]string{"t.yaml:2: encap_addresses: 65 addresses are more than the decap program's limit of 64; list only those the balancers send to"}},
		{"gue port in hexadecimal", lines("interface: eth0", "gue_port: 0x17c0"),
			[]string{"t.yaml:2: gue_port: 0x17c0 is not written in decimal (YAML reads it as 6080); write the number in decimal: 6080"}},
		{"gue port", lines("interface: eth0", "gue_port: 65536"),
			[]string{"t.yaml:2: gue_port: 65536 is out of range; use 0 (GUE decap off) to 65535"}},
		{"vip invalid", lines("interface: eth0", "vips:", "  - 10.100.0.1", "  - 'fd00:100::1%lo'"),
			[]string{`t.yaml:4: vips[1]: "fd00:100::1%lo" has an IPv6 zone`}},
		{"vip loopback", lines("interface: eth0", "vips:", "  - 10.100.0.1", "  - 127.0.0.1"),
			[]string{"t.yaml:4: vips[1]: 127.0.0.1 is a loopback address (127.0.0.0/8)"}},
		{"encap address loopback", lines("interface: eth0", "encap_addresses: ['::1']"),
			[]string{"t.yaml:2: encap_addresses[0]: ::1 is a loopback address (::1/128)"}},
		{"encap address broadcast", lines("interface: eth0", "encap_addresses: [255.255.255.255]"),
			[]string{"t.yaml:2: encap_addresses[0]: 255.255.255.255 is a broadcast address"}},
		{"vip link-local", lines("interface: eth0", "vips:", "  - 169.254.7.7", "  - 'fe80::7'"),
			[]string{"t.yaml:3: vips[0]: 169.254.7.7 is a link-local address (169.254.0.0/16)",
				"t.yaml:4: vips[1]: fe80::7 is a link-local address (fe80::/10)"}},
		{"encap address link-local or reserved", lines("interface: eth0", "encap_addresses: [169.254.1.2, 'fe80::2', 240.1.1.1]"),
			[]string{"t.yaml:2: encap_addresses[0]: 169.254.1.2 is a link-local address (169.254.0.0/16)",
				"t.yaml:2: encap_addresses[1]: fe80::2 is a link-local address (fe80::/10)",
				"t.yaml:2: encap_addresses[2]: 240.1.1.1 is a reserved address (240.0.0.0/4)"}},
		{"vip duplicate", lines("interface: eth0", "vips:", "  - 10.100.0.1", "  - 10.100.0.1"),
			[]string{"t.yaml:4: vips[1]: 10.100.0.1 is already vips[0]"}},
		{"vip not a list", lines("interface: eth0", "vips: 10.100.0.1"),
			[]string{"t.yaml:2: vips: expected a list"}},
		{"pin dir relative", lines("interface: eth0", "pin_dir: x"),
			[]string{`t.yaml:2: pin_dir: "x" is not an absolute path`}},
		{"pin dir the bpffs root", lines("interface: eth0", "pin_dir: /sys/fs/bpf/"),
			[]string{`t.yaml:2: pin_dir: "/sys/fs/bpf/" is the root of bpffs`, "/sys/fs/bpf/switchyard-agent/eth0"}},
		{"api socket", lines("interface: eth0", "api: {socket: agent.sock}"),
			[]string{`t.yaml:2: api.socket: "agent.sock" is not an absolute path`}},
		{"metrics listen", lines("interface: eth0", "metrics: {listen: 'localhost'}"),
			[]string{`t.yaml:2: metrics.listen: "localhost" is not host:port; write e.g. 127.0.0.1:9302`}},
	}
	runErrCases(t, cases, func(data []byte) error { _, err := ParseAgent(data, "t.yaml"); return err })
}

func runErrCases(t *testing.T, cases []errCase, parse func([]byte) error) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := parse([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error for\n%s", tc.yaml)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.File != "t.yaml" || fe.Line == 0 {
				t.Errorf("error is not a *FieldError with file and line: %#v", fe)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestAllProblemsAtOnce: a user fixes a file in one go, so every problem
// is reported, ordered by line.
func TestAllProblemsAtOnce(t *testing.T) {
	_, err := Parse([]byte(lines(
		"datapath:",
		"  interfaze: eth0", // 2: unknown, and so interface is missing
		"  conn_table_size: 10",
		"vips:",
		"  - name: web",
		"    address: 10.100.0.1",
		"    port: 70000",
		"    backends: [{name: be1, address: 10.2.1.2, weight: 0}]",
	)), "switchyard.yaml")
	want := []string{
		"switchyard.yaml:1: datapath.interface: required",
		"switchyard.yaml:2: datapath.interfaze: unknown field; did you mean interface?",
		"switchyard.yaml:3: datapath.conn_table_size: 10 is out of range",
		"switchyard.yaml:7: vips[0].port: 70000 is out of range; use 0 (all ports) to 65535",
		"switchyard.yaml:8: vips[0].backends[0].weight: 0 is out of range",
	}
	if err == nil {
		t.Fatal("no error")
	}
	got := strings.Split(err.Error(), "\n")
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(got), len(want), err)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != len(want) {
		t.Errorf("want %d errors behind Unwrap() []error", len(want))
	}
}

// TestDecodeErrorHidesDerivedNoise: a field that fails to decode is
// reported once, not again by the validation of the default it kept.
func TestDecodeErrorHidesDerivedNoise(t *testing.T) {
	for _, yaml := range []string{
		lines("datapath:", "  interface: [eth0]"),
		// Not "health.port: required because the VIP has port 0": the
		// file gave a port, one that did not decode.
		lines("datapath: {interface: eth0}", "vips:", "  - {name: web, address: 10.100.0.1, port: http}"),
		lines("datapath: {interface: eth0}", "vips:", "  - {name: web, address: 10.100.0.1, port: [80]}"),
		lines("datapath: {interface: eth0}", "vips:", "  - {name: web, address: 10.100.0.1, port: 080}"),
		lines("datapath: {interface: eth0}", "vips:", "  - {name: web, address: 10.100.0.1, port: 0x50}"),
	} {
		_, err := Parse([]byte(yaml), "t.yaml")
		if err == nil {
			t.Fatalf("no error for\n%s", yaml)
		}
		if n := strings.Count(err.Error(), "\n") + 1; n != 1 {
			t.Errorf("want exactly one problem, got %d:\n%v", n, err)
		}
	}
}

func TestEmptyAndMissingFiles(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"", "\n\n", "# only a comment\n", "---\n", "~\n"} {
		path := filepath.Join(dir, "empty.yaml")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		for name, load := range map[string]func(string) error{
			"Load":      func(p string) error { _, err := Load(p); return err },
			"LoadAgent": func(p string) error { _, err := LoadAgent(p); return err },
		} {
			err := load(path)
			if !errors.Is(err, ErrEmpty) || !strings.Contains(err.Error(), path) {
				t.Errorf("%s(file containing %q) = %v, want ErrEmpty naming the file", name, content, err)
			}
		}
	}
	missing := filepath.Join(dir, "nope.yaml")
	_, err := Load(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "configs/switchyard.yaml") {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist naming the file and the example", err)
	}
	_, err = LoadAgent(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "configs/agent.yaml") {
		t.Errorf("LoadAgent(missing) = %v, want fs.ErrNotExist naming the example", err)
	}
}

func TestSecondDocumentRejected(t *testing.T) {
	_, err := Parse([]byte(lines("datapath: {interface: eth0}", "---", "datapath: {interface: eth1}")), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), "t.yaml:2: a second YAML document") {
		t.Errorf("got %v, want the second document reported on line 2, where --- is", err)
	}
}

func TestAnchorsAndMergeKeys(t *testing.T) {
	c, err := Parse([]byte(lines(
		"datapath: {interface: eth0}",
		"vips:",
		"  - &web",
		"    name: web",
		"    address: 10.100.0.1",
		"    port: 80",
		"    health: &fast {interval: 100ms, timeout: 50ms}",
		"  - <<: *web",
		"    name: web8080",
		"    port: 8080",
		"    health: *fast",
	)), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v := c.VIPByName("web8080")
	if v == nil || v.Address != "10.100.0.1" || v.Port != 8080 || v.Health.Interval != Duration(100*time.Millisecond) ||
		v.Health.Port != 8080 {
		t.Errorf("merged VIP = %+v", v)
	}
}

// Aliases cannot make a small file decode into a huge one: by nesting
// (each level aliasing the one below ten times), or by aliasing one large
// anchored value many times, which the count of aliases followed alone let
// through: 300 VIPs sharing a list of 1200 backends decoded into 360,000
// backends, and a few thousand of each into gigabytes. Either is refused,
// naming the file, before any of it is validated.
func TestAliasBudgets(t *testing.T) {
	nested := []string{"datapath: {interface: eth0}", "vips:", "  - name: web", "    address: 10.100.0.1", "    port: 80", "    backends:",
		"      - &b0 {name: be1, address: 10.2.1.2}"}
	for i := 1; i <= 6; i++ {
		nested = append(nested, fmt.Sprintf("      - &b%d {<<: [%s]}", i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*b%d, ", i-1), 10), ", ")))
	}
	shared := []string{"datapath: {interface: eth0}", "vips:", "  - name: v0", "    address: 10.100.0.1", "    port: 80", "    backends: &all"}
	for i := range 1200 {
		shared = append(shared, fmt.Sprintf("      - {name: b%d, address: 10.3.%d.%d}", i, i/200, i%200+1))
	}
	for i := 1; i < 300; i++ {
		shared = append(shared, fmt.Sprintf("  - {name: v%d, address: 10.100.%d.%d, port: 80, backends: *all}", i, i/200, i%200+1))
	}
	runErrCases(t, []errCase{
		{"nested aliases", lines(nested...), []string{"t.yaml:", "more than 10000 aliases followed; write the values out"}},
		{"one large value aliased many times", lines(shared...),
			[]string{"t.yaml:", "the aliases (*name) of this file stand for more than 1000000 values; write the values out, or alias smaller ones"}},
	}, func(data []byte) error { _, err := Parse(data, "t.yaml"); return err })
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "1s", want: time.Second},
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "1m30s", want: 90 * time.Second},
		{in: "1.5s", want: 1500 * time.Millisecond},
		{in: `"250ms"`, want: 250 * time.Millisecond},
		{in: "0", want: 0}, // valid as a duration; Validate says whether 0 is allowed
		{in: "1", wantErr: "1 has no unit; write a duration such as 1s or 1ms"},
		{in: "1.5", wantErr: "1.5 has no unit"},
		{in: "fast", wantErr: `"fast" is not a duration`},
		{in: "1 s", wantErr: `"1 s" is not a duration`},
		{in: "3000000h", wantErr: "3000000h is too long for a duration (the longest is 2562047h47m16.854775807s, about 292 years); write e.g. 1s"},
		{in: "2562047h47m16.854775808s", wantErr: "is too long for a duration"},
		{in: "2562047h47m16.854775807s", want: math.MaxInt64},
		{in: "[1s]", wantErr: "expected a duration"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var got struct {
				D Duration `yaml:"d"`
			}
			err := yaml.Unmarshal([]byte("d: "+tc.in), &got)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || time.Duration(got.D) != tc.want {
				t.Errorf("= %v, %v; want %v", time.Duration(got.D), err, tc.want)
			}
		})
	}
}

// TestMarshalRoundTrip: a printed config (switchyard status) reads back as
// the same config, and reflect.DeepEqual sees no difference.
func TestMarshalRoundTrip(t *testing.T) {
	c, err := Load("../../configs/switchyard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// type none refuses the check fields a file gives, so they are not
	// printed for it.
	none := DefaultVIP()
	none.Name, none.Address, none.Port, none.Health.Type = "none", "10.100.0.9", 80, CheckNone
	c.VIPs = append(c.VIPs, none)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out, "printed")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !reflect.DeepEqual(c, back) {
		t.Errorf("round trip changed the config:\n%s", out)
	}
}

func TestValidateInCode(t *testing.T) {
	c := DefaultConfig()
	c.Node.Name = "lb1"
	c.Datapath.Interface = "eth0"
	v := DefaultVIP()
	v.Name, v.Address, v.Port = "web", "10.100.0.1", 80
	b := DefaultBackend()
	b.Name, b.Address = "be1", "10.2.1.2"
	v.Backends = append(v.Backends, b)
	c.VIPs = append(c.VIPs, v)
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config built in code, before ApplyDefaults: %v", err)
	}
	if c.Datapath.PinDir != "" || c.VIPs[0].Health.Port != 0 {
		t.Error("Validate changed the config")
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config built in code: %v", err)
	}

	c.VIPs[0].Port = 70000
	err := c.Validate()
	if !errors.Is(err, ErrInvalid) || err.Error() != "vips[0].port: 70000 is out of range; use 0 (all ports) to 65535" {
		t.Errorf("Validate() = %q, want the path and fix without a file", err)
	}

	c.VIPs[0].Backends[0].Name = "be\xff1"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "vips[0].backends[0].name: \"be\\xff1\" contains") {
		t.Errorf("Validate() = %v, want a backend name that is not UTF-8 refused", err)
	}
	c.VIPs[0].Backends[0].Name = "be1"

	// type none probes no port: ApplyDefaults gives it none, which
	// Validate would refuse as unused.
	c.VIPs[0].Port = 80
	none := DefaultVIP()
	none.Name, none.Address, none.Port, none.Health.Type = "none", "10.100.0.2", 80, CheckNone
	c.VIPs = append(c.VIPs, none)
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Errorf("valid config with a type none VIP, after ApplyDefaults: %v", err)
	}
	c.VIPs[1].Health.Port = 8080
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "vips[1].health.port: type none runs no check") {
		t.Errorf("Validate() = %v, want health.port refused with type none", err)
	}
	c.VIPs[1].Health.Port = 0
	// In code, a field counts as set where it differs from its default.
	c.VIPs[1].Health.Interval = Duration(5 * time.Second)
	if err := c.Validate(); err == nil || err.Error() != "vips[1].health.interval: type none runs no check, so it has no interval; remove interval, or set type to tcp, http, https or udp" {
		t.Errorf("Validate() = %v, want only health.interval refused with type none", err)
	}

	a := DefaultAgentConfig()
	a.Interface = "eth0"
	a.VIPs = []string{"10.100.0.1"}
	if err := a.Validate(); err != nil {
		t.Errorf("valid agent config built in code: %v", err)
	}
}

// TestGatewayOnTheLink: the next hop is reached on the interface's link,
// not through a router, so a link-local gateway is fine (IPv6 routers
// announce theirs as fe80::...; some networks route IPv4 via 169.254.1.1).
func TestGatewayOnTheLink(t *testing.T) {
	for _, gw := range []string{"'fe80::1'", "169.254.1.1"} {
		c, err := Parse([]byte(lines("datapath: {interface: eth0}", "nexthop: {gateway: "+gw+"}")), "t.yaml")
		if err != nil {
			t.Errorf("gateway %s: %v", gw, err)
			continue
		}
		if want := netip.MustParseAddr(strings.Trim(gw, "'")); c.Nexthop.GatewayAddr() != want {
			t.Errorf("GatewayAddr() = %s, want %s", c.Nexthop.GatewayAddr(), want)
		}
	}
}

func TestLookupsAndParsedAddresses(t *testing.T) {
	c, err := Parse([]byte(lines(
		"datapath: {interface: eth0}",
		"encap: {source_v4: 10.0.0.9, source_v6: 'fd00::9', source_prefix_v4: 172.16.0.0/16, source_prefix_v6: 'fd00:16::/64'}",
		"nexthop: {gateway: 10.0.0.1}",
		"vips:",
		"  - {name: web6, address: 'fd00:100::1', port: 80, backends: [{name: be1, address: 10.2.1.2}]}",
	)), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v := c.VIPByName("web6")
	if v == nil || c.VIPByName("nope") != nil {
		t.Fatalf("VIPByName: %v", v)
	}
	if v.Addr() != netip.MustParseAddr("fd00:100::1") || !v.Addr().Is6() {
		t.Errorf("VIP Addr = %v", v.Addr())
	}
	b := v.BackendByName("be1")
	if b == nil || b.Addr() != netip.MustParseAddr("10.2.1.2") || v.BackendByName("be9") != nil {
		t.Errorf("BackendByName = %+v", b)
	}
	e := c.Encap
	if e.SourceV4Addr() != netip.MustParseAddr("10.0.0.9") || e.SourceV6Addr() != netip.MustParseAddr("fd00::9") ||
		e.SourcePrefixV4Net() != netip.MustParsePrefix("172.16.0.0/16") || e.SourcePrefixV6Net() != netip.MustParsePrefix("fd00:16::/64") ||
		c.Nexthop.GatewayAddr() != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("parsed encap/nexthop addresses wrong: %+v %+v", e, c.Nexthop)
	}
	if DefaultConfig().Nexthop.GatewayAddr().IsValid() {
		t.Error("unset gateway must be the invalid Addr")
	}

	a, err := ParseAgent([]byte(lines("interface: eth0", "vips: [10.100.0.1, 'fd00:100::1']")), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("10.100.0.1"), netip.MustParseAddr("fd00:100::1")}
	if !reflect.DeepEqual(a.VIPAddrs(), want) || a.EncapAddrs() != nil {
		t.Errorf("VIPAddrs = %v, EncapAddrs = %v", a.VIPAddrs(), a.EncapAddrs())
	}
}

// TestMinMTU checks the smallest MTU for each mix of VIP and backend
// families: an IPv6 VIP needs 1280 plus the encapsulation its backends
// actually get, not always the IPv6 one.
func TestMinMTU(t *testing.T) {
	vip := func(addr string, backends ...string) string {
		bs := make([]string, len(backends))
		for i, b := range backends {
			bs[i] = fmt.Sprintf("{name: be%d, address: '%s'}", i, b)
		}
		return fmt.Sprintf("  - {name: v%d, address: '%s', port: 80, backends: [%s]}", len(addr), addr, strings.Join(bs, ", "))
	}
	cases := []struct {
		name  string
		encap string
		vips  []string
		want  int
	}{
		{"no VIPs", "ipip", nil, 576},
		{"IPv4 only", "ipip", []string{vip("10.100.0.1", "10.2.1.2")}, 576},
		{"IPv4 VIP, IPv6 backend", "ipip", []string{vip("10.100.0.1", "fd00:2::2")}, 1280},
		{"IPv6 VIP, IPv4 backends", "ipip", []string{vip("fd00:100::1", "10.2.1.2", "10.2.2.2")}, 1300},
		{"IPv6 VIP, IPv4 backends, GUE", "gue", []string{vip("fd00:100::1", "10.2.1.2")}, 1308},
		{"IPv6 VIP, mixed backends", "ipip", []string{vip("fd00:100::1", "10.2.1.2", "fd00:2::2")}, 1320},
		{"IPv6 VIP, IPv6 backends, GUE", "gue", []string{vip("fd00:100::1", "fd00:2::2")}, 1328},
		{"IPv6 VIP of IPv4 backends beside an IPv6 backend elsewhere", "ipip",
			[]string{vip("fd00:100::1", "10.2.1.2"), vip("10.100.0.1", "fd00:2::2")}, 1300},
		{"IPv6 VIP without backends", "ipip", []string{vip("fd00:100::1")}, 576},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := lines("datapath: {interface: eth0}", "encap: {type: "+tc.encap+"}", "vips:")
			if len(tc.vips) > 0 {
				doc += lines(tc.vips...)
			} else {
				doc = lines("datapath: {interface: eth0}", "encap: {type: "+tc.encap+"}")
			}
			c, err := Parse([]byte(doc), "t.yaml")
			if err != nil {
				t.Fatal(err)
			}
			got, why := c.MinMTU()
			if got != tc.want {
				t.Fatalf("MinMTU %d (%s), want %d", got, why, tc.want)
			}
			// The minimum itself is accepted as datapath.mtu.
			if _, err := Parse([]byte(strings.Replace(doc, "{interface: eth0}", fmt.Sprintf("{interface: eth0, mtu: %d}", got), 1)), "t.yaml"); err != nil {
				t.Fatalf("datapath.mtu %d refused: %v", got, err)
			}
		})
	}
}

func TestTableSizesArePrimeAndAscending(t *testing.T) {
	sizes := TableSizes()
	for i, n := range sizes {
		if i > 0 && n <= sizes[i-1] {
			t.Errorf("TableSizes not ascending at %d", n)
		}
		for d := 2; d*d <= n; d++ {
			if n%d == 0 {
				t.Errorf("%d is not prime", n)
				break
			}
		}
	}
	if !slices.Contains(TableSizes(), DefaultVIP().TableSize) {
		t.Errorf("the default table size %d is not allowed", DefaultVIP().TableSize)
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"../../configs/switchyard.yaml", "../../configs/agent.yaml"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("vips: [&a {name: x, <<: *a}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml")
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Parse accepted what Validate rejects: %v", verr)
			}
		} else if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrEmpty) {
			t.Fatalf("error wraps neither ErrInvalid nor ErrEmpty: %v", err)
		}
		if a, err := ParseAgent(data, "fuzz.yaml"); err == nil {
			if verr := a.Validate(); verr != nil {
				t.Fatalf("ParseAgent accepted what Validate rejects: %v", verr)
			}
		}
	})
}

// TestUDPHealthCheck: a udp check's request and reply come from the text
// or the hexadecimal field, and its port defaults to the VIP's. (The
// example config has both kinds: TestMarshalRoundTrip prints it.)
func TestUDPHealthCheck(t *testing.T) {
	c, err := Parse([]byte(lines(
		"node: {name: lb1}",
		"datapath: {interface: eth0}",
		"vips:",
		"  - name: dns",
		"    address: 10.100.0.1",
		"    port: 53",
		"    protocol: udp",
		"    health:",
		"      type: udp",
		`      send_binary: "1234 0100 0001 0000 0000 0000 0000 0200 01"`,
		"      expect_binary: 1234",
		"    backends: [{name: be1, address: 10.2.1.2}]",
		"  - name: echo",
		"    address: 10.100.0.1",
		"    port: 7",
		"    protocol: udp",
		"    health: {type: udp, send: ping, expect: backend=}",
		"    backends: [{name: be1, address: 10.2.1.2}]",
	)), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dns, echo := c.VIPs[0].Health, c.VIPs[1].Health
	if got, want := string(dns.Request()), "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01"; got != want || dns.Port != 53 {
		t.Errorf("dns check sends %q on port %d, want %q on 53", got, dns.Port, want)
	}
	if got := string(dns.Reply()); got != "\x12\x34" {
		t.Errorf("dns check expects %q, want \"\\x12\\x34\"", got)
	}
	if string(echo.Request()) != "ping" || string(echo.Reply()) != "backend=" || echo.Port != 7 {
		t.Errorf("echo check = %+v, want ping, backend= on port 7", echo)
	}
}

// TestValidateLimits: every limit is inclusive. A value at the limit is
// accepted and one step past it is refused, so an operator who sizes a
// file to the documented maximum is not turned away, and one who goes over
// it learns why before anything is applied.
func TestValidateLimits(t *testing.T) {
	base := func() *Config {
		c := DefaultConfig()
		c.Node.Name = "lb1"
		c.Datapath.Interface = "eth0"
		v := DefaultVIP()
		v.Name, v.Address, v.Port = "web", "10.100.0.1", 80
		b := DefaultBackend()
		b.Name, b.Address = "be1", "10.2.1.2"
		v.Backends = []Backend{b}
		c.VIPs = []VIP{v}
		return &c
	}
	vips := func(n int) func(*Config) {
		return func(c *Config) {
			c.VIPs = nil
			for i := range n {
				v := DefaultVIP()
				v.Name, v.Address, v.Port = fmt.Sprintf("v%d", i), fmt.Sprintf("10.100.%d.%d", i/200, i%200+1), 80
				c.VIPs = append(c.VIPs, v)
			}
		}
	}
	backends := func(n int) func(*Config) {
		return func(c *Config) {
			c.VIPs[0].Backends = nil
			for i := range n {
				b := DefaultBackend()
				b.Name, b.Address = fmt.Sprintf("b%d", i), fmt.Sprintf("10.3.%d.%d", i/200, i%200+1)
				c.VIPs[0].Backends = append(c.VIPs[0].Backends, b)
			}
		}
	}
	cases := []struct {
		name string
		set  func(*Config)
		want string // "" for accepted, else the start of the error
	}{
		{"highest metrics port", func(c *Config) { c.Metrics.Listen = "127.0.0.1:65535" }, ""},
		{"metrics port above the highest", func(c *Config) { c.Metrics.Listen = "127.0.0.1:65536" }, `metrics.listen: port "65536"`},
		{"shortest UDP idle timeout", func(c *Config) { c.Datapath.UDPIdleTimeout = Duration(MinUDPIdleTimeout) }, ""},
		{"UDP idle timeout below the shortest", func(c *Config) { c.Datapath.UDPIdleTimeout = Duration(MinUDPIdleTimeout - time.Millisecond) },
			"datapath.udp_idle_timeout: 999ms is below the minimum of 1s"},
		{"longest UDP idle timeout", func(c *Config) { c.Datapath.UDPIdleTimeout = Duration(MaxUDPIdleTimeout) }, ""},
		{"UDP idle timeout above the longest", func(c *Config) { c.Datapath.UDPIdleTimeout = Duration(MaxUDPIdleTimeout + time.Second) },
			"datapath.udp_idle_timeout: 24h0m1s is above the maximum of 24h"},
		{"smallest conn table", func(c *Config) { c.Datapath.ConnTableSize = MinConnTableSize }, ""},
		{"conn table below the smallest", func(c *Config) { c.Datapath.ConnTableSize = MinConnTableSize - 1 }, "datapath.conn_table_size: 1023 is out of range"},
		{"largest conn table", func(c *Config) { c.Datapath.ConnTableSize = MaxConnTableSize }, ""},
		{"conn table above the largest", func(c *Config) { c.Datapath.ConnTableSize = MaxConnTableSize + 1 }, "datapath.conn_table_size: 16777217 is out of range"},
		{"interface name of 15 bytes", func(c *Config) { c.Datapath.Interface = "enp0s31f6abcdef" }, ""},
		{"interface name of 16 bytes", func(c *Config) { c.Datapath.Interface = "enp0s31f6abcdefg" }, `datapath.interface: "enp0s31f6abcdefg" is longer than 15 bytes`},
		// The kernel refuses what its isspace() takes for a space (0xa0
		// too, the second byte of "à") and reads a name up to a NUL: such
		// a name can name no interface, and "no such interface" would not
		// say why.
		{"interface name with a non-ASCII letter", func(c *Config) { c.Datapath.Interface = "ab\u00e9" }, ""},
		{"interface name with byte 0xa0", func(c *Config) { c.Datapath.Interface = "ab\u00e0" }, `datapath.interface: "abà" is not a valid interface name`},
		{"interface name with a carriage return", func(c *Config) { c.Datapath.Interface = "eth\r0" }, `datapath.interface: "eth\r0" is not a valid interface name`},
		{"interface name with a NUL", func(c *Config) { c.Datapath.Interface = "eth0\x00" }, `datapath.interface: "eth0\x00" is not a valid interface name`},
		{"socket path of 107 bytes", func(c *Config) { c.API.Socket = "/" + strings.Repeat("s", 106) }, ""},
		{"socket path of 108 bytes", func(c *Config) { c.API.Socket = "/" + strings.Repeat("s", 107) }, "api.socket:"},
		{"as many VIPs as the datapath holds", vips(MaxVIPs), ""},
		{"one VIP more than the datapath holds", vips(MaxVIPs + 1), "vips: 513 VIPs are more than the datapath's limit of 512"},
		{"as many backend addresses as the datapath holds", backends(MaxBackendAddrs), ""},
		{"one backend address more than the datapath holds", backends(MaxBackendAddrs + 1), "vips: 4097 distinct backend addresses are more than the datapath's limit of 4096"},
		{"shortest health interval", func(c *Config) {
			c.VIPs[0].Health.Interval, c.VIPs[0].Health.Timeout = Duration(MinHealthInterval), Duration(50*time.Millisecond)
		}, ""},
		{"health interval below the shortest", func(c *Config) {
			c.VIPs[0].Health.Interval, c.VIPs[0].Health.Timeout = Duration(MinHealthInterval-time.Millisecond), Duration(50*time.Millisecond)
		}, "vips[0].health.interval: 99ms is below the minimum of 100ms"},
		{"shortest health timeout", func(c *Config) { c.VIPs[0].Health.Timeout = Duration(MinHealthTimeout) }, ""},
		{"longest health interval", func(c *Config) {
			c.VIPs[0].Health.Interval, c.VIPs[0].Health.Timeout = Duration(MaxHealthInterval), Duration(MaxHealthInterval-time.Millisecond)
		}, ""},
		{"health interval above the longest", func(c *Config) { c.VIPs[0].Health.Interval = Duration(MaxHealthInterval + time.Millisecond) },
			"vips[0].health.interval: 1h0m0.001s is above the maximum of 1h"},
		{"largest rise and fall", func(c *Config) { c.VIPs[0].Health.Rise, c.VIPs[0].Health.Fall = MaxRiseFall, MaxRiseFall }, ""},
		{"rise above the largest", func(c *Config) { c.VIPs[0].Health.Rise = MaxRiseFall + 1 }, "vips[0].health.rise: 1001 is above the maximum of 1000"},
		{"fall above the largest", func(c *Config) { c.VIPs[0].Health.Fall = MaxRiseFall + 1 }, "vips[0].health.fall: 1001 is above the maximum of 1000"},
		{"lowest HTTP status", func(c *Config) { c.VIPs[0].Health.Type, c.VIPs[0].Health.ExpectStatus = CheckHTTP, 100 }, ""},
		{"HTTP status below the lowest", func(c *Config) { c.VIPs[0].Health.Type, c.VIPs[0].Health.ExpectStatus = CheckHTTP, 99 }, "vips[0].health.expect_status: 99 is not an HTTP status"},
		{"highest HTTP status", func(c *Config) { c.VIPs[0].Health.Type, c.VIPs[0].Health.ExpectStatus = CheckHTTP, 599 }, ""},
		{"HTTP status above the highest", func(c *Config) { c.VIPs[0].Health.Type, c.VIPs[0].Health.ExpectStatus = CheckHTTP, 600 }, "vips[0].health.expect_status: 600 is not an HTTP status"},
		{"https check with a server name", func(c *Config) { c.VIPs[0].Health.Type, c.VIPs[0].Health.SNI = CheckHTTPS, "App-1.example_int.com." }, ""},
		{"server name label of 63 bytes", func(c *Config) {
			c.VIPs[0].Health.Type, c.VIPs[0].Health.SNI = CheckHTTPS, strings.Repeat("a", 63)+".example"
		}, ""},
		{"server name label of 64 bytes", func(c *Config) {
			c.VIPs[0].Health.Type, c.VIPs[0].Health.SNI = CheckHTTPS, strings.Repeat("a", 64)+".example"
		},
			`vips[0].health.sni: "` + strings.Repeat("a", 64) + `"... (72 bytes) has a label of 64 bytes, longer than the 63 DNS allows`},
		{"server name of 253 bytes", func(c *Config) {
			c.VIPs[0].Health.Type, c.VIPs[0].Health.SNI = CheckHTTPS, strings.Repeat("a.", 126)+"a"
		}, ""},
		{"server name of 254 bytes", func(c *Config) {
			c.VIPs[0].Health.Type, c.VIPs[0].Health.SNI = CheckHTTPS, strings.Repeat("a.", 126)+"ab"
		},
			`vips[0].health.sni: "` + strings.Repeat("a.", 32) + `"... (254 bytes) is 254 bytes, longer than the 253 a DNS name may have`},
		{"http check with a Host name", func(c *Config) { c.VIPs[0].Health.Type, c.VIPs[0].Health.Host = CheckHTTP, "app.example.com" }, ""},
		{"https check with a Host name and port", func(c *Config) { c.VIPs[0].Health.Type, c.VIPs[0].Health.Host = CheckHTTPS, "app.example.com:8443" }, ""},
		{"Host of an IPv4 address and port", func(c *Config) { c.VIPs[0].Health.Type, c.VIPs[0].Health.Host = CheckHTTP, "192.0.2.1:8080" }, ""},
		{"Host of an IPv6 address", func(c *Config) { c.VIPs[0].Health.Type, c.VIPs[0].Health.Host = CheckHTTP, "[fd00::1]" }, ""},
		{"Host of an IPv6 address and port", func(c *Config) { c.VIPs[0].Health.Type, c.VIPs[0].Health.Host = CheckHTTP, "[fd00::1]:8080" }, ""},
		{"tcp and udp VIPs on one address and port", func(c *Config) {
			v := DefaultVIP()
			v.Name, v.Address, v.Port, v.Protocol = "web-udp", c.VIPs[0].Address, c.VIPs[0].Port, ProtocolUDP
			v.Health.Type = CheckNone
			c.VIPs = append(c.VIPs, v)
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.set(c)
			c.ApplyDefaults()
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate() = %v, want it accepted", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Errorf("Validate() = %v, want an error starting %q", err, tc.want)
			}
		})
	}
}

// A balancer's file given to the agent (or an agent's to the balancer) is
// told as such in one line, naming the file each command takes: before, it
// was a list of unknown fields and type errors (`vips[0]: expected a
// single value, got a mapping`) that did not say the file was the wrong
// one. A file of the right kind with a stray field of the other is still
// told field by field.
func TestOtherDaemonsFile(t *testing.T) {
	agentYAML, err := os.ReadFile("../../configs/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	balancerYAML, err := os.ReadFile("../../configs/switchyard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// run, a reload, remove and check all say it: the advice names the
	// commands of the file's kind, not `give switchyard run ...`, which
	// told check to run.
	_, err = Parse(agentYAML, "agent.yaml")
	if want := "this is a field of the agent's configuration, not of the balancer's: the file is the agent's (switchyard agent runs it, switchyard check --agent checks it, switchyard remove --agent removes what it set up); the balancer's commands take the balancer's configuration (configs/switchyard.yaml"; err == nil || !strings.Contains(err.Error(), want) || strings.Count(err.Error(), "\n") != 0 {
		t.Errorf("Parse(configs/agent.yaml): %v, want one line with %q", err, want)
	}
	_, err = ParseAgent(balancerYAML, "switchyard.yaml")
	if want := "this is a field of the balancer's configuration, not of the agent's: the file is the balancer's (switchyard run runs it, switchyard check checks it, switchyard remove removes what it set up); the agent's commands take the agent's configuration (configs/agent.yaml"; err == nil || !strings.Contains(err.Error(), want) || strings.Count(err.Error(), "\n") != 0 {
		t.Errorf("ParseAgent(configs/switchyard.yaml): %v, want one line with %q", err, want)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) || fe.Path != "datapath" || fe.Line == 0 {
		t.Errorf("ParseAgent(configs/switchyard.yaml): %#v, want a FieldError of datapath with its line, wrapping ErrInvalid", fe)
	}
	// `switchyard check` tells the other kind by ErrOtherKind, to say
	// which of its modes reads the file.
	if !errors.Is(err, ErrOtherKind) {
		t.Errorf("ParseAgent(configs/switchyard.yaml): %v, want it to match ErrOtherKind", err)
	}
	if _, err := Parse(agentYAML, "agent.yaml"); !errors.Is(err, ErrOtherKind) || !errors.Is(err, ErrInvalid) {
		t.Errorf("Parse(configs/agent.yaml): %v, want it to match ErrOtherKind and ErrInvalid", err)
	}
	// A balancer's file with a stray `interface:` (meant under datapath)
	// is the balancer's: its own fields say so.
	_, err = Parse([]byte(lines("interface: eth0", "datapath: {interface: eth0}")), "lb.yaml")
	if err == nil || !strings.Contains(err.Error(), "lb.yaml:1: interface: unknown field") || strings.Contains(err.Error(), "the file is the agent's") {
		t.Errorf("Parse(a balancer's file with a stray interface): %v, want the unknown field, not a wrong file", err)
	}
	if errors.Is(err, ErrOtherKind) {
		t.Errorf("Parse(a balancer's file with a stray interface): %v matches ErrOtherKind, want only the file's own problems", err)
	}
}

// Names are metric labels and columns of status: one of a megabyte was
// accepted. A name of MaxNameLen bytes (a host's longest FQDN) is, one
// byte more is refused, and the error quotes only the start of it.
func TestNameLength(t *testing.T) {
	name := func(n int) string { return strings.Repeat("a", n) }
	balancer := func(node, vip, backend string) string {
		return lines("node: {name: "+node+"}", "datapath: {interface: eth0}", "vips:",
			"  - {name: "+vip+", address: 10.100.0.1, port: 80, health: {type: none},",
			"     backends: [{name: "+backend+", address: 10.2.1.2}]}")
	}
	if _, err := Parse([]byte(balancer(name(MaxNameLen), name(MaxNameLen), name(MaxNameLen))), "t.yaml"); err != nil {
		t.Errorf("names of %d bytes: %v", MaxNameLen, err)
	}
	if _, err := ParseAgent([]byte(lines("node: {name: "+name(MaxNameLen)+"}", "interface: eth0")), "t.yaml"); err != nil {
		t.Errorf("agent node name of %d bytes: %v", MaxNameLen, err)
	}
	long := func(n int, path string, line int) string {
		return fmt.Sprintf("t.yaml:%d: %s: %q... is %d bytes, longer than the 253 a name may have: it is a metric label and a column of status; use a shorter name", line, path, name(64), n)
	}
	runErrCases(t, []errCase{
		{"node name", balancer(name(254), "web", "be1"), []string{long(254, "node.name", 1)}},
		{"VIP name", balancer("lb1", name(254), "be1"), []string{long(254, "vips[0].name", 4)}},
		{"backend name", balancer("lb1", "web", name(254)), []string{long(254, "vips[0].backends[0].name", 5)}},
	}, func(data []byte) error { _, err := Parse(data, "t.yaml"); return err })
	runErrCases(t, []errCase{
		{"agent node name", lines("node: {name: "+name(254)+"}", "interface: eth0"), []string{long(254, "node.name", 1)}},
	}, func(data []byte) error { _, err := ParseAgent(data, "t.yaml"); return err })
	// A megabyte of name makes an error of a line, not of a megabyte.
	_, err := Parse([]byte(balancer("lb1", "web", name(1<<20))), "t.yaml")
	if err == nil || len(err.Error()) > 300 {
		t.Errorf("a backend name of 1 MiB: an error of %d bytes, want one short line", len(fmt.Sprint(err)))
	}
}
