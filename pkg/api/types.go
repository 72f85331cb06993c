// Package api is the local control API of the switchyard daemon: JSON over
// HTTP on a unix socket (root-only by default), and the client the CLI uses.
package api

import (
	"time"

	"github.com/switchyard-lb/switchyard/pkg/buildinfo"
)

// ProgramState is what a daemon (the balancer or the agent) knows of its
// XDP program, checked on its ticks and at each status: flattened into
// their statuses' JSON.
type ProgramState struct {
	// ProgramAttached: the program runs on its interface;
	// ProgramDetached says why not (its link was detached, by `bpftool
	// link detach` say): the daemon does not attach it again by itself.
	// ProgramDetachments counts the times the daemon found it so.
	ProgramAttached    bool   `json:"program_attached"`
	ProgramDetached    string `json:"program_detached,omitempty"`
	ProgramDetachments uint64 `json:"program_detachments"`
	// AttachCheckError: the last check of the attachment could not read
	// the program's link or the program (EPERM from a seccomp profile
	// or an LSM, ENOMEM): ProgramAttached is the last state found.
	AttachCheckError string `json:"attach_check_error,omitempty"`
	// LinkPinned: the link the program is attached through is pinned in
	// the pin directory, where the next run (after a kill, or an in-place
	// upgrade) takes it over; LinkPinError says why not. The daemon pins
	// it again when someone removes the pin, and LinkPinRestores counts
	// those times.
	LinkPinned      bool   `json:"link_pinned"`
	LinkPinError    string `json:"link_pin_error,omitempty"`
	LinkPinRestores uint64 `json:"link_pin_restores"`
	// MapsPinned: every map of the program (for the balancer its
	// connection table, VIPs, backends, Maglev tables and counters) is
	// pinned in the pin directory, where the next run takes it over;
	// MapPinError says why not. The daemon pins again a map whose pin
	// someone removes, and MapPinRestores counts those pins.
	MapsPinned     bool   `json:"maps_pinned"`
	MapPinError    string `json:"map_pin_error,omitempty"`
	MapPinRestores uint64 `json:"map_pin_restores"`
}

// Status is what `switchyard status` shows.
type Status struct {
	Node       string `json:"node"`
	Interface  string `json:"interface"`
	AttachMode string `json:"attach_mode"` // native | generic
	ProgramTag string `json:"program_tag"`
	// Build is the running daemon's binary: after an in-place upgrade,
	// the new one's version and git revision.
	Build buildinfo.Info `json:"build"`
	// ProgramState: whether the balancer program runs on Interface
	// (if not, VIP traffic is not balanced) and its link and maps are
	// pinned.
	ProgramState
	ConfigFile       string            `json:"config_file"`
	ConfigGeneration uint64            `json:"config_generation"` // 1 at start, +1 per reload that changed the configuration
	Reloads          uint64            `json:"reloads"`           // reloads applied, whether they changed anything or not
	ReloadFailures   uint64            `json:"reload_failures"`
	LastReloadError  string            `json:"last_reload_error,omitempty"`
	Warnings         []string          `json:"warnings,omitempty"` // what is wrong with the running configuration on this host, while it lasts
	StartedAt        time.Time         `json:"started_at"`
	NextHop          NextHop           `json:"next_hop"`
	ConnTable        ConnTable         `json:"conn_table"`
	VIPs             []VIP             `json:"vips"`
	Counters         map[string]uint64 `json:"counters"` // datapath global counters (drop_* are drop reasons)
	// HealthTunnel counts what the program that sends checks through
	// the tunnel did with marked packets (encapsulated, no_backend,
	// too_big, error); absent when it is not attached.
	HealthTunnel map[string]uint64 `json:"health_tunnel,omitempty"`
}

// NextHop is the router the balancer sends encapsulated packets to.
type NextHop struct {
	Gateway  string `json:"gateway"`
	MAC      string `json:"mac,omitempty"` // empty: not resolved (VIP traffic is dropped)
	Resolved bool   `json:"resolved"`
}

// ConnTable describes the connection table.
type ConnTable struct {
	Capacity uint32 `json:"capacity"`
	Entries  uint64 `json:"entries"`
}

