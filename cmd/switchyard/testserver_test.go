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

// A listen address the flags got wrong is told by its flag, the only name
// the user knows it by: the errors named the Go fields alone.
func TestTestserverRefusalsNameTheFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "be1", "--http", "", "--udp", ""}, "switchyard testserver: testserver: HTTPAddr (--http) and UDPAddr (--udp) are both empty: set at least one listen address, e.g. --http :80"},
		{[]string{"--name", "be1", "--http", "80"}, `switchyard testserver: testserver: HTTPAddr (--http) "80": address 80: missing port in address (want host:port, e.g. ":80")`},
		{[]string{"--name", "be1", "--http", "", "--udp", "53"}, `testserver: UDPAddr (--udp) "53": `},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"testserver"}, tc.args...)...)
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("switchyard testserver %q: %v, output %q; want a failure with %q", tc.args, err, out, tc.want)
		}
	}
}
