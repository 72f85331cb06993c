package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// A killed run leaves its binary directory (some 30 MB) behind: the next
// run removes it, and never the directory of a run still going.
func TestSweepBinaryDirs(t *testing.T) {
	tmp := t.TempDir()
	live, err := makeBinaryDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	// A process that has ended, as a killed run has.
	cmd := exec.Command("cat")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start, err := topology.ProcessStart(cmd.Process.Pid)
	stdin.Close()
	if werr := cmd.Wait(); werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	me, err := topology.ProcessStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string) string {
		t.Helper()
		p := filepath.Join(tmp, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "switchyard"), []byte("binary"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ended := mk(fmt.Sprintf("%s%d-%d-1234", binaryDirPrefix, cmd.Process.Pid, start))
	reused := mk(fmt.Sprintf("%s%d-%d-5678", binaryDirPrefix, os.Getpid(), me+1)) // this pid, another process
	unnamed := mk(binaryDirPrefix + "1234567")                                    // an earlier release's: whose, unknown

	var logged []string
	sweepBinaryDirs(tmp, func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) })
	for _, c := range []struct {
		path string
		kept bool
	}{{live, true}, {unnamed, true}, {ended, false}, {reused, false}} {
		_, err := os.Stat(c.path)
		if kept := err == nil; kept != c.kept {
			t.Errorf("%s: kept %v, want %v (logged %q)", c.path, kept, c.kept, logged)
		}
	}
	if len(logged) != 2 {
		t.Errorf("logged %q, want a line for each of the two directories removed", logged)
	}
}
