package agent

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/api/apitest"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/datapath/datapathtest"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// logBuffer holds what an agent logged, written by its watcher while the
// test reads it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// TestDecapDetachedShows: the decap program's link detached from under a
// running agent (`bpftool link detach`, here followed by another tool's
// XDP program on the interface), or updated to another program, left the
// agent running and its status and metrics saying all was well, while
// nothing was decapsulated. The agent now finds it on its watcher's
// rounds, without a status call, logs it once for each time, shows it in
// its status and metrics, and does not attach its program again over the
// other one; once that is off, a restart attaches it again.
func TestDecapDetachedShows(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	logs := &logBuffer{}
	a := newAgentLogs(t, c, logs)
	a.attachCheckEvery = 20 * time.Millisecond
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.Collector())
	status := func() api.AgentStatus {
		t.Helper()
		st, err := a.AgentStatus(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	const logged = "the decap program no longer runs on its interface, though the agent runs"
	waitLogged := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(testTimeout); logs.count(logged) < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the agent logged %q %d times within %s, want %d", logged, logs.count(logged), testTimeout, n)
			}
		}
	}
	if st := status(); !st.ProgramAttached || st.ProgramDetached != "" {
		t.Fatalf("status after Start: program_attached %v, program_detached %q; want attached", st.ProgramAttached, st.ProgramDetached)
	}
	if m := gather(t, reg); m["switchyard_agent_decap_attached"] != 1 || m["switchyard_agent_decap_detachments_total"] != 0 {
		t.Errorf("after Start: switchyard_agent_decap_attached %v, switchyard_agent_decap_detachments_total %v; want 1 and 0",
			m["switchyard_agent_decap_attached"], m["switchyard_agent_decap_detachments_total"])
	}

	l, err := datapathtest.OpenPinnedLink(c.PinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	// The link made to run another program, and back.
	restore, err := l.RunRival()
	if err != nil {
		t.Fatal(err)
	}
	waitLogged(1)
	if st := status(); st.ProgramAttached || st.ProgramDetachments != 1 || !strings.Contains(st.ProgramDetached, "instead of the agent's") {
		t.Errorf("status with the link updated to another program: program_attached %v, program_detachments %d, program_detached %q; want not attached, once, naming the other program",
			st.ProgramAttached, st.ProgramDetachments, st.ProgramDetached)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if st := status(); !st.ProgramAttached || st.ProgramDetached != "" || st.ProgramDetachments != 1 {
		t.Errorf("status with the link updated back: program_attached %v, program_detached %q, program_detachments %d; want attached, found detached once",
			st.ProgramAttached, st.ProgramDetached, st.ProgramDetachments)
	}
	if logs.count("the decap program runs on its interface again") != 1 {
		t.Errorf("the agent did not log once that its program runs again")
	}

	// The link detached, and another tool's program attached.
	if err := l.Detach(); err != nil { // what `bpftool link detach` does
		t.Fatal(err)
	}
	if err := datapath.AttachPass(topo.NsHandle(be), topology.EthName); err != nil {
		t.Fatal(err)
	}
	passID := topo.EthXDPProgID(t, be)
	waitLogged(2)
	// Read from this test's thread, outside the backend's namespace: the
	// program named is the backend's eth0's.
	st := status()
	if st.ProgramAttached || st.ProgramDetachments != 2 || !strings.Contains(st.ProgramDetached, "was detached from the interface") ||
		!strings.Contains(st.ProgramDetached, fmt.Sprintf(`XDP program ID %d "xdp_pass" now`, passID)) {
		t.Errorf("status with the link detached: program_attached %v, program_detachments %d, program_detached %q; want not attached, twice, saying the link was detached and xdp_pass (ID %d) runs now",
			st.ProgramAttached, st.ProgramDetachments, st.ProgramDetached, passID)
	}
	var text strings.Builder
	if err := api.WriteAgentStatus(&text, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "NOT ATTACHED: encapsulated packets are not decapsulated; its link") {
		t.Errorf("status --agent does not say the decap program is not attached:\n%s", text.String())
	}
	if m := gather(t, reg); m["switchyard_agent_decap_attached"] != 0 || m["switchyard_agent_decap_detachments_total"] != 2 {
		t.Errorf("with the link detached: switchyard_agent_decap_attached %v, switchyard_agent_decap_detachments_total %v; want 0 and 2",
			m["switchyard_agent_decap_attached"], m["switchyard_agent_decap_detachments_total"])
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %+v", err, problems)
	}
	if n := logs.count(logged); n != 2 {
		t.Errorf("the detachments were logged %d times, want twice (once each)", n)
	}
	if now := topo.EthXDPProgID(t, be); now != passID {
		t.Errorf("eth0 runs XDP program %d, want the other tool's %d, left in place", now, passID)
	}

	// The fix the README gives: a stop, the other program off, a start.
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop with the program detached: %v", err)
	}
	err = topo.Do(be, func() error {
		eth, err := netlink.LinkByName(topology.EthName)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(eth, -1, 1<<2) // XDP_FLAGS_DRV_MODE
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("Start again: %v", err)
	}
	if st := status(); !st.ProgramAttached || st.ProgramDetachments != 0 {
		t.Errorf("status after a restart: program_attached %v, program_detachments %d; want attached, none", st.ProgramAttached, st.ProgramDetachments)
	}
	if now := topo.EthXDPProgID(t, be); now == 0 || now == passID {
		t.Errorf("eth0 runs XDP program %d after a restart (xdp_pass was %d), want the decap program", now, passID)
	}
}

// TestAttachCheckFailureIsNoDetachment: a check that cannot read the
// decap program's link (here the kernel refuses BPF_OBJ_GET_INFO_BY_FD
// with EPERM, as a seccomp profile or an LSM policy changed under a
// running agent would) was reported as a detachment: program_detached
// said "read the decap program's link: operation not permitted", the
// detachments counter rose, and the agent logged that its program no
// longer ran. The program runs on: the check's failure is now shown
// (attach_check_error), logged once, not counted, and the last state
// found stands, detached as well as attached.
func TestAttachCheckFailureIsNoDetachment(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	logs := &logBuffer{}
	a := newAgentLogs(t, c, logs)
	// Only the status calls check, each on the thread the test chooses.
	a.attachCheckEvery = time.Hour
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	status := func() api.AgentStatus {
		t.Helper()
		st, err := a.AgentStatus(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	denied := func() api.AgentStatus {
		t.Helper()
		var st api.AgentStatus
		if err := topology.DenyBPFObjInfo(func() (err error) {
			st, err = a.AgentStatus(context.Background())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	const (
		notChecked = "could not check that the decap program still runs on its interface"
		detached   = "the decap program no longer runs on its interface"
		// What a map pin's check logs when a pin is missing.
		mapsNotPinned = "the decap program's maps are not all pinned"
	)

	for i := range 2 {
		st := denied()
		apitest.RequireLastKnownState(t, i+1, st.ProgramState)
	}
	if n, m := logs.count(notChecked), logs.count(detached); n != 1 || m != 0 {
		t.Errorf("two failed checks logged %q %d times and %q %d times; want once and never", notChecked, n, detached, m)
	}
	if n := logs.count(mapsNotPinned); n != 0 {
		t.Errorf("two failed checks logged %q %d times; want never", mapsNotPinned, n)
	}
	if st := status(); !st.ProgramAttached || st.AttachCheckError != "" {
		t.Errorf("status once the check works: program_attached %v, attach_check_error %q; want attached, no error", st.ProgramAttached, st.AttachCheckError)
	}

	// Detached: a failed check keeps that too, and counts nothing more.
	if err := datapathtest.DetachPinnedLink(c.PinDir); err != nil {
		t.Fatal(err)
	}
	if st := status(); st.ProgramAttached || st.ProgramDetachments != 1 {
		t.Fatalf("status with the link detached: program_attached %v, program_detachments %d; want detached, once", st.ProgramAttached, st.ProgramDetachments)
	}
	if st := denied(); st.ProgramAttached || !strings.Contains(st.ProgramDetached, "was detached") || st.ProgramDetachments != 1 || st.AttachCheckError == "" {
		t.Errorf("status with the link detached and its info refused: program_attached %v, program_detached %q, program_detachments %d, attach_check_error %q; "+
			"want detached (the last state found), once, the check's error shown",
			st.ProgramAttached, st.ProgramDetached, st.ProgramDetachments, st.AttachCheckError)
	}
}
