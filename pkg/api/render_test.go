package api

import (
	"errors"
	"math"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestWriteStatus(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var b strings.Builder
	if err := writeStatus(&b, sampleStatus(now), now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"lb1, up 3h12m",
		"eth0 (native), program 5f1c0a9e3b2d7c41",
		"generation 4 of /etc/switchyard/switchyard.yaml, 5 reloads, 1 failed reload",
		"last reload error: /etc/switchyard/switchyard.yaml:12: vips[0].port",
		"\nwarning:     backend self of VIP web: 10.1.1.2 is an address of this balancer's interface eth0: write the backend's own address\n",
		"10.0.0.1 (02:00:00:00:00:01)",
		"1234 of 65.5k entries (1.9%)",
		"VIP web  10.0.0.100:80/tcp  hash maglev  12.3k packets  120.5 pkt/s  321 new flows\n",
		"VIP dns  10.0.0.53:53/udp  hash maglev  7 packets  0.0 pkt/s  0 new flows  conntrack off\n",
		"drops: fragment 3, no_backend 12\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	for _, unwanted := range []string{"ttl", "encap"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("status shows %q: only non-zero drop counters belong there", unwanted)
		}
	}

	rows := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			rows[f[0]] = f
		}
	}
	for name, want := range map[string]string{
		"web-1":         "web-1 10.2.1.1 1 UP for 5m0s no 100.0% 87/12.3k 4000 http ok in 2.5ms (2 of 300 checks failed)",
		"web-backend-2": "web-backend-2 10.2.1.22 10 DOWN for 12s yes 0.0% 0/4 1.23M tcp check: dial tcp 10.2.1.22:80: connect: connection refused (12 of 40 checks failed)",
		"10.2.1.3":      "10.2.1.3 10.2.1.3 - REMOVED - - 2/6 250 not in the configuration: its established flows continue",
		"dns-1":         "dns-1 10.2.1.1 2 UP no 100.0% 0/0 4000 no check",
	} {
		if got := strings.Join(rows[name], " "); got != want {
			t.Errorf("row of %s:\n got %q\nwant %q", name, got, want)
		}
	}
	checkAligned(t, out, "  BACKEND")
	if strings.Contains(out, " \n") {
		t.Error("a line ends in spaces")
	}
}

