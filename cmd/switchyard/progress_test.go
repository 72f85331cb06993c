package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("SKIPPED: no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, tty
}

// runOnTTY runs the test binary as `switchyard args...` with its standard
// error on a terminal, and returns its standard output and what it wrote
// to the terminal.
func runOnTTY(t *testing.T, args ...string) (stdout, term string) {
	t.Helper()
	master, tty := openPTY(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close() // the child's copy stays open until it exits
	read := make(chan string, 1)
	go func() {
		// Once the child exits the terminal has no writer, and a
		// read returns EIO.
		b, _ := io.ReadAll(master)
		read <- string(b)
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("switchyard %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), <-read
}

// A reload that changes many VIPs' tables takes seconds: `switchyard
// reload` tells a person at a terminal what it waits for, and erases the
// line when the answer comes; with --json, or with standard error not a
// terminal, it writes nothing there.
func TestReloadShowsProgressOnATerminal(t *testing.T) {
	t.Parallel()
	topo, lb, _, cfgPath := linkTestSetup(t, "sybyp")
	d := startRun(t, topo, lb, cfgPath)
	sock := filepath.Join(filepath.Dir(cfgPath), "switchyard.sock")

	// The file is unchanged: each reload keeps generation 1.
	out, term := runOnTTY(t, "reload", "--socket", sock)
	if !strings.HasPrefix(out, "reloaded (generation 1): nothing changed") {
		t.Errorf("reload printed %q", out)
	}
	if !strings.HasPrefix(term, "\r\033[Kswitchyard reload: reloading... 0s") || !strings.HasSuffix(term, "\r\033[K") {
		t.Errorf("reload on a terminal showed %q, want its progress line, then erased", term)
	}

	out, term = runOnTTY(t, "reload", "--socket", sock, "--json")
	if !strings.Contains(out, `"generation": 1`) || term != "" {
		t.Errorf("reload --json on a terminal: printed %q, and %q on the terminal (want nothing there)", out, term)
	}

	if out, err := runMain(t, "reload", "--socket", sock); err != nil || !strings.HasPrefix(out, "reloaded (generation 1)") {
		t.Errorf("reload with standard error not a terminal: %q, %v", out, err)
	}
	// runMain gives standard error only on a failure: run it again
	// with its own buffer.
	cmd := exec.CommandContext(t.Context(), os.Args[0], "reload", "--socket", sock)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() != 0 {
		t.Errorf("reload with standard error not a terminal wrote %q there (%v), want nothing", stderr.String(), err)
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-d.exited; err != nil {
		t.Fatalf("switchyard run exited with %v on SIGTERM:\n%s", err, d.stderr.String())
	}
}

// The progress line counts the seconds while it waits.
func TestProgressCountsSeconds(t *testing.T) {
	var w syncBuffer
	done := progressTo(&w, "flows", "reading", 10*time.Millisecond)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(w.String(), "reading... 1s"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no second counted in 10 s: %q", w.String())
		}
	}
	done()
	if got := w.String(); !strings.HasSuffix(got, "\r\033[K") {
		t.Fatalf("the line is not erased at the end: %q", got)
	}
}
