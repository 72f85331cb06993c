package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/buildinfo"
)

// sampleStatus has two VIPs whose backends web-1 and dns-1 share an
// address, as the datapath counts them once.
func sampleStatus() api.Status {
	return api.Status{
		Node: "lb1", Interface: "eth0", AttachMode: "native", ProgramTag: "5f1c0a9e3b2d7c41",
		Build:            buildinfo.Info{Version: "v1.4.0", Revision: "f3f1151abcde", GoVersion: "go1.26.8"},
		ProgramState:     api.ProgramState{ProgramAttached: true, LinkPinned: true, LinkPinRestores: 1, MapsPinned: true, MapPinRestores: 2},
		ConfigGeneration: 4, Reloads: 6, ReloadFailures: 2,
		NextHop:   api.NextHop{Gateway: "10.0.0.1", MAC: "02:00:00:00:00:01", Resolved: true},
		ConnTable: api.ConnTable{Capacity: 65536, Entries: 1234},
		VIPs: []api.VIP{
			{
				Name: "web", Address: "10.0.0.100", Port: 80, Protocol: "tcp", Hash: "maglev",
				Packets: 12345, Bytes: 9876543, NewFlows: 321, ConnHits: 12000, ConnMisses: 345, PacketRate: 120.5, TableSize: 65537,
				Backends: []api.Backend{
					{Name: "web-1", Address: "10.2.1.1", Weight: 1, Healthy: true, TableSlots: 65537, Packets: 4000, Bytes: 400000,
						Check: "http", Checks: 120, FailedChecks: 1, LastCheckSeconds: 0.0025, Flows: 30, ActiveFlows: 12},
					{Name: "web-2", Address: "10.2.1.2", Weight: 10, Healthy: false, Drained: true, Packets: 17, Bytes: 1700,
						Check: "http", Checks: 120, FailedChecks: 118, LastCheckSeconds: 0.5, Flows: 5},
				},
			},
			{
				Name: "dns", Address: "2001:db8::53", Port: 53, Protocol: "udp", Hash: "maglev",
				Packets: 7, Bytes: 700, NewFlows: 0, TableSize: 251,
				Backends: []api.Backend{
					{Name: "dns-1", Address: "10.2.1.1", Weight: 2, Healthy: true, TableSlots: 251, Packets: 4000, Bytes: 400000},
				},
			},
		},
		Counters: map[string]uint64{"drop_fragment": 3, "drop_no_backend": 12, "drop_ttl": 0, "encap": 12352, "icmp_too_big": 5},
	}
}

func staticStatus(st api.Status) func(context.Context) (api.Status, error) {
	return func(context.Context) (api.Status, error) { return st, nil }
}

