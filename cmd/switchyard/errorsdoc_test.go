package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

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

// restLen is how much of a flag's message after its value the test looks
// for: enough to tell `--limit N: give at least 1` from `--limit N: give
// at most M`, short enough for a row to quote.
const restLen = 16

// flagRest is, for a message that opens with a flag's name alone before
// its value (`--timeout %v: give a positive duration`), the first restLen
// bytes of the first constant text after that value that is not shorter
// than minLead: the name alone (`--timeout `) is quoted by any row that
// names the flag, so that a new message about it would go unnoticed. It is
// "" for other messages.
func flagRest(text, lead string) string {
	name := strings.TrimSpace(lead)
	if !strings.HasPrefix(name, "-") || strings.Contains(name, " ") {
		return ""
	}
	// The constant texts between the verbs and quotes, as messageLead
	// ends a lead at them.
	var segs []string
	seg := ""
	rest := text[len(lead):]
	for i := 0; i < len(rest); i++ {
		switch c := rest[i]; {
		case c == '%' && i+1 < len(rest) && rest[i+1] == '%':
			seg += "%"
			i++
		case c == '%':
			// The verb ends at its letter: %v, %d, %-10s, %.2f.
			for i++; i < len(rest) && !unicode.IsLetter(rune(rest[i])); i++ {
			}
			segs, seg = append(segs, seg), ""
		case c == '"' || c == '\'' || c == '`':
			segs, seg = append(segs, seg), ""
		default:
			seg += string(c)
		}
	}
	for _, seg := range append(segs, seg) {
		if len(strings.TrimSpace(seg)) >= minLead {
			if len(seg) > restLen {
				seg = strings.ToValidUTF8(seg[:restLen], "")
			}
			return seg
		}
	}
	return ""
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
	rest string // flagRest: quoted in the same row as lead
}

// usageMessage is the message of a usageError literal (`&usageError{...}`),
// the wrong command lines the commands refuse with exit status 2; ok is
// false for any other literal, and for a message built elsewhere (an error
// of another function, whose own call is listed).
func usageMessage(lit *ast.CompositeLit) (userMessage, bool) {
	if id, ok := lit.Type.(*ast.Ident); !ok || id.Name != "usageError" || len(lit.Elts) != 1 {
		return userMessage{}, false
	}
	e := lit.Elts[0]
	if kv, ok := e.(*ast.KeyValueExpr); ok {
		e = kv.Value
	}
	text, ok := literalStart(e)
	if !ok {
		return userMessage{}, false
	}
	lead := messageLead(text)
	return userMessage{kind: "usageError", lead: lead, rest: flagRest(text, lead)}, true
}

