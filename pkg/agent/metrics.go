package agent

import (
	"context"
	"errors"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-lb/switchyard/pkg/metrics"
)

// Names of the decap counters in datapath.Decap.Stats.
const (
	statDecapIPv4 = "decap_ipv4_outer"
	statDecapIPv6 = "decap_ipv6_outer"
	statDecapGUE  = "decap_gue"
	statPass      = "pass"
	statDropPfx   = "drop_"
	statBadPfx    = "bad_outer_"
)

// Collector returns a Prometheus collector that reads the decap program's
// counters at scrape time. It reports nothing while the agent is not
// running. A scrape that cannot read the agent's status counts in
// switchyard_agent_scrape_errors_total, is logged, and has no other series
// of this collector.
func (a *Agent) Collector() prometheus.Collector {
	return &collector{
		a: a,
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_agent_scrape_errors_total",
			Help: "Scrapes that could not read the agent's status (they have no other switchyard_agent series).",
		}),
		decap: prometheus.NewDesc("switchyard_agent_decap_packets_total",
			"Packets decapsulated, by outer IP version (GUE packets included).", []string{"outer"}, nil),
		gue: prometheus.NewDesc("switchyard_agent_decap_gue_packets_total",
			"Packets decapsulated that were GUE (UDP) encapsulated.", nil, nil),
		passed: prometheus.NewDesc("switchyard_agent_passed_packets_total",
			"Packets passed to the stack untouched: not encapsulated for this host.", nil, nil),
		drops: prometheus.NewDesc("switchyard_agent_drops_total",
			"Encapsulated packets for this host that were dropped, by reason: inner_not_ip (the inner packet is not IP, or not the IP the outer header names), adjust_failed (the kernel refused to strip the outer headers or the trailer behind the outer packet), ce_not_ect (outer header marked congestion experienced, inner packet not ECN-capable: RFC 6040).",
			[]string{"reason"}, nil),
		badOuter: prometheus.NewDesc("switchyard_agent_bad_outer_packets_total",
			"Encapsulated packets for this host whose outer header the kernel refuses, passed to the stack untouched for it to drop and count (netstat's Ip and Udp error counters), by reason: csum (IPv4 header checksum), ip_len (IP header or length beyond the frame, or total length short of the IPv4 header), udp_len (GUE: UDP header or length beyond the IP packet, or length below 8), udp_csum (GUE: UDP checksum neither 0 nor right), src (a source the kernel refuses: IPv4 0/8, 127/8, multicast, 255.255.255.255; IPv6 multicast, ::1).",
			[]string{"reason"}, nil),
		vips: prometheus.NewDesc("switchyard_agent_vips",
			"VIPs the agent keeps on lo.", nil, nil),
		info: prometheus.NewDesc("switchyard_agent_info",
			"The running agent: its node, interface (its current name), attach mode and decap program tag (always 1), as switchyard_info is the balancer's.",
			[]string{"node", "interface", "attach_mode", "program_tag"}, nil),
		buildInfo: prometheus.NewDesc("switchyard_agent_build_info",
			"Always 1; the labels describe the running agent's binary (switchyard version), as switchyard_build_info the balancer's.",
			[]string{"version", "revision", "goversion"}, nil),
		missing: prometheus.NewDesc("switchyard_agent_vips_missing",
			"Configured VIPs not on lo at the time of the scrape (removed behind the agent's back): the host drops what the balancers send to them.", nil, nil),
		attached: prometheus.NewDesc("switchyard_agent_decap_attached",
			"1 while the decap program runs on the agent's interface; 0: encapsulated packets are not decapsulated (its link was detached, see status --agent), and the agent does not attach it again by itself: restart it.", nil, nil),
		detachments: prometheus.NewDesc("switchyard_agent_decap_detachments_total",
			"Times the agent found its decap program no longer running on its interface (its link detached, or made to run another program).", nil, nil),
		linkPinned: prometheus.NewDesc("switchyard_agent_link_pinned",
			"1 while the link the decap program is attached through is pinned in the agent's pin directory, where the next run takes it over; 0: a kill or an in-place upgrade of the agent detaches the decap program (status --agent says why).", nil, nil),
		linkPinRestores: prometheus.NewDesc("switchyard_agent_link_pin_restores_total",
			"Times the agent pinned the decap program's link again after someone removed its pin (rm, a clean-up of bpffs).", nil, nil),
		mapsPinned: prometheus.NewDesc("switchyard_agent_maps_pinned",
			"1 while every map of the decap program (its addresses, configuration and counters) is pinned in the agent's pin directory, where the next run takes it over; 0: the next run creates the missing ones afresh, finding the counters only through the link pin (status --agent says why).", nil, nil),
		mapPinRestores: prometheus.NewDesc("switchyard_agent_map_pin_restores_total",
			"Map pins of the decap program the agent made again after someone removed them (rm, a clean-up of bpffs).", nil, nil),
		sysctlsOverridden: prometheus.NewDesc("switchyard_agent_sysctls_overridden",
			"Sysctls the agent set for direct server return whose value someone changed since (read at the time of the scrape; switchyard status --agent names them): the agent leaves them as they are, also at stop.", nil, nil),
	}
}

