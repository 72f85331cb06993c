package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// TestSecondAgentRefused: a second agent started for the interface (and
// pin directory) of a running one, say by hand while the service runs, is
// refused before it changes anything. It used to adopt the running
// agent's pins and replace its program, and whichever of the two stopped
// first then detached the decap program and deleted the pins under the
// other, which went on running without decapsulating anything.
func TestSecondAgentRefused(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	first := startAgent(t, topo, be, c)
	running := snapshot(t, topo, be)

	second := newAgent(t, c)
	err := topo.Do(be, second.Start)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), c.PinDir) {
		t.Fatalf("second Start: %v, want an error naming %s that wraps ErrInUse", err, c.PinDir)
	}
	t.Logf("second Start: %v", err)
	if err := second.Stop(); err != nil {
		t.Errorf("Stop of the refused agent: %v", err)
	}
	requireSame(t, running, snapshot(t, topo, be))
	if _, err := os.Stat(c.PinDir); err != nil {
		t.Errorf("the running agent's pins: %v", err)
	}
	if _, err := first.Stats(); err != nil {
		t.Errorf("the running agent: Stats: %v", err)
	}

	// Once the first has stopped, another may start.
	if err := first.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := topo.Do(be, second.Start); err != nil {
		t.Fatalf("Start after the first stopped: %v", err)
	}
	eth, err := topo.Link(be, topology.EthName)
	if err != nil {
		t.Fatal(err)
	}
	if x := eth.Attrs().Xdp; x == nil || !x.Attached {
		t.Errorf("eth0 XDP after the second start: %+v, want a program attached", x)
	}
}

// An agent whose pin_dir is a running balancer's is told that a balancer
// holds it: the refusal said "another switchyard agent is running with
// this pin directory", and the operator looked for an agent.
func TestAgentOnABalancersPinDir(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	t.Cleanup(func() { datapath.RemoveBalancer(c.PinDir) })
	// The balancer's pins, and its lock on them as `switchyard run` takes it.
	b, err := datapath.LoadBalancer(datapath.Options{PinDir: c.PinDir, ConnTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	f, err := os.Open(c.PinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}

	a := newAgent(t, c)
	err = topo.Do(be, a.Start)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "in use by a running switchyard run") || strings.Contains(err.Error(), "another switchyard agent") {
		t.Errorf("Start on a balancer's pin directory: %v, want ErrInUse saying a switchyard run holds it, not an agent", err)
	}
	if err := a.Stop(); err != nil {
		t.Errorf("Stop of the refused agent: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.PinDir, "conns")); err != nil {
		t.Errorf("the balancer's connection table: %v", err)
	}
}

// TestFailedStartInEmptyPinDirLeavesNothing: a start that fails in a pin
// directory that exists but holds nothing (one an administrator prepared,
// or an agent killed before it pinned anything) removes what it pinned,
// as a start that created the directory does. It told a first start by
// the directory missing, looked at before the lock: this start left its
// pins for good, and a start that found the directory missing could, once
// it took the lock, remove the pins of an agent that had taken it first.
// It then removed the directory with its pins, though it had not created
// it (an admin's, with its owner and mode); the directory stays, empty,
// as the balancer's failed first start leaves it.
func TestFailedStartInEmptyPinDirLeavesNothing(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	// The attach, the last step, fails: another program holds eth0.
	if err := datapath.AttachPass(topo.NsHandle(be), topology.EthName); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, topo, be)
	c := testConfig(topo)
	if err := os.MkdirAll(c.PinDir, 0o700); err != nil {
		t.Fatal(err)
	}
	a := newAgent(t, c)
	if err := topo.Do(be, a.Start); err == nil || !strings.Contains(err.Error(), "already attached") {
		t.Fatalf("Start: %v, want an error saying another program is attached", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	if left, err := os.ReadDir(c.PinDir); err != nil || len(left) != 0 {
		t.Errorf("pin directory prepared beforehand, after the failed start: %v, %v; want it there, empty, as it was found", left, err)
	}
}

// TestSecondAgentRefusedAfterPinsRemoved: a second agent of a running
// one's configuration, started after someone removed the running agent's
// pin directory by hand (and with it the lock on it), is refused by the
// run lock beside the state file, changing nothing. It used to take the
// running agent's record for a killed run's and, its start failing on the
// interface's attached program, undo the running agent's VIPs and
// sysctls.
func TestSecondAgentRefusedAfterPinsRemoved(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	before := snapshot(t, topo, be)
	first := startAgent(t, topo, be, c)
	if err := os.RemoveAll(c.PinDir); err != nil {
		t.Fatal(err)
	}
	running := snapshot(t, topo, be)

	second := newAgent(t, c)
	second.runLockWait = 100 * time.Millisecond // the first never lets go
	err := topo.Do(be, second.Start)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), runLockPath(first.StatePath())) {
		t.Errorf("second Start: %v, want an error naming the run lock %s that wraps ErrInUse", err, runLockPath(first.StatePath()))
	}
	t.Logf("second Start: %v", err)
	requireSame(t, running, snapshot(t, topo, be))
	if _, err := os.Stat(first.StatePath()); err != nil {
		t.Errorf("the running agent's state file: %v", err)
	}
	if _, err := os.Stat(c.PinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory after the refused start: %v, want it left removed, as it was", err)
	}

	err = topo.Do(be, second.Remove)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "whose clean stop undoes its changes") {
		t.Errorf("Remove: %v, want ErrInUse telling to stop the agent", err)
	}
	requireSame(t, running, snapshot(t, topo, be))

	// The running agent's own stop undoes it all.
	if err := first.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	requireSame(t, before, snapshot(t, topo, be))
	requireNoState(t, first)
}

