package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/test/readme"
)

// maxLead is the longest start the test looks for: a row quotes a
// message's start, not the whole of a long one.
const maxLead = 80

// minLead is the shortest leading text the test looks for. A message
// whose constant start is shorter is a wrapper (`%s: %w`) or opens with a
// verb or noun alone before its value (`read %s: %w`, `VIP %s: ...`):
// what the user reads first is the wrapped error, or the value, and no row
// can be told by so short a start.
const minLead = 8

// messageLead is the constant start of a message: its text up to the
// first formatting verb or quote, where the value a row writes as `...`
// begins, and at most maxLead bytes of it.
func messageLead(s string) string {
	if len(s) > maxLead {
		s = strings.ToValidUTF8(s[:maxLead], "")
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '%':
			if i+1 < len(s) && s[i+1] == '%' {
				i++
				continue
			}
			return s[:i]
		case '"', '\'', '`':
			return s[:i]
		}
	}
	return s
}

// literalStart is the constant text at the start of a message argument:
// a string literal, the literals a concatenation starts with, or the
// format of a fmt.Sprintf. ok is false for a message built elsewhere.
func literalStart(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		left, ok := literalStart(e.X)
		if !ok {
			return "", false
		}
		if right, ok := literalStart(e.Y); ok {
			return left + right, true
		}
		// What follows is a value: the constant text ends here.
		return left + "%v", true
	case *ast.CallExpr:
		if sel, ok := e.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Sprintf" && len(e.Args) > 0 {
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == "fmt" {
				return literalStart(e.Args[0])
			}
		}
	}
	return "", false
}

// userMessage is an error or warning text in the code, and where.
type userMessage struct {
	pos  string
	kind string
	lead string
}

