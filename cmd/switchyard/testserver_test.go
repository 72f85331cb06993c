package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Each log line of `switchyard testserver` names its component once: a
// repeated key is ambiguous to log processors (some keep the first, some
// the last) and noise to a reader. Its "serving" line names the addresses
// it bound (it said the configured port 0).
func TestTestserverLogsComponentOnceAndBoundAddresses(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "testserver", "--name", "be1", "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Up to the command's own line, which comes after the server's.
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		if n := strings.Count(line, "component="); n != 1 {
			t.Errorf("log line names its component %d times, want once: %s", n, line)
		}
		if strings.Contains(line, "msg=serving ") {
			// It names the bound addresses, not the configured port 0.
			if strings.Contains(line, ":0 ") || strings.HasSuffix(line, ":0") || !strings.Contains(line, "http=127.0.0.1:") || !strings.Contains(line, "udp=127.0.0.1:") {
				t.Errorf("serving line names no bound addresses: %s", line)
			}
			return
		}
	}
	t.Fatalf("the testserver ended before it logged that it serves: %v", sc.Err())
}
