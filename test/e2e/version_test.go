package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/demo"
)

// After an in-place upgrade an operator checks that the new binary is the
// one running: `switchyard version` of a binary built from this checkout's
// commit names the commit, and so do the balancer's and the agent's status
// (JSON and text) and their build-info metrics, with the program tags
// version prints being the ones status shows.
func TestVersion(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip(notRoot)
	}
	ctx := testContext(t, 5*time.Minute)
	head, err := exec.CommandContext(ctx, "git", "-C", moduleRoot(), "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("SKIPPED: %s is not a git checkout (git rev-parse HEAD: %v): go build embeds no revision", moduleRoot(), err)
	}
	rev := strings.TrimSpace(string(head))
	built := buildWithVCS(t, ctx, rev)
	lab := newLab(t, demo.LabConfig{Binary: built})

	out, err := exec.CommandContext(ctx, built, "version", "--json").Output()
	if err != nil {
		t.Fatalf("switchyard version --json: %v", err)
	}
	var v struct {
		Version, Revision string
		GoVersion         string `json:"go_version"`
		Programs          struct{ Balancer, Decap string }
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("switchyard version --json: %v\n%s", err, out)
	}
	if v.Revision != rev || v.Version == "unknown" || v.GoVersion == "" {
		t.Errorf("switchyard version --json: %s\nwant revision %s (git rev-parse HEAD), a version and the Go version", out, rev)
	}
	if text, err := exec.CommandContext(ctx, built, "--version").Output(); err != nil || !regexp.MustCompile(`(?m)^revision: +`+rev+` `).Match(text) {
		t.Errorf("switchyard --version: %v\n%s\nwant revision %s", err, text, rev)
	}

	st, err := lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Build.Revision != rev || st.Build.Version != v.Version || st.ProgramTag != v.Programs.Balancer {
		t.Errorf("balancer status: build %+v, program_tag %s; want revision %s, version %s, program tag %s as switchyard version says",
			st.Build, st.ProgramTag, rev, v.Version, v.Programs.Balancer)
	}
	text, err := lab.CLI(ctx, 1, "status")
	if err != nil || !strings.Contains(text, "revision "+rev) {
		t.Errorf("switchyard status: %v\n%s\nwant the revision %s", err, text, rev)
	}
	ast, err := api.NewClient(lab.AgentSocket(1)).AgentStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ast.Build.Revision != rev || ast.ProgramTag != v.Programs.Decap {
		t.Errorf("agent status: build %+v, program_tag %s; want revision %s, program tag %s as switchyard version says",
			ast.Build, ast.ProgramTag, rev, v.Programs.Decap)
	}
	if text, err := lab.AgentStatus(ctx, 1); err != nil || !strings.Contains(text, "revision "+rev) {
		t.Errorf("switchyard status --agent: %v\n%s\nwant the revision %s", err, text, rev)
	}

	labels := `{goversion="` + v.GoVersion + `",revision="` + rev + `",version="` + v.Version + `"} 1` + "\n"
	for _, m := range []struct {
		name, series string
		scrape       func() (string, error)
	}{
		{"switchyard run", "switchyard_build_info", func() (string, error) { return lab.Metrics(ctx, 1) }},
		{"switchyard agent", "switchyard_agent_build_info", func() (string, error) { return lab.AgentMetrics(ctx, 1) }},
	} {
		text, err := m.scrape()
		if err != nil {
			t.Fatalf("%s: scrape /metrics: %v", m.name, err)
		}
		if !strings.Contains(text, "\n"+m.series+labels) {
			t.Errorf("%s: /metrics lacks %s%s", m.name, m.series, labels)
		}
	}
}

// buildWithVCS builds switchyard from commit rev of this checkout with the
// VCS information go build embeds, and returns the binary. The build is in
// a clone: go build finds no repository in a git worktree (its .git is a
// file, and cmd/go looks for a directory), and GOFLAGS may say
// -buildvcs=false, which the flag given here overrides.
func buildWithVCS(t *testing.T, ctx context.Context, rev string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for _, args := range [][]string{
		{"clone", "--quiet", "--shared", "--no-checkout", moduleRoot(), src},
		{"-C", src, "checkout", "--quiet", "--detach", rev},
	} {
		if out, err := exec.CommandContext(ctx, "git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	out := filepath.Join(dir, "switchyard")
	cmd := exec.CommandContext(ctx, "go", "build", "-buildvcs=true", "-o", out, "./cmd/switchyard")
	cmd.Dir = src
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -buildvcs=true in a clone at %s: %v\n%s", rev, err, b)
	}
	return out
}
