package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobody is the user the tests run the binary as to show what a user who
// is not root gets.
const nobody = 65534

// binaryForNobody copies the test binary, whose directory is root's
// alone, into a directory anyone may enter, and returns its path and that
// directory: files the test writes there can be read by nobody too.
func binaryForNobody(t *testing.T) (bin, dir string) {
	t.Helper()
	dir = t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin = filepath.Join(dir, "switchyard")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, dir
}

// runSwitchyard runs bin as `switchyard args...` (as uid unless it is
// -1) and returns what it printed and its exit status.
func runSwitchyard(t *testing.T, bin string, uid int, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// checkFiles writes a valid balancer file (two VIPs, three backends) and
// a valid agent file into dir, whose sockets are under dir/run and pins
// under pinBase, and returns their paths. Their interface exists nowhere:
// check does not look.
func checkFiles(t *testing.T, dir, pinBase string) (balancerFile, agentFile string) {
	t.Helper()
	balancerFile = filepath.Join(dir, "lb.yaml")
	agentFile = filepath.Join(dir, "be.yaml")
	for path, text := range map[string]string{
		balancerFile: `node: {name: lb1}
datapath: {interface: sycunone0, pin_dir: ` + pinBase + `-lb}
api: {socket: ` + filepath.Join(dir, "run", "switchyard.sock") + `}
metrics: {listen: "127.0.0.1:9301"}
vips:
  - {name: web, address: 10.100.0.1, port: 80, health: {type: none},
     backends: [{name: be1, address: 10.2.1.2}, {name: be2, address: 10.2.1.3}]}
  - {name: dns, address: 10.100.0.2, port: 53, protocol: udp, health: {type: none},
     backends: [{name: be1, address: 10.2.1.2}]}
`,
		agentFile: `node: {name: be1}
interface: sycunone0
encap_addresses: [10.2.1.2]
vips: [10.100.0.1, "fd00:100::1"]
pin_dir: ` + pinBase + `-agent
api: {socket: ` + filepath.Join(dir, "agentrun", "agent.sock") + `}
metrics: {listen: "127.0.0.1:9302"}
`,
	} {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return balancerFile, agentFile
}

// `switchyard check` says whether run, reload and agent would take a
// file, before a reload or an upgrade, without running anything: a valid
// file of each kind, each kind given to the wrong mode (told as run and
// agent tell it, with the mode that reads it), a file with several
// problems (every one, in the words run prints), a missing file and wrong
// command lines.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	lb, be := checkFiles(t, dir, "/sys/fs/bpf/sycu-check-none")
	noEncap := filepath.Join(dir, "be-follow.yaml")
	if err := os.WriteFile(noEncap, []byte("node: {name: be1}\ninterface: sycunone0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	badText := `node: {name: lb1}
datapath: {interface: eth0, udp_idle_timeout: 48h}
vips:
  - name: web
    address: 10.100.0.1
    port: 70000
    health: {type: tcp, interval: 2h, rise: 5000}
    backends: [{name: be1, address: 10.2.1.2}]
`
	if err := os.WriteFile(bad, []byte(badText), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.yaml")
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string   // the whole of it
		stderr []string // each in it
	}{
		{[]string{"check", "--config", lb}, 0, "configuration " + lb + " is valid: 2 VIPs, 3 backends\n", nil},
		{[]string{"check", "--agent", "--config", be}, 0,
			"agent configuration " + be + " is valid: interface sycunone0, 2 VIPs (10.100.0.1, fd00:100::1), encap addresses 10.2.1.2\n", nil},
		{[]string{"check", "--config", noEncap, "--agent"}, 0,
			"agent configuration " + noEncap + " is valid: interface sycunone0, no VIPs (it only decapsulates), encap addresses every address of sycunone0 but link-local ones, followed as they change\n", nil},
		{[]string{"check", "--config", be}, 1, "", []string{
			"switchyard check: " + be + ":2: interface: this is a field of the agent's configuration, not of the balancer's: the file is the agent's (switchyard agent runs it, switchyard check --agent checks it",
			"\nto check it as the agent's file: switchyard check --agent --config " + be + "\n"}},
		{[]string{"check", "--agent", "--config", lb}, 1, "", []string{
			"switchyard check: " + lb + ":2: datapath: this is a field of the balancer's configuration, not of the agent's: the file is the balancer's (switchyard run runs it, switchyard check checks it",
			"\nto check it as the balancer's file: switchyard check --config " + lb + "\n"}},
		{[]string{"check", "--config", bad}, 1, "", []string{
			"switchyard check: " + bad + ":2: datapath.udp_idle_timeout: 48h is above the maximum of 24h",
			"\n" + bad + ":6: vips[0].port: 70000 is out of range",
			"\n" + bad + ":7: vips[0].health.interval: 2h is above the maximum of 1h",
			"\n" + bad + ":7: vips[0].health.rise: 5000 is above the maximum of 1000"}},
		{[]string{"check", "--config", missing}, 1, "", []string{"switchyard check: read config " + missing + ": open " + missing + ": no such file or directory"}},
		{[]string{"check", "--agent", "--config", missing}, 1, "", []string{"switchyard check: read config " + missing + ": open " + missing + ": no such file or directory; pass the path of a config file (configs/agent.yaml"}},
		{[]string{"check", lb}, 2, "", []string{`switchyard check: unexpected argument "` + lb + `"`}},
		{[]string{"check", "--bogus"}, 2, "", []string{"flag provided but not defined: -bogus"}},
		{[]string{"help", "check"}, 0, "", []string{"usage: switchyard check [flags]", "-agent", "-config"}},
	} {
		stdout, stderr, code := runSwitchyard(t, os.Args[0], -1, tc.args...)
		if code != tc.code || stdout != tc.stdout {
			t.Errorf("switchyard %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q", tc.args, code, stdout, stderr, tc.code, tc.stdout)
		}
		for _, want := range tc.stderr {
			if !strings.Contains(stderr, want) {
				t.Errorf("switchyard %q: stderr %q, want %q in it", tc.args, stderr, want)
			}
		}
		if tc.code == 0 && tc.args[0] == "check" && stderr != "" {
			t.Errorf("switchyard %q: stderr %q, want nothing", tc.args, stderr)
		}
	}

	// The problems are those run prints, line for line: check is no
	// second validation that could drift from the daemon's.
	_, checkErr, _ := runSwitchyard(t, os.Args[0], -1, "check", "--config", bad)
	_, runErr, code := runSwitchyard(t, os.Args[0], -1, "run", "--config", bad)
	if code != 1 || strings.TrimPrefix(checkErr, "switchyard check: ") != strings.TrimPrefix(runErr, "switchyard run: ") {
		t.Errorf("check printed %q, run (exit %d) %q: want the same problems", checkErr, code, runErr)
	}
}

// A user who is not root can check a file (in CI, say): nothing check
// does needs a privilege.
func TestCheckAsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to run the binary as another user")
	}
	bin, dir := binaryForNobody(t)
	lb, be := checkFiles(t, dir, "/sys/fs/bpf/sycu-check-none")
	for _, args := range [][]string{{"check", "--config", lb}, {"check", "--agent", "--config", be}} {
		stdout, stderr, code := runSwitchyard(t, bin, nobody, args...)
		if code != 0 || !strings.Contains(stdout, " is valid: ") || stderr != "" {
			t.Errorf("switchyard %q as nobody: exit %d, stdout %q, stderr %q; want exit 0 and the file valid", args, code, stdout, stderr)
		}
	}
}

// check touches nothing a start would: run as root, with the files'
// sockets and pin directories missing, it creates neither (nor the
// sockets' directories, lock files or the agent's state file), where run
// and agent take the socket and pin before they change anything else.
func TestCheckChangesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root, which could create the pins and sockets")
	}
	dir := t.TempDir()
	pinBase := "/sys/fs/bpf/sycu-" + filepath.Base(filepath.Dir(dir))
	lb, be := checkFiles(t, dir, pinBase)
	t.Cleanup(func() {
		os.RemoveAll(pinBase + "-lb")
		os.RemoveAll(pinBase + "-agent")
	})
	for _, args := range [][]string{{"check", "--config", lb}, {"check", "--agent", "--config", be}} {
		stdout, stderr, code := runSwitchyard(t, os.Args[0], -1, args...)
		if code != 0 || !strings.Contains(stdout, " is valid: ") {
			t.Errorf("switchyard %q: exit %d, stdout %q, stderr %q; want exit 0 and the file valid", args, code, stdout, stderr)
		}
	}
	for _, path := range []string{filepath.Join(dir, "run"), filepath.Join(dir, "agentrun"), pinBase + "-lb", pinBase + "-agent"} {
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after check: %v, want it missing", path, err)
		}
	}
}
