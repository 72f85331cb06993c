package topology

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const privateMountEnv = "SWITCHYARD_TEST_PRIVATE_MOUNT_NS"

// `ip netns add` and `ip netns del` (by anyone, while a topology exists)
// bind-mount NetnsDir onto itself when it is not a mount point. That must
// not hide the topology's namespaces from Close and Cleanup. The test runs
// in a child process with a private mount namespace and a fresh /run, on
// a machine whose /run/netns is not a mount point, so it can neither see
// nor change the host's /run/netns; its namespaces die with it.
func TestIPNetnsDoesNotHideNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: NOT ROOT — this test builds network namespaces and needs root (run `sudo go test`)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("iproute2 is missing (scripts/install-deps.sh installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperPrivateMountNS$", "-test.v", "-test.timeout=1m")
	cmd.Env = append(os.Environ(), privateMountEnv+"=1")
	// Go makes / private in the new mount namespace, so nothing the child
	// mounts or unmounts propagates back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestHelperPrivateMountNS") {
		t.Fatalf("helper in a private mount namespace: %v\n%s", err, out)
	}
}

// TestHelperPrivateMountNS is the child of TestIPNetnsDoesNotHideNamespaces.
func TestHelperPrivateMountNS(t *testing.T) {
	if os.Getenv(privateMountEnv) != "1" {
		t.Skip("helper process of TestIPNetnsDoesNotHideNamespaces")
	}
	// A fresh /run: NetnsDir (/var/run/netns) does not exist, as on a
	// machine where nothing has used named namespaces yet.
	if err := unix.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount a tmpfs on /run: %v", err)
	}
	ipNetns := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"netns"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip netns %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	newTopo := func() *Topology {
		t.Helper()
		topo, err := New(Config{Prefix: RandomPrefix("syD"), Balancers: 1, Backends: 1})
		if err != nil {
			t.Fatal(err)
		}
		return topo
	}

	topo := newTopo()
	other := topo.Prefix() + "ip"
	ipNetns("add", other)
	ipNetns("del", other)
	if err := topo.Close(); err != nil {
		t.Errorf("Close after ip netns add and del: %v", err)
	}
	if got := netnsNames(t, topo.Prefix()); len(got) != 0 {
		t.Errorf("namespaces left after Close: %v", got)
	}

	// Leftovers of a killed run, and then ip netns: Cleanup removes them.
	topo = newTopo()
	topo.mu.Lock()
	for _, h := range topo.nodes {
		h.Close()
	}
	topo.closed = true
	topo.mu.Unlock()
	ipNetns("add", other)
	ipNetns("del", other)
	if err := Cleanup(topo.Prefix()); err != nil {
		t.Errorf("Cleanup after ip netns add and del: %v", err)
	}
	if got := netnsNames(t, topo.Prefix()); len(got) != 0 {
		t.Errorf("namespaces left after Cleanup: %v", got)
	}

	// What a run without prepareNetnsDir left: a namespace mounted on a
	// NetnsDir that was no mount point, hidden by ip netns since. The error
	// says how to get out, and that way works.
	if err := unix.Unmount(NetnsDir, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	prefix := RandomPrefix("syD")
	newNamed(t, prefix+"-client")
	ipNetns("add", other)
	ipNetns("del", other)
	err := Cleanup(prefix)
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "umount "+NetnsDir) {
		t.Fatalf("Cleanup of a hidden namespace = %v, want EBUSY and how to fix it", err)
	}
	if err := unix.Unmount(NetnsDir, 0); err != nil {
		t.Fatalf("umount %s as the error says: %v", NetnsDir, err)
	}
	if err := Cleanup(prefix); err != nil {
		t.Errorf("Cleanup after umount %s: %v", NetnsDir, err)
	}
	if got := netnsNames(t, prefix); len(got) != 0 {
		t.Errorf("namespaces left after Cleanup: %v", got)
	}

	// Someone else's namespace, named while NetnsDir is no mount point:
	// New must not hide it from its owner by mounting over it.
	foreign := RandomPrefix("syD") + "-x"
	newNamed(t, foreign)
	topo = newTopo()
	if err := deleteNamed(foreign); err != nil { // as `ip netns del` does
		t.Errorf("the owner of a namespace named before New cannot delete it: %v", err)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// newNamed names a new network namespace under NetnsDir, as a program
// other than Switchyard might.
func newNamed(t *testing.T, name string) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in the new namespace
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
