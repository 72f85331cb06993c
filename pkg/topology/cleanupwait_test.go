package topology

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Cleanup returns once the processes it killed have exited, so that what
// they held is free: a demo cleaning up after a killed one runs `switchyard
// remove` on the pin directories right after, which refuses one whose
// daemon still holds its lock ("in use by a running switchyard").
func TestCleanupWaitsForTheProcessesItKills(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: NOT ROOT — this test creates network namespaces and needs root (run `sudo go test`)")
	}
	if err := prepareNetnsDir(); err != nil {
		t.Fatal(err)
	}
	prefix := RandomPrefix("cW")
	node := prefix + "-lb1"
	newNamedForTest(t, node)
	lockFile := filepath.Join(t.TempDir(), "pins.lock")
	if err := os.WriteFile(lockFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	// A daemon left by a killed demo: it holds a lock, and has memory to
	// give back as it exits (a balancer maps its connection table).
	cmd := exec.Command("nsenter", "--net="+filepath.Join(NetnsDir, node), "--",
		os.Args[0], "-test.run=^TestHelperHoldFlock$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), "SWITCHYARD_TEST_HOLD_FLOCK="+lockFile)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Reaped only at the end: a killed process that has exited but is
	// not reaped yet has released its lock all the same.
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	locked := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			if sc.Text() == "locked" {
				ok = true
				break
			}
		}
		locked <- ok
	}()
	select {
	case ok := <-locked:
		if !ok {
			t.Fatal("the helper ended without taking the lock")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the helper did not take the lock within 30 s")
	}

	if err := Cleanup(prefix); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(lockFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Errorf("lock held by the process Cleanup killed is still taken when Cleanup returns: %v", err)
	}
}

// TestHelperHoldFlock is the process TestCleanupWaitsForTheProcessesItKills
// has Cleanup kill: it locks a file, touches 256 MiB, and waits.
func TestHelperHoldFlock(t *testing.T) {
	path := os.Getenv("SWITCHYARD_TEST_HOLD_FLOCK")
	if path == "" {
		t.Skip("helper process of TestCleanupWaitsForTheProcessesItKills")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	mem := make([]byte, 256<<20)
	for i := range mem {
		if i%4096 == 0 {
			mem[i] = 1
		}
	}
	fmt.Println("locked")
	time.Sleep(time.Minute) // killed long before; bounded should the parent die
	fmt.Println(mem[0], f.Name())
}
