package config

import (
	"fmt"
	"strings"
	"testing"
)

// An error quoted the value it was about whole: a 10 KB address, name or
// number (a paste gone wrong, a generated file) made a 10 KB error line,
// its field and fix lost in it. Each field kind here is given an
// over-long value that its check quotes; every line must stay short and
// say how long the value was.
func TestErrorsCutLongValues(t *testing.T) {
	const n = 10000
	long := func(s string) string { return strings.Repeat(s, n/len(s)) }
	// Names may be valid up to MaxNameLen bytes: one that long that is
	// wrong otherwise is quoted too.
	name := strings.Repeat("A", 200)
	const base = `datapath: {interface: eth0}
vips:
  - name: web
    address: 10.100.0.1
    port: 80
    health: {type: none}
    backends:
      - {name: be1, address: 10.2.1.2}
`
	const httpHealth = "health: {type: http, path: /, "
	for _, tc := range []struct {
		name     string
		old, new string
		size     int // the value's length; n if 0
	}{
		{"node name", "datapath:", "node: {name: " + long("a") + "}\ndatapath:", 0},
		{"node name with a space", "datapath:", "node: {name: \"" + name[:100] + " " + name[:99] + "\"}\ndatapath:", 200},
		{"interface", "interface: eth0", "interface: " + long("e"), 0},
		{"attach mode", "interface: eth0", "interface: eth0, attach_mode: " + long("x"), 0},
		{"pin dir", "interface: eth0", "interface: eth0, pin_dir: " + long("d"), 0},
		{"int with a leading zero", "interface: eth0", "interface: eth0, conn_table_size: 0" + long("1")[1:], 0},
		{"int out of range", "interface: eth0", "interface: eth0, conn_table_size: " + long("9"), 0},
		{"int in hexadecimal", "interface: eth0", "interface: eth0, conn_table_size: 0x" + long("f")[2:], 0},
		{"int not a number", "interface: eth0", "interface: eth0, conn_table_size: " + long("z"), 0},
		{"bool", "interface: eth0", "interface: eth0, icmp_too_big: " + long("y"), 0},
		{"duration without a unit", "interface: eth0", "interface: eth0, udp_idle_timeout: " + long("5"), 0},
		{"duration too long", "interface: eth0", "interface: eth0, udp_idle_timeout: " + long("5")[1:] + "s", 0},
		{"duration not a duration", "interface: eth0", "interface: eth0, udp_idle_timeout: " + long("q"), 0},
		{"unknown anchor", "interface: eth0", "interface: *" + long("a"), 0},
		{"mapping given a scalar", "datapath: {interface: eth0}", "datapath: {interface: eth0}\nencap: " + long("e"), 0},
		// YAML takes keys of at most 1024 characters.
		{"unknown field", "interface: eth0", "interface: eth0, " + long("k")[:1000] + ": 1", 1000},
		{"encap type", "datapath:", "encap: {type: " + long("t") + "}\ndatapath:", 0},
		{"encap source", "datapath:", "encap: {source_v4: " + long("a") + "}\ndatapath:", 0},
		{"encap source zone", "datapath:", "encap: {source_v6: \"fd00::1%" + long("z")[8:] + "\"}\ndatapath:", 0},
		{"encap prefix", "datapath:", "encap: {source_prefix_v6: " + long("p") + "}\ndatapath:", 0},
		{"gateway", "datapath:", "nexthop: {gateway: " + long("g") + "}\ndatapath:", 0},
		{"socket relative", "datapath:", "api: {socket: " + long("s") + "}\ndatapath:", 0},
		{"socket too long", "datapath:", "api: {socket: /" + long("s")[1:] + "}\ndatapath:", 0},
		{"metrics listen", "datapath:", "metrics: {listen: " + long("h") + "}\ndatapath:", 0},
		{"metrics port", "datapath:", "metrics: {listen: \"h:" + long("9")[2:] + "\"}\ndatapath:", 0},
		{"metrics host", "datapath:", "metrics: {listen: \"/" + long("h")[4:] + ":80\"}\ndatapath:", 0},
		{"VIP name", "name: web", "name: " + name, 200},
		{"VIP address", "address: 10.100.0.1", "address: " + long("v"), 0},
		{"protocol", "port: 80", "port: 80\n    protocol: " + long("p"), 0},
		{"hash", "port: 80", "port: 80\n    hash: " + long("h"), 0},
		{"check type", "health: {type: none", "health: {type: " + long("c"), 0},
		{"check via", "health: {type: none", "health: {type: tcp, via: " + long("v"), 0},
		{"check path", "health: {type: none", "health: {type: http, path: " + long("p"), 0},
		{"check path not a URL", "health: {type: none", "health: {type: http, path: \"/%" + long("z")[2:] + "\"", 0},
		{"check host a URL", "health: {type: none", httpHealth + "host: \"/" + long("h")[1:] + "\"", 0},
		{"check host no bracket", "health: {type: none", httpHealth + "host: \"[" + long("h")[1:] + "\"", 0},
		{"check host bad port", "health: {type: none", httpHealth + "host: \"h:" + long("9")[2:] + "\"", 0},
		{"check host bad name", "health: {type: none", httpHealth + "host: \"" + long("h!") + "\"", 0},
		{"check sni", "health: {type: none", "health: {type: https, sni: " + long("a.") + "b", n + 1},
		{"check sni with a port", "health: {type: none", "health: {type: https, sni: \"" + long("a")[4:] + ":443\"", 0},
		{"check send_binary", "health: {type: none", "health: {type: udp, send_binary: " + long("zz"), 0},
		{"check send_binary odd", "health: {type: none", "health: {type: udp, send_binary: " + long("1")[1:], n - 1},
		{"backend name with a space", "{name: be1,", "{name: \"" + name[:100] + " " + name[:99] + "\",", 200},
		{"backend name with a slash", "{name: be1,", "{name: \"" + name[:100] + "/" + name[:99] + "\",", 200},
		{"backend address", "address: 10.2.1.2", "address: " + long("b"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := strings.Replace(base, tc.old, tc.new, 1)
			if yaml == base {
				t.Fatal("the case changes nothing in the file")
			}
			_, err := Parse([]byte(yaml), "switchyard.yaml")
			checkCut(t, err, cmpOr(tc.size, n))
		})
	}

	for _, tc := range []struct{ name, yaml string }{
		{"agent node name", "node: {name: \"" + long("a ") + "\"}\ninterface: eth0\n"},
		{"agent interface", "interface: " + long("i") + "\n"},
		{"agent encap address", "interface: eth0\nencap_addresses: [" + long("e") + "]\n"},
		{"agent VIP", "interface: eth0\nvips: [" + long("v") + "]\n"},
		{"agent pin dir", "interface: eth0\npin_dir: " + long("d") + "\n"},
		{"agent socket", "interface: eth0\napi: {socket: " + long("s") + "}\n"},
		{"agent metrics", "interface: eth0\nmetrics: {listen: " + long("m") + "}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAgent([]byte(tc.yaml), "agent.yaml")
			checkCut(t, err, n)
		})
	}
}

