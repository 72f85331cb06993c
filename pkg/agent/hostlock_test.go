package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// shortLockWait stands for the agents' 30 s wait for the host lock: long
// enough for a lock that is free to be taken at once, short enough for a
// test that waits for it to run out.
const shortLockWait = 300 * time.Millisecond

// onLog is a log handler that calls fn, once, when the agent logs msg:
// synchronously, on the goroutine that logs it, so that fn sees the agent
// at that very point of its start.
type onLog struct {
	slog.Handler
	msg  string
	fn   func()
	done *bool
}

func (h onLog) Handle(ctx context.Context, r slog.Record) error {
	if h.fn != nil && r.Message == h.msg && !*h.done {
		*h.done = true
		h.fn()
	}
	return h.Handler.Handle(ctx, r)
}

func (h onLog) WithAttrs(as []slog.Attr) slog.Handler {
	return onLog{h.Handler.WithAttrs(as), h.msg, h.fn, h.done}
}

func (h onLog) WithGroup(name string) slog.Handler {
	return onLog{h.Handler.WithGroup(name), h.msg, h.fn, h.done}
}

// newAgentOnLog is newAgent whose log, besides going to the test's output
// and logs, calls fn(agent) when the agent logs msg.
func newAgentOnLog(t *testing.T, c config.AgentConfig, logs *logBuffer, msg string, fn func(*Agent)) *Agent {
	t.Helper()
	var a *Agent
	h := onLog{
		Handler: slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}),
		msg:     msg, done: new(bool),
	}
	if fn != nil {
		h.fn = func() { fn(a) }
	}
	var err error
	a, err = New(Config{Agent: c, Logger: slog.New(h), StateDir: testStateDir(t, c)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	a.hostLockWait = shortLockWait
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("cleanup: Stop: %v", err)
		}
		if err := datapath.RemoveDecap(c.PinDir); err != nil {
			t.Errorf("cleanup: remove pins: %v", err)
		}
		t.Logf("agent %s logged:\n%s", c.Interface, logs.String())
	})
	return a
}

// keepHostLock makes the agent's host lock outlive its release, as another
// agent of the host taking the lock the moment this one lets go, and then
// hanging, would: flock belongs to the open file, which a duplicate of the
// agent's descriptor keeps. Called while the agent holds the lock. It
// returns the release.
func keepHostLock(t *testing.T, a *Agent) (release func()) {
	t.Helper()
	// On the agent's goroutine: no t.Fatal.
	if a.hostLock == nil {
		t.Error("keepHostLock: the agent does not hold the host lock")
		return func() {}
	}
	fd, err := unix.Dup(int(a.hostLock.Fd()))
	if err != nil {
		t.Error(err)
		return func() {}
	}
	f := os.NewFile(uintptr(fd), hostLockName)
	t.Cleanup(func() { f.Close() })
	return func() { f.Close() }
}

// holdHostLock takes the host lock of the agents whose state directory
// dir is, as a hung agent holding it would. It returns the release.
func holdHostLock(t *testing.T, dir string) (release func()) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, hostLockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	return func() { f.Close() }
}

// TestUndoWithoutHostLockLeavesShared: an agent that must undo its changes
// (a SIGTERM stop, or a SIGTERM during its start once the program is
// attached) while another agent of the host holds the host lock for longer
// than the agent waits for it used to undo them all the same, without the
// other agents' records: it removed from lo the VIPs, and put back the
// "all" sysctls, that the other running agent still needed, and that
// backend dropped what the balancers sent it. Without the lock it now
// leaves the VIPs, sysctls and its record, which `remove --agent` undoes
// once the lock is free, and removes only its own program and pins.
func TestUndoWithoutHostLockLeavesShared(t *testing.T) {
	t.Parallel()
	for _, tc := range []string{"stop", "cancelled start"} {
		t.Run(tc, func(t *testing.T) {
			t.Parallel()
			topo, be, c1, c2 := twoAgents(t)
			const second = "swbv0"
			if tc == "cancelled start" {
				if err := topo.SetGRO(be, second, true); err != nil {
					t.Fatal(err)
				}
			}
			groBefore, err := topo.GRO(be, second)
			if err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, topo, be)
			a1 := startAgent(t, topo, be, c1)
			running := snapshot(t, topo, be)
			logs := &logBuffer{}
			var release func()
			if tc == "stop" {
				a2 := newAgentOnLog(t, c2, logs, "", nil)
				if err := topo.Do(be, a2.Start); err != nil {
					t.Fatalf("Start: %v", err)
				}
				release = holdHostLock(t, filepath.Dir(a2.StatePath()))
				err = topo.Do(be, a2.Stop)
			} else {
				// A generic-mode start with GRO on records GRO under the
				// host lock after the attach; the SIGTERM comes while it
				// waits for that lock, which another agent took as this
				// one let go of it after adding the VIPs.
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				a2 := newAgentOnLog(t, c2, logs, "VIP on lo added by another agent of this host: shared, the last of them to stop removes it", func(a *Agent) {
					release = keepHostLock(t, a)
					cancel()
				})
				a2.mode = datapath.AttachGeneric
				err = topo.Do(be, func() error { return a2.StartContext(ctx) })
				if release == nil {
					t.Fatal("the second agent did not share the first's VIPs: the test proves nothing")
				}
				if Cancelled(err) {
					t.Errorf("StartContext = %v, taken for a start cancelled with nothing left on the host", err)
				}
			}
			if !errors.Is(err, errLockHeld) || !strings.Contains(err.Error(), "remove --agent") {
				t.Errorf("undo with the host lock held elsewhere = %v, want errLockHeld saying that `remove --agent` undoes what is left", err)
			}
			if logs.count("`switchyard remove --agent --config FILE` once the lock is free") != 1 {
				t.Error("the agent did not log that it left its changes for `remove --agent`")
			}
			for _, p := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
				if !loHas(t, topo, be, p) {
					t.Errorf("VIP %s left lo, while the first agent still runs with it", p)
				}
			}
			for _, key := range []string{"net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce"} {
				k := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
				if got := sysctlValue(t, topo, be, key); got != running.sysctls[k] {
					t.Errorf("%s = %s, want %s, as the first agent, still running, set it", key, got, running.sysctls[k])
				}
			}
			if id, err := topo.XDPProgID(be, second); err != nil || id != 0 {
				t.Errorf("XDP program on %s after the undo: id %d (%v), want none: the program is the agent's alone", second, id, err)
			}
			if _, err := os.Stat(c2.PinDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the second agent's pin directory %s is still there (stat: %v)", c2.PinDir, err)
			}
			if _, err := os.Stat(stateFile(filepath.Dir(a1.StatePath()), c2.PinDir, second)); err != nil {
				t.Errorf("the second agent's record: %v, want it kept for `remove --agent`", err)
			}

			// Once the lock is free, remove --agent undoes what the
			// second agent left, bar what the first still shares.
			release()
			r := newAgent(t, c2)
			if err := topo.Do(be, r.Remove); err != nil {
				t.Fatalf("remove --agent once the lock is free: %v", err)
			}
			for _, p := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
				if !loHas(t, topo, be, p) {
					t.Errorf("VIP %s left lo at remove --agent, while the first agent still runs with it", p)
				}
			}
			requireNoState(t, r)
			if err := topo.Do(be, a1.Stop); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			requireSame(t, before, snapshot(t, topo, be))
			requireNoState(t, a1)
			if on, err := topo.GRO(be, second); err != nil || on != groBefore {
				t.Errorf("GRO of %s at the end: %t (%v), want %t as before the agents", second, on, err, groBefore)
			}
		})
	}
}