func TestWriteStatusUnresolvedNextHop(t *testing.T) {
	var b strings.Builder
	err := WriteStatus(&b, Status{NextHop: NextHop{Gateway: "10.0.0.1"}, VIPs: []VIP{{Name: "web", Address: "2001:db8::1", Port: 443, Protocol: "tcp"}}})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"10.0.0.1 NOT RESOLVED: VIP traffic is dropped",
		"0 of 0 entries (-)",
		"[2001:db8::1]:443/tcp",
		"  no backends\n",
		"drops: none\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// Large counts in the text status read as the other counts there do
// (12.3k, 1.05M): a full default connection table and a week of checks
// every second printed as 1048576 and 604800, digits to count.
func TestWriteStatusLargeCounts(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	st := sampleStatus(now)
	st.ConnTable = ConnTable{Entries: 734003, Capacity: 1 << 20}
	st.VIPs[0].Backends[0].Checks, st.VIPs[0].Backends[0].FailedChecks = 604800, 12345
	var b strings.Builder
	if err := writeStatus(&b, st, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"734k of 1.05M entries (70.0%)\n",
		"http ok in 2.5ms (12.3k of 605k checks failed)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}

// A program detached from its interface, and a link pin restored or not
// restorable, each show where the operator reads the interface: the
// datapath is not forwarding, or would stop at the daemon's next kill.
func TestWriteStatusAttachment(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		change func(*Status)
		want   string
	}{
		{"attached and pinned", func(*Status) {}, "interface: eth0 (native), program 5f1c0a9e3b2d7c41\nconfig:"},
		{"detached", func(s *Status) {
			s.ProgramAttached, s.ProgramDetached, s.ProgramDetachments = false, "its link (ID 7) was detached from the interface", 1
		}, "interface: eth0 (native), program 5f1c0a9e3b2d7c41 NOT ATTACHED: VIP traffic is not balanced; its link (ID 7) was detached from the interface\n"},
		{"attachment not checked", func(s *Status) {
			s.AttachCheckError = "read the balancer program's link: operation not permitted"
		}, "interface: eth0 (native), program 5f1c0a9e3b2d7c41 (attachment NOT CHECKED, last known state shown: read the balancer program's link: operation not permitted)\n"},
		{"pin restored", func(s *Status) { s.LinkPinRestores = 2 },
			"link pin: removed by hand and pinned again 2 times\n"},
		{"pin not restorable", func(s *Status) {
			s.LinkPinned, s.LinkPinError, s.LinkPinRestores = false, "the pin directory /sys/fs/bpf/switchyard/eth0 was removed", 1
		}, "link pin: NOT PINNED: a kill or an in-place upgrade of the daemon detaches the program; the pin directory /sys/fs/bpf/switchyard/eth0 was removed\n"},
	} {
		st := sampleStatus(now)
		tc.change(&st)
		var b strings.Builder
		if err := writeStatus(&b, st, now); err != nil {
			t.Fatal(err)
		}
		// Columns as tabwriter pads them, one space each.
		if out := regexp.MustCompile(` {2,}`).ReplaceAllString(b.String(), " "); !strings.Contains(out, tc.want) {
			t.Errorf("%s: status lacks %q:\n%s", tc.name, tc.want, b.String())
		}
	}
}

func TestWriteFlows(t *testing.T) {
	var b strings.Builder
	if err := WriteFlows(&b, sampleFlows()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"tcp    192.0.2.10:51234    web 10.0.0.100:80  web-1     3.2s\n",
		"udp    [2001:db8::1]:5353  10.0.0.53:53       10.2.1.9  12m5s\n",
		"showing the first 2 flows",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("flows lack %q", want)
		}
	}
	checkAligned(t, out, "PROTO")

	// At the largest limit, more of --limit cannot help.
	b.Reset()
	f := sampleFlows()
	for len(f.Flows) < MaxFlowsLimit {
		f.Flows = append(f.Flows, f.Flows[0])
	}
	if err := WriteFlows(&b, f); err != nil {
		t.Fatal(err)
	}
	if tail := b.String()[b.Len()-200:]; !strings.Contains(tail, "narrow the list with --vip NAME") || strings.Contains(tail, "--limit") {
		t.Errorf("flows truncated at the largest limit end with %q, want the --vip hint and no --limit one", tail)
	}

	b.Reset()
	f = sampleFlows()
	f.Truncated = false
	if err := WriteFlows(&b, f); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "showing") {
		t.Errorf("complete flow list says it is truncated:\n%s", b.String())
	}

	b.Reset()
	if err := WriteFlows(&b, FlowsResponse{}); err != nil {
		t.Fatal(err)
	}
	if b.String() != "no flows\n" {
		t.Errorf("empty flow list: got %q", b.String())
	}
}

type failingWriter struct{}

var errDiskFull = errors.New("disk full")

func (failingWriter) Write([]byte) (int, error) { return 0, errDiskFull }

func TestWriteErrors(t *testing.T) {
	if err := WriteStatus(failingWriter{}, sampleStatus(time.Now())); !errors.Is(err, errDiskFull) {
		t.Errorf("WriteStatus: got %v, want %v", err, errDiskFull)
	}
	if err := WriteFlows(failingWriter{}, sampleFlows()); !errors.Is(err, errDiskFull) {
		t.Errorf("WriteFlows: got %v, want %v", err, errDiskFull)
	}
}