// checkCut asserts that err has a line that tells a value of size bytes,
// and that no line is long.
func checkCut(t *testing.T, err error, size int) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	const maxLine = 600 // the longest message's text and a cut value
	told := false
	for _, line := range strings.Split(err.Error(), "\n") {
		if len(line) > maxLine {
			t.Errorf("a line of %d bytes (more than %d): %.300s...", len(line), maxLine, line)
		}
		told = told || strings.Contains(line, fmt.Sprintf("%d bytes", size))
	}
	if !told {
		t.Errorf("no line says the value is %d bytes:\n%v", size, err)
	}
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// The cut keeps whole characters, and short values are left whole.
func TestUserValue(t *testing.T) {
	for _, tc := range []struct {
		in, s, q string
	}{
		{"eth0", "eth0", `"eth0"`},
		{"a\tb", "a\tb", `"a\tb"`},
		{strings.Repeat("x", 64), strings.Repeat("x", 64), `"` + strings.Repeat("x", 64) + `"`},
		{strings.Repeat("x", 65), strings.Repeat("x", 64) + "... (65 bytes)", `"` + strings.Repeat("x", 64) + `"... (65 bytes)`},
		// é is two bytes: the 64th byte is the first of one, left out.
		{strings.Repeat("x", 63) + strings.Repeat("é", 10), strings.Repeat("x", 63) + "... (83 bytes)", `"` + strings.Repeat("x", 63) + `"... (83 bytes)`},
	} {
		if s, q := fmt.Sprintf("%s", userValue(tc.in)), fmt.Sprintf("%q", userValue(tc.in)); s != tc.s || q != tc.q {
			t.Errorf("%q: %%s %q, %%q %q; want %q, %q", tc.in, s, q, tc.s, tc.q)
		}
	}
}
