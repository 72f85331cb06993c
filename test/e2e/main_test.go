// Package e2e tests Switchyard end to end: the real binary (`switchyard
// run`, `agent`, `testserver` and the CLI) in a namespace lab (pkg/demo),
// with real traffic from the client node through the XDP balancer to the
// backends and directly back. Every test builds its own lab with a random
// prefix and removes it, also when it fails. They need root; without it
// every test is skipped, loudly.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/demo"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// binary is the switchyard binary TestMain built.
var binary string

// binaryEnv gives a helper process (this test binary run by a test) the
// switchyard binary to use instead of building one.
const binaryEnv = "SWITCHYARD_E2E_BINARY"

const notRoot = "SKIPPED: NOT ROOT — the end-to-end tests build network namespaces and load XDP programs; run them as root (`sudo make test`)"

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "\n*** test/e2e: %s ***\n\n", notRoot)
		os.Exit(m.Run())
	}
	// Labs of earlier runs killed before their cleanup (Ctrl-C, a
	// -timeout panic): their processes, namespaces, pins and directories.
	topology.SweepTestOrphans(func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "test/e2e: "+format+"\n", args...)
	})
	sweepMemCgroups(func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "test/e2e: "+format+"\n", args...)
	})
	if b := os.Getenv(binaryEnv); b != "" {
		// A helper process of this package's tests.
		binary = b
		os.Exit(m.Run())
	}
	sweepBinaryDirs(os.TempDir(), func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "test/e2e: "+format+"\n", args...)
	})
	dir, err := makeBinaryDir(os.TempDir())
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/e2e:", err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "switchyard")
	if err := build(moduleRoot(), binary); err != nil {
		fmt.Fprintln(os.Stderr, "test/e2e: build the switchyard binary:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// binaryDirPrefix starts the name of the directory TestMain builds the
// binary in: binaryDirPrefix + "PID-START-RANDOM", PID and START naming
// the test process (topology.ProcessStart), so that a later run can tell
// the directory of a run killed before its cleanup (Ctrl-C, a -timeout
// panic) from that of a run still going (packages run in parallel, and
// other e2e runs may be live).
const binaryDirPrefix = "switchyard-e2e-"

// makeBinaryDir creates this process's binary directory under tmp.
func makeBinaryDir(tmp string) (string, error) {
	start, err := topology.ProcessStart(os.Getpid())
	if err != nil {
		return "", fmt.Errorf("read this process's start time: %w", err)
	}
	return os.MkdirTemp(tmp, fmt.Sprintf("%s%d-%d-", binaryDirPrefix, os.Getpid(), start))
}

// sweepBinaryDirs removes the binary directories under tmp of test
// processes that are gone, and logs each and every failure. A directory
// whose name does not say its process (an earlier release's) is left
// alone: it may be a live run's.
func sweepBinaryDirs(tmp string, logf func(format string, args ...any)) {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		logf("sweep the binaries of killed runs: %v", err)
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), binaryDirPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		var pid int
		var start uint64
		var random string
		if n, _ := fmt.Sscanf(strings.ReplaceAll(rest, "-", " "), "%d %d %s", &pid, &start, &random); n != 3 || pid <= 0 {
			continue
		}
		if topology.ProcessAlive(pid, start) {
			continue
		}
		path := filepath.Join(tmp, e.Name())
		if err := os.RemoveAll(path); err != nil {
			logf("remove the binary of the ended run %d: %v", pid, err)
			continue
		}
		logf("removed the binary of the ended run %d: %s", pid, path)
	}
}

// moduleRoot is the directory of this module's go.mod.
func moduleRoot() string {
	if gomod, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		if p := strings.TrimSpace(string(gomod)); p != "" && p != os.DevNull {
			return filepath.Dir(p)
		}
	}
	return "../.."
}

// build compiles ./cmd/switchyard of the module in dir into out.
func build(dir, out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/switchyard")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, b)
	}
	return nil
}

// newLab builds a lab for t with a random prefix (based on cfg.Prefix,
// "sye" if empty) that runs cfg.Binary (if empty, the binary TestMain
// built), and removes it when t ends; when t failed, the end of every
// process log is logged first.
func newLab(t *testing.T, cfg demo.LabConfig) *demo.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip(notRoot)
	}
	if cfg.Binary == "" {
		cfg.Binary = binary
	}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = 500 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	base := cfg.Prefix
	if base == "" {
		base = "sye"
	}
	for attempt := 0; ; attempt++ {
		cfg.Prefix = topology.RandomPrefix(base)
		lab, err := demo.NewLab(ctx, cfg)
		if errors.Is(err, topology.ErrPrefixInUse) && attempt < 10 {
			continue
		}
		if err != nil {
			t.Fatalf("build the lab: %v", err)
		}
		t.Logf("lab %s, files in %s", cfg.Prefix, lab.Dir())
		t.Cleanup(func() {
			if err := lab.Close(); err != nil {
				t.Errorf("close the lab: %v", err)
			}
		})
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("process logs:\n%s", lab.Logs(40))
			}
		})
		return lab
	}
}

// testContext bounds a test's traffic and waits.
func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// within is a child of ctx that ends after d.
func within(t *testing.T, ctx context.Context, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	t.Cleanup(cancel)
	return c
}

// spread sends n new connections to url and fails t on any failed request.
func spread(t *testing.T, ctx context.Context, lab *demo.Lab, url string, n int) map[string]int {
	t.Helper()
	counts, err := lab.Spread(ctx, url, n, 8, 5*time.Second)
	if err != nil {
		t.Fatalf("%d requests to %s: %v (answers %v)", n, url, err, counts)
	}
	return counts
}

// onlyFrom fails t if counts has answers from a backend not in allowed.
func onlyFrom(t *testing.T, step string, counts map[string]int, allowed ...string) {
	t.Helper()
	for be, n := range counts {
		if !slices.Contains(allowed, be) {
			t.Errorf("%s: %d new connections went to %s; only %v may take new connections", step, n, be, allowed)
		}
	}
}

func format(counts map[string]int) string {
	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		name := k
		if name == "" {
			name = "failed"
		}
		parts = append(parts, fmt.Sprintf("%s=%d", name, counts[k]))
	}
	return strings.Join(parts, " ")
}

// metricValue returns the value of the sample whose line starts with
// series (name and labels as exposed), or NaN.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return math.NaN()
}
