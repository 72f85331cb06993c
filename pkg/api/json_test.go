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
