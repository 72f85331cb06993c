package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// emptyService answers as a daemon with nothing to list: no VIPs, no
// flows, no changes.
type emptyService struct{}

func (emptyService) Status(context.Context) (Status, error) { return Status{}, nil }
func (emptyService) Flows(context.Context, string, int) (FlowsResponse, error) {
	return FlowsResponse{}, nil
}
func (emptyService) Drain(context.Context, string, bool) (DrainResponse, error) {
	return DrainResponse{}, nil
}
func (emptyService) Reload(context.Context) (ReloadResponse, error) { return ReloadResponse{}, nil }
func (emptyService) AgentStatus(context.Context) (AgentStatus, error) {
	return AgentStatus{}, nil
}

// Lists and maps with nothing in them are [] and {} in every answer, so
// that a script iterating over them (jq '.flows[]') gets nothing instead
// of an error.
func TestJSONEmptyListsAreNotNull(t *testing.T) {
	for name, v := range map[string]any{
		"status":              Status{},
		"status with a VIP":   Status{VIPs: []VIP{{Name: "web"}}},
		"flows":               FlowsResponse{},
		"drain":               DrainResponse{},
		"reload":              ReloadResponse{},
		"agent status":        AgentStatus{},
		"agent status as ptr": &AgentStatus{},
	} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Contains(string(b), "null") {
			t.Errorf("%s encodes an empty list or map as null: %s", name, b)
		}
	}
	// A Service's value is encoded as it is, not changed.
	s := Status{}
	if _, err := json.Marshal(s); err != nil || s.VIPs != nil || s.Counters != nil {
		t.Errorf("encoding changed the status: %+v, %v", s, err)
	}
}

// The same through the server, as `--json` prints it.
func TestServerAnswersEmptyListsNotNull(t *testing.T) {
	_, socket := startServer(t, emptyService{})
	for _, tc := range []struct{ method, path, body, want string }{
		{http.MethodGet, "/v1/status", "", `"vips":[]`},
		{http.MethodGet, "/v1/flows", "", `"flows":[]`},
		{http.MethodPost, "/v1/drain", `{"backend":"be1"}`, `"matched":[]`},
		{http.MethodPost, "/v1/reload", "", `"changed":[]`},
	} {
		status, body := rawBody(t, socket, tc.method, tc.path, tc.body)
		if status != http.StatusOK || strings.Contains(body, "null") || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s answered %d %s, want 200 with %s and no null", tc.method, tc.path, status, body, tc.want)
		}
	}
}

// rawBody sends one request over the socket and returns the answer's
// status and body.
func rawBody(t *testing.T, socket, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://switchyard"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := NewClient(socket).http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// A checked backend has checks, failed_checks and last_check_seconds in
// its JSON whatever their values: they were left out at 0, so a backend
// that never failed had no failed_checks (jq gave null, not 0) and one
// not checked yet had none of them. A backend without a check has none.
func TestJSONCheckCountsOfACheckedBackend(t *testing.T) {
	for _, tc := range []struct {
		be   Backend
		want map[string]any
	}{
		{Backend{Name: "be1", Check: "http", Checks: 7, LastCheckSeconds: 0.002},
			map[string]any{"check": "http", "checks": 7.0, "failed_checks": 0.0, "last_check_seconds": 0.002}},
		{Backend{Name: "be2", Check: "tcp"},
			map[string]any{"check": "tcp", "checks": 0.0, "failed_checks": 0.0, "last_check_seconds": 0.0}},
		{Backend{Name: "be3", HealthInfo: "no check"},
			map[string]any{"check": nil, "checks": nil, "failed_checks": nil, "last_check_seconds": nil}},
	} {
		b, err := json.Marshal(Status{VIPs: []VIP{{Name: "web", Backends: []Backend{tc.be}}}})
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			VIPs []struct{ Backends []map[string]any }
		}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		got := st.VIPs[0].Backends[0]
		for k, want := range tc.want {
			if v, ok := got[k]; want == nil && ok || want != nil && v != want {
				t.Errorf("%s (check %q): %s = %v (present %v), want %v", tc.be.Name, tc.be.Check, k, v, ok, want)
			}
		}
		// And back: the client reads what the server wrote.
		var back Status
		if err := json.Unmarshal(b, &back); err != nil || back.VIPs[0].Backends[0] != tc.be {
			t.Errorf("%s: decoded %+v, %v; want %+v", tc.be.Name, back.VIPs[0].Backends[0], err, tc.be)
		}
	}
}
