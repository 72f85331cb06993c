// Package metrics exposes the daemon's state to Prometheus. A Collector
// reads everything at scrape time through the same status function the
// control API answers with (which reads the BPF maps), so a scrape never
// sees stale values and the daemon keeps no metric state of its own.
package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchyard-lb/switchyard/pkg/api"
)

// scrapeTimeout bounds one call of the status function: Prometheus's
// default scrape timeout.
const scrapeTimeout = 10 * time.Second

// Collector is a prometheus.Collector of the daemon's status. Its methods
// are safe for concurrent use if the status function is.
type Collector struct {
	status func(ctx context.Context) (api.Status, error)
	log    *slog.Logger

	scrapeErrors prometheus.Counter

	vipPackets, vipBytes, vipNewFlows   *prometheus.Desc
	vipConnHits, vipConnMisses          *prometheus.Desc
	backendPackets, backendBytes        *prometheus.Desc
	backendHealthy, backendDrained      *prometheus.Desc
	backendTableSlots, backendWeight    *prometheus.Desc
	checks, checkFailures               *prometheus.Desc
	checkDuration                       *prometheus.Desc
	backendFlows, backendActiveFlows    *prometheus.Desc
	drops, events                       *prometheus.Desc
	healthTunnel                        *prometheus.Desc
	connEntries, connCapacity           *prometheus.Desc
	generation, reloads, reloadFailures *prometheus.Desc
	nexthopResolved, info               *prometheus.Desc
	attached, detachments               *prometheus.Desc
	linkPinned, linkPinRestores         *prometheus.Desc
	mapsPinned, mapPinRestores          *prometheus.Desc
	buildInfo                           *prometheus.Desc
}

// NewCollector returns a Collector that calls status once per scrape. A
// failed call (an error, or a panic) increments
// switchyard_scrape_errors_total, is logged, and leaves that scrape with
// no other series of this Collector. log may be nil.
func NewCollector(status func(ctx context.Context) (api.Status, error), log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	vipLabels := []string{"vip", "address", "port", "protocol"}
	backendLabels := []string{"vip", "backend", "address"}
	addrLabels := []string{"backend", "address"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("switchyard_"+name, help, labels, nil)
	}
	return &Collector{
		status: status,
		log:    log.With("component", "metrics"),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_scrape_errors_total",
			Help: "Scrapes that could not read the daemon's status (they have no other switchyard series).",
		}),

		vipPackets:    d("vip_packets_total", "Packets the datapath balanced for the VIP.", vipLabels...),
		vipBytes:      d("vip_bytes_total", "Bytes the datapath balanced for the VIP (frames as received, L2 header included).", vipLabels...),
		vipNewFlows:   d("vip_new_flows_total", "Flows the datapath added to the connection table for the VIP (0 with conntrack off).", vipLabels...),
		vipConnHits:   d("vip_conn_hits_total", "Packets of the VIP that a connection-table entry sent to its backend (0 with conntrack off).", vipLabels...),
		vipConnMisses: d("vip_conn_misses_total", "Packets of the VIP that found no usable connection-table entry (0 with conntrack off).", vipLabels...),

		backendPackets: d("backend_packets_total", "Packets sent to the backend address, over all VIPs; backend is the first name of the address.", addrLabels...),
		backendBytes:   d("backend_bytes_total", "Bytes sent to the backend address, over all VIPs (frames as received, before encapsulation); backend is the first name of the address.", addrLabels...),

		backendHealthy:    d("backend_healthy", "1 if the backend passes its health checks, else 0.", backendLabels...),
		backendDrained:    d("backend_drained", "1 if the backend is drained (takes no new flows), else 0.", backendLabels...),
		backendTableSlots: d("backend_table_slots", "Slots of the VIP's active lookup table that point to the backend.", backendLabels...),
		backendWeight:     d("backend_weight", "Configured weight of the backend in the VIP.", backendLabels...),
		checks:            d("backend_checks_total", "Completed health checks of the backend (none for health type none).", backendLabels...),
		checkFailures:     d("backend_check_failures_total", "Failed health checks of the backend.", backendLabels...),
		checkDuration:     d("backend_check_duration_seconds", "Duration of the backend's last completed health check (none before the first).", backendLabels...),

		backendFlows:       d("backend_flows", "Connection-table entries of the VIP pinned to the backend (TCP entries stay after their connection ended: no FIN tracking); also of a backend removed from the VIP while they last.", backendLabels...),
		backendActiveFlows: d("backend_active_flows", "Of switchyard_backend_flows, the entries that saw a packet within the last 60 s.", backendLabels...),

		drops:  d("datapath_drops_total", "Packets the datapath dropped, by reason.", "reason"),
		events: d("datapath_events_total", "Datapath events other than drops, by event.", "event"),

		healthTunnel: d("health_tunnel_packets_total", "Health-check packets (checks via tunnel) the tc program took, by result: encapsulated, or dropped for no_backend, too_big or error.", "result"),

		connEntries:  d("conntrack_entries", "Entries in the connection table."),
		connCapacity: d("conntrack_capacity", "Capacity of the connection table."),

		generation:      d("config_generation", "Generation of the applied configuration: 1 at start, +1 per reload that changed it."),
		reloads:         d("config_reloads_total", "Configuration reloads applied (SIGHUP or switchyard reload), whether they changed anything or not."),
		reloadFailures:  d("config_reload_failures_total", "Configuration reloads that were rejected."),
		nexthopResolved: d("nexthop_resolved", "1 if the MAC address of the next hop is known, else 0 (VIP traffic is dropped)."),
		attached:        d("datapath_attached", "1 while the balancer program runs on its interface; 0: VIP traffic is not balanced (its link was detached, see switchyard status), and the daemon does not attach it again by itself: restart it."),
		detachments:     d("datapath_detachments_total", "Times the daemon found its program no longer running on its interface (its link detached, or made to run another program)."),
		linkPinned:      d("link_pinned", "1 while the link the balancer program is attached through is pinned in the pin directory, where the next run takes it over; 0: a kill or an in-place upgrade of the daemon detaches the program (switchyard status says why)."),
		linkPinRestores: d("link_pin_restores_total", "Times the daemon pinned its program's link again after someone removed its pin (rm, a clean-up of bpffs)."),
		mapsPinned:      d("maps_pinned", "1 while every map of the balancer program is pinned in the pin directory, where the next run takes it over; 0: the next run creates the missing ones afresh (switchyard status says why)."),
		mapPinRestores:  d("map_pin_restores_total", "Map pins the daemon made again after someone removed them (rm, a clean-up of bpffs)."),
		buildInfo:       d("build_info", "Always 1; the labels describe the running daemon's binary (switchyard version).", "version", "revision", "goversion"),
		info:            d("info", "Always 1; the labels describe the running datapath.", "node", "interface", "attach_mode", "program_tag"),
	}
}

