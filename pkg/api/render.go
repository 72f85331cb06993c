package api

import (
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/switchyard-lb/switchyard/pkg/buildinfo"
)

// WriteStatus writes the operator's view of s that `switchyard status`
// prints: the daemon, then each VIP with a table of its backends, then the
// datapath's non-zero drop counters.
func WriteStatus(w io.Writer, s Status) error {
	return writeStatus(w, s, time.Now())
}

// writeStatus is WriteStatus with the time ages are counted to.
func writeStatus(w io.Writer, s Status, now time.Time) error {
	ew := &errWriter{w: w}

	tw := newTable(ew)
	up := ""
	if !s.StartedAt.IsZero() {
		up = ", up " + age(now.Sub(s.StartedAt))
	}
	fmt.Fprintf(tw, "node:\t%s%s\n", orDash(Visible(s.Node)), up)
	fmt.Fprintf(tw, "build:\t%s\n", buildLine(s.Build))
	// Every string below is the daemon's, or whatever program answers on
	// the socket: an interface name may hold any byte but '/' and ':' (an
	// escape sequence, a tab, a newline), and errors repeat it. Printed
	// raw they would rewrite the operator's terminal or break the table.
	fmt.Fprintf(tw, "interface:\t%s (%s), program %s", orDash(Visible(s.Interface)), orDash(Visible(s.AttachMode)), orDash(Visible(s.ProgramTag)))
	if s.ProgramDetached != "" {
		fmt.Fprintf(tw, " NOT ATTACHED: VIP traffic is not balanced; %s", Visible(s.ProgramDetached))
	}
	if s.AttachCheckError != "" {
		fmt.Fprintf(tw, " (attachment NOT CHECKED, last known state shown: %s)", Visible(s.AttachCheckError))
	}
	fmt.Fprintln(tw)
	switch {
	case s.LinkPinError != "":
		fmt.Fprintf(tw, "link pin:\tNOT PINNED: a kill or an in-place upgrade of the daemon detaches the program; %s\n", Visible(s.LinkPinError))
	case s.LinkPinRestores > 0:
		fmt.Fprintf(tw, "link pin:\tremoved by hand and pinned again %s\n", plural(s.LinkPinRestores, "time"))
	}
	switch {
	case s.MapPinError != "":
		fmt.Fprintf(tw, "map pins:\tNOT ALL PINNED: the next run of the daemon creates the missing maps afresh; %s\n", Visible(s.MapPinError))
	case s.MapPinRestores > 0:
		fmt.Fprintf(tw, "map pins:\tremoved by hand and pinned again: %s\n", plural(s.MapPinRestores, "pin"))
	}
	fmt.Fprintf(tw, "config:\tgeneration %d", s.ConfigGeneration)
	if s.ConfigFile != "" {
		fmt.Fprintf(tw, " of %s", Visible(s.ConfigFile))
	}
	fmt.Fprintf(tw, ", %s, %s\n", plural(s.Reloads, "reload"), plural(s.ReloadFailures, "failed reload"))
	if s.LastReloadError != "" {
		// A refused file's error has a line per problem: each goes in
		// the value column (a line without a cell would end the
		// table, and the rows after it be aligned afresh).
		fmt.Fprintf(tw, "\tlast reload error: %s\n", VisibleLines(s.LastReloadError, "\n\t"))
	}
	for _, w := range s.Warnings {
		fmt.Fprintf(tw, "warning:\t%s\n", Visible(w))
	}
	switch {
	case s.NextHop.Resolved:
		fmt.Fprintf(tw, "next hop:\t%s (%s)\n", orDash(Visible(s.NextHop.Gateway)), Visible(s.NextHop.MAC))
	default:
		fmt.Fprintf(tw, "next hop:\t%s NOT RESOLVED: VIP traffic is dropped\n", orDash(Visible(s.NextHop.Gateway)))
	}
	fmt.Fprintf(tw, "conn table:\t%s of %s entries (%s)\n", count(s.ConnTable.Entries), count(uint64(s.ConnTable.Capacity)),
		percent(float64(s.ConnTable.Entries), float64(s.ConnTable.Capacity)))
	tw.Flush()

	for _, v := range s.VIPs {
		fmt.Fprintf(ew, "\nVIP %s  %s/%s  hash %s  %s packets  %.1f pkt/s  %s new flows",
			Visible(v.Name), net.JoinHostPort(Visible(v.Address), strconv.Itoa(int(v.Port))), Visible(v.Protocol), orDash(Visible(v.Hash)),
			count(v.Packets), v.PacketRate, count(v.NewFlows))
		if !v.Conntrack {
			fmt.Fprint(ew, "  conntrack off")
		}
		if v.HealthVia != "" {
			fmt.Fprintf(ew, "  checks via %s", Visible(v.HealthVia))
		}
		fmt.Fprintln(ew)
		if len(v.Backends) == 0 {
			fmt.Fprintln(ew, "  no backends")
			continue
		}
		tw := newTable(ew)
		fmt.Fprintln(tw, "  BACKEND\tADDRESS\tWEIGHT\tHEALTH\tDRAINED\tSLOTS\tACTIVE/FLOWS\tPKTS(ALL-VIPS)\tCHECK")
		for _, b := range v.Backends {
			flows := count(b.ActiveFlows) + "/" + count(b.Flows)
			if b.Removed {
				fmt.Fprintf(tw, "  %s\t%s\t-\tREMOVED\t-\t-\t%s\t%s\tnot in the configuration: its established flows continue\n",
					Visible(b.Name), Visible(b.Address), flows, count(b.Packets))
				continue
			}
			health := "DOWN"
			if b.Healthy {
				health = "UP"
			}
			if !b.Since.IsZero() {
				health += " for " + age(now.Sub(b.Since))
			}
			drained := "no"
			if b.Drained {
				drained = "yes"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", Visible(b.Name), Visible(b.Address), b.Weight, health, drained,
				percent(float64(b.TableSlots), float64(v.TableSize)), flows, count(b.Packets), checkInfo(b))
		}
		tw.Flush()
	}

	fmt.Fprintf(ew, "\ndrops: %s\n", reasonList(s.Counters, "drop_"))
	return ew.err
}