const wantSample = `
# HELP switchyard_scrape_errors_total Scrapes that could not read the daemon's status (they have no other switchyard series).
# TYPE switchyard_scrape_errors_total counter
switchyard_scrape_errors_total 0
# HELP switchyard_vip_packets_total Packets the datapath balanced for the VIP.
# TYPE switchyard_vip_packets_total counter
switchyard_vip_packets_total{address="10.0.0.100",port="80",protocol="tcp",vip="web"} 12345
switchyard_vip_packets_total{address="2001:db8::53",port="53",protocol="udp",vip="dns"} 7
# HELP switchyard_vip_bytes_total Bytes the datapath balanced for the VIP (frames as received, L2 header included).
# TYPE switchyard_vip_bytes_total counter
switchyard_vip_bytes_total{address="10.0.0.100",port="80",protocol="tcp",vip="web"} 9.876543e+06
switchyard_vip_bytes_total{address="2001:db8::53",port="53",protocol="udp",vip="dns"} 700
# HELP switchyard_vip_new_flows_total Flows the datapath added to the connection table for the VIP (0 with conntrack off).
# TYPE switchyard_vip_new_flows_total counter
switchyard_vip_new_flows_total{address="10.0.0.100",port="80",protocol="tcp",vip="web"} 321
switchyard_vip_new_flows_total{address="2001:db8::53",port="53",protocol="udp",vip="dns"} 0
# HELP switchyard_vip_conn_hits_total Packets of the VIP that a connection-table entry sent to its backend (0 with conntrack off).
# TYPE switchyard_vip_conn_hits_total counter
switchyard_vip_conn_hits_total{address="10.0.0.100",port="80",protocol="tcp",vip="web"} 12000
switchyard_vip_conn_hits_total{address="2001:db8::53",port="53",protocol="udp",vip="dns"} 0
# HELP switchyard_vip_conn_misses_total Packets of the VIP that found no usable connection-table entry (0 with conntrack off).
# TYPE switchyard_vip_conn_misses_total counter
switchyard_vip_conn_misses_total{address="10.0.0.100",port="80",protocol="tcp",vip="web"} 345
switchyard_vip_conn_misses_total{address="2001:db8::53",port="53",protocol="udp",vip="dns"} 0
# HELP switchyard_backend_packets_total Packets sent to the backend address, over all VIPs; backend is the first name of the address.
# TYPE switchyard_backend_packets_total counter
switchyard_backend_packets_total{address="10.2.1.1",backend="web-1"} 4000
switchyard_backend_packets_total{address="10.2.1.2",backend="web-2"} 17
# HELP switchyard_backend_bytes_total Bytes sent to the backend address, over all VIPs (frames as received, before encapsulation); backend is the first name of the address.
# TYPE switchyard_backend_bytes_total counter
switchyard_backend_bytes_total{address="10.2.1.1",backend="web-1"} 400000
switchyard_backend_bytes_total{address="10.2.1.2",backend="web-2"} 1700
# HELP switchyard_backend_healthy 1 if the backend passes its health checks, else 0.
# TYPE switchyard_backend_healthy gauge
switchyard_backend_healthy{address="10.2.1.1",backend="web-1",vip="web"} 1
switchyard_backend_healthy{address="10.2.1.2",backend="web-2",vip="web"} 0
switchyard_backend_healthy{address="10.2.1.1",backend="dns-1",vip="dns"} 1
# HELP switchyard_backend_drained 1 if the backend is drained (takes no new flows), else 0.
# TYPE switchyard_backend_drained gauge
switchyard_backend_drained{address="10.2.1.1",backend="web-1",vip="web"} 0
switchyard_backend_drained{address="10.2.1.2",backend="web-2",vip="web"} 1
switchyard_backend_drained{address="10.2.1.1",backend="dns-1",vip="dns"} 0
# HELP switchyard_backend_table_slots Slots of the VIP's active lookup table that point to the backend.
# TYPE switchyard_backend_table_slots gauge
switchyard_backend_table_slots{address="10.2.1.1",backend="web-1",vip="web"} 65537
switchyard_backend_table_slots{address="10.2.1.2",backend="web-2",vip="web"} 0
switchyard_backend_table_slots{address="10.2.1.1",backend="dns-1",vip="dns"} 251
# HELP switchyard_backend_weight Configured weight of the backend in the VIP.
# TYPE switchyard_backend_weight gauge
switchyard_backend_weight{address="10.2.1.1",backend="web-1",vip="web"} 1
switchyard_backend_weight{address="10.2.1.2",backend="web-2",vip="web"} 10
switchyard_backend_weight{address="10.2.1.1",backend="dns-1",vip="dns"} 2
# HELP switchyard_build_info Always 1; the labels describe the running daemon's binary (switchyard version).
# TYPE switchyard_build_info gauge
switchyard_build_info{goversion="go1.26.8",revision="f3f1151abcde",version="v1.4.0"} 1
# HELP switchyard_backend_checks_total Completed health checks of the backend (none for health type none).
# TYPE switchyard_backend_checks_total counter
switchyard_backend_checks_total{address="10.2.1.1",backend="web-1",vip="web"} 120
switchyard_backend_checks_total{address="10.2.1.2",backend="web-2",vip="web"} 120
# HELP switchyard_backend_check_failures_total Failed health checks of the backend.
# TYPE switchyard_backend_check_failures_total counter
switchyard_backend_check_failures_total{address="10.2.1.1",backend="web-1",vip="web"} 1
switchyard_backend_check_failures_total{address="10.2.1.2",backend="web-2",vip="web"} 118
# HELP switchyard_backend_check_duration_seconds Duration of the backend's last completed health check (none before the first).
# TYPE switchyard_backend_check_duration_seconds gauge
switchyard_backend_check_duration_seconds{address="10.2.1.1",backend="web-1",vip="web"} 0.0025
switchyard_backend_check_duration_seconds{address="10.2.1.2",backend="web-2",vip="web"} 0.5
# HELP switchyard_backend_flows Connection-table entries of the VIP pinned to the backend (TCP entries stay after their connection ended: no FIN tracking); also of a backend removed from the VIP while they last.
# TYPE switchyard_backend_flows gauge
switchyard_backend_flows{address="10.2.1.1",backend="web-1",vip="web"} 30
switchyard_backend_flows{address="10.2.1.2",backend="web-2",vip="web"} 5
switchyard_backend_flows{address="10.2.1.1",backend="dns-1",vip="dns"} 0
# HELP switchyard_backend_active_flows Of switchyard_backend_flows, the entries that saw a packet within the last 60 s.
# TYPE switchyard_backend_active_flows gauge
switchyard_backend_active_flows{address="10.2.1.1",backend="web-1",vip="web"} 12
switchyard_backend_active_flows{address="10.2.1.2",backend="web-2",vip="web"} 0
switchyard_backend_active_flows{address="10.2.1.1",backend="dns-1",vip="dns"} 0
# HELP switchyard_datapath_drops_total Packets the datapath dropped, by reason.
# TYPE switchyard_datapath_drops_total counter
switchyard_datapath_drops_total{reason="fragment"} 3
switchyard_datapath_drops_total{reason="no_backend"} 12
switchyard_datapath_drops_total{reason="ttl"} 0
# HELP switchyard_datapath_events_total Datapath events other than drops, by event.
# TYPE switchyard_datapath_events_total counter
switchyard_datapath_events_total{event="encap"} 12352
switchyard_datapath_events_total{event="icmp_too_big"} 5
# HELP switchyard_conntrack_entries Entries in the connection table.
# TYPE switchyard_conntrack_entries gauge
switchyard_conntrack_entries 1234
# HELP switchyard_conntrack_capacity Capacity of the connection table.
# TYPE switchyard_conntrack_capacity gauge
switchyard_conntrack_capacity 65536
# HELP switchyard_config_generation Generation of the applied configuration: 1 at start, +1 per reload that changed it.
# TYPE switchyard_config_generation gauge
switchyard_config_generation 4
# HELP switchyard_config_reloads_total Configuration reloads applied (SIGHUP or switchyard reload), whether they changed anything or not.
# TYPE switchyard_config_reloads_total counter
switchyard_config_reloads_total 6
# HELP switchyard_config_reload_failures_total Configuration reloads that were rejected.
# TYPE switchyard_config_reload_failures_total counter
switchyard_config_reload_failures_total 2
# HELP switchyard_nexthop_resolved 1 if the MAC address of the next hop is known, else 0 (VIP traffic is dropped).
# TYPE switchyard_nexthop_resolved gauge
switchyard_nexthop_resolved 1
# HELP switchyard_datapath_attached 1 while the balancer program runs on its interface; 0: VIP traffic is not balanced (its link was detached, see switchyard status), and the daemon does not attach it again by itself: restart it.
# TYPE switchyard_datapath_attached gauge
switchyard_datapath_attached 1
# HELP switchyard_datapath_detachments_total Times the daemon found its program no longer running on its interface (its link detached, or made to run another program).
# TYPE switchyard_datapath_detachments_total counter
switchyard_datapath_detachments_total 0
# HELP switchyard_link_pinned 1 while the link the balancer program is attached through is pinned in the pin directory, where the next run takes it over; 0: a kill or an in-place upgrade of the daemon detaches the program (switchyard status says why).
# TYPE switchyard_link_pinned gauge
switchyard_link_pinned 1
# HELP switchyard_link_pin_restores_total Times the daemon pinned its program's link again after someone removed its pin (rm, a clean-up of bpffs).
# TYPE switchyard_link_pin_restores_total counter
switchyard_link_pin_restores_total 1
# HELP switchyard_maps_pinned 1 while every map of the balancer program is pinned in the pin directory, where the next run takes it over; 0: the next run creates the missing ones afresh (switchyard status says why).
# TYPE switchyard_maps_pinned gauge
switchyard_maps_pinned 1
# HELP switchyard_map_pin_restores_total Map pins the daemon made again after someone removed them (rm, a clean-up of bpffs).
# TYPE switchyard_map_pin_restores_total counter
switchyard_map_pin_restores_total 2
# HELP switchyard_info Always 1; the labels describe the running datapath.
# TYPE switchyard_info gauge
switchyard_info{attach_mode="native",interface="eth0",node="lb1",program_tag="5f1c0a9e3b2d7c41"} 1
`

