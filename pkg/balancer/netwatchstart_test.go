package balancer

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// A start whose first netlink subscription the kernel refuses (here
// socket(AF_NETLINK) denied with EPERM, as a seccomp profile or an LSM
// policy may; a file-descriptor limit gives EMFILE the same way) ended
// `switchyard run` with a bare "watch neighbours: operation not
// permitted": nothing said that the balancer does not run, what stays
// attached, or what to do. It now wraps ErrNoNetworkWatch and says so.
func TestRunWithoutNetlinkSaysWhatItMeans(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "sybnw", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	cfg, dp := loadWithDatapath(t, path, baseConfig)
	var b *Balancer
	if err := topo.Do(node, func() (err error) {
		b, err = New(Config{ConfigPath: path, Initial: cfg, Datapath: dp, Logger: slog.New(&logRecords{})})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := topology.DenyNetlinkSockets(func() error { return b.Run(ctx) })
	if err == nil {
		t.Fatal("Run subscribed to netlink with netlink sockets denied: the test proves nothing")
	}
	if !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("Run with netlink sockets denied: %v, want the kernel's refusal", err)
	}
	if !errors.Is(err, ErrNoNetworkWatch) || !strings.Contains(err.Error(), "start again") || !strings.Contains(err.Error(), "stays attached") {
		t.Errorf("Run with netlink sockets denied ended with %q: want ErrNoNetworkWatch, what stays attached and what to do", err)
	}
}
