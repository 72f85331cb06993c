package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

func TestParseInterspersed(t *testing.T) {
	for _, args := range [][]string{
		{"be1", "--socket", "/x.sock", "--json"},
		{"--socket", "/x.sock", "be1", "--json"},
		{"--json", "--socket=/x.sock", "be1"},
	} {
		var cf clientFlags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		cf.register(fs)
		pos := parseInterspersed(fs, args)
		if !slices.Equal(pos, []string{"be1"}) || cf.socket != "/x.sock" || !cf.json {
			t.Errorf("%q: positionals %q socket %q json %v", args, pos, cf.socket, cf.json)
		}
	}
}

// The CLI commands name the socket and the fix when no daemon answers.
func TestClientCommandsWithoutDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for name, run := range map[string]func([]string) error{
		"status": runStatus, "flows": runFlows, "reload": runReload,
	} {
		err := run([]string{"--socket", sock})
		if !errors.Is(err, api.ErrNoDaemon) || !strings.Contains(err.Error(), sock) {
			t.Errorf("%s: %v, want ErrNoDaemon naming %s", name, err, sock)
		}
	}
	if err := runDrain([]string{"be1", "--socket", sock}); !errors.Is(err, api.ErrNoDaemon) {
		t.Errorf("drain: %v, want ErrNoDaemon", err)
	}
}

// run and agent refuse a bad configuration before touching the system,
// naming the file and line.
func TestRunRefusesInvalidConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("datapath:\n  interface: eth0\n  bogus: 1\n"), 0o600)
	err := runRun([]string{"--config", bad})
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:3") || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("run: %v, want an error naming bad.yaml:3 and the unknown field", err)
	}
	err = runAgent([]string{"--config", filepath.Join(dir, "missing.yaml")})
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("agent: %v, want an error naming the missing file", err)
	}
}

func TestRemoveNeedsATarget(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: remove checks for root first")
	}
	if err := runRemove(nil); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Errorf("remove without a target: %v", err)
	}
	if err := runRemove([]string{"--pin-dir", "/sys/fs/bpf/switchyard-does-not-exist"}); err == nil || !strings.Contains(err.Error(), "nothing pinned") {
		t.Errorf("remove of nothing: %v", err)
	}
}

// Every command that takes no positional arguments refuses one, wherever it
// stands: the flag package stops at it and would ignore the flags after it
// (`flows web --json` printed a table of every VIP's flows; `run my.yaml`
// ran the default configuration file).
func TestCommandsRefuseArguments(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		name string
		run  func([]string) error
		flag []string // a flag the command takes, to put on either side
	}{
		{"status", runStatus, []string{"--socket", sock}},
		{"flows", runFlows, []string{"--socket", sock}},
		{"reload", runReload, []string{"--socket", sock}},
		{"remove", runRemove, []string{"--interface", "eth0"}},
		{"run", runRun, []string{"--log-level", "info"}},
		{"agent", runAgent, []string{"--log-level", "info"}},
	} {
		for _, args := range [][]string{
			append(slices.Clone(tc.flag), "extra"),
			append([]string{"extra"}, tc.flag...),
		} {
			err := tc.run(args)
			if _, ok := errors.AsType[*usageError](err); !ok || !strings.Contains(err.Error(), `unexpected argument "extra"`) {
				t.Errorf("%s %q: %v, want a usage error naming the argument", tc.name, args, err)
			}
		}
	}
	for _, args := range [][]string{{"--socket", sock}, {"a", "b", "--socket", sock}} {
		err := runDrain(args)
		if _, ok := errors.AsType[*usageError](err); !ok {
			t.Errorf("drain %q: %v, want a usage error", args, err)
		}
	}
}