// holdRunLock takes the run lock of the agent whose state file is
// statePath, as that agent would, for the test; release lets go of it as
// a stopping agent does (see unlockRun): the file goes, then the lock.
func holdRunLock(t *testing.T, statePath string) (release func()) {
	t.Helper()
	path := runLockPath(statePath)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		f.Close()
		t.Fatalf("take the run lock %s: %v", path, err)
	}
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		os.Remove(path)
		f.Close()
	}
	t.Cleanup(release)
	return release
}

// TestStartWaitsForAStoppingAgentsRunLock: a stopping agent removes its
// pins, and with them its pin directory and the lock on it, before it
// lets go of its run lock at the end of its teardown. A start of the same
// configuration overlapping that stop (a service manager's restart, a
// start by hand during a slow stop) created a fresh pin directory, locked
// it, and was refused at once by the run lock, saying the pin directory
// had been removed by hand while the agent ran, which was not what
// happened. It now waits for the run lock, a bounded time: a stopping
// agent lets go within moments, and the start goes on; an agent that
// runs on does not, and the start is refused, naming both.
func TestStartWaitsForAStoppingAgentsRunLock(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)

	t.Run("released", func(t *testing.T) {
		logs := &logBuffer{}
		a := newAgentLogs(t, c, logs)
		a.runLockWait = time.Minute // longer than the test could wait
		release := holdRunLock(t, a.StatePath())
		done := make(chan error, 1)
		go func() { done <- topo.Do(be, a.Start) }()
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "waiting for the agent's run lock"); time.Sleep(10 * time.Millisecond) {
			select {
			case err := <-done:
				t.Fatalf("Start returned before it said it waits for the run lock: %v\n%s", err, logs.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("Start did not say it waits for the run lock within 10 s:\n%s", logs.String())
			}
		}
		release()
		if err := <-done; err != nil {
			t.Fatalf("Start, once the stopping agent let go of its run lock: %v", err)
		}
		if id := topo.EthXDPProgID(t, be); id == 0 {
			t.Errorf("eth0 runs no XDP program after the start")
		}
		if err := a.Stop(); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		requireNoState(t, a)
	})
	t.Run("held", func(t *testing.T) {
		before := snapshot(t, topo, be)
		a := newAgent(t, c)
		a.runLockWait = 200 * time.Millisecond
		holdRunLock(t, a.StatePath())
		err := topo.Do(be, a.Start)
		if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "did not let go within 200ms") ||
			!strings.Contains(err.Error(), "its pin directory was removed by hand") || !strings.Contains(err.Error(), "it is stopping and hangs") {
			t.Fatalf("Start with the run lock held for good: %v, want ErrInUse naming an agent that runs with its pins removed and one that hangs stopping", err)
		}
		requireSame(t, before, snapshot(t, topo, be))
		if _, err := os.Stat(c.PinDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin directory after the refused start: %v, want the one it created removed", err)
		}
	})
}

// TestRefusedStartKeepsAPreparedPinDir: a start refused by the run lock
// removed the pin directory if empty, taking it for one it created; it
// may be one an admin prepared, which stays now.
func TestRefusedStartKeepsAPreparedPinDir(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	if err := os.MkdirAll(c.PinDir, 0o700); err != nil {
		t.Fatal(err)
	}
	a := newAgent(t, c)
	a.runLockWait = 100 * time.Millisecond
	holdRunLock(t, a.StatePath())
	if err := topo.Do(be, a.Start); !errors.Is(err, ErrInUse) {
		t.Fatalf("Start with the run lock held: %v, want ErrInUse", err)
	}
	if fi, err := os.Stat(c.PinDir); err != nil || !fi.IsDir() {
		t.Errorf("the pin directory an admin prepared, after a refused start: %v, want it left there", err)
	}
}