func TestCollector(t *testing.T) {
	c := NewCollector(staticStatus(sampleStatus()), nil)
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantSample)); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestCollectorReadsAtScrapeTime(t *testing.T) {
	st := sampleStatus()
	c := NewCollector(func(context.Context) (api.Status, error) { return st, nil }, nil)
	want := func(n string) string {
		return `
# HELP switchyard_config_generation Generation of the applied configuration: 1 at start, +1 per reload that changed it.
# TYPE switchyard_config_generation gauge
switchyard_config_generation ` + n + "\n"
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want("4")), "switchyard_config_generation"); err != nil {
		t.Error(err)
	}
	st.ConfigGeneration = 5
	if err := testutil.CollectAndCompare(c, strings.NewReader(want("5")), "switchyard_config_generation"); err != nil {
		t.Error(err)
	}
}

func TestCollectorScrapeErrors(t *testing.T) {
	fail := true
	c := NewCollector(func(context.Context) (api.Status, error) {
		if fail {
			return api.Status{}, errors.New("read conn table: operation not permitted")
		}
		return sampleStatus(), nil
	}, nil)
	wantErrors := func(n string) string {
		return `
# HELP switchyard_scrape_errors_total Scrapes that could not read the daemon's status (they have no other switchyard series).
# TYPE switchyard_scrape_errors_total counter
switchyard_scrape_errors_total ` + n + "\n"
	}
	// A failed scrape has the error counter and nothing else.
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantErrors("1"))); err != nil {
		t.Error(err)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantErrors("2"))); err != nil {
		t.Error(err)
	}
	// The count survives a good scrape.
	fail = false
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantErrors("2")), "switchyard_scrape_errors_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "switchyard_vip_packets_total"); n != 2 {
		t.Errorf("good scrape after failures: %d VIP series, want 2", n)
	}
}