// WriteAgentStatus writes the operator's view of a backend agent that
// `switchyard status --agent` prints: the agent, its VIPs on lo, the
// sysctls it changed, GRO if it turned it off, then the decap counters.
func WriteAgentStatus(w io.Writer, s AgentStatus) error {
	return writeAgentStatus(w, s, time.Now())
}

func writeAgentStatus(w io.Writer, s AgentStatus, now time.Time) error {
	ew := &errWriter{w: w}

	tw := newTable(ew)
	up := ""
	if !s.StartedAt.IsZero() {
		up = ", up " + age(now.Sub(s.StartedAt))
	}
	fmt.Fprintf(tw, "node:\t%s (agent)%s\n", orDash(Visible(s.Node)), up)
	fmt.Fprintf(tw, "build:\t%s\n", buildLine(s.Build))
	renamed := ""
	if s.ConfiguredInterface != "" {
		renamed = fmt.Sprintf("; renamed from %s (the configured interface) while the agent ran", Visible(s.ConfiguredInterface))
	}
	detached := ""
	if s.ProgramDetached != "" {
		detached = " NOT ATTACHED: encapsulated packets are not decapsulated; " + Visible(s.ProgramDetached)
	}
	if s.AttachCheckError != "" {
		detached += " (attachment NOT CHECKED, last known state shown: " + Visible(s.AttachCheckError) + ")"
	}
	// As in writeStatus: interface names and errors are the kernel's.
	iface := orDash(Visible(s.Interface))
	fmt.Fprintf(tw, "interface:\t%s (%s), decap program %s%s%s\n", iface, orDash(Visible(s.AttachMode)), orDash(Visible(s.ProgramTag)), detached, renamed)
	if s.ConfigFile != "" {
		fmt.Fprintf(tw, "config:\t%s\n", Visible(s.ConfigFile))
	}
	pins := orDash(Visible(s.PinDir))
	switch {
	case s.LinkPinError != "":
		pins += fmt.Sprintf(" (link NOT PINNED: a kill or an in-place upgrade of the agent detaches the decap program; %s)", Visible(s.LinkPinError))
	case s.LinkPinRestores > 0:
		pins += fmt.Sprintf(" (the link's pin was removed by hand and pinned again %s)", plural(s.LinkPinRestores, "time"))
	}
	switch {
	case s.MapPinError != "":
		pins += fmt.Sprintf(" (maps NOT all PINNED: the next run of the agent creates them afresh; %s)", Visible(s.MapPinError))
	case s.MapPinRestores > 0:
		pins += fmt.Sprintf(" (map pins removed by hand and pinned again: %s)", plural(s.MapPinRestores, "pin"))
	}
	fmt.Fprintf(tw, "pins:\t%s\n", pins)
	fmt.Fprintf(tw, "state file:\t%s\n", orDash(Visible(s.StateFile)))
	encap := VisibleJoin(s.EncapAddresses, ", ")
	switch {
	case len(s.EncapAddresses) == 0 && s.EncapFollowsInterface:
		encap = fmt.Sprintf("NONE: %s has no address the balancers can reach (link-local ones are not followed), nothing is decapsulated", iface)
	case s.EncapFollowsInterface:
		encap += fmt.Sprintf(" (the addresses of %s)", iface)
	}
	fmt.Fprintf(tw, "decapsulates to:\t%s\n", orDash(encap))
	gue := "off"
	if s.GUEPort != 0 {
		gue = fmt.Sprintf("UDP port %d", s.GUEPort)
	}
	fmt.Fprintf(tw, "GUE:\t%s\n", gue)
	c := s.Counters
	fmt.Fprintf(tw, "packets:\t%s decapsulated (%s IPv4 outer, %s IPv6 outer, %s of them GUE), %s passed untouched\n",
		count(c["decap_ipv4_outer"]+c["decap_ipv6_outer"]), count(c["decap_ipv4_outer"]), count(c["decap_ipv6_outer"]),
		count(c["decap_gue"]), count(c["pass"]))
	tw.Flush()

	fmt.Fprintln(ew)
	if len(s.VIPs) == 0 {
		fmt.Fprintln(ew, "VIPs on lo: none configured")
	} else {
		tw := newTable(ew)
		fmt.Fprintln(tw, "VIP\tON LO\tBY")
		for _, v := range s.VIPs {
			state := "yes"
			switch {
			case !v.OnLo:
				state = "MISSING: packets to it are dropped (restart the agent to put it back)"
			case v.Tentative:
				state = "TENTATIVE: not usable yet (is lo up?)"
			}
			by := "admin (stays after the agent)"
			switch {
			case v.Added:
				by = "agent"
			case !v.OnLo:
				// Removed from lo: whoever adds it again owns it.
				by = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", Visible(v.Address), state, by)
		}
		tw.Flush()
	}

	fmt.Fprintln(ew)
	if len(s.Sysctls) == 0 {
		fmt.Fprintln(ew, "sysctls changed: none (the host's settings already suit direct server return)")
	} else {
		tw := newTable(ew)
		fmt.Fprintln(tw, "SYSCTL CHANGED\tWAS\tSET\tNOW")
		for _, sc := range s.Sysctls {
			now := sc.Now
			switch {
			case sc.Gone:
				now = "GONE with its interface: nothing to restore at stop"
			case now != sc.Set:
				now += " (changed since: kept at stop)"
			}
			// A sysctl of an interface has its name in it.
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", Visible(sc.Name), Visible(sc.Old), Visible(sc.Set), Visible(now))
		}
		tw.Flush()
	}
	if g := s.GRO; g != nil {
		now := "off (turned on again at stop)"
		gi := Visible(g.Interface)
		switch {
		case g.Gone:
			now = fmt.Sprintf("GONE: interface %s is gone, and its GRO with it (nothing to turn on again at stop)", gi)
		case g.NowOn:
			now = fmt.Sprintf("ON: turned on since, the decap program sees merged packets (`ethtool -K %s gro off` turns it off again)", gi)
		}
		fmt.Fprintf(ew, "\nGRO of %s turned off for the generic-mode decap program: was %s, now %s\n", gi, onOff(g.WasOn), now)
	}

	fmt.Fprintf(ew, "\ndrops: %s\n", reasonList(s.Counters, "drop_"))
	fmt.Fprintf(ew, "bad outer headers (passed untouched, for the stack to drop): %s\n", reasonList(s.Counters, "bad_outer_"))
	return ew.err
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// reasonList lists the non-zero <prefix><reason> counters of c, or "none".
func reasonList(c map[string]uint64, prefix string) string {
	var drops []string
	for k, n := range c {
		if reason, ok := strings.CutPrefix(k, prefix); ok && n > 0 {
			drops = append(drops, fmt.Sprintf("%s %s", Visible(reason), count(n)))
		}
	}
	sort.Strings(drops)
	if len(drops) == 0 {
		return "none"
	}
	return strings.Join(drops, ", ")
}

// WriteFlows writes f as the table `switchyard flows` prints.
func WriteFlows(w io.Writer, f FlowsResponse) error {
	ew := &errWriter{w: w}
	if len(f.Flows) == 0 {
		fmt.Fprintln(ew, "no flows")
		return ew.err
	}
	tw := newTable(ew)
	fmt.Fprintln(tw, "PROTO\tCLIENT\tVIP\tBACKEND\tIDLE")
	for _, fl := range f.Flows {
		// As status's: the daemon's strings, escaped.
		vip := Visible(fl.VIP)
		if fl.VIPName != "" {
			vip = Visible(fl.VIPName) + " " + vip
		}
		idle := time.Duration(fl.IdleSecond * float64(time.Second))
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", Visible(fl.Protocol), Visible(fl.Client), vip, Visible(fl.Backend), age(idle))
	}
	tw.Flush()
	if f.Truncated {
		more := "use --limit to see more"
		if len(f.Flows) >= MaxFlowsLimit {
			// --limit is at its maximum already.
			more = "narrow the list with --vip NAME"
		}
		fmt.Fprintf(ew, "\nshowing the first %d flows; the connection table has more (%s)\n", len(f.Flows), more)
	}
	return ew.err
}

// errWriter keeps the first write error and drops the writes after it, so
// the renderers check errors once at the end.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

// newTable returns a writer that aligns tab-separated cells; call Flush.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(&trimWriter{w: w}, 0, 0, 2, ' ', 0)
}

// trimWriter drops spaces at the ends of lines: the padding tabwriter
// gives a cell that is followed only by empty ones.
type trimWriter struct {
	w      io.Writer
	spaces int // held back until something other than a newline follows
}

func (t *trimWriter) Write(p []byte) (int, error) {
	out := make([]byte, 0, len(p))
	for _, b := range p {
		switch b {
		case ' ':
			t.spaces++
			continue
		case '\n':
			t.spaces = 0
		default:
			for ; t.spaces > 0; t.spaces-- {
				out = append(out, ' ')
			}
		}
		out = append(out, b)
	}
	if _, err := t.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// age formats d for a human, to the two largest units: 12s, 5m3s, 3h12m,
// 4d3h; under 10 seconds with a tenth of a second.
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < 10*time.Second {
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
}

// count formats n exactly below 10000 and with 3 significant digits and
// an SI suffix above: 9999, 12.3k, 4.57M.
func count(n uint64) string {
	if n < 10000 {
		return strconv.FormatUint(n, 10)
	}
	const units = "kMGTPE"
	f, i := float64(n), -1
	for f >= 999.5 && i < len(units)-1 {
		f /= 1000
		i++
	}
	prec := 0
	switch {
	case f < 9.995:
		prec = 2
	case f < 99.95:
		prec = 1
	}
	return strconv.FormatFloat(f, 'f', prec, 64) + units[i:i+1]
}

// percent formats part/whole; "-" if whole is 0. A share that would round
// to 0.0% or 100.0% without being it shows as "<0.1%" or ">99.9%": a
// backend with 1 slot of 65537 takes new flows, one with none does not,
// and the two must not read alike.
func percent(part, whole float64) string {
	if whole == 0 {
		return "-"
	}
	p := strconv.FormatFloat(100*part/whole, 'f', 1, 64)
	switch {
	case p == "0.0" && part > 0:
		return "<0.1%"
	case p == "100.0" && part < whole:
		return ">99.9%"
	}
	return p + "%"
}

func plural(n uint64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// checkInfo is a backend's CHECK column: why its last check failed, or
// that it passed and in how long, with the failures so far when there
// were some (a backend that fails now and then, never fall times in a
// row, shows there).
func checkInfo(b Backend) string {
	// The reason quotes what the backend sent (an HTTP status line's
	// reason phrase): a tab there would start a cell of its own, a
	// carriage return or an escape sequence rewrite the operator's
	// terminal, a newline end the table.
	info := Visible(b.HealthInfo)
	switch {
	case b.Check == "":
		return info
	case b.Checks == 0:
		return Visible(b.Check) + ", not checked yet"
	case info == "":
		d := time.Duration(b.LastCheckSeconds * float64(time.Second))
		if d < time.Millisecond {
			d = d.Round(time.Microsecond)
		} else {
			d = d.Round(100 * time.Microsecond)
		}
		info = Visible(b.Check) + " ok in " + d.String()
	}
	if b.FailedChecks > 0 {
		info += fmt.Sprintf(" (%s of %s checks failed)", count(b.FailedChecks), count(b.Checks))
	}
	return info
}

// Visible is s with each character that is not printable (a control or
// format character, a byte that is not UTF-8) written as a Go escape,
// \t, \r, \x1b or \u200b, and the rest as it is.
func Visible(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

// buildLine is the status row of the daemon's binary: its version, git
// revision and Go version, as `switchyard version` prints them.
func buildLine(b buildinfo.Info) string {
	line := fmt.Sprintf("%s, revision %s", orDash(Visible(b.Version)), orDash(Visible(b.Revision)))
	if b.Modified {
		line += " (modified)"
	}
	return line + ", " + orDash(Visible(b.GoVersion))
}

// VisibleJoin joins ss, each made visible (Visible), with sep.
func VisibleJoin(ss []string, sep string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = Visible(s)
	}
	return strings.Join(out, sep)
}

// VisibleLines is s with each line made visible (Visible), the lines
// joined by sep: a multi-line error keeps its lines.
func VisibleLines(s, sep string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = Visible(l)
	}
	return strings.Join(lines, sep)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// maxShownValue is the longest value (quoted) a change line shows: a
// udp check's send or expect may be a datagram long, and the line names
// the field alone then (--json has the values).
const maxShownValue = 40

// String is the line `switchyard reload` prints for c: "vip web added",
// "vip web: backend be1 changed: weight 1 -> 3, drained false -> true",
// "vip web settings changed: hash 5tuple -> source", "global settings
// changed: datapath.mtu 0 -> 9000". A value that is empty or holds a
// character other than letters, digits and . : / _ - [ ] is quoted (Go
// syntax), one longer than maxShownValue left out: the field's name alone.
func (c Change) String() string {
	var s string
	switch {
	case c.VIP == "":
		s = "global settings " + c.Kind
	case c.Backend == "" && c.Kind == "changed":
		s = "vip " + c.VIP + " settings changed"
	case c.Backend == "":
		s = "vip " + c.VIP + " " + c.Kind
	default:
		s = "vip " + c.VIP + ": backend " + c.Backend + " " + c.Kind
	}
	if len(c.Fields) == 0 {
		return s
	}
	fields := make([]string, len(c.Fields))
	for i, f := range c.Fields {
		from, to := shownValue(f.From), shownValue(f.To)
		if len(from) > maxShownValue || len(to) > maxShownValue {
			fields[i] = f.Field
		} else {
			fields[i] = f.Field + " " + from + " -> " + to
		}
	}
	return s + ": " + strings.Join(fields, ", ")
}

// shownValue is v as a change line shows it: bare if it is one word a
// script can split on spaces and commas, else quoted.
func shownValue(v string) string {
	if v == "" || strings.IndexFunc(v, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".:/_-[]", r))
	}) >= 0 {
		return strconv.Quote(v)
	}
	return v
}