// checkAligned checks every table whose header line starts with header:
// each of its rows (the lines up to a blank one) has a cell starting at
// every column of the header, after a space.
func checkAligned(t *testing.T, out, header string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	tables := 0
	for i, h := range lines {
		if !strings.HasPrefix(h, header) {
			continue
		}
		tables++
		var cols []int
		for c := 1; c < len(h); c++ {
			if h[c-1] == ' ' && h[c] != ' ' {
				cols = append(cols, c)
			}
		}
		for _, row := range lines[i+1:] {
			if row == "" {
				break
			}
			for j, c := range cols {
				if c >= len(row) && j == len(cols)-1 {
					continue // an empty last cell
				}
				if c >= len(row) || row[c-1] != ' ' || row[c] == ' ' {
					t.Errorf("row not aligned with its header at column %d:\n%s\n%s", c, h, row)
					break
				}
			}
		}
	}
	if tables == 0 {
		t.Errorf("no table with header %q", header)
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0", 9999: "9999", 10000: "10.0k", 12345: "12.3k", 99949: "99.9k", 99950: "100k",
		999499: "999k", 999500: "1.00M", 1234567: "1.23M", math.MaxUint64: "18.4E",
	} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}

// A share that rounds to 0.0% or 100.0% without being it is shown as
// such: SLOTS read 0.0% for a backend with 1 slot of 65537 (weight 1
// beside weight 65535), as for a down or drained one that takes no new
// flows at all.
func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		part, whole float64
		want        string
	}{
		{0, 0, "-"},
		{0, 65537, "0.0%"},
		{1, 65537, "<0.1%"},
		{32, 65537, "<0.1%"},
		{33, 65537, "0.1%"},
		{21846, 65537, "33.3%"},
		{65536, 65537, ">99.9%"},
		{65537, 65537, "100.0%"},
		{1234, 65536, "1.9%"},
	} {
		if got := percent(tc.part, tc.whole); got != tc.want {
			t.Errorf("percent(%v, %v) = %q, want %q", tc.part, tc.whole, got, tc.want)
		}
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                     "0.0s",
		1500 * time.Millisecond:          "1.5s",
		42 * time.Second:                 "42s",
		5*time.Minute + 3*time.Second:    "5m3s",
		3*time.Hour + 12*time.Minute:     "3h12m",
		(4*24+3)*time.Hour + time.Minute: "4d3h",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
}

// A refused reload's error has a line per problem: each stays in the
// value column, and the lines after it stay aligned with those before.
func TestWriteStatusMultiLineReloadError(t *testing.T) {
	var b strings.Builder
	s := Status{Node: "lb1", NextHop: NextHop{Gateway: "10.0.0.1"},
		LastReloadError: "configuration refused, the running one stays in force (rejected):\n" +
			"f.yaml:3: vips[0].port: 70000 is out of range; use 0 (all ports) to 65535\nf.yaml:9: vips[1].name: required"}
	if err := WriteStatus(&b, s); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	col := -1
	for _, l := range strings.Split(out, "\n") {
		if l == "" {
			break // the header ends
		}
		// "label:   value", or "         value" continuing the one above
		valueAt := 0
		if !strings.HasPrefix(l, " ") {
			valueAt = strings.Index(l, ":") + 1
		}
		c := len(l) - len(strings.TrimLeft(l[valueAt:], " "))
		if col == -1 {
			col = c
		}
		if c != col {
			t.Errorf("line not in the value column (%d):\n%s", col, out)
			break
		}
	}
}

func TestCheckInfo(t *testing.T) {
	for _, tc := range []struct {
		b    Backend
		want string
	}{
		{Backend{HealthInfo: "no check"}, "no check"},
		{Backend{Check: "udp"}, "udp, not checked yet"},
		{Backend{Check: "udp", Checks: 3, LastCheckSeconds: 0.00004}, "udp ok in 40µs"},
		{Backend{Check: "udp", Checks: 3, LastCheckSeconds: 0.01234}, "udp ok in 12.3ms"},
		{Backend{Check: "udp", Checks: 3, FailedChecks: 3, HealthInfo: "udp check: no reply from 10.2.1.2:53 before the timeout: context deadline exceeded"},
			"udp check: no reply from 10.2.1.2:53 before the timeout: context deadline exceeded (3 of 3 checks failed)"},
	} {
		if got := checkInfo(tc.b); got != tc.want {
			t.Errorf("checkInfo(%+v) = %q, want %q", tc.b, got, tc.want)
		}
	}
}