// VIP is one virtual service.
type VIP struct {
	Name       string  `json:"name"`
	Address    string  `json:"address"`
	Port       uint16  `json:"port"`
	Protocol   string  `json:"protocol"`
	Hash       string  `json:"hash"`
	Conntrack  bool    `json:"conntrack"`
	TableSize  uint32  `json:"table_size"`
	Generation uint32  `json:"generation"` // active table generation (0/1)
	Packets    uint64  `json:"packets"`
	Bytes      uint64  `json:"bytes"`
	NewFlows   uint64  `json:"new_flows"`
	ConnHits   uint64  `json:"conn_hits"`   // packets a connection-table entry sent
	ConnMisses uint64  `json:"conn_misses"` // packets that found no usable entry
	PacketRate float64 `json:"packet_rate"` // packets/s over the last 0.5-2.5 s (sampled every 2 s)
	// HealthVia is "tunnel" when the VIP's checks go through the tunnel
	// (health.via), "" when they go to each backend's own address.
	HealthVia string    `json:"health_via,omitempty"`
	Backends  []Backend `json:"backends"`
}

// Backend is one backend of a VIP.
type Backend struct {
	Name       string    `json:"name"`
	Address    string    `json:"address"`
	ID         uint32    `json:"id"` // datapath backend id
	Weight     uint32    `json:"weight"`
	Healthy    bool      `json:"healthy"`
	HealthInfo string    `json:"health_info,omitempty"` // last error, or "no check"
	Since      time.Time `json:"since"`                 // of the current health state
	// Check is the health check's type (tcp, http, https, udp); "" for
	// none. The three fields below count its checks.
	Check string `json:"check,omitempty"`
	// Checks and FailedChecks count the completed and the failed checks
	// since the backend was added (a reload that changes the check keeps
	// them; a restart starts them again). The JSON of a checked backend
	// has all three, 0 included (MarshalJSON); of another, none.
	Checks       uint64 `json:"checks,omitempty"`
	FailedChecks uint64 `json:"failed_checks,omitempty"`
	// LastCheckSeconds is how long the last completed check took.
	LastCheckSeconds float64 `json:"last_check_seconds,omitempty"`
	Drained          bool    `json:"drained"`
	TableSlots       int     `json:"table_slots"` // slots of the active table that point here
	Packets          uint64  `json:"packets"`     // datapath counters of this backend address (all VIPs)
	Bytes            uint64  `json:"bytes"`
	// Flows are the connection-table entries that this VIP pinned to
	// the backend's slot and that the datapath would use; ActiveFlows
	// those of them that saw a packet within the last 60 s
	// (datapath.ActiveFlowWindow). The datapath does not track FIN, so a
	// TCP flow that ended stays among Flows, not ActiveFlows.
	Flows       uint64 `json:"flows"`
	ActiveFlows uint64 `json:"active_flows"`
	// Removed: the VIP's configuration no longer has the backend's
	// address, but entries of the VIP still pin flows to its slot, which
	// continue. Such a row has only Name (the address), Address, ID,
	// Packets, Bytes, Flows and ActiveFlows, and goes once its flows are
	// gone or the slot is given to another address.
	Removed bool `json:"removed"`
}

// Flow is one connection-table entry.
type Flow struct {
	Protocol   string  `json:"protocol"`
	Client     string  `json:"client"` // addr:port
	VIP        string  `json:"vip"`    // addr:port as sent by the client
	VIPName    string  `json:"vip_name,omitempty"`
	Backend    string  `json:"backend"` // the name its VIP gives the backend (its address if the VIP has it no more)
	BackendID  uint32  `json:"backend_id"`
	IdleSecond float64 `json:"idle_seconds"`
}

// MaxFlowsLimit is the largest limit GET /v1/flows (and `switchyard flows
// --limit`) takes. The control loop builds the whole answer while it holds
// the datapath: a full connection table (16Mi entries) would take it
// gigabytes and seconds. 100,000 flows are about 20 MB of JSON.
const MaxFlowsLimit = 100000

// FlowsResponse is the answer of GET /v1/flows.
type FlowsResponse struct {
	Flows     []Flow `json:"flows"`
	Truncated bool   `json:"truncated"` // more entries than the limit
}

// DrainRequest names a backend: "NAME" (in every VIP) or "VIP/NAME".
type DrainRequest struct {
	Backend string `json:"backend"`
}

// DrainResponse lists what changed.
type DrainResponse struct {
	Matched []string `json:"matched"` // "vip/backend" entries now (un)drained
	// Warnings name each VIP a drain left with no backend for new flows
	// (each drained or down): its new flows are dropped (no_backend).
	Warnings []string `json:"warnings,omitempty"`
}

// ReloadResponse is the answer of POST /v1/reload.
type ReloadResponse struct {
	Generation uint64 `json:"generation"`
	// Changed is Changes as `switchyard reload` prints them, one line
	// each (Change.String); empty if nothing changed.
	Changed []string `json:"changed"`
	// Changes is what changed, for scripts; empty if nothing did.
	Changes []Change `json:"changes"`
}