func TestCollectorStatusPanics(t *testing.T) {
	c := NewCollector(func(context.Context) (api.Status, error) { panic("nil map") }, nil)
	reg := NewRegistry(c)
	n, err := testutil.GatherAndCount(reg, "switchyard_scrape_errors_total", "switchyard_info")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d series, want only switchyard_scrape_errors_total", n)
	}
	if v := testutil.ToFloat64(c.scrapeErrors); v != 1 {
		t.Errorf("switchyard_scrape_errors_total = %v, want 1", v)
	}
}

func TestCollectorSkipsInvalidLabels(t *testing.T) {
	st := sampleStatus()
	st.VIPs = st.VIPs[:1]
	st.VIPs[0].Backends = st.VIPs[0].Backends[:1]
	st.VIPs[0].Backends[0].Name = "web-\xff"
	c := NewCollector(staticStatus(st), nil)
	if n := testutil.CollectAndCount(c, "switchyard_backend_healthy"); n != 0 {
		t.Errorf("%d series with a label that is not UTF-8, want 0", n)
	}
	if n := testutil.CollectAndCount(c, "switchyard_vip_packets_total"); n != 1 {
		t.Errorf("%d VIP series, want the other series kept", n)
	}
}

// A checked backend has no last check duration before its first check
// completes: it was exported as 0 seconds, a check that took no time.
func TestCollectorNoCheckDurationBeforeTheFirstCheck(t *testing.T) {
	st := sampleStatus()
	st.VIPs = st.VIPs[:1]
	st.VIPs[0].Backends = st.VIPs[0].Backends[:1]
	b := &st.VIPs[0].Backends[0]
	b.Checks, b.FailedChecks, b.LastCheckSeconds = 0, 0, 0
	c := NewCollector(staticStatus(st), nil)
	if n := testutil.CollectAndCount(c, "switchyard_backend_check_duration_seconds"); n != 0 {
		t.Errorf("%d check duration series of a backend not checked yet, want 0", n)
	}
	if n := testutil.CollectAndCount(c, "switchyard_backend_checks_total"); n != 1 {
		t.Errorf("%d checks series of a backend not checked yet, want 1 (of 0 checks)", n)
	}
}