// mainEnv makes the test binary run main with its arguments (TestMain), so
// that a test can see the exit status a user's shell sees.
const mainEnv = "SWITCHYARD_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A failed command exits 1, a command line it cannot take 2 (as the flag
// package does), so scripts can tell them apart.
func TestExitCodes(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"status", "--socket", sock}, 1, "cannot reach switchyard at " + sock},
		{[]string{"drain", "be1", "--socket", sock}, 1, "cannot reach switchyard"},
		{[]string{"status", "--agent", "--socket", sock}, 1, "cannot reach switchyard at " + sock + ": is `switchyard agent` running?"},
		{[]string{"status", "extra", "--socket", sock}, 2, `unexpected argument "extra"`},
		{[]string{"flows", "--socket", sock, "web", "--json"}, 2, `unexpected argument "web"`},
		{[]string{"drain", "--socket", sock}, 2, "usage: switchyard drain"},
		{[]string{"status", "--bogus"}, 2, "flag provided but not defined"},
		// A flag's value is a wrong call too, told before the file is read.
		{[]string{"run", "--log-level", "verbose", "--config", missing}, 2, `--log-level "verbose": use debug, info, warn or error`},
		{[]string{"agent", "--attach-mode", "skb", "--config", missing}, 2, `unknown attach mode "skb": use native, generic or auto`},
		{[]string{"remove"}, 2, "say what to remove"},
		{[]string{"demo", "--requests", "0"}, 2, "--requests 0: give at least 1"},
		{[]string{"remove", "--agent"}, 2, "say what to remove"},
		// Two ways to name one thing: the second went unread, whatever it
		// said. (Old code, as root: exit 1, "read config" or "nothing
		// pinned at" the pin directory, --interface ignored.)
		{[]string{"remove", "--config", missing, "--interface", "eth0"}, 2, "--config and --interface both say what to remove"},
		{[]string{"remove", "--agent", "--config", missing, "--interface", "eth0"}, 2, "--config and --interface both say what to remove"},
		{[]string{"remove", "--interface", "eth0", "--pin-dir", filepath.Join(t.TempDir(), "none")}, 2, "--interface and --pin-dir both name the balancer's pin directory"},
		{[]string{"remove", "--config", missing, "--interface", "eth0", "--pin-dir", filepath.Join(t.TempDir(), "none")}, 2, "--config and --interface both say what to remove"},
		{[]string{"bogus"}, 2, `unknown command "bogus"`},
		{[]string{}, 2, "usage: switchyard COMMAND"},
		{[]string{"help"}, 0, "usage: switchyard COMMAND"},
		// help COMMAND is COMMAND -h; it printed the list of commands,
		// and exited 0 for one that does not exist.
		{[]string{"help", "status"}, 0, "usage: switchyard status [flags]"},
		{[]string{"help", "drain"}, 0, "usage: switchyard drain [flags] BACKEND"},
		{[]string{"help", "bogus"}, 2, `unknown command "bogus"`},
		{[]string{"help", "status", "flows"}, 2, "switchyard help: name one command, not 2"},
		// A flag before the command is not an unknown command.
		{[]string{"--socket", sock, "status"}, 2, `"--socket" is not a command: flags go after the command they belong to`},
		// --version is `switchyard version`, and takes its flags.
		{[]string{"--version"}, 0, ""},
		{[]string{"--version", "extra"}, 2, `switchyard version: unexpected argument "extra"`},
		{[]string{"version", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"-h"}, 0, "`switchyard COMMAND -h` shows a command's flags"},
		{[]string{"status", "-h"}, 0, "-socket"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], tc.args...)
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		code := 0
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("switchyard %q: exit %d, stderr %q; want exit %d with %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}

// A --limit or --timeout that cannot be meant is refused before any
// request: the API reads a limit under 1 as its default of 1000, and a
// timeout of 0 fails every request as "did not answer in time".
func TestClientFlagRanges(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		name string
		run  func([]string) error
		args []string
		msg  string
	}{
		{"flows", runFlows, []string{"--limit", "0"}, "--limit 0: give at least 1"},
		{"flows", runFlows, []string{"--limit", "-5"}, "--limit -5"},
		// A full connection table (16Mi entries) would answer gigabytes
		// and hold the control loop meanwhile.
		{"flows", runFlows, []string{"--limit", "100001"}, "--limit 100001: give at most 100000"},
		{"status", runStatus, []string{"--timeout", "0s"}, "--timeout 0s: give a positive duration"},
		{"reload", runReload, []string{"--timeout", "-1s"}, "--timeout -1s"},
		{"drain", runDrain, []string{"be1", "--timeout", "0"}, "--timeout 0s"},
		// A path a socket cannot have: connecting failed with "invalid
		// argument".
		{"status", runStatus, []string{"--socket", "/" + strings.Repeat("s", api.MaxSocketPath)}, "is 108 bytes, longer than the 107 a unix socket path may have"},
		{"status --agent", runStatus, []string{"--agent", "--socket", "/" + strings.Repeat("s", api.MaxSocketPath)}, "is 108 bytes"},
	} {
		err := tc.run(append([]string{"--socket", sock}, tc.args...))
		if _, ok := errors.AsType[*usageError](err); !ok || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s %q: %v, want a usage error with %q", tc.name, tc.args, err, tc.msg)
		}
	}
	// In range, they pass on to the request. The timeout is one that no
	// dial can outlast (a missing socket fails at once): 1ms ran out
	// first on a loaded machine, and the request ended "did not answer
	// in time" instead of reaching the dial.
	for _, limit := range []string{"1", "100000"} {
		if err := runFlows([]string{"--socket", sock, "--limit", limit, "--timeout", "1m"}); !errors.Is(err, api.ErrNoDaemon) {
			t.Errorf("flows --limit %s --timeout 1m: %v, want ErrNoDaemon", limit, err)
		}
	}
}

