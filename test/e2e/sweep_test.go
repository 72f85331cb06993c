package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard-lb/switchyard/pkg/demo"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// orphanLabEnv tells TestHelperOrphanLab, run as a child process, to build
// a lab and wait to be killed.
const orphanLabEnv = "SWITCHYARD_E2E_ORPHAN_LAB"

// TestSweepRemovesTheLabOfAKilledRun: a `make test` killed by Ctrl-C or a
// -timeout panic runs no cleanup, and its labs' daemons, agents and
// servers (each in its own process group) run on, with their namespaces,
// pins and work directory. The next run's sweep removes all of it, and
// leaves a running test's lab in service.
func TestSweepRemovesTheLabOfAKilledRun(t *testing.T) {
	live := newLab(t, demo.LabConfig{Backends: 1})
	ctx := testContext(t, 2*time.Minute)

	f, _, release := topology.KillAfterReady(t, ctx, "TestHelperOrphanLab", orphanLabEnv+"=1", binaryEnv+"="+binary)
	if len(f) != 5 {
		t.Fatalf("the child process's ready line has fields %v, want prefix, directory and three pids", f)
	}
	prefix, dir := f[0], f[1]
	// A sweep of another test process (go test runs packages in
	// parallel, and each NewForTest sweeps) at this very moment: it must
	// leave the killed run's lab to this test until release. It took it
	// there, and the test failed below, finding nothing left.
	if swept, err := topology.SweepOrphans(); slices.ContainsFunc(swept, func(o topology.Orphan) bool { return o.Prefix == prefix }) {
		t.Fatalf("a sweep right after the kill took the killed run's lab %s (%v): the test has nothing left to check", prefix, err)
	}
	var procs []int // pidfds of the lab's daemon, agent and server
	t.Cleanup(func() {
		for _, fd := range procs {
			unix.Close(fd)
		}
	})
	for _, s := range f[2:] {
		pid, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatalf("process %d of the child's lab: %v", pid, err)
		}
		procs = append(procs, fd)
	}
	// Whatever this test fails to check, it leaves nothing behind.
	t.Cleanup(func() { release(); topology.SweepOrphans() })
	pinBase := demo.PinBase(prefix)
	if _, err := os.Stat(pinBase); err != nil || len(topology.Leftovers(prefix)) == 0 || slices.ContainsFunc(procs, exited) {
		t.Fatalf("after the kill: pins %v, namespaces %v, a process exited: %t; want them all left",
			err, topology.Leftovers(prefix), slices.ContainsFunc(procs, exited))
	}

	release()
	swept, err := topology.SweepOrphans()
	if err != nil {
		t.Errorf("SweepOrphans: %v", err)
	}
	if i := slices.IndexFunc(swept, func(o topology.Orphan) bool { return o.Prefix == prefix }); i >= 0 {
		t.Logf("swept %s", swept[i])
		if !slices.Contains(swept[i].Paths, pinBase) || !slices.Contains(swept[i].Paths, dir) {
			t.Errorf("swept %s, want the paths %s and %s among them", swept[i], pinBase, dir)
		}
	} else {
		// Another test process swept it first (go test runs packages in
		// parallel): its marker goes once it is done.
		marker := filepath.Join(topology.OwnerDir, prefix)
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("SweepOrphans = %v: no %s, and its marker stays", swept, prefix)
			}
		}
	}
	if left := topology.Leftovers(prefix); len(left) != 0 {
		t.Errorf("namespaces %v left after the sweep", left)
	}
	for _, p := range []string{pinBase, dir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the sweep: %v, want it removed", p, err)
		}
	}
	for i, fd := range procs {
		if !exited(fd) {
			t.Errorf("process %d of the killed run's lab (daemon, agent, server) runs on after the sweep", i)
		}
	}

	// The live lab is untouched: its processes run, and it serves.
	if len(topology.Leftovers(live.Prefix())) != len(live.Topology().Nodes()) {
		t.Errorf("the live lab's namespaces after the sweep: %v", topology.Leftovers(live.Prefix()))
	}
	for _, p := range []*demo.Process{live.Daemon(1), live.Agent(1), live.Server(1)} {
		if !p.Running() {
			t.Errorf("the live lab's %s exited during the sweep", p.Name)
		}
	}
	counts := spread(t, ctx, live, demo.URL(demo.WebVIP, "/"), 20)
	if counts[demo.BackendName(1)] != 20 {
		t.Errorf("the live lab after the sweep answered %s, want be1=20", format(counts))
	}
}

// TestHelperOrphanLab is the run TestSweepRemovesTheLabOfAKilledRun kills:
// it builds a lab, reports it, and waits.
func TestHelperOrphanLab(t *testing.T) {
	if os.Getenv(orphanLabEnv) == "" {
		t.Skip("helper process of TestSweepRemovesTheLabOfAKilledRun")
	}
	lab := newLab(t, demo.LabConfig{Prefix: "syes", Backends: 1})
	fmt.Printf("ready %s %s %d %d %d\n", lab.Prefix(), lab.Dir(), lab.Daemon(1).Pid(), lab.Agent(1).Pid(), lab.Server(1).Pid())
	<-t.Context().Done()
}

// exited reports whether the process of a pidfd has exited.
func exited(pidfd int) bool {
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 0)
	return err == nil && n == 1
}