// userMessages lists the messages of the non-test Go files under cmd/
// and pkg/: the errors made with fmt.Errorf and errors.New, which the
// commands print and the daemons log, and the texts of the Warn and
// Error calls of the daemons' slog loggers.
func userMessages(t *testing.T, root string) []userMessage {
	t.Helper()
	var out []userMessage
	fset := token.NewFileSet()
	for _, dir := range []string{"cmd", "pkg"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			// bpf2go's generated loaders are not ours to word.
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, "_bpfel.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pkg := ""
				if id, ok := sel.X.(*ast.Ident); ok {
					pkg = id.Name
				}
				arg := -1
				switch name := sel.Sel.Name; {
				case pkg == "fmt" && name == "Errorf", pkg == "errors" && name == "New":
					arg = 0
				case pkg == "http" || pkg == "fmt" || pkg == "errors":
					// http.Error writes an HTTP answer, not a log line.
				case name == "Warn" || name == "Error":
					arg = 0
				case name == "WarnContext" || name == "ErrorContext":
					arg = 1
				}
				if arg < 0 || len(call.Args) <= arg {
					return true
				}
				text, ok := literalStart(call.Args[arg])
				if !ok {
					return true
				}
				rel, _ := filepath.Rel(root, fset.Position(call.Pos()).Filename)
				out = append(out, userMessage{
					pos:  rel + ":" + strconv.Itoa(fset.Position(call.Pos()).Line),
					kind: pkg + "." + sel.Sel.Name,
					lead: messageLead(text),
				})
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// Every error and warning text of the code is in the README's
// Troubleshooting section, quoted by its constant start, or is named in
// notInTroubleshooting with the reason it needs no row (or, for the
// audit's backlog, in notYetInTroubleshooting). A message added
// without a row fails here, and so does a row's quote that no longer
// matches its message, and an entry of the list that matches none.
func TestEveryMessageIsInTroubleshooting(t *testing.T) {
	ts := readme.Section(t, "## Troubleshooting")
	msgs := userMessages(t, filepath.Join("..", ".."))
	if len(msgs) < 300 {
		t.Fatalf("found only %d messages in cmd/ and pkg/: the parse misses calls", len(msgs))
	}
	used := map[string]bool{}
	for _, m := range msgs {
		if len(strings.TrimSpace(m.lead)) < minLead {
			continue
		}
		if _, ok := notInTroubleshooting[m.lead]; ok || slices.Contains(notYetInTroubleshooting, m.lead) {
			used[m.lead] = true
			continue
		}
		if !strings.Contains(ts, m.lead) {
			t.Errorf("%s: %s(%q...): the README's Troubleshooting section has no row quoting it; add one (message, when and why, what to do), or if no user can see it, add it to notInTroubleshooting with the reason", m.pos, m.kind, m.lead)
		}
	}
	var stale []string
	for lead := range notInTroubleshooting {
		if !used[lead] {
			stale = append(stale, lead)
		}
	}
	for _, lead := range notYetInTroubleshooting {
		if !used[lead] {
			stale = append(stale, lead)
		}
	}
	slices.Sort(stale)
	for _, lead := range stale {
		t.Errorf("the lists of messages without a row have %q, which no message of cmd/ or pkg/ starts with any more: remove it", lead)
	}
}

// notInTroubleshooting: the constant starts of messages that no user can
// see, each with the reason. Keep an entry only while its reason holds.
var notInTroubleshooting = map[string]string{
	"read the embedded ":                                           "the objects are embedded in the binary at build time; reading them fails only for a broken build",
	"tag of the embedded ":                                         "hashing instructions the binary's own objects carry; fails only for a broken build",
	"read the kernel release: ":                                    "uname(2) does not fail on Linux",
	"api server needs a Service":                                   "a Go caller that builds the server wrong; the commands never do",
	"api server needs an AgentService":                             "a Go caller that builds the server wrong; the commands never do",
	"api server already started":                                   "a second Start by a Go caller; the commands start it once",
	"balancer: Initial config and Datapath are required":           "a Go caller that builds the balancer wrong; switchyard run never does",
	"demo: Binary and Out are required":                            "a Go caller that builds the demo wrong; switchyard demo never does",
	"lab: Binary is empty: give the path of the switchyard binary": "a test or Go caller that builds a lab wrong; switchyard demo never does",
	"lab: Configured = ":                                           "a test or Go caller that builds a lab wrong; switchyard demo never does",
	"lab: AttachMode: ":                                            "a test or Go caller that builds a lab wrong; switchyard demo never does",
	"lab: BeforeStart: ":                                           "a test hook of the lab; switchyard demo sets none",
	"lab is closed":                                                "a test calling a closed lab; switchyard demo closes it last",
	"health monitor closed":                                        "sentinel: wrapped by `health checks not changed to the new configuration`, which has the row",
	"invalid health check target":                                  "sentinel of the targets below, which config validation keeps from the monitor",
	"target with an empty key: ":                                   "the balancer builds every target from a validated configuration",
	"invalid maglev table size":                                    "sentinel: the balancer sizes Maglev tables itself, never from user input",
	"too many backends for maglev table size":                      "sentinel: the balancer picks a table size above the backends config validation allows",
	"duplicate maglev backend ID":                                  "sentinel: the balancer keys backends by address, which validation keeps unique in a VIP",
	"duplicate maglev backend value":                               "sentinel: the values are the balancer's own backend numbers, one per address",
	"maglev backend weight is 0":                                   "sentinel: config validation refuses a weight of 0",
	"invalid maglev backend":                                       "sentinel of the maglev errors below",
	"maglev config: Size is 0; set it to one of ":                  "the balancer sizes Maglev tables itself, never from user input",
	"maglev config: Size ":                                         "the balancer sizes Maglev tables itself, never from user input",
	"maglev: backends[":                                            "config validation refuses what these check before a table is built",
	"maglev: backend ":                                             "config validation refuses what these check before a table is built",
	"maglev: backend ID ":                                          "the balancer numbers the backends itself",
	"maglev: backends ":                                            "config validation refuses what these check before a table is built",
	"metrics server already started":                               "a second Start by a Go caller; the commands start it once",
	"testserver: already started or closed":                        "a second Start by a Go caller; switchyard testserver starts it once",
	"read balancer object: ":                                       "the objects are embedded in the binary at build time; parsing them fails only for a broken build",
	"read decap object: ":                                          "the objects are embedded in the binary at build time; parsing them fails only for a broken build",
	"set connection-table size: ":                                  "sets a variable the embedded object declares; fails only for a broken build",
	"set the jiffy length: ":                                       "sets a variable the embedded object declares; fails only for a broken build",
	"connection table: sets of ":                                   "the map and the Go type come from one build's object (a pinned table of another layout is refused at load, `pinned maps are incompatible`); fails only for a broken build",
	"count CPUs: ":                                                 "cilium/ebpf reads the possible CPUs once, to create the per-CPU maps before this runs, and answers from that after",
	"VIP number ":                                                  "the balancer numbers VIPs itself, below the limit config validation keeps their count under",
	"backend id ":                                                  "the balancer numbers backends itself, and refuses more addresses than the limit before (`more than 4096 backend addresses`)",
	"datapath settings: UDP idle timeout ":                         "config validation refuses a datapath.udp_idle_timeout that is not positive",
	"read the VIP index: ":                                         "LookupVIP serves the datapath's tests; no command calls it",
	"open the VIP index: ":                                         "LookupVIP serves the datapath's tests; no command calls it",
	"read VIP index slot ":                                         "LookupVIP serves the datapath's tests; no command calls it",
	"no such VIP in the datapath":                                  "sentinel: the balancer publishes (and reads back) tables only of the VIPs it wrote to the datapath before",
	"not a Switchyard pin directory":                               "sentinel: wrapped by `refuse to remove ...`, which has the row",
	"the balancer program is not attached to its interface: VIP traffic is not balanc": "sentinel: the `error` of `the balancer program no longer runs on its interface, though the daemon runs`, which has the row",
	"the decap program is not attached to its interface: encapsulated packets are not": "sentinel: the `error` of `the decap program no longer runs on its interface, though the agent runs`, which has the row",
	"could not check the program": "sentinel: the `error` of `could not check that the balancer (or decap) program still runs on its interface`, which has the row",
	"no BPF program named ":       "LoadedJITCode serves scripts/jitprof, a developer's profiling tool (Development), not a switchyard command",
}

// notYetInTroubleshooting: messages a user can meet that have no row yet,
// found by the audit that added this test (most are a kernel refusal of
// one step, wrapped in the start, reload or removal that failed, the
// kernel's reason at the end). A debt to pay, not a place for new
// messages: give each a row (or an internal reason above) and take it
// out of this list; the test fails on an entry no message starts with.
var notYetInTroubleshooting = []string{
	// cmd/switchyard/demo.go
	"find this binary (use --binary): ",
	"interrupted: ",
	// cmd/switchyard/run.go
	"api.socket: ",
	// pkg/agent/agent.go
	"agent is already running",
	"undo the partial start",
	"agent config: ",
	"open netlink: ",
	"open the network namespace: ",
	"load decap program (pins in ",
	"close decap program: ",
	// pkg/agent/state.go
	"read boot id: ",
	"identify the network namespace: ",
	"read sysctl ",
	"remove state file ",
	"wait for the agents",
	// pkg/agent/status.go
	"read the decap counters: ",
	// pkg/agent/sysctl.go
	"enter the agent",
	"restore sysctl ",
	// pkg/agent/vips.go
	"list addresses of ",
	"remove VIP ",
	// pkg/agent/watch.go
	"open the network namespace to watch ",
	"watch addresses of ",
	"watch interface ",
	// pkg/api/client.go
	"encode the request: ",
	"build the request: ",
	"talk to switchyard at ",
	// pkg/api/errors.go
	"not found",
	"bad request",
	"unavailable",
	"no switchyard daemon on the socket",
	"socket in use by another daemon",
	// pkg/api/server.go
	"api socket ",
	"create the directory of the api socket: ",
	"check the api socket: ",
	"create a private directory beside the api socket: ",
	"listen on ",
	"restrict the api socket to its owner: ",
	"remove the stale api socket: ",
	"remove the api socket: ",
	"name a backend: NAME (in every VIP) or VIP/NAME: ",
	"data after the JSON object",
	"request body larger than ",
	"request body is empty: ",
	"request body: ",
	// pkg/config/duration.go
	"expected a duration such as 1s or 500ms",
	// pkg/config/errors.go
	"invalid configuration",
	// pkg/config/validate.go
	"an interface name is required, e.g. eth0",
	// pkg/demo/demo.go
	"remove the leftovers of an earlier demo: ",
	"teardown: ",
	"the stream on the drained backend stopped: ",
	"the drained backend ",
	// pkg/demo/lab.go
	"lab: switchyard binary: ",
	"create the pin directory: ",
	"process exited",
	"lab: bpffs is not mounted on ",
	// pkg/demo/lock.go
	"take the demo",
	// pkg/demo/traffic.go
	"open stream: ",
	"stream to ",
	"send echo request to ",
	"no echo reply from ",
	"download ",
	"download from ",
	// pkg/ethtool/ethtool.go
	"socket for ethtool ioctls: ",
	"get generic receive offload of ",
	"set generic receive offload of ",
	"get tx checksum offload of ",
	"set tx checksum offload of ",
	"interface name ",
	"ioctl SIOCETHTOOL cmd ",
	// pkg/health/udp.go
	"udp check: request of ",
	// pkg/metrics/collector.go
	"status function panicked: ",
	// pkg/metrics/server.go
	"metrics.listen: listen on ",
	// pkg/testserver/pattern.go
	"content differs from the download pattern",
	// pkg/testserver/server.go
	"testserver: Name is empty: set the backend name (--name be1)",
	"testserver: HTTPAddr (--http) and UDPAddr (--udp) are both empty: set at least o",
	"testserver: ",
	"testserver: listen HTTP on ",
	"testserver: listen UDP on ",
	"missing bytes: want /download?bytes=N",
	// pkg/testserver/udp.go
	"enable packet info on ",
	// pkg/topology/ns.go
	"enter namespace ",
	// pkg/topology/owner.go
	"owned path ",
	"remove what the killed process ",
	// pkg/topology/seccomp.go
	"install a seccomp filter denying BPF_OBJ_GET_INFO_BY_FD: ",
	// pkg/topology/topology.go
	"topology is closed",
	"node is not part of this topology",
	"namespace prefix already in use",
	"topology: Balancers = ",
	"topology: Backends = ",
	"topology: Prefix is empty: set it to a short unique token such as RandomPrefix(",
	"topology: Prefix ",
	"close handle of ",
	"remove the marker of topology ",
	"netlink handle in ",
	"create veth ",
	"attach XDP pass program to ",
	"create namespace ",
	"bind-mount ",
	"IPv6 addresses of ",
	"add default route via ",
	"list processes: ",
	"kill process ",
	"wait for a killed process to exit: ",
	"no Pid in the pidfd",
}