// TestNativeStartNeedsNoHostLockAfterAttach: a native-mode start has no
// GRO to record once its program is attached, yet took the host lock
// again then: an agent holding that lock too long made such a start fail
// with its program attached, and the failure undid it all. It now needs
// the lock only to record, and starts.
func TestNativeStartNeedsNoHostLockAfterAttach(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	before := snapshot(t, topo, be)
	logs := &logBuffer{}
	var release func()
	a := newAgentOnLog(t, c, logs, "VIP added to lo", func(a *Agent) { release = keepHostLock(t, a) })
	a.mode = datapath.AttachNative
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("native Start while another agent holds the host lock after the VIPs are added: %v", err)
	}
	if release == nil {
		t.Fatal("the agent added no VIP: the test proves nothing")
	}
	if eth, err := topo.Link(be, topology.EthName); err != nil {
		t.Fatal(err)
	} else if x := eth.Attrs().Xdp; x == nil || !x.Attached {
		t.Errorf("eth0 XDP after the start: %+v, want the decap program attached", x)
	}
	release()
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoState(t, a)
}

// TestStopWaitsOnceForHostLock: a VIP removed from lo behind the agent's
// back makes the watcher rewrite the record under the host lock; with
// that lock held by a hung agent the watcher waits for it, and a stop
// that came meanwhile waited for the watcher's wait to run out before its
// own wait for the lock began: twice the bound (60 s with the default
// 30 s, past a service manager's stop timeout). The watcher's wait now
// ends with the stop, which waits once.
func TestStopWaitsOnceForHostLock(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	before := snapshot(t, topo, be)
	logs := &logBuffer{}
	a := newAgentLogs(t, c, logs)
	// Long enough that waiting twice shows past the noise of a loaded
	// machine; the watcher has waited a second when it says so.
	const wait = 4 * time.Second
	a.hostLockWait = wait
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	release := holdHostLock(t, filepath.Dir(a.StatePath()))
	err := topo.Netlink(be, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.AddrDel(lo, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(vip4, 32))})
	})
	if err != nil {
		t.Fatal(err)
	}
	const waiting = "waiting for the agents' host lock, which another agent holds"
	for deadline := time.Now().Add(testTimeout); logs.count(waiting) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the watcher did not wait for the host lock within %s after a VIP left lo; the agent logged:\n%s", testTimeout, logs.String())
		}
	}

	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop() }()
	// The stop's own wait, and a little for the rest of the undo.
	bound := wait + wait/2
	select {
	case err = <-stopped:
	case <-time.After(bound):
		err = <-stopped
		t.Errorf("Stop took %s with the host lock held, want at most the one wait for it (%s) and the undo: it waited for the watcher's wait first",
			time.Since(start).Round(time.Millisecond), wait)
	}
	t.Logf("Stop took %s: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, errLockHeld) {
		t.Errorf("Stop with the host lock held = %v, want errLockHeld", err)
	}

	// Once the lock is free, remove --agent undoes what the stop left.
	release()
	r := newAgent(t, c)
	if err := topo.Do(be, r.Remove); err != nil {
		t.Fatalf("remove --agent once the lock is free: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoState(t, r)
}
