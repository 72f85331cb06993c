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
	fmt.Fprintf(tw, "node:\t%s%s\n", orDash(s.Node), up)
	fmt.Fprintf(tw, "interface:\t%s (%s), program %s\n", orDash(s.Interface), orDash(s.AttachMode), orDash(s.ProgramTag))
	fmt.Fprintf(tw, "config:\tgeneration %d", s.ConfigGeneration)
	if s.ConfigFile != "" {
		fmt.Fprintf(tw, " of %s", s.ConfigFile)
	}
	fmt.Fprintf(tw, ", %s\n", plural(s.ReloadFailures, "failed reload"))
	if s.LastReloadError != "" {
		// A refused file's error has a line per problem: each goes in
		// the value column (a line without a cell would end the
		// table, and the rows after it be aligned afresh).
		fmt.Fprintf(tw, "\tlast reload error: %s\n", strings.ReplaceAll(s.LastReloadError, "\n", "\n\t"))
	}
	switch {
	case s.NextHop.Resolved:
		fmt.Fprintf(tw, "next hop:\t%s (%s)\n", orDash(s.NextHop.Gateway), s.NextHop.MAC)
	default:
		fmt.Fprintf(tw, "next hop:\t%s NOT RESOLVED: VIP traffic is dropped\n", orDash(s.NextHop.Gateway))
	}
	fmt.Fprintf(tw, "conn table:\t%d of %d entries (%s)\n", s.ConnTable.Entries, s.ConnTable.Capacity,
		percent(float64(s.ConnTable.Entries), float64(s.ConnTable.Capacity)))
	tw.Flush()

	for _, v := range s.VIPs {
		fmt.Fprintf(ew, "\nVIP %s  %s/%s  hash %s  %s packets  %.1f pkt/s  %s new flows",
			v.Name, net.JoinHostPort(v.Address, strconv.Itoa(int(v.Port))), v.Protocol, orDash(v.Hash),
			count(v.Packets), v.PacketRate, count(v.NewFlows))
		if !v.Conntrack {
			fmt.Fprint(ew, "  conntrack off")
		}
		fmt.Fprintln(ew)
		if len(v.Backends) == 0 {
			fmt.Fprintln(ew, "  no backends")
			continue
		}
		tw := newTable(ew)
		fmt.Fprintln(tw, "  BACKEND\tADDRESS\tWEIGHT\tHEALTH\tDRAINED\tSLOTS\tPKTS(ALL-VIPS)\tCHECK")
		for _, b := range v.Backends {
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
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", b.Name, b.Address, b.Weight, health, drained,
				percent(float64(b.TableSlots), float64(v.TableSize)), count(b.Packets), b.HealthInfo)
		}
		tw.Flush()
	}

	var drops []string
	for k, n := range s.Counters {
		if reason, ok := strings.CutPrefix(k, "drop_"); ok && n > 0 {
			drops = append(drops, fmt.Sprintf("%s %s", reason, count(n)))
		}
	}
	sort.Strings(drops)
	if len(drops) == 0 {
		drops = []string{"none"}
	}
	fmt.Fprintf(ew, "\ndrops: %s\n", strings.Join(drops, ", "))
	return ew.err
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
		vip := fl.VIP
		if fl.VIPName != "" {
			vip = fl.VIPName + " " + fl.VIP
		}
		idle := time.Duration(fl.IdleSecond * float64(time.Second))
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", fl.Protocol, fl.Client, vip, fl.Backend, age(idle))
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

// percent formats part/whole; "-" if whole is 0.
func percent(part, whole float64) string {
	if whole == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*part/whole, 'f', 1, 64) + "%"
}

func plural(n uint64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