type collector struct {
	a                                                         *Agent
	scrapeErrors                                              prometheus.Counter
	decap, gue, passed, drops, badOuter, vips, missing, info  *prometheus.Desc
	sysctlsOverridden, linkPinned, linkPinRestores, buildInfo *prometheus.Desc
	attached, detachments, mapsPinned, mapPinRestores         *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.scrapeErrors.Desc()
	ch <- c.decap
	ch <- c.gue
	ch <- c.passed
	ch <- c.drops
	ch <- c.badOuter
	ch <- c.vips
	ch <- c.missing
	ch <- c.info
	ch <- c.buildInfo
	ch <- c.sysctlsOverridden
	ch <- c.attached
	ch <- c.detachments
	ch <- c.linkPinned
	ch <- c.linkPinRestores
	ch <- c.mapsPinned
	ch <- c.mapPinRestores
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	status, err := c.a.AgentStatus(context.Background())
	if errors.Is(err, ErrNotRunning) {
		ch <- c.scrapeErrors
		return
	}
	if err != nil {
		c.scrapeErrors.Inc()
		c.a.log.Warn("metrics scrape: cannot read the agent status", "error", err)
		ch <- c.scrapeErrors
		return
	}
	ch <- c.scrapeErrors
	// The labels below hold the interface's current name, which may be
	// any bytes: a series the client library refuses is logged and left
	// out, not a panic in the registry's goroutine, which ends the agent.
	e := metrics.NewEmitter(ch, c.a.log)
	st := status.Counters
	e.Counter(c.decap, st[statDecapIPv4], "ipv4")
	e.Counter(c.decap, st[statDecapIPv6], "ipv6")
	e.Counter(c.gue, st[statDecapGUE])
	e.Counter(c.passed, st[statPass])
	for name, v := range st {
		if reason, ok := strings.CutPrefix(name, statDropPfx); ok {
			e.Counter(c.drops, v, reason)
		}
		if reason, ok := strings.CutPrefix(name, statBadPfx); ok {
			e.Counter(c.badOuter, v, reason)
		}
	}
	missing := 0
	for _, v := range status.VIPs {
		if !v.OnLo {
			missing++
		}
	}
	overridden := 0
	for _, s := range status.Sysctls {
		// One gone with its interface was changed by nobody.
		if !s.Gone && s.Now != s.Set {
			overridden++
		}
	}
	e.Gauge(c.sysctlsOverridden, float64(overridden))
	e.Gauge(c.attached, boolValue(status.ProgramAttached))
	e.Counter(c.detachments, status.ProgramDetachments)
	e.Gauge(c.linkPinned, boolValue(status.LinkPinned))
	e.Counter(c.linkPinRestores, status.LinkPinRestores)
	e.Gauge(c.mapsPinned, boolValue(status.MapsPinned))
	e.Counter(c.mapPinRestores, status.MapPinRestores)
	e.Gauge(c.vips, float64(len(status.VIPs)))
	e.Gauge(c.missing, float64(missing))
	e.Gauge(c.info, 1, status.Node, status.Interface, status.AttachMode, status.ProgramTag)
	e.Gauge(c.buildInfo, 1, status.Build.Version, status.Build.Revision, status.Build.GoVersion)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