func (c *Collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{
		c.scrapeErrors.Desc(),
		c.vipPackets, c.vipBytes, c.vipNewFlows, c.vipConnHits, c.vipConnMisses,
		c.backendPackets, c.backendBytes,
		c.backendHealthy, c.backendDrained, c.backendTableSlots, c.backendWeight,
		c.checks, c.checkFailures, c.checkDuration,
		c.backendFlows, c.backendActiveFlows,
		c.drops, c.events, c.healthTunnel,
		c.connEntries, c.connCapacity,
		c.generation, c.reloads, c.reloadFailures, c.nexthopResolved, c.info,
		c.attached, c.detachments, c.linkPinned, c.linkPinRestores, c.mapsPinned, c.mapPinRestores,
		c.buildInfo,
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.readStatus()
	if err != nil {
		c.scrapeErrors.Inc()
		c.log.Warn("metrics scrape: cannot read the status", "error", err)
		ch <- c.scrapeErrors
		return
	}
	ch <- c.scrapeErrors

	e := NewEmitter(ch, c.log)
	seenAddr := map[string]bool{}
	var removed []api.Backend
	for _, v := range st.VIPs {
		vl := []string{v.Name, v.Address, strconv.Itoa(int(v.Port)), v.Protocol}
		e.Counter(c.vipPackets, v.Packets, vl...)
		e.Counter(c.vipBytes, v.Bytes, vl...)
		e.Counter(c.vipNewFlows, v.NewFlows, vl...)
		e.Counter(c.vipConnHits, v.ConnHits, vl...)
		e.Counter(c.vipConnMisses, v.ConnMisses, vl...)
		for _, b := range v.Backends {
			bl := []string{v.Name, b.Name, b.Address}
			e.Gauge(c.backendFlows, float64(b.Flows), bl...)
			e.Gauge(c.backendActiveFlows, float64(b.ActiveFlows), bl...)
			if b.Removed {
				// Out of the configuration: no health, drain,
				// weight or slots, and the address series below
				// take a configured backend's name if any has it.
				removed = append(removed, b)
				continue
			}
			e.Gauge(c.backendHealthy, boolValue(b.Healthy), bl...)
			e.Gauge(c.backendDrained, boolValue(b.Drained), bl...)
			e.Gauge(c.backendTableSlots, float64(b.TableSlots), bl...)
			e.Gauge(c.backendWeight, float64(b.Weight), bl...)
			if b.Check != "" {
				e.Counter(c.checks, b.Checks, bl...)
				e.Counter(c.checkFailures, b.FailedChecks, bl...)
				if b.Checks > 0 {
					// Before the first check there is no duration:
					// 0 would be a check that took no time.
					e.Gauge(c.checkDuration, b.LastCheckSeconds, bl...)
				}
			}
			// The datapath counts per address, whatever VIPs share it:
			// one series per address, or sums over VIPs would double it.
			if seenAddr[b.Address] {
				continue
			}
			seenAddr[b.Address] = true
			e.Counter(c.backendPackets, b.Packets, b.Name, b.Address)
			e.Counter(c.backendBytes, b.Bytes, b.Name, b.Address)
		}
	}
	for _, b := range removed {
		// Traffic still reaches it: its counters go on.
		if !seenAddr[b.Address] {
			seenAddr[b.Address] = true
			e.Counter(c.backendPackets, b.Packets, b.Name, b.Address)
			e.Counter(c.backendBytes, b.Bytes, b.Name, b.Address)
		}
	}
	for k, n := range st.Counters {
		if reason, ok := strings.CutPrefix(k, "drop_"); ok {
			e.Counter(c.drops, n, reason)
		} else {
			e.Counter(c.events, n, k)
		}
	}
	for result, n := range st.HealthTunnel {
		e.Counter(c.healthTunnel, n, result)
	}
	e.Gauge(c.connEntries, float64(st.ConnTable.Entries))
	e.Gauge(c.connCapacity, float64(st.ConnTable.Capacity))
	e.Gauge(c.generation, float64(st.ConfigGeneration))
	e.Counter(c.reloads, st.Reloads)
	e.Counter(c.reloadFailures, st.ReloadFailures)
	e.Gauge(c.nexthopResolved, boolValue(st.NextHop.Resolved))
	e.Gauge(c.attached, boolValue(st.ProgramAttached))
	e.Counter(c.detachments, st.ProgramDetachments)
	e.Gauge(c.linkPinned, boolValue(st.LinkPinned))
	e.Counter(c.linkPinRestores, st.LinkPinRestores)
	e.Gauge(c.mapsPinned, boolValue(st.MapsPinned))
	e.Counter(c.mapPinRestores, st.MapPinRestores)
	e.Gauge(c.info, 1, st.Node, st.Interface, st.AttachMode, st.ProgramTag)
	e.Gauge(c.buildInfo, 1, st.Build.Version, st.Build.Revision, st.Build.GoVersion)
}

// readStatus calls the status function, turning a panic into an error:
// the registry collects in goroutines of its own, where a panic would end
// the daemon.
func (c *Collector) readStatus() (st api.Status, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("status function panicked: %v", p)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	return c.status(ctx)
}

// Emitter sends const metrics to a Collect channel, logging (instead of
// panicking on) the ones the client library refuses, such as label values
// that are not UTF-8 (an interface name may hold any byte): a panic in
// Collect runs in the registry's goroutine, where it ends the process.
type Emitter struct {
	ch  chan<- prometheus.Metric
	log *slog.Logger
}

// NewEmitter returns an Emitter that sends to ch and logs to log (nil: no
// logging).
func NewEmitter(ch chan<- prometheus.Metric, log *slog.Logger) Emitter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return Emitter{ch: ch, log: log}
}

// Counter sends a counter of d.
func (e Emitter) Counter(d *prometheus.Desc, v uint64, labels ...string) {
	e.emit(d, prometheus.CounterValue, float64(v), labels)
}

// Gauge sends a gauge of d.
func (e Emitter) Gauge(d *prometheus.Desc, v float64, labels ...string) {
	e.emit(d, prometheus.GaugeValue, v, labels)
}

func (e Emitter) emit(d *prometheus.Desc, t prometheus.ValueType, v float64, labels []string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		e.log.Warn("metrics scrape: dropped a series", "desc", d.String(), "error", err)
		return
	}
	e.ch <- m
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// NewRegistry returns a registry with c and the Go runtime and process
// collectors.
func NewRegistry(c prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
