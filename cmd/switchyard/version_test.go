package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

// switchyardMain runs main with args in a process of its own (TestMain)
// and returns its standard output; it fails t if it does not exit 0.
func switchyardMain(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("switchyard %q: %v; stderr %q", args, err, stderr.String())
	}
	return string(out)
}

// `switchyard version` (and --version) says which build this is and the
// tags of its BPF programs. A test binary carries no VCS information: it
// says so with "unknown", not an empty field. (test/e2e's TestVersion
// checks a binary built in a git tree names its commit.)
func TestVersion(t *testing.T) {
	tags, err := datapath.ReadEmbeddedTags()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out := switchyardMain(t, args...)
		fields := map[string]string{}
		for _, line := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		for k, want := range map[string]string{
			"version": "unknown", "revision": "unknown",
			"balancer program": tags.Balancer, "decap program": tags.Decap,
		} {
			if fields[k] != want {
				t.Errorf("switchyard %q: %s %q, want %q; printed\n%s", args, k, fields[k], want, out)
			}
		}
		if !strings.HasPrefix(fields["go"], "go1.") || !strings.Contains(out, "kernel tags, "+tags.Hash) {
			t.Errorf("switchyard %q printed\n%s\nwant the Go version and the tags' hash (%s)", args, out, tags.Hash)
		}
	}
	var v versionInfo
	if err := json.Unmarshal([]byte(switchyardMain(t, "--version", "--json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.Version != "unknown" || v.Revision != "unknown" || !strings.HasPrefix(v.GoVersion, "go1.") || v.Programs == nil || *v.Programs != tags {
		t.Errorf("switchyard --version --json: %+v (programs %+v), want unknown version and revision, the Go version and the tags %+v", v, v.Programs, tags)
	}
}
