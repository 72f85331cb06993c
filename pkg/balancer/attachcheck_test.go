package balancer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/api/apitest"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/datapath/datapathtest"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// A check that cannot read the program's link (here the kernel refuses
// BPF_OBJ_GET_INFO_BY_FD with EPERM, as a seccomp profile or an LSM policy
// changed under a running daemon would) was reported as a detachment:
// program_detached said "read the balancer program's link: operation not
// permitted", the detachments counter rose, and the daemon logged that
// VIP traffic was not balanced. The program runs on: the check's failure
// is now shown (attach_check_error), logged once, not counted, and the
// last state found stands, detached as well as attached.
func TestAttachCheckFailureIsNoDetachment(t *testing.T) {
	topo := topology.NewForTest(t, topology.Config{Prefix: "sybjac", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	pin := filepath.Join(datapath.BPFFSRoot, fmt.Sprintf("sybj-attachcheck-%d", time.Now().UnixNano()))
	t.Cleanup(func() {
		if err := datapath.RemoveBalancer(pin); err != nil {
			t.Errorf("cleanup: remove pins: %v", err)
		}
	})
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(baseConfig, "interface: lo", "interface: "+topology.EthName, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Datapath.PinDir = pin
	var dp *datapath.Balancer
	if err := topo.Do(node, func() (err error) {
		if dp, err = datapath.LoadBalancer(datapath.Options{PinDir: pin, ConnTableSize: 4096}); err != nil {
			return err
		}
		_, err = dp.Attach(topology.EthName, datapath.AttachGeneric)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	logs := &logRecords{}
	b, _ := runOnDatapath(t, topo, path, cfg, dp, logs)

	// status reads the status on the loop, and denied on a thread that
	// may not read the link's info, while the loop waits.
	status := func() api.Status {
		t.Helper()
		var st api.Status
		if err := b.do(context.Background(), func() { st, _, err = b.status() }); err != nil {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	denied := func(n int) []api.Status {
		t.Helper()
		var sts []api.Status
		var err error
		if derr := b.do(context.Background(), func() {
			err = topology.DenyBPFObjInfo(func() error {
				for range n {
					st, _, err := b.status()
					if err != nil {
						return err
					}
					sts = append(sts, st)
				}
				return nil
			})
		}); derr != nil {
			t.Fatal(derr)
		}
		if err != nil {
			t.Fatal(err)
		}
		return sts
	}
	const (
		notChecked = "could not check that the balancer program still runs on its interface"
		detached   = "the balancer program no longer runs on its interface"
		// What a map pin's check logs when a pin is missing.
		mapsNotPinned = "the balancer program's maps are not all pinned"
	)

	for i, st := range denied(2) {
		apitest.RequireLastKnownState(t, i+1, st.ProgramState)
	}
	if n, m := len(logs.matching(slog.LevelError, notChecked)), len(logs.matching(slog.LevelError, detached)); n != 1 || m != 0 {
		t.Errorf("two failed checks logged %q %d times and %q %d times; want once and never", notChecked, n, detached, m)
	}
	if n := len(logs.matching(slog.LevelError, mapsNotPinned)); n != 0 {
		t.Errorf("two failed checks logged %q %d times; want never", mapsNotPinned, n)
	}
	if st := status(); !st.ProgramAttached || st.AttachCheckError != "" {
		t.Errorf("status once the check works: program_attached %v, attach_check_error %q; want attached, no error", st.ProgramAttached, st.AttachCheckError)
	}

	// Detached: a failed check keeps that too, and counts nothing more.
	if err := datapathtest.DetachPinnedLink(pin); err != nil { // what `bpftool link detach` does
		t.Fatal(err)
	}
	if st := status(); st.ProgramAttached || st.ProgramDetachments != 1 {
		t.Fatalf("status with the link detached: program_attached %v, program_detachments %d; want detached, once", st.ProgramAttached, st.ProgramDetachments)
	}
	if st := denied(1)[0]; st.ProgramAttached || !strings.Contains(st.ProgramDetached, "was detached") || st.ProgramDetachments != 1 || st.AttachCheckError == "" {
		t.Errorf("status with the link detached and its info refused: program_attached %v, program_detached %q, program_detachments %d, attach_check_error %q; "+
			"want detached (the last state found), once, the check's error shown",
			st.ProgramAttached, st.ProgramDetached, st.ProgramDetachments, st.AttachCheckError)
	}
}
