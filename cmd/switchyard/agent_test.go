package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary run `switchyard <command>` instead of the
// tests, so that a test can send the command signals.
const helperEnv = "SWITCHYARD_TEST_COMMAND"

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		for _, c := range commands {
			if c.name == name {
				if err := c.run(os.Args[1:]); err != nil {
					fmt.Fprintf(os.Stderr, "switchyard %s: %v\n", name, err)
					os.Exit(1)
				}
				os.Exit(0)
			}
		}
		fmt.Fprintf(os.Stderr, "%s=%s: no such command\n", helperEnv, name)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// agentHostState is what `switchyard agent` changes on a backend.
type agentHostState struct {
	sysctls []string
	lo      []string
	xdp     bool
	pinned  bool
}

func agentState(t *testing.T, topo *topology.Topology, node, pinDir string) agentHostState {
	t.Helper()
	var s agentHostState
	for _, key := range []string{"all.arp_ignore", "all.arp_announce", "eth0.arp_ignore", "eth0.arp_announce", "all.rp_filter", "eth0.rp_filter"} {
		v, err := topo.SysctlValue(node, "net.ipv4.conf."+key)
		if err != nil {
			t.Fatal(err)
		}
		s.sysctls = append(s.sysctls, key+"="+v)
	}
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		addrs, err := h.AddrList(lo, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			s.lo = append(s.lo, a.IPNet.String())
		}
		slices.Sort(s.lo)
		eth, err := h.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		s.xdp = eth.Attrs().Xdp != nil && eth.Attrs().Xdp.Attached
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(pinDir)
	s.pinned = err == nil
	return s
}

// fullPipe returns a pipe whose buffer is already full, so that the first
// write to w blocks until r is read.
func fullPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(p[0]), "stderr-r"), os.NewFile(uintptr(p[1]), "stderr-w")
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 4096); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(p[1], true); err != nil {
		t.Fatal(err)
	}
	fill := bytes.Repeat([]byte("#"), 4096)
	for {
		if _, err := unix.Write(p[1], fill); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.SetNonblock(p[1], false); err != nil {
		t.Fatal(err)
	}
	return r, w
}

// TestAgentSignalDuringStart: a SIGTERM that arrives while the agent is
// still starting (after it has begun to change the host) lets the start
// finish and then shuts down cleanly, leaving the host as it was. Killed
// mid-start, the agent would leave its sysctls, VIPs and pins behind, and
// the next run would take them for the admin's own and keep them for good.
//
// The agent is held inside Start by its own log: its stderr is a pipe that
// is full until the test reads it.
func TestAgentSignalDuringStart(t *testing.T) {
	t.Parallel()
	topo := topology.NewForTest(t, topology.Config{Prefix: "syHag", Balancers: 1, Backends: 1})
	be := topo.Backend(1)
	pinDir := filepath.Join(datapath.BPFFSRoot, topo.Prefix(), topology.EthName)
	t.Cleanup(func() {
		if err := datapath.RemoveDecap(pinDir); err != nil {
			t.Errorf("cleanup: remove pins: %v", err)
		}
	})
	cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
	cfg := fmt.Sprintf("node: {name: be1}\ninterface: %s\nvips: [10.100.0.1, \"fd00:100::1\"]\npin_dir: %s\nmetrics: {listen: \"\"}\n",
		topology.EthName, pinDir)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	before := agentState(t, topo, be, pinDir)

	r, w := fullPipe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := topo.Command(ctx, be, self, "--config", cfgPath, "--log-level", "info")
	cmd.Env = append(os.Environ(), helperEnv+"=agent")
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var stderr bytes.Buffer
	drained := make(chan struct{})
	drain := func() {
		go func() { io.Copy(&stderr, r); close(drained) }()
	}

	// The first change Start makes is to load the decap program, which
	// pins its maps.
	deadline := time.Now().Add(10 * time.Second)
	for !agentState(t, topo, be, pinDir).pinned {
		select {
		case err := <-exited:
			drain()
			<-drained
			t.Fatalf("agent exited before it started: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent did not begin to start within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	drain()
	select {
	case err = <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("agent did not exit within 10 s of SIGTERM")
	}
	<-drained
	log := strings.TrimLeft(stderr.String(), "#")
	if err != nil {
		t.Errorf("agent exited with %v, want a clean stop; its log:\n%s", err, log)
	}
	if !strings.Contains(log, "agent stopped") {
		t.Errorf("agent log does not say it stopped:\n%s", log)
	}
	if after := agentState(t, topo, be, pinDir); !slices.Equal(after.sysctls, before.sysctls) ||
		!slices.Equal(after.lo, before.lo) || after.xdp != before.xdp || after.pinned != before.pinned {
		t.Errorf("host after the agent stopped: %+v\nwas %+v", after, before)
	}
}