// A failed check's reason quotes what the backend sent: Go's HTTP client
// hands over a status line's reason phrase with its tabs, carriage
// returns and escape sequences. Printed raw, a tab made a cell of its own,
// a carriage return or "\x1b[2J" rewrote the operator's terminal, and a
// newline ended the table, the rows after it aligned afresh.
func TestWriteStatusEscapesControlCharactersOfChecks(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	s := sampleStatus(now)
	web := &s.VIPs[0]
	web.Backends[1].HealthInfo = "http check: GET http://10.2.1.22:80/healthz: status 503 Down\tfor\rmaint\x1b[2J\n\xff\u200b, want 200: unexpected HTTP status"
	web.Backends = append(web.Backends, Backend{Name: "web-3", Address: "10.2.1.33", Weight: 1, Healthy: true, Check: "http", Checks: 1, LastCheckSeconds: 0.001, TableSlots: 1})
	var b strings.Builder
	if err := writeStatus(&b, s, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	if strings.ContainsAny(out, "\t\r\x1b\u200b") || !utf8.ValidString(out) {
		t.Errorf("status has a control or invisible character, or bytes that are not UTF-8: %q", out)
	}
	want := `status 503 Down\tfor\rmaint\x1b[2J\n\xff\u200b, want 200: unexpected HTTP status (12 of 40 checks failed)` + "\n"
	if !strings.Contains(out, want) {
		t.Errorf("status lacks the reason with its characters escaped, %q", want)
	}
	checkAligned(t, out, "  BACKEND")
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "web-3" && f[5] != "<0.1%" {
			t.Errorf("web-3, with 1 slot of 65537, has SLOTS %s, want <0.1%%", f[5])
		}
	}
}

// A Linux interface name may hold an escape sequence, a tab or a newline,
// and the daemons' warnings, pin and attach errors, sysctl names and pin
// directory repeat it. status printed them raw: "\x1b[2J" cleared the
// operator's terminal, a tab or newline broke the table. They are
// escaped as a check's reason is, and a reload error keeps its lines.
func TestWriteStatusEscapesDaemonStrings(t *testing.T) {
	const bad = "e\x1b[2J\tt\r0"
	const shown = `e\x1b[2J\tt\r0`
	now := fixedNow
	s := sampleStatus(now)
	s.Interface = bad
	s.ProgramDetached = "its link was detached from " + bad
	s.AttachCheckError = "read link of " + bad + ": operation not permitted"
	s.LinkPinError = "pin link of " + bad + ": file exists"
	s.MapPinError = "pin maps of " + bad + ": read-only file system"
	s.Warnings = []string{"backend web-1: 10.2.1.1 is an address of " + bad}
	s.LastReloadError = "line 3: interface " + bad + "\nline 4: bogus"

	a := sampleAgentStatus(now)
	a.Interface = bad
	a.ConfiguredInterface = bad + "x"
	a.ProgramDetached = "its link was detached from " + bad
	a.AttachCheckError = "read link of " + bad
	a.PinDir = "/sys/fs/bpf/switchyard-agent/" + bad
	a.LinkPinError = "pin link in " + bad
	a.MapPinError = "pin maps in " + bad
	a.Sysctls[1].Name = "net.ipv4.conf." + bad + ".arp_announce"
	a.GRO = &AgentGRO{Interface: bad, WasOn: true, NowOn: true}
	a.EncapAddresses = nil

	for name, write := range map[string]func(*strings.Builder) error{
		"status":         func(b *strings.Builder) error { return writeStatus(b, s, now) },
		"status --agent": func(b *strings.Builder) error { return writeAgentStatus(b, a, now) },
	} {
		var b strings.Builder
		if err := write(&b); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if strings.ContainsAny(out, "\t\r\x1b") {
			t.Errorf("%s has a control character: %q", name, out)
		}
		if n := strings.Count(out, shown); n < 6 {
			t.Errorf("%s shows the escaped name %s %d times, want it wherever the name is:\n%s", name, shown, n, out)
		}
	}
	var b strings.Builder
	if err := writeStatus(&b, s, now); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`last reload error: line 3: interface ` + regexp.QuoteMeta(shown) + `\n +line 4: bogus\n`).MatchString(b.String()) {
		t.Errorf("the reload error lost its lines or was not escaped:\n%s", b.String())
	}
}

