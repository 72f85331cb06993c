package topology

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestOwnerAlive(t *testing.T) {
	me, err := self()
	if err != nil {
		t.Fatal(err)
	}
	if !me.alive() {
		t.Errorf("this process (%+v) is not alive", me)
	}
	// Its pid reused by a later process: another start time.
	if o := (owner{me.pid, me.start + 1}); o.alive() {
		t.Errorf("%+v, this pid with another start time, is alive", o)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if o := (owner{cmd.Process.Pid, me.start}); o.alive() {
		t.Errorf("%+v, a reaped process, is alive", o)
	}
}

func TestMarkerRoundTrip(t *testing.T) {
	m := marker{owner: owner{42, 1234}, paths: []string{"/tmp/a b", "/sys/fs/bpf/x"}}
	got, err := parseMarker(m.encode())
	if err != nil || got.owner != m.owner || !slices.Equal(got.paths, m.paths) {
		t.Errorf("parseMarker(encode(%+v)) = %+v, %v", m, got, err)
	}
	for _, bad := range []string{"owner x 1\n", "path relative\n", "path /\n", "path /a/../b\n", "whatever\n"} {
		if _, err := parseMarker([]byte(bad)); err == nil {
			t.Errorf("parseMarker(%q) = nil error", bad)
		}
	}
}

// orphanEnv tells TestHelperOrphanTopology, run as a child process, to
// build a topology and wait to be killed.
const orphanEnv = "SWITCHYARD_TEST_ORPHAN_TOPOLOGY"

// A test run killed by SIGKILL (as by a -timeout panic, or Ctrl-C on go
// test) runs no cleanup: its namespaces, the processes in them and its
// directories stay. SweepOrphans removes them, and leaves the topology of
// a running process alone.
func TestSweepOrphansRemovesWhatAKilledRunLeft(t *testing.T) {
	// The live topology: this process's, with a process in it and a
	// directory recorded, as a lab has.
	live := NewForTest(t, Config{Prefix: "sysw", Balancers: 1, Backends: 1})
	liveDir := filepath.Join(t.TempDir(), "owned")
	if err := live.Own(liveDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(liveDir, 0o755); err != nil {
		t.Fatal(err)
	}
	liveSleep := startIn(t, live, live.Balancer(1))

	// The killed run's.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	f, child, release := KillAfterReady(t, ctx, "TestHelperOrphanTopology", orphanEnv+"=1")
	if len(f) != 3 {
		t.Fatalf("the child process's ready line has fields %v, want prefix, pid and directory", f)
	}
	prefix, dir := f[0], f[2]
	// A sweep of another test process (go test runs packages in
	// parallel, and each NewForTest sweeps) at this very moment: it must
	// leave the killed run's topology to this test until release.
	if swept, err := SweepOrphans(); slices.ContainsFunc(swept, func(o Orphan) bool { return o.Prefix == prefix }) {
		t.Fatalf("a sweep right after the kill took the killed run's topology %s (%v): the test has nothing left to check", prefix, err)
	}
	pid, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	sleepFd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("the child's process in its namespace: %v", err)
	}
	t.Cleanup(func() { unix.Close(sleepFd) })
	// Whatever this test fails to check, it leaves nothing behind.
	t.Cleanup(func() { release(); SweepOrphans() })
	if len(Leftovers(prefix)) != 4 || exited(sleepFd) {
		t.Fatalf("before the sweep: namespaces %v (want 4), its process exited: %t", Leftovers(prefix), exited(sleepFd))
	}

	release()
	swept, err := SweepOrphans()
	if err != nil {
		t.Errorf("SweepOrphans: %v", err)
	}
	i := slices.IndexFunc(swept, func(o Orphan) bool { return o.Prefix == prefix })
	if i >= 0 {
		o := swept[i]
		t.Logf("swept %s", o)
		if o.PID != child || len(o.Namespaces) != 4 || !slices.Equal(o.Paths, []string{dir}) {
			t.Errorf("swept %+v, want pid %d, 4 namespaces and %s", o, child, dir)
		}
	} else {
		// Another test process swept it first (go test runs packages
		// in parallel); wait until it is done.
		f, err := lockMarker(prefix, false, true)
		if err != nil || f != nil {
			f.Close()
			t.Fatalf("SweepOrphans = %v: no %s, and its marker is still there (%v)", swept, prefix, err)
		}
	}
	if left := Leftovers(prefix); len(left) != 0 {
		t.Errorf("namespaces %v left after the sweep", left)
	}
	if !exited(sleepFd) {
		t.Error("the process in the killed run's namespace runs on after the sweep")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed run's directory %s: %v, want it removed", dir, err)
	}
	if _, err := os.Stat(markerPath(prefix)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed run's marker: %v, want it removed", err)
	}

	if got := Leftovers(live.Prefix()); len(got) != 4 {
		t.Errorf("the live topology's namespaces after the sweep: %v", got)
	}
	if exited(liveSleep) {
		t.Error("the sweep killed the live topology's process")
	}
	if _, err := os.Stat(liveDir); err != nil {
		t.Errorf("the live topology's directory: %v", err)
	}
	if _, err := live.SysctlValue(live.Router(), "net.ipv4.ip_forward"); err != nil {
		t.Errorf("the live topology after the sweep: %v", err)
	}
}

// TestHelperOrphanTopology is the run TestSweepOrphansRemovesWhatAKilledRunLeft
// kills: it builds a topology with a process in it and a directory
// recorded, reports them, and waits.
func TestHelperOrphanTopology(t *testing.T) {
	if os.Getenv(orphanEnv) == "" {
		t.Skip("helper process of TestSweepOrphansRemovesWhatAKilledRunLeft")
	}
	topo := NewForTest(t, Config{Prefix: "sysw", Balancers: 1, Backends: 1})
	dir := filepath.Join(os.TempDir(), "switchyard-sweeptest-"+topo.Prefix())
	if err := topo.Own(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := topo.Command(context.Background(), topo.Backend(1), "sleep", "600")
	// Its own process group, as a lab's daemons have: the killed run's
	// signals do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitInNs(t, topo, topo.Backend(1), cmd.Process.Pid)
	fmt.Printf("ready %s %d %s\n", topo.Prefix(), cmd.Process.Pid, dir)
	<-t.Context().Done()
}

// startIn starts a process in node for the rest of the test and returns a
// pidfd of it once it runs there.
func startIn(t *testing.T, topo *Topology, node string) int {
	cmd := topo.Command(context.Background(), node, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		unix.Close(fd)
	})
	waitInNs(t, topo, node, cmd.Process.Pid)
	return fd
}

// waitInNs waits until nsenter has moved pid into node.
func waitInNs(t *testing.T, topo *Topology, node string, pid int) {
	want, _ := statNs(topo.NsPath(node))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if id, ok := statNs(fmt.Sprintf("/proc/%d/ns/net", pid)); ok && id == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not enter %s", pid, node)
		}
	}
}

