package demo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// takeLock takes the demo's lock for a test, or skips it while a real demo
// runs on this host (the test must not race with it).
func takeLock(t *testing.T) (release func()) {
	t.Helper()
	release, err := lock()
	if errors.Is(err, ErrRunning) {
		t.Skipf("SKIPPED: a switchyard demo is running on this host: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return release
}

// A second demo, or `demo --cleanup`, while a demo runs must leave the
// running one alone: it has the same namespace names, pin directory and
// work directory, which the second would otherwise remove as leftovers.
func TestSecondDemoLeavesTheRunningOneAlone(t *testing.T) {
	release := takeLock(t) // this test is the running demo
	if leftovers() {
		release()
		t.Skip("SKIPPED: an earlier demo's lab is on this host (`switchyard demo --cleanup` removes it)")
	}
	marker := filepath.Join(WorkDir(), "running-demo")
	if err := os.MkdirAll(WorkDir(), 0o755); err != nil {
		release()
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(WorkDir()) })
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		release()
		t.Fatal(err)
	}

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := Run(ctx, Config{Binary: "/nonexistent/switchyard", Out: &out})
	if !errors.Is(err, ErrRunning) {
		t.Errorf("Run during another demo = %v, want ErrRunning", err)
	} else if want := fmt.Sprintf("(pid %d)", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("Run during another demo: %q does not name the running one %s", err, want)
	}
	if out.Len() > 0 {
		t.Errorf("Run during another demo printed %q, want nothing", out.String())
	}
	if _, err := Cleanup("/nonexistent/switchyard"); !errors.Is(err, ErrRunning) {
		t.Errorf("Cleanup during a demo = %v, want ErrRunning", err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the running demo's work directory was touched: %v", err)
	}

	// Once it has ended, cleaning up is allowed again.
	release()
	if found, err := Cleanup("/nonexistent/switchyard"); err != nil || !found {
		t.Fatalf("Cleanup after the demo ended = %v, %v; want true (the work directory was there), nil", found, err)
	}
	if found, err := Cleanup("/nonexistent/switchyard"); err != nil || found {
		t.Errorf("second Cleanup = %v, %v; want false (nothing left), nil", found, err)
	}
	if _, err := os.Stat(WorkDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Cleanup after the demo ended left %s: %v", WorkDir(), err)
	}
}

// A demo killed with SIGKILL runs no teardown: the lock must not outlive
// it, or every later demo would refuse to start.
func TestLockDiesWithItsHolder(t *testing.T) {
	takeLock(t)() // none is running; free it for the child
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), "SWITCHYARD_TEST_HOLD_DEMO_LOCK=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	locked := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "locked" {
				locked <- true
				return
			}
		}
		locked <- false
	}()
	select {
	case ok := <-locked:
		if !ok {
			t.Fatal("the helper ended without taking the lock")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the helper did not take the lock within 10 s")
	}

	_, err = lock()
	if !errors.Is(err, ErrRunning) {
		t.Fatalf("lock while another process holds it = %v, want ErrRunning", err)
	}
	if want := fmt.Sprintf("(pid %d)", cmd.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Errorf("%q does not name the holder %s", err, want)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the helper did not die of SIGKILL within 10 s")
	}
	release, err := lock()
	if err != nil {
		t.Fatalf("lock after its holder was killed: %v", err)
	}
	release()
}

// TestHelperHoldLock is the process TestLockDiesWithItsHolder kills: it
// takes the lock and waits to be killed.
func TestHelperHoldLock(t *testing.T) {
	if os.Getenv("SWITCHYARD_TEST_HOLD_DEMO_LOCK") != "1" {
		t.Skip("helper process of TestLockDiesWithItsHolder")
	}
	release, err := lock()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	fmt.Println("locked")
	time.Sleep(time.Minute) // killed long before; bounded should the parent die
}