// poison appends bad to every settable string that v holds (fields, slice
// elements, map keys and values, through pointers) but the empty ones,
// which mean "none" and so print nothing.
func poison(v reflect.Value, bad string) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			poison(v.Elem(), bad)
		}
	case reflect.String:
		if v.CanSet() && v.String() != "" {
			v.SetString(v.String() + bad)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				poison(v.Field(i), bad)
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			poison(v.Index(i), bad)
		}
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for _, k := range v.MapKeys() {
			nk, nv := reflect.New(k.Type()).Elem(), reflect.New(v.Type().Elem()).Elem()
			nk.Set(k)
			nv.Set(v.MapIndex(k))
			poison(nk, bad)
			poison(nv, bad)
			m.SetMapIndex(nk, nv)
		}
		v.Set(m)
	}
}

// The README says that status, status --agent and flows print the
// daemon's words with their control characters escaped, so that a program
// on the socket that is not switchyard cannot move the cursor or clear
// the screen. Only the interface names, errors and check reasons were: a
// node, VIP, backend or counter name, an address, the configuration
// file's path or a flow's fields went to the terminal raw. Every string of
// each answer here ends with an escape sequence, a tab, a carriage return
// and a newline.
func TestRenderersEscapeEveryStringOfTheAnswer(t *testing.T) {
	const bad = "\x1b[2J\t\r\n"
	now := fixedNow
	for _, tc := range []struct {
		name  string
		write func(w *strings.Builder, poisoned bool) error
	}{
		{"status", func(w *strings.Builder, poisoned bool) error {
			s := sampleStatus(now)
			if poisoned {
				poison(reflect.ValueOf(&s), bad)
				// Its lines are kept, each escaped: the other tests
				// see to it.
				s.LastReloadError = sampleStatus(now).LastReloadError
			}
			return writeStatus(w, s, now)
		}},
		{"status --agent", func(w *strings.Builder, poisoned bool) error {
			s := sampleAgentStatus(now)
			if poisoned {
				poison(reflect.ValueOf(&s), bad)
			}
			return writeAgentStatus(w, s, now)
		}},
		{"flows", func(w *strings.Builder, poisoned bool) error {
			f := sampleFlows()
			if poisoned {
				poison(reflect.ValueOf(&f), bad)
			}
			return WriteFlows(w, f)
		}},
	} {
		var clean, out strings.Builder
		if err := tc.write(&clean, false); err != nil {
			t.Fatal(err)
		}
		if err := tc.write(&out, true); err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(out.String(), "\x1b\t\r") {
			t.Errorf("%s prints a control character of the daemon's answer raw:\n%q", tc.name, out.String())
		}
		if got, want := strings.Count(out.String(), "\n"), strings.Count(clean.String(), "\n"); got != want {
			t.Errorf("%s has %d lines where the same answer without newlines in its strings has %d: a newline was printed raw:\n%s", tc.name, got, want, out.String())
		}
		if !strings.Contains(out.String(), `\x1b[2J\t\r\n`) {
			t.Errorf("%s does not show the escaped characters:\n%s", tc.name, out.String())
		}
	}
}
