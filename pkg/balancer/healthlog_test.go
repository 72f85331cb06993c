package balancer

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

// lockedBuffer is a log destination a test can read while the daemon's
// goroutines write to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) lines(parts ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, l := range strings.Split(b.buf.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// A backend that fails its checks is logged once, as the daemon's log
// (text, as `switchyard run` writes it) shows it. Before, the monitor
// logged the change under component=health given twice, and the control
// loop logged it again: two lines for one change.
func TestHealthChangeIsLoggedOnce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to load BPF programs (CI runs as root)")
	}
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	if err := os.WriteFile(path, []byte(failingCheckConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := datapath.LoadBalancer(datapath.Options{ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	var out lockedBuffer
	b, err := New(Config{ConfigPath: path, Initial: cfg, Datapath: dp,
		Logger: slog.New(slog.NewTextHandler(&out, nil)), HealthDialer: refusingDialer{down: be2Down}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	for deadline := time.Now().Add(10 * time.Second); len(out.lines("health changed", "key=web/be2", "healthy=false")) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("be2 fails its checks, and no health change of it is logged 10 s later")
		}
	}
	// The loop's line, if any, follows the transition's send: wait for
	// the loop to have taken it.
	if _, err := b.Status(ctx); err != nil {
		t.Fatal(err)
	}
	got := out.lines("health changed", "web/be2", "healthy=false")
	if len(got) != 1 || strings.Count(got[0], "component=") != 1 {
		t.Errorf("be2 going down is logged as\n%s\nwant one line, with one component", strings.Join(got, "\n"))
	}
}
