package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/test/readme"
)

// A balancer configuration that is valid but for what a case adds.
const validBalancer = `node: {name: lb1}
datapath: {interface: eth0}
metrics: {listen: ""}
vips:
  - name: web
    address: 10.100.0.1
    port: 80
    protocol: tcp
    health: {type: none}
    backends:
      - {name: be1, address: 10.2.1.2}
`

// manyVIPs is a balancer configuration with n VIPs.
func manyVIPs(n int) string {
	var b strings.Builder
	b.WriteString("node: {name: lb1}\ndatapath: {interface: eth0}\nmetrics: {listen: \"\"}\nvips:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: v%d, address: 10.100.%d.%d, port: 80, protocol: tcp, health: {type: none}, backends: [{name: be1, address: 10.2.1.2}]}\n", i, i/250, i%250+1)
	}
	return b.String()
}

// Every error a user can hit is in the README's Troubleshooting section,
// found there by a phrase of its message. For a table of real wrong
// command lines and configuration files, the test runs the command as a
// user would (the test binary as `switchyard`), checks that what it
// printed holds the phrase, and that the Troubleshooting section holds it
// too: an entry removed, or a message reworded without its entry, fails.
func TestErrorsAreInTroubleshooting(t *testing.T) {
	ts := readme.Section(t, "## Troubleshooting")
	dir := t.TempDir()
	sock := filepath.Join(dir, "none.sock")
	agentExample, err := os.ReadFile("../../configs/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	balancerExample, err := os.ReadFile("../../configs/switchyard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// What a daemon killed outright leaves: a socket nothing listens on.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	// Another program's HTTP server on a socket.
	other := filepath.Join(dir, "other.sock")
	oln, err := net.Listen("unix", other)
	if err != nil {
		t.Fatal(err)
	}
	osrv := &http.Server{Handler: http.NotFoundHandler()}
	go osrv.Serve(oln)
	t.Cleanup(func() { osrv.Close() })
	var encap66 []string
	for i := range 65 {
		encap66 = append(encap66, fmt.Sprintf("10.2.%d.%d", i/250, i%250+1))
	}
	for _, tc := range []struct {
		name   string
		args   []string // {cfg} is the path of the file holding config
		config string
		root   bool // root gets past the check for root to this error
		phrase string
	}{
		// Command lines.
		{name: "unknown command", args: []string{"stat"}, phrase: `switchyard: unknown command "stat"`},
		{name: "help of no command", args: []string{"help", "stat"}, phrase: `switchyard: unknown command "stat"`},
		{name: "flag before the command", args: []string{"--json", "status"}, phrase: `"--json" is not a command: flags go after the command they belong to`},
		{name: "help of two commands", args: []string{"help", "status", "flows"}, phrase: "switchyard help: name one command, not 2"},
		{name: "unknown flag", args: []string{"status", "--bogus"}, phrase: "flag provided but not defined: -bogus"},
		{name: "duration without unit", args: []string{"status", "--timeout", "10"}, phrase: `invalid value "10" for flag -timeout: parse error`},
		{name: "positional argument", args: []string{"flows", "web"}, phrase: `unexpected argument "web": this command takes only flags`},
		{name: "two backends", args: []string{"drain", "a", "b"}, phrase: "name one BACKEND, not 2"},
		{name: "drain usage", args: []string{"drain"}, phrase: "usage: switchyard drain [flags] BACKEND"},
		// It said "name one BACKEND, not 0: []".
		{name: "drain of nothing", args: []string{"drain", "--json"}, phrase: "name the BACKEND to drain: NAME (in every VIP) or VIP/NAME"},
		{name: "limit 0", args: []string{"flows", "--limit", "0"}, phrase: "--limit 0: give at least 1"},
		{name: "limit too high", args: []string{"flows", "--limit", "200000"}, phrase: "--limit 200000: give at most 100000"},
		{name: "timeout 0", args: []string{"status", "--timeout", "0s"}, phrase: "--timeout 0s: give a positive duration"},
		{name: "requests 0", args: []string{"demo", "--requests", "0"}, phrase: "--requests 0: give at least 1"},
		{name: "socket too long", args: []string{"status", "--socket", "/" + strings.Repeat("s", api.MaxSocketPath)}, phrase: "longer than the 107 a unix socket path may have"},
		{name: "no daemon", args: []string{"status", "--socket", sock}, phrase: "cannot reach switchyard at "},
		{name: "stale socket", args: []string{"reload", "--socket", stale}, phrase: "nothing listens on this socket: the `switchyard run` that made it was killed or crashed"},
		{name: "socket is a file", args: []string{"status", "--socket", "{cfg}"}, config: validBalancer, phrase: "it is a file, not a socket"},
		{name: "another program's socket", args: []string{"drain", "be1", "--socket", other}, phrase: "answered 404 Not Found, not as switchyard does: is it another program's socket?"},
		{name: "no agent", args: []string{"status", "--agent", "--socket", sock}, phrase: "is `switchyard agent` running?"},
		{name: "log level", args: []string{"run", "--log-level", "verbose"}, phrase: `--log-level "verbose": use debug, info, warn or error`},
		{name: "attach mode", args: []string{"agent", "--attach-mode", "skb"}, phrase: `unknown attach mode "skb": use native, generic or auto`},
		{name: "remove what", args: []string{"remove"}, phrase: "say what to remove: --config FILE, --interface NAME or --pin-dir DIR"},
		{name: "remove config and interface", args: []string{"remove", "--config", filepath.Join(dir, "missing.yaml"), "--interface", "eth1"}, phrase: "--config and --interface both say what to remove, and the file names its own interface: keep --config FILE"},
		{name: "remove interface and pin dir", args: []string{"remove", "--interface", "eth0", "--pin-dir", filepath.Join(dir, "none")}, phrase: "--interface and --pin-dir both name the balancer's pin directory (--interface NAME names /sys/fs/bpf/switchyard/NAME): keep --pin-dir DIR"},
		{name: "remove path", args: []string{"remove", "--interface", "../x"}, root: true, phrase: `--interface: "../x" is not a valid interface name`},
		{name: "remove nothing", args: []string{"remove", "--pin-dir", filepath.Join(dir, "none")}, root: true, phrase: "nothing pinned at "},
		{name: "agent pin dir not absolute", args: []string{"remove", "--agent", "--interface", "eth0", "--pin-dir", "pins"}, root: true, phrase: `agent config: pin_dir: "pins" is not an absolute path; `},
		{name: "testserver without name", args: []string{"testserver"}, phrase: "testserver: Name is empty: set the backend name (--name be1)"},
		{name: "testserver without address", args: []string{"testserver", "--name", "be1", "--http", "", "--udp", ""}, phrase: "testserver: HTTPAddr (--http) and UDPAddr (--udp) are both empty: set at least one listen address, e.g. --http :80"},
		{name: "testserver port alone", args: []string{"testserver", "--name", "be1", "--http", "80"}, phrase: `testserver: HTTPAddr (--http) "80": `},

		// Configuration files.
		{name: "missing file", args: []string{"run", "--config", filepath.Join(dir, "missing.yaml")}, phrase: "no such file or directory; pass the path of a config file"},
		{name: "empty file", args: []string{"run", "--config", "{cfg}"}, config: "# nothing yet\n", phrase: "configuration file is empty"},
		{name: "unknown field", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "{name: be1,", "{nmae: be1,", 1), phrase: "unknown field; did you mean name? (valid here: "},
		{name: "bad YAML", args: []string{"run", "--config", "{cfg}"}, config: "vips: [\n", phrase: "check the indentation and quoting around this line"},
		{name: "set twice", args: []string{"run", "--config", "{cfg}"}, config: validBalancer + "metrics: {listen: \"\"}\n", phrase: "set twice (first on line "},
		{name: "second document", args: []string{"run", "--config", "{cfg}"}, config: validBalancer + "---\nvips: []\n", phrase: "a second YAML document starts here"},
		{name: "agent's file to run", args: []string{"run", "--config", "{cfg}"}, config: string(agentExample), phrase: "not of the balancer's: the file is the agent's"},
		{name: "balancer's file to agent", args: []string{"agent", "--config", "{cfg}"}, config: string(balancerExample), phrase: "not of the agent's: the file is the balancer's"},
		{name: "agent's file to check", args: []string{"check", "--config", "{cfg}"}, config: string(agentExample), phrase: "to check it as the agent's file: switchyard check --agent --config "},
		{name: "balancer's file to check --agent", args: []string{"check", "--agent", "--config", "{cfg}"}, config: string(balancerExample), phrase: "as the balancer's file: switchyard check --config "},
		{name: "loopback backend", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "10.2.1.2", "127.0.0.1", 1), phrase: "vips[0].backends[0].address: 127.0.0.1 is a loopback address (127.0.0.0/8): packets to it never leave the host"},
		{name: "backend at the VIP", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "10.2.1.2", "10.100.0.1", 1), phrase: "vips[0].backends[0].address: 10.100.0.1 is the address of vips[0] (web): routers send packets to it to the balancers, so the backend would never get those encapsulated to it"},
		{name: "VIP at the gateway", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "address: 10.100.0.1", "address: 10.1.1.1", 1) + "nexthop: {gateway: 10.1.1.1}\n", phrase: "vips[0].address: 10.1.1.1 is nexthop.gateway, the router's own address: clients' packets to it end at the router and never reach a balancer"},
		{name: "leading zero", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "port: 80", "port: 080", 1), phrase: "vips[0].port: 080 has a leading zero, which YAML may read as octal; write 80"},
		{name: "hexadecimal", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "port: 80", "port: 0x50", 1), phrase: "vips[0].port: 0x50 is not written in decimal (YAML reads it as 80); write the number in decimal: 80"},
		{name: "name with a tab", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "name: be1", `name: "be\t1"`, 1), phrase: `a space or control character, which would break the status table`},
		{name: "number beyond int", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "{interface: eth0}", "{interface: eth0, conn_table_size: 99999999999999999999}", 1), phrase: "datapath.conn_table_size: 99999999999999999999 is out of range; use 1024 to 16777216"},
		{name: "duration beyond time.Duration", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "{interface: eth0}", "{interface: eth0, udp_idle_timeout: 3000000h}", 1), phrase: "datapath.udp_idle_timeout: 3000000h is too long for a duration (the longest is 2562047h47m16.854775807s, about 292 years), and this field's maximum is 24h; "},
		{name: "name too long", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "name: be1", "name: "+strings.Repeat("a", 300), 1), phrase: "is 300 bytes, longer than the 253 a name may have: it is a metric label and a column of status; use a shorter name"},
		{name: "field of another check", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "{type: none}", "{type: none, port: 8080}", 1), phrase: "vips[0].health.port: type none runs no check, so it probes no port"},
		{name: "udp without send", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "{type: none}", "{type: udp}", 1), phrase: "vips[0].health.send: required for a udp check"},
		{name: "path not a URL", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "{type: none}", "{type: http, path: /health%}", 1), phrase: `vips[0].health.path: "/health%" is not a URL path (invalid URL escape "%"); percent-encode it, a % as %25`},
		{name: "interval typo", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "{type: none}", "{type: tcp, interval: 2ns}", 1), phrase: "vips[0].health.interval: 2ns is below the minimum of 100ms"},
		{name: "UDP idle timeout typo", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "{interface: eth0}", "{interface: eth0, udp_idle_timeout: 30ns}", 1), phrase: "datapath.udp_idle_timeout: 30ns is below the minimum of 1s"},
		{name: "UDP idle timeout too long", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "{interface: eth0}", "{interface: eth0, udp_idle_timeout: 1000000h}", 1), phrase: "datapath.udp_idle_timeout: 1000000h is above the maximum of 24h: "},
		{name: "interval too long", args: []string{"run", "--config", "{cfg}"}, config: strings.Replace(validBalancer, "{type: none}", "{type: tcp, interval: 1000000h}", 1), phrase: "vips[0].health.interval: 1000000h is above the maximum of 1h: a dead backend would keep getting new flows for fall intervals"},
		{name: "too many VIPs", args: []string{"run", "--config", "{cfg}"}, config: manyVIPs(513), phrase: "more than the datapath's limit of 512"},
		{name: "agent on lo", args: []string{"agent", "--config", "{cfg}"}, config: "interface: lo\n", phrase: "interface: lo cannot be the agent's interface"},
		{name: "too many encap addresses", args: []string{"agent", "--config", "{cfg}"}, config: "interface: eth0\nencap_addresses: [" + strings.Join(encap66, ", ") + "]\n", phrase: "encap_addresses: 65 addresses are more than the decap program's limit of 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				t.Skip("SKIPPED: without root, the command stops at its check for root")
			}
			if !strings.Contains(ts, tc.phrase) {
				t.Errorf("the README's Troubleshooting section does not have %q", tc.phrase)
			}
			args := tc.args
			if tc.config != "" {
				cfg := filepath.Join(t.TempDir(), "config.yaml")
				if err := os.WriteFile(cfg, []byte(tc.config), 0o600); err != nil {
					t.Fatal(err)
				}
				args = nil
				for _, a := range tc.args {
					args = append(args, strings.ReplaceAll(a, "{cfg}", cfg))
				}
			}
			out, err := runMain(t, args...)
			if err == nil {
				t.Fatalf("switchyard %q succeeded, printing %q; want it to fail", args, out)
			}
			if !strings.Contains(out, tc.phrase) {
				t.Errorf("switchyard %q printed %q, without %q", args, out, tc.phrase)
			}
		})
	}
}