// userMessages lists the messages of the non-test Go files under cmd/
// and pkg/: the errors made with fmt.Errorf and errors.New, which the
// commands print and the daemons log, the texts of the Warn and Error
// calls of the daemons' slog loggers, and the wrong command lines told
// with a usageError.
func userMessages(t *testing.T, root string) []userMessage {
	t.Helper()
	var out []userMessage
	fset := token.NewFileSet()
	for _, dir := range []string{"cmd", "pkg"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if rel, _ := filepath.Rel(root, path); testSupport[filepath.ToSlash(rel)] != "" {
					return filepath.SkipDir
				}
				return nil
			}
			// bpf2go's generated loaders are not ours to word.
			if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, "_bpfel.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.CompositeLit); ok {
					if m, ok := usageMessage(lit); ok {
						rel, _ := filepath.Rel(root, fset.Position(lit.Pos()).Filename)
						m.pos = rel + ":" + strconv.Itoa(fset.Position(lit.Pos()).Line)
						out = append(out, m)
					}
					return true
				}
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
				lead := messageLead(text)
				out = append(out, userMessage{
					pos:  rel + ":" + strconv.Itoa(fset.Position(call.Pos()).Line),
					kind: pkg + "." + sel.Sel.Name,
					lead: lead,
					rest: flagRest(text, lead),
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
	if n := len(slices.DeleteFunc(slices.Clone(msgs), func(m userMessage) bool { return m.kind != "usageError" })); n < 10 {
		t.Fatalf("found only %d usageError messages in cmd/: the parse misses them", n)
	}
	used := map[string]bool{}
	for _, m := range msgs {
		if len(strings.TrimSpace(m.lead)) < minLead && m.rest == "" {
			continue
		}
		if _, ok := notInTroubleshooting[m.lead]; ok || slices.Contains(notYetInTroubleshooting, m.lead) {
			used[m.lead] = true
			continue
		}
		if !strings.Contains(ts, m.lead) {
			t.Errorf("%s: %s(%q...): the README's Troubleshooting section has no row quoting it; add one (message, when and why, what to do), or if no user can see it, add it to notInTroubleshooting with the reason", m.pos, m.kind, m.lead)
		} else if m.rest != "" && !slices.ContainsFunc(strings.Split(ts, "\n"), func(row string) bool {
			return strings.Contains(row, m.lead) && strings.Contains(row, m.rest)
		}) {
			t.Errorf("%s: %s(%q...%q...): the README's Troubleshooting section has no row quoting it: rows name the flag, but none quotes what the message says of it; add one (message, when and why, what to do)", m.pos, m.kind, m.lead, m.rest)
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

// testSupport: the packages only tests import, whose messages no user
// can see (TestTestSupportIsTestOnly holds them to that), each with what
// it is for.
var testSupport = map[string]string{
	"pkg/api/apitest":           "checks of the API's answers that the tests of the balancer and the agent share",
	"pkg/datapath/datapathtest": "looks at and plays with pinned links and maps from outside pkg/datapath, the only other importer of cilium/ebpf",
}

// TestTestSupportIsTestOnly: no Go file but a test imports a package of
// testSupport, so skipping their messages hides none a user can see.
func TestTestSupportIsTestOnly(t *testing.T) {
	root := filepath.Join("..", "..")
	const module = "github.com/switchyard-lb/switchyard/"
	fset := token.NewFileSet()
	for _, dir := range []string{"cmd", "pkg", "test"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			for _, imp := range f.Imports {
				if pkg, _ := strconv.Unquote(imp.Path.Value); testSupport[strings.TrimPrefix(pkg, module)] != "" {
					t.Errorf("%s imports %s, which the messages check skips as test support: move what it needs out of it, or take it off testSupport", path, pkg)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for dir := range testSupport {
		if _, err := os.Stat(filepath.Join(root, dir)); err != nil {
			t.Errorf("testSupport names %s: %v; remove it", dir, err)
		}
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
	"could not check the program":               "sentinel: the `error` of `could not check that the balancer (or decap) program still runs on its interface`, which has the row",
	"could not check the maps":                  "sentinel: the map pin checks keep their last state on it, silently, as the link pin's do on `could not check the program`: the same refusal is logged and shown as `could not check that the balancer (or decap) program still runs on its interface`, which has the row",
	"no BPF program named ":                     "LoadedJITCode serves scripts/jitprof, a developer's profiling tool (Development), not a switchyard command",
	"agent is already running":                  "a second Start (or a Remove of a running agent) by a Go caller; switchyard agent starts it once, and remove --agent builds an agent it never starts",
	"enter the agent":                           "wrapped by `open sysctl ... again (interface index N, now named ...)`, which has the row",
	"not found":                                 "sentinel: printed only at the end of the message that wraps it (`no backend ... in any VIP`), which has the row",
	"bad request":                               "sentinel: printed only at the end of the messages that wrap it (`request body: ...`, `limit ... is above the maximum`), which have the rows",
	"unavailable":                               "sentinel matched with errors.Is; the errors that match it print their own text (`agent is not running`, `switchyard is shutting down: ...`), which have the rows",
	"no switchyard daemon on the socket":        "sentinel matched with errors.Is; the error prints `cannot reach switchyard at ...`, which has the row",
	"socket in use by another daemon":           "sentinel: printed only at the end of `another daemon is listening on ...`, which has the row",
	"encode the request: ":                      "json.Marshal of the client's own request struct of strings, which cannot fail",
	"build the request: ":                       "http.NewRequest with the client's constant method and path; fails only for an invalid method or URL, which it never builds",
	"api socket ":                               "config validation refuses a relative or too long api.socket first (`api.socket: ...`, a FILE:LINE: FIELD row)",
	"data after the JSON object":                "wrapped by `request body: ...`, which has the row",
	"expected a duration such as 1s or 500ms":   "the config decoder hands Duration a scalar only, saying `expected a single value, got ...` first; only a Go caller decoding with yaml.v3 itself reaches it",
	"invalid configuration":                     "sentinel: FieldError's Unwrap for errors.Is; its text is never printed, each field error prints its own (the FILE:LINE: FIELD row)",
	"configuration file of the other daemon":    "sentinel: FieldError's Is for errors.Is; its text is never printed, the field error prints its own (`this is a field of ...`, which has the row)",
	"an interface name is required, e.g. eth0":  "its callers check for an empty name first: validation says `required; name the NIC ...`, and remove calls it only with --interface given",
	"interface name ":                           "ethtool gets names from a validated configuration or the kernel, never over 15 bytes",
	"ioctl SIOCETHTOOL cmd ":                    "wrapped by the get/set ... offload messages, which the rows quote",
	"udp check: request of ":                    "config validation refuses a send or expect over one datagram (`... bytes are more than one unfragmented datagram carries`, which has the row)",
	"send echo request to ":                     "Lab.Ping serves the end-to-end tests only; switchyard demo does not ping",
	"no echo reply from ":                       "Lab.Ping serves the end-to-end tests only; switchyard demo does not ping",
	"download ":                                 "Lab.Download serves the end-to-end tests only; switchyard demo does not download",
	"download from ":                            "Lab.Download serves the end-to-end tests only; switchyard demo does not download",
	"content differs from the download pattern": "testserver.VerifyPattern serves Lab.Download, which only the end-to-end tests call",
	"install a seccomp filter denying ":         "topology.DenyBPFObjInfo and DenyNetlinkSockets are test helpers; no command calls them",
	"topology is closed":                        "a test or Go caller using a closed topology; switchyard demo closes it last",
	"node is not part of this topology":         "a test or Go caller naming a node the topology lacks; the demo's lab names its own nodes",
	"namespace prefix already in use":           "the demo removes its leftovers first, under its host lock (a second demo gets `another switchyard demo is running`); tests retry with another random prefix",
	"topology: Balancers = ":                    "a test or Go caller that builds a topology wrong; switchyard demo never does",
	"topology: Backends = ":                     "a test or Go caller that builds a topology wrong; switchyard demo never does",
	"topology: Prefix is empty: set it to a short unique token such as RandomPrefix(": "a test or Go caller that builds a topology wrong; switchyard demo never does",
	"topology: Prefix ":   "a test or Go caller that builds a topology wrong; switchyard demo never does",
	"no Pid in the pidfd": "its caller drops the error, naming the pid only in a message",
}

// notYetInTroubleshooting: messages a user can meet that have no row yet.
// The audit that added this test found about 200; all now have a row or
// an internal reason above, and the list stays empty: it is no place for
// new messages (the test fails on an entry no message starts with).
var notYetInTroubleshooting = []string{}

// flagRest finds what a flag's message says after the flag's value, where
// two messages of one flag differ.
func TestFlagRest(t *testing.T) {
	for _, tc := range []struct{ format, want string }{
		{"--limit %d: give at least 1", ": give at least "},
		{"--limit %d: give at most %d (narrow the list with --vip)", ": give at most "},
		{"--socket %s is %d bytes, longer than the %d a unix socket path may have", " bytes, longer t"},
		{"--log-level %q: use debug, info, warn or error", ": use debug, inf"},
		{"--interface: %v", ""},
		{"--pin-dir %-10s: 100%% full", ": 100% full"},
		{"--pin-dir %-10s: full", ""},
		{"say what to remove: --config FILE", ""},
		{"unexpected argument %q: this command takes only flags", ""},
	} {
		if got := flagRest(tc.format, messageLead(tc.format)); got != tc.want {
			t.Errorf("flagRest(%q) = %q, want %q", tc.format, got, tc.want)
		}
	}
}
