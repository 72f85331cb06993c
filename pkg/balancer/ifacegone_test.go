package balancer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// runInNode runs a balancer of yaml on the balancer node of topo (its
// watch subscribed in the node's namespace) and returns it, with a channel
// that receives Run's end. The test's cleanup stops it.
func runInNode(t *testing.T, topo *topology.Topology, yaml string, logs *logRecords) (*Balancer, <-chan error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	cfg, dp := loadWithDatapath(t, path, yaml)
	return runOnDatapath(t, topo, path, cfg, dp, logs)
}

// runOnDatapath is runInNode with the configuration cfg, read from path,
// over dp.
func runOnDatapath(t *testing.T, topo *topology.Topology, path string, cfg *config.Config, dp Datapath, logs *logRecords) (*Balancer, <-chan error) {
	t.Helper()
	node := topo.Balancer(1)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *Balancer, 1)
	ended := make(chan error, 1)
	go func() {
		ended <- topo.Do(node, func() error {
			b, err := New(Config{ConfigPath: path, Initial: cfg, Datapath: dp, Logger: slog.New(logs)})
			started <- b
			if err != nil {
				return err
			}
			return b.Run(ctx)
		})
	}()
	b := <-started
	if b == nil {
		cancel()
		t.Fatal(<-ended)
	}
	runErr := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		err := <-ended
		close(stopped)
		runErr <- err
		cancel()
	}()
	// Run ended before the datapath closes (loadWithDatapath's cleanup,
	// which runs after this one): a test that fails while Run syncs
	// would otherwise close the maps under it.
	t.Cleanup(func() { cancel(); <-stopped })
	// Once the loop takes requests, the watch is subscribed.
	if err := b.do(ctx, func() {}); err != nil {
		t.Fatal(err)
	}
	return b, runErr
}

// An interface removed while the daemon runs takes the XDP program with
// it, and one created again under its name is another interface: Run ends
// with ErrInterfaceGone, naming the interface and what to do, and logs it
// as an error. It used to go on, balancing nothing, its status saying all
// was well.
func TestInterfaceRemovedEndsRun(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "htgone", Balancers: 1, Backends: 1})
	logs := &logRecords{}
	_, runErr := runInNode(t, topo, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1), logs)
	err := topo.Netlink(topo.Balancer(1), func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		if err := h.LinkDel(l); err != nil {
			return err
		}
		return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: topology.EthName}, PeerName: "htpeer0"})
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-runErr:
		if !errors.Is(err, ErrInterfaceGone) || !strings.Contains(err.Error(), topology.EthName) || !strings.Contains(err.Error(), "start switchyard run again") {
			t.Errorf("Run: %v, want ErrInterfaceGone naming %s and saying to start switchyard run again", err, topology.EthName)
		}
		if got := logs.matching(slog.LevelError, "interface gone", "interface="+topology.EthName); len(got) != 1 {
			t.Errorf("%d errors saying the interface is gone, want 1", len(got))
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run still runs 10 s after its interface was removed and created again")
	}
}

// A bridge announces that a port left it with a link deletion message for
// the port's index, and the port stays, with the program: that is no
// reason to stop. The MTU change after it comes on the same link
// notifications, so once the loop has seen it (its warning of
// datapath.mtu above the interface's), it has seen the bridge's message.
func TestInterfaceLeavingABridgeKeepsRunning(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "htbr", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "htbr0"}}
		if err := h.LinkAdd(br); err != nil {
			return err
		}
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		return h.LinkSetMaster(l, br)
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logRecords{}
	yaml := strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName+"\n  mtu: 1500", 1)
	b, runErr := runInNode(t, topo, yaml, logs)
	err = topo.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		if err := h.LinkSetNoMaster(l); err != nil {
			return err
		}
		return h.LinkSetMTU(l, 1400)
	})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(logs.matching(slog.LevelWarn, "datapath.mtu is above", "interface_mtu=1400")) == 0; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-runErr:
			t.Fatalf("Run ended when its interface left a bridge: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no warning of the MTU change within 10 s")
		}
	}
	if err := b.do(context.Background(), func() {}); err != nil {
		t.Fatalf("after its interface left a bridge: %v", err)
	}
}

// A renamed interface keeps the program, and the daemon keeps following
// it: a MAC change after the rename reaches the datapath's source MAC,
// and a warning says that a restart looks for the configured name. The
// daemon used to look the interface up by name at each change: after a
// rename it logged "datapath settings" errors and followed nothing, the
// outer frames leaving with the old source MAC.
func TestRenamedInterfaceIsFollowed(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "htren", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	logs := &logRecords{}
	b, runErr := runInNode(t, topo, strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1), logs)
	mac, _ := net.ParseMAC("02:00:00:00:0b:01")
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		l, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		if err := h.LinkSetName(l, "htren0"); err != nil {
			return err
		}
		return h.LinkSetHardwareAddr(l, mac)
	})
	if err != nil {
		t.Fatal(err)
	}
	var got net.HardwareAddr
	for deadline := time.Now().Add(10 * time.Second); !bytes.Equal(got, mac); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-runErr:
			t.Fatalf("Run ended when its interface was renamed: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("interface renamed, then its MAC set to %s: the datapath's source MAC is still %s after 10 s", mac, got)
		}
		if err := b.do(context.Background(), func() { got = b.settings.SourceMAC }); err != nil {
			t.Fatal(err)
		}
	}
	if w := logs.matching(slog.LevelWarn, "interface renamed", "datapath.interface="+topology.EthName, "name=htren0"); len(w) != 1 {
		t.Errorf("%d warnings that the interface was renamed, want 1", len(w))
	}
	if e := logs.matching(slog.LevelError); len(e) != 0 {
		t.Errorf("errors logged after a rename: %v", e)
	}
}