// TestCollectorRemovedBackends: a backend removed from a VIP whose entries
// still hold flows of the VIP has its flow series, labelled by its address
// (its name), and no health, drain, weight or slot series; its address's
// counters go on, named after a configured backend that has the address
// (in a later VIP), else after the address.
func TestCollectorRemovedBackends(t *testing.T) {
	st := api.Status{VIPs: []api.VIP{
		{Name: "web", Address: "10.0.0.100", Port: 80, Protocol: "tcp", Backends: []api.Backend{
			{Name: "web-1", Address: "10.2.1.1", Weight: 1, Healthy: true, Flows: 3, ActiveFlows: 3, Packets: 10},
			{Name: "10.2.1.2", Address: "10.2.1.2", Removed: true, Flows: 7, ActiveFlows: 2, Packets: 20},
			{Name: "10.2.1.3", Address: "10.2.1.3", Removed: true, Flows: 1, ActiveFlows: 0, Packets: 30},
		}},
		{Name: "dns", Address: "10.0.0.53", Port: 53, Protocol: "udp", Backends: []api.Backend{
			{Name: "dns-2", Address: "10.2.1.2", Weight: 1, Healthy: true, Packets: 20},
		}},
	}}
	c := NewCollector(staticStatus(st), nil)
	const want = `
# HELP switchyard_backend_active_flows Of switchyard_backend_flows, the entries that saw a packet within the last 60 s.
# TYPE switchyard_backend_active_flows gauge
switchyard_backend_active_flows{address="10.2.1.1",backend="web-1",vip="web"} 3
switchyard_backend_active_flows{address="10.2.1.2",backend="10.2.1.2",vip="web"} 2
switchyard_backend_active_flows{address="10.2.1.3",backend="10.2.1.3",vip="web"} 0
switchyard_backend_active_flows{address="10.2.1.2",backend="dns-2",vip="dns"} 0
# HELP switchyard_backend_packets_total Packets sent to the backend address, over all VIPs; backend is the first name of the address.
# TYPE switchyard_backend_packets_total counter
switchyard_backend_packets_total{address="10.2.1.1",backend="web-1"} 10
switchyard_backend_packets_total{address="10.2.1.2",backend="dns-2"} 20
switchyard_backend_packets_total{address="10.2.1.3",backend="10.2.1.3"} 30
# HELP switchyard_backend_healthy 1 if the backend passes its health checks, else 0.
# TYPE switchyard_backend_healthy gauge
switchyard_backend_healthy{address="10.2.1.1",backend="web-1",vip="web"} 1
switchyard_backend_healthy{address="10.2.1.2",backend="dns-2",vip="dns"} 1
`
	err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"switchyard_backend_active_flows", "switchyard_backend_packets_total", "switchyard_backend_healthy")
	if err != nil {
		t.Error(err)
	}
	for _, name := range []string{"switchyard_backend_drained", "switchyard_backend_weight", "switchyard_backend_table_slots"} {
		if n := testutil.CollectAndCount(c, name); n != 2 {
			t.Errorf("%d %s series, want 2: the configured backends', none of the removed ones", n, name)
		}
	}
	if n := testutil.CollectAndCount(c, "switchyard_backend_flows"); n != 4 {
		t.Errorf("%d switchyard_backend_flows series, want 4", n)
	}
}

// TestCollectorBoundsTheStatusCall: a status function that hangs (a map
// read stuck behind a lock) must not hang every later scrape, so it is
// called with a deadline of at most scrapeTimeout.
func TestCollectorBoundsTheStatusCall(t *testing.T) {
	var deadline time.Time
	var ok bool
	c := NewCollector(func(ctx context.Context) (api.Status, error) {
		deadline, ok = ctx.Deadline()
		return sampleStatus(), nil
	}, nil)
	start := time.Now()
	testutil.CollectAndCount(c)
	if !ok {
		t.Fatal("the status function got a context without a deadline")
	}
	if latest := time.Now().Add(scrapeTimeout); !deadline.After(start) || deadline.After(latest) {
		t.Errorf("the status function's deadline is %v after the scrape began, want at most %v", deadline.Sub(start), scrapeTimeout)
	}
}