// Change is a VIP or backend a reload added, removed or changed, or the
// global settings it changed.
type Change struct {
	Kind    string `json:"kind"`              // "added", "removed" or "changed"
	VIP     string `json:"vip,omitempty"`     // absent for the global settings
	Backend string `json:"backend,omitempty"` // absent for a VIP's own settings
	// Fields are those a "changed" changed, in the file's order.
	Fields []FieldChange `json:"fields,omitempty"`
}

// FieldChange is one field of the configuration a reload changed, named
// as the file names it (nested ones joined with dots: weight,
// health.interval, datapath.mtu), with its value before and after as the
// file writes it ("" for a field not set).
type FieldChange struct {
	Field string `json:"field"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// AgentStatus is what `switchyard status --agent` shows: the backend agent
// of one interface, from GET /v1/agent/status on the agent's socket.
type AgentStatus struct {
	Node string `json:"node"`
	// Interface is the current name of the agent's interface, which
	// ConfiguredInterface names when it was renamed while the agent ran
	// (left out otherwise).
	Interface           string `json:"interface"`
	ConfiguredInterface string `json:"configured_interface,omitempty"`
	AttachMode          string `json:"attach_mode"` // native | generic
	ProgramTag          string `json:"program_tag"`
	// Build is the running agent's binary: after an in-place upgrade,
	// the new one's version and git revision.
	Build buildinfo.Info `json:"build"`
	// ProgramState: whether the decap program runs on Interface (if
	// not, encapsulated packets are not decapsulated) and its link and
	// maps are pinned in PinDir.
	ProgramState
	ConfigFile string    `json:"config_file"`
	PinDir     string    `json:"pin_dir"`
	StateFile  string    `json:"state_file"` // the record of the agent's host changes
	StartedAt  time.Time `json:"started_at"`
	// EncapAddresses are the outer destinations decapsulated now. With
	// EncapFollowsInterface they are the interface's addresses, followed
	// as they change; otherwise the configured ones.
	EncapAddresses        []string      `json:"encap_addresses"`
	EncapFollowsInterface bool          `json:"encap_follows_interface"`
	GUEPort               uint16        `json:"gue_port"` // 0: GUE is not decapsulated
	VIPs                  []AgentVIP    `json:"vips"`
	Sysctls               []AgentSysctl `json:"sysctls"`
	// GRO is set while the agent keeps generic receive offload off for
	// its generic-mode decap program (nil, left out of the JSON: it did
	// not turn GRO off).
	GRO *AgentGRO `json:"gro,omitempty"`
	// Counters are the decap program's: decap_ipv4_outer,
	// decap_ipv6_outer, decap_gue, pass, drop_<reason> and
	// bad_outer_<reason> (passed untouched for the stack to drop).
	Counters map[string]uint64 `json:"counters"`
}

// AgentVIP is a VIP the agent keeps on lo for direct server return.
type AgentVIP struct {
	Address string `json:"address"`
	// OnLo: the address is on lo now. A VIP missing from lo makes the
	// host drop what the balancers send to it.
	OnLo bool `json:"on_lo"`
	// Tentative: an IPv6 VIP on lo that cannot be used yet (lo down, or
	// duplicate address detection running).
	Tentative bool `json:"tentative,omitempty"`
	// Added: an agent added it, this one or another of the host that
	// keeps it too, and the last of them to stop removes it; otherwise it
	// was on lo before the agents started, and stays.
	Added bool `json:"added"`
}

// AgentSysctl is a sysctl the agent changed for direct server return; it
// puts Old back when it stops, unless the value changed meanwhile.
type AgentSysctl struct {
	Name string `json:"name"` // net.ipv4.conf.eth0.arp_ignore
	Old  string `json:"old"`  // found before the agent changed it
	Set  string `json:"set"`  // what the agent wrote
	Now  string `json:"now"`  // read at the time of the status
	// Gone: the setting's interface is gone (deleted while the agent
	// ran), and the setting with it; Now is empty, and nothing is
	// restored at stop.
	Gone bool `json:"gone,omitempty"`
}

// AgentGRO is generic receive offload the agent turned off on its
// interface, having found it on, because the generic-mode decap program
// runs after GRO; it turns it on again when it stops.
type AgentGRO struct {
	Interface string `json:"interface"`
	WasOn     bool   `json:"was_on"` // found before the agent turned it off
	NowOn     bool   `json:"now_on"` // read at the time of the status
	// Gone: the interface is gone (deleted while the agent ran), and
	// its GRO with it; NowOn is false, and nothing is turned on again
	// at stop.
	Gone bool `json:"gone,omitempty"`
}