// A datapath.interface that names no interface is refused before anything
// is loaded: loaded first, the datapath pinned its maps (64 MiB of
// connection table at the default size) under a directory named for the
// missing interface, and left them there after the error.
func TestRunMissingInterfaceLeavesNoPins(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: run checks for root before the interface")
	}
	const iface = "syRnone0"
	if _, err := net.InterfaceByName(iface); err == nil {
		t.Fatalf("interface %s exists; this test needs a name that does not", iface)
	}
	pinDir := filepath.Join(datapath.BPFFSRoot, "syRif-"+strconv.Itoa(os.Getpid()), iface)
	t.Cleanup(func() {
		if _, err := os.Stat(pinDir); err == nil {
			datapath.RemoveBalancer(pinDir)
		}
		os.Remove(filepath.Dir(pinDir))
	})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "switchyard.yaml")
	body := "node: {name: lb1}\n" +
		"datapath: {interface: " + iface + ", pin_dir: " + pinDir + "}\n" +
		"api: {socket: " + filepath.Join(dir, "sy.sock") + "}\n" +
		"metrics: {listen: \"\"}\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	err := runRun([]string{"--config", cfg, "--log-level", "error"})
	if !errors.Is(err, datapath.ErrNoInterface) || !strings.Contains(err.Error(), `interface "`+iface+`"`) {
		t.Errorf("run on a missing interface: %v, want an error wrapping ErrNoInterface naming %q", err, iface)
	}
	if _, err := os.Stat(pinDir); err == nil {
		t.Errorf("run on a missing interface left pins in %s", pinDir)
	}
}

// remove --interface names an interface, whose pins are under
// /sys/fs/bpf/switchyard: a name that is a path (.., a/b) would make it
// delete a directory of bpffs outside them, another program's pins (with
// "..", all of bpffs). It is refused before anything is removed.
func TestRemoveRefusesAPathForAnInterface(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: remove checks for root first")
	}
	// Not Switchyard's: a directory beside /sys/fs/bpf/switchyard.
	other := filepath.Join(datapath.BPFFSRoot, "aK-other-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Skipf("SKIPPED: cannot create %s (is bpffs mounted?): %v", other, err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	for _, iface := range []string{"../" + filepath.Base(other), "switchyard/../../" + filepath.Base(other)} {
		err := runRemove([]string{"--interface", iface})
		if _, ok := errors.AsType[*usageError](err); !ok || !strings.Contains(err.Error(), "--interface") {
			t.Errorf("remove --interface %s: %v, want a usage error naming --interface", iface, err)
		}
		if _, err := os.Stat(other); err != nil {
			t.Fatalf("remove --interface %s removed %s, which is not Switchyard's", iface, other)
		}
	}
}

// Every command's -h starts with the command line it takes, as
// `switchyard -h` and the README write them: six of them printed the flag
// package's "Usage of status:" instead.
func TestEveryCommandHelpSaysItsUsage(t *testing.T) {
	for _, c := range commands {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], c.name, "-h")
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Errorf("switchyard %s -h: %v; stderr %q", c.name, err, stderr.String())
			continue
		}
		if want := "usage: switchyard " + c.name + " [flags]"; !strings.HasPrefix(stderr.String(), want) {
			t.Errorf("switchyard %s -h printed %q, want it to start with %q", c.name, stderr.String(), want)
		}
	}
}

