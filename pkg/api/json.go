package api

import "encoding/json"

// The answers encode a list or map with nothing in it as [] or {}, never
// as null: `switchyard flows --json | jq '.flows[]'` failed with "Cannot
// iterate over null" when the table was empty, as did status --agent's
// sysctls on a host whose settings already suit direct server return.
// Each method encodes a copy, so the Service's values are not changed.

func (s Status) MarshalJSON() ([]byte, error) {
	type plain Status
	p := plain(s)
	p.VIPs, p.Counters = orEmpty(p.VIPs), orEmptyMap(p.Counters)
	return json.Marshal(p)
}

func (v VIP) MarshalJSON() ([]byte, error) {
	type plain VIP
	p := plain(v)
	p.Backends = orEmpty(p.Backends)
	return json.Marshal(p)
}

// A checked backend's counts are always there, 0 included: a script reads
// failed_checks of a backend that never failed as 0, not null. A backend
// without a check has none of them.
func (b Backend) MarshalJSON() ([]byte, error) {
	type plain Backend
	if b.Check == "" {
		return json.Marshal(plain(b))
	}
	// The outer fields hide the embedded ones of the same name.
	return json.Marshal(struct {
		plain
		Checks           uint64  `json:"checks"`
		FailedChecks     uint64  `json:"failed_checks"`
		LastCheckSeconds float64 `json:"last_check_seconds"`
	}{plain(b), b.Checks, b.FailedChecks, b.LastCheckSeconds})
}

func (f FlowsResponse) MarshalJSON() ([]byte, error) {
	type plain FlowsResponse
	p := plain(f)
	p.Flows = orEmpty(p.Flows)
	return json.Marshal(p)
}

func (d DrainResponse) MarshalJSON() ([]byte, error) {
	type plain DrainResponse
	p := plain(d)
	p.Matched = orEmpty(p.Matched)
	return json.Marshal(p)
}

func (r ReloadResponse) MarshalJSON() ([]byte, error) {
	type plain ReloadResponse
	p := plain(r)
	p.Changed, p.Changes = orEmpty(p.Changed), orEmpty(p.Changes)
	return json.Marshal(p)
}

func (s AgentStatus) MarshalJSON() ([]byte, error) {
	type plain AgentStatus
	p := plain(s)
	p.EncapAddresses, p.VIPs, p.Sysctls = orEmpty(p.EncapAddresses), orEmpty(p.VIPs), orEmpty(p.Sysctls)
	p.Counters = orEmptyMap(p.Counters)
	return json.Marshal(p)
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func orEmptyMap[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return map[K]V{}
	}
	return m
}
