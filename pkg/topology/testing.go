package topology

import (
	"bufio"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

const prefixAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// RandomPrefix returns base followed by random letters and digits up to
// MaxPrefixLen characters, so that parallel runs get distinct namespace
// names. base is cut to MaxPrefixLen-2 characters so that at least two
// random characters remain. Few random characters can collide; New then
// fails with ErrPrefixInUse (it never takes over existing namespaces), and
// the caller draws again, as NewForTest does.
func RandomPrefix(base string) string {
	if len(base) > MaxPrefixLen-2 {
		base = base[:MaxPrefixLen-2]
	}
	b := []byte(base)
	for len(b) < MaxPrefixLen {
		b = append(b, prefixAlphabet[rand.IntN(len(prefixAlphabet))])
	}
	return string(b)
}

// NewForTest builds a topology for a test and closes it in tb.Cleanup.
// cfg.Prefix is the base of a RandomPrefix ("sytopo", "sye2e"); on a name
// collision NewForTest draws another. It skips the test, loudly, when not
// running as root, and fails it when the topology cannot be built. First
// it sweeps what killed test runs left (SweepTestOrphans).
func NewForTest(tb testing.TB, cfg Config) *Topology {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("SKIPPED: NOT ROOT — this test builds network namespaces and needs root (run `sudo go test`)")
	}
	SweepTestOrphans(tb.Logf)
	base := cfg.Prefix
	for attempt := 0; ; attempt++ {
		cfg.Prefix = RandomPrefix(base)
		topo, err := New(cfg)
		if errors.Is(err, ErrPrefixInUse) && attempt < 10 {
			continue
		}
		if err != nil {
			tb.Fatalf("build topology: %v", err)
		}
		tb.Cleanup(func() {
			if err := topo.Close(); err != nil {
				tb.Errorf("close topology %s: %v", cfg.Prefix, err)
			}
		})
		return topo
	}
}

// SweepTestOrphans runs SweepOrphans and logs a line for each topology it
// removed, and its error: leftovers that cannot be removed are reported,
// not a reason to fail a test that does not build on them.
func SweepTestOrphans(logf func(format string, args ...any)) {
	swept, err := SweepOrphans()
	for _, o := range swept {
		logf("swept the leftovers of a killed run: %s", o)
	}
	if err != nil {
		logf("sweeping the leftovers of killed runs: %v", err)
	}
}

// KillAfterReady runs this test binary again as a child that runs only the
// test named run, with env added to its environment, waits for the child
// to print a line "ready PREFIX FIELD...", where PREFIX is that of the
// topology it built, SIGKILLs it (as Ctrl-C or a -timeout panic would end
// a test run, with no cleanup) and returns the fields (PREFIX first) and
// the child's pid. It fails tb if the child ends, or ctx does, before it
// is ready. A child left running by a failed tb is killed at tb's end.
//
// From before the kill until release is called (at the latest at tb's
// end), this process holds the topology's marker locked, as a sweep in
// progress does, so that no other sweep takes what the kill left: go test
// runs packages in parallel, each NewForTest sweeps, and one that came
// between the kill and tb's first look at the leftovers removed them
// under it. Call release before tb's own SweepOrphans.
func KillAfterReady(tb testing.TB, ctx context.Context, run string, env ...string) (fields []string, pid int, release func()) {
	tb.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+run+"$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	killed := false
	tb.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				ready <- strings.Fields(rest)
				return
			}
		}
		ready <- nil
	}()
	select {
	case fields = <-ready:
		if len(fields) == 0 {
			tb.Fatalf("the child process (%s) ended before it was ready, or its ready line named no topology", run)
		}
	case <-ctx.Done():
		tb.Fatalf("the child process (%s) was not ready in time", run)
	}
	// Blocking: a sweep holds the marker of a live owner only while it
	// reads it, and the child let go of it once it had built.
	marker, err := lockMarker(fields[0], false, true)
	if err != nil {
		tb.Fatal(err)
	}
	if marker == nil {
		tb.Fatalf("the child process (%s) is ready, but topology %s of its ready line has no marker", run, fields[0])
	}
	var once sync.Once
	release = func() { once.Do(func() { marker.Close() }) }
	tb.Cleanup(release)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	cmd.Wait()
	killed = true
	return fields, cmd.Process.Pid, release
}

// EthXDPProgID is the ID of the XDP program node's eth0 runs (0: none),
// failing tb if it cannot be read.
func (t *Topology) EthXDPProgID(tb testing.TB, node string) uint32 {
	tb.Helper()
	id, err := t.XDPProgID(node, EthName)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// ReuseEthIndex deletes node's eth0 and gives its index to a new veth
// named name (peer peer), whose GRO it turns off, as an admin's would
// be: the device that a record naming eth0 and its index (GRO, sysctls)
// points at by the index alone. It returns the index.
func (t *Topology) ReuseEthIndex(tb testing.TB, node, name, peer string) int {
	tb.Helper()
	eth, err := t.Link(node, EthName)
	if err != nil {
		tb.Fatal(err)
	}
	index := eth.Attrs().Index
	err = t.Netlink(node, func(h *netlink.Handle) error {
		if err := h.LinkDel(eth); err != nil {
			return err
		}
		return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, Index: index}, PeerName: peer})
	})
	if err != nil {
		tb.Fatal(err)
	}
	if l, err := t.Link(node, name); err != nil || l.Attrs().Index != index {
		tb.Fatalf("the new veth %s did not take eth0's index %d (%v), so the test proves nothing", name, index, err)
	}
	if err := t.SetGRO(node, name, false); err != nil {
		tb.Fatal(err)
	}
	return index
}
