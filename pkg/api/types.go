// Package api is the local control API of the switchyard daemon: JSON over
// HTTP on a unix socket (root-only by default), and the client the CLI uses.
package api

import "time"

// Status is what `switchyard status` shows.
type Status struct {
	Node             string            `json:"node"`
	Interface        string            `json:"interface"`
	AttachMode       string            `json:"attach_mode"` // native | generic
	ProgramTag       string            `json:"program_tag"`
	ConfigFile       string            `json:"config_file"`
	ConfigGeneration uint64            `json:"config_generation"` // +1 per applied (re)load
	ReloadFailures   uint64            `json:"reload_failures"`
	LastReloadError  string            `json:"last_reload_error,omitempty"`
	StartedAt        time.Time         `json:"started_at"`
	NextHop          NextHop           `json:"next_hop"`
	ConnTable        ConnTable         `json:"conn_table"`
	VIPs             []VIP             `json:"vips"`
	Counters         map[string]uint64 `json:"counters"` // datapath global counters (drop_* are drop reasons)
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
	Name       string    `json:"name"`
	Address    string    `json:"address"`
	Port       uint16    `json:"port"`
	Protocol   string    `json:"protocol"`
	Hash       string    `json:"hash"`
	Conntrack  bool      `json:"conntrack"`
	TableSize  uint32    `json:"table_size"`
	Generation uint32    `json:"generation"` // active table generation (0/1)
	Packets    uint64    `json:"packets"`
	Bytes      uint64    `json:"bytes"`
	NewFlows   uint64    `json:"new_flows"`
	ConnHits   uint64    `json:"conn_hits"`   // packets a connection-table entry sent
	ConnMisses uint64    `json:"conn_misses"` // packets that found no usable entry
	PacketRate float64   `json:"packet_rate"` // packets/s over the last 0.5-2.5 s (sampled every 2 s)
	Backends   []Backend `json:"backends"`
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
	Drained    bool      `json:"drained"`
	TableSlots int       `json:"table_slots"` // slots of the active table that point here
	Packets    uint64    `json:"packets"`     // datapath counters of this backend address (all VIPs)
	Bytes      uint64    `json:"bytes"`
}

// Flow is one connection-table entry.
type Flow struct {
	Protocol   string  `json:"protocol"`
	Client     string  `json:"client"` // addr:port
	VIP        string  `json:"vip"`    // addr:port as sent by the client
	VIPName    string  `json:"vip_name,omitempty"`
	Backend    string  `json:"backend"` // backend name (address if unknown)
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
}

// ReloadResponse is the answer of POST /v1/reload.
type ReloadResponse struct {
	Generation uint64   `json:"generation"`
	Changed    []string `json:"changed"` // human summary of what changed, empty if nothing
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}
