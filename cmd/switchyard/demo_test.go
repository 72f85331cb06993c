package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/demo"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// demoLeftovers names what a demo left on this host, or "" for nothing.
func demoLeftovers() string {
	var left []string
	left = append(left, topology.Leftovers(demo.Prefix)...)
	for _, p := range []string{demo.PinBase(demo.Prefix), demo.WorkDir()} {
		if _, err := os.Stat(p); err == nil {
			left = append(left, p)
		}
	}
	return strings.Join(left, ", ")
}

// A demo whose terminal goes away (SIGHUP: the window closed, the ssh
// connection dropped) tears its lab down as after Ctrl-C. Its daemons run
// in process groups of their own, so the hangup reaches only the demo: had
// it died of it, they would have run on in the lab's namespaces.
func TestDemoTearsDownOnHangup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: NOT ROOT — this test runs the demo, which needs root (run `sudo go test`)")
	}
	if left := demoLeftovers(); left != "" {
		t.Skipf("SKIPPED: a demo runs on this host or left its lab (%s): `switchyard demo --cleanup` removes it", left)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// The lab runs this binary too: as main, through the environment.
	t.Setenv(mainEnv, "1")
	cmd := exec.CommandContext(ctx, os.Args[0], "demo")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		// While another demo runs, what is there is its lab: Cleanup
		// leaves it alone.
		if demoLeftovers() != "" {
			if _, err := demo.Cleanup(os.Args[0]); err != nil && !errors.Is(err, demo.ErrRunning) {
				t.Errorf("remove the demo's leftovers: %v", err)
			}
		}
	})
	// Hang up once the lab has processes running in it.
	started := make(chan bool, 1)
	var out strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if !sent && strings.Contains(sc.Text(), "agent (decap on eth0") {
				sent = true
				started <- true
			}
		}
		if !sent {
			started <- false
		}
	}()
	select {
	case ok := <-started:
		if !ok {
			cmd.Wait()
			if strings.Contains(stderr.String(), demo.ErrRunning.Error()) {
				t.Skipf("SKIPPED: another demo started meanwhile: %s", stderr.String())
			}
			t.Fatalf("the demo ended before its first backend was up; stderr:\n%s", stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("the demo did not start a backend within 3 minutes")
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
		t.Errorf("the demo died of %v instead of tearing its lab down", ee.Sys().(syscall.WaitStatus).Signal())
	}
	if left := demoLeftovers(); left != "" {
		t.Errorf("after SIGHUP the demo left %s; output:\n%s\nstderr:\n%s", left, out.String(), stderr.String())
	}
}
