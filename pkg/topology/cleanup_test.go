package topology

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// newNamedForTest creates the named namespace name as `ip netns add` would
// and removes it when the test ends.
func newNamedForTest(t *testing.T, name string) {
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
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := deleteNamed(name); err != nil {
			t.Errorf("remove namespace %s: %v", name, err)
		}
	})
}

// TestCleanupLeavesOtherNamespaces: Cleanup removes the namespaces a
// topology with the prefix creates (client, router, lbN, beN), and leaves
// alone, with the processes inside, any other name that merely starts
// with "<prefix>-": someone else's namespace, such as a VPN's
// "sydemo-vpn" on a machine that runs the demo.
func TestCleanupLeavesOtherNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: NOT ROOT — this test creates network namespaces and needs root (run `sudo go test`)")
	}
	if err := prepareNetnsDir(); err != nil {
		t.Fatal(err)
	}
	prefix := RandomPrefix("aA")
	ours := []string{prefix + "-client", prefix + "-lb1", prefix + "-be12"}
	others := []string{prefix + "-vpn", prefix + "-lb0", prefix + "-be01", prefix + "-router2"}
	for _, name := range append(slices.Clone(ours), others...) {
		newNamedForTest(t, name)
	}
	// A process in one of the others, as a VPN daemon would be.
	cmd := exec.CommandContext(context.Background(), "nsenter", "--net="+filepath.Join(NetnsDir, others[0]), "--", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	want, _ := statNs(filepath.Join(NetnsDir, others[0]))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if id, ok := statNs(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); ok && id == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process did not enter the namespace")
		}
	}

	// Leftovers reports what Cleanup would remove, and only that.
	left := Leftovers(prefix)
	slices.Sort(left)
	if wantLeft := slices.Sorted(slices.Values(ours)); !slices.Equal(left, wantLeft) {
		t.Errorf("Leftovers(%q) = %v, want %v", prefix, left, wantLeft)
	}

	if err := Cleanup(prefix); err != nil {
		t.Fatal(err)
	}
	if left := Leftovers(prefix); len(left) != 0 {
		t.Errorf("Leftovers after Cleanup = %v, want none", left)
	}
	got := netnsNames(t, prefix)
	for _, name := range ours {
		if slices.Contains(got, name) {
			t.Errorf("%s left after Cleanup", name)
		}
	}
	for _, name := range others {
		if !slices.Contains(got, name) {
			t.Errorf("%s, not a node name, was removed by Cleanup", name)
		}
	}
	// Ended by us, it dies of our SIGTERM, unless Cleanup's SIGKILL came
	// first.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	err := <-exited
	exited <- err
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("the process in %s ended with %v, want terminated by our SIGTERM (Cleanup killed it)", others[0], err)
	}
}