// exited reports whether the process of a pidfd has exited.
func exited(pidfd int) bool {
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 0)
	return err == nil && n == 1
}

// New on a prefix whose marker names a process that is gone (here: this
// pid with another start time, as after pid reuse) removes what that
// process left first; on one that names a running process it fails with
// ErrPrefixInUse and touches nothing.
func TestNewClaimsThePrefixOfAnEndedOwnerOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: NOT ROOT — this test creates network namespaces and needs root (run `sudo go test`)")
	}
	if err := prepareNetnsDir(); err != nil {
		t.Fatal(err)
	}
	me, err := self()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(OwnerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestMarker := func(prefix string, m marker) {
		if err := os.WriteFile(markerPath(prefix), m.encode(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if b, err := os.ReadFile(markerPath(prefix)); err == nil && string(b) == string(m.encode()) {
				os.Remove(markerPath(prefix))
			}
		})
	}

	ended := RandomPrefix("sysw")
	newNamedForTest(t, ended+"-client")
	dir := filepath.Join(t.TempDir(), "owned")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestMarker(ended, marker{owner: owner{me.pid, me.start + 1}, paths: []string{dir}})
	topo, err := New(Config{Prefix: ended, Balancers: 1, Backends: 1})
	if err != nil {
		t.Fatalf("New on the prefix of an ended owner: %v", err)
	}
	t.Cleanup(func() { topo.Close() })
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the ended owner's directory: %v, want it removed", err)
	}
	b, err := os.ReadFile(markerPath(ended))
	if m, perr := parseMarker(b); err != nil || perr != nil || m.owner != me || len(m.paths) != 0 {
		t.Errorf("marker after New = %q (%v, %v), want this process alone", b, err, perr)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(markerPath(ended)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker after Close: %v, want it removed", err)
	}

	running := RandomPrefix("sysw")
	writeTestMarker(running, marker{owner: me})
	if topo, err := New(Config{Prefix: running, Balancers: 1, Backends: 1}); !errors.Is(err, ErrPrefixInUse) {
		if err == nil {
			topo.Close()
		}
		t.Errorf("New on the prefix of a running owner = %v, want ErrPrefixInUse", err)
	}
	if left := Leftovers(running); len(left) != 0 {
		t.Errorf("New on the prefix of a running owner created %v", left)
	}
	if _, err := os.Stat(markerPath(running)); err != nil {
		t.Errorf("the running owner's marker: %v", err)
	}
}