// A user who is not root gets told to use sudo, by every client command:
// run as nobody against a root-only socket, as the daemons make theirs.
// (pkg/api's TestClientPermissionDenied builds the error by hand.)
func TestClientCommandsAsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to run the binary as another user")
	}
	bin, dir := binaryForNobody(t)
	sock := filepath.Join(dir, "root.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := os.Chmod(sock, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"status"}, {"status", "--agent"}, {"status", "--json"}, {"flows"}, {"reload"}, {"drain", "be1"}, {"undrain", "be1"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, append(args, "--socket", sock)...)
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		ee, ok := errors.AsType[*exec.ExitError](err)
		want := "permission denied on " + sock + ": the switchyard API is root-only; run this as root (e.g. with sudo)"
		if !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), want) || stdout.Len() != 0 {
			t.Errorf("switchyard %q as nobody: %v, stdout %q, stderr %q; want exit 1 with %q on stderr only", args, err, stdout.String(), stderr.String(), want)
		}
	}
}

// warningService answers every drain with a warning holding control
// characters, as a program on the socket that is not this release's
// daemon may.
type warningService struct{ api.Service }

func (warningService) Drain(ctx context.Context, backend string, drain bool) (api.DrainResponse, error) {
	return api.DrainResponse{Matched: []string{"we\x1b[2Jb/" + backend}, Warnings: []string{"VIP we\x1b[2Jb\r has no backend left for new flows"}}, nil
}

func (warningService) Reload(ctx context.Context) (api.ReloadResponse, error) {
	return api.ReloadResponse{Generation: 2, Changed: []string{"VIP we\x1b[2Jb\r added"}}, nil
}

// A drain's warnings and matched names, and a reload's changes, reach the
// operator's terminal escaped, as status writes the daemon's strings: a
// raw escape sequence cleared the screen.
func TestDrainWarningsAreEscaped(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	srv, err := api.NewServer(api.ServerConfig{Socket: sock}, warningService{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, cmdName := range []string{"drain", "undrain"} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], cmdName, "be1", "--socket", sock)
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("switchyard %s: %v, stderr %q", cmdName, err, stderr.String())
		}
		want := "switchyard " + cmdName + `: warning: VIP we\x1b[2Jb\r has no backend left for new flows`
		if !strings.Contains(stderr.String(), want) || strings.ContainsAny(stderr.String(), "\x1b\r") {
			t.Errorf("switchyard %s: stderr %q, want %q with no raw control character", cmdName, stderr.String(), want)
		}
		// The names it matched are the same program's words.
		if want := cmdName + `ed: we\x1b[2Jb/be1`; !strings.Contains(stdout.String(), want) || strings.ContainsAny(stdout.String(), "\x1b\r") {
			t.Errorf("switchyard %s: stdout %q, want %q with no raw control character", cmdName, stdout.String(), want)
		}
	}
	// And so are the changes a reload lists.
	out, err := runMain(t, "reload", "--socket", sock)
	if want := `VIP we\x1b[2Jb\r added`; err != nil || !strings.Contains(out, want) || strings.ContainsAny(out, "\x1b\r") {
		t.Errorf("switchyard reload: %q (%v), want %q with no raw control character", out, err, want)
	}
}

// refusingService refuses every reload with a message of two lines, the
// second holding control characters, as a program on the socket that is
// not this release's daemon may send.
type refusingService struct{ api.Service }

func (refusingService) Reload(ctx context.Context) (api.ReloadResponse, error) {
	return api.ReloadResponse{}, fmt.Errorf("configuration refused (%w):\nline 3: vip we\x1b[2Jb\r\a is not an address", api.ErrRejected)
}

// The daemon's error text reaches the operator's terminal escaped, line
// by line, as its other strings do: main printed it raw, and a raw escape
// sequence cleared the screen.
func TestDaemonErrorIsEscaped(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	srv, err := api.NewServer(api.ServerConfig{Socket: sock}, refusingService{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	out, err := runMain(t, "reload", "--socket", sock)
	if err == nil {
		t.Fatalf("switchyard reload: %q, want an error", out)
	}
	// Its lines stay lines.
	want := "switchyard reload: configuration refused (rejected):\nline 3: vip we\\x1b[2Jb\\r\\a is not an address\n"
	if !strings.Contains(out, want) || strings.ContainsAny(out, "\x1b\r\a") {
		t.Errorf("switchyard reload: stderr %q, want %q with no raw control character", out, want)
	}
}
