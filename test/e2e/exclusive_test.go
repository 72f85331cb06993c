package e2e

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/datapath/datapathtest"
	"github.com/switchyard-lb/switchyard/pkg/demo"
)

// linkProgram is the ID of the program on the link pinned in pinDir.
func linkProgram(t *testing.T, pinDir string) uint32 {
	t.Helper()
	id, err := datapathtest.PinnedLinkProgramID(pinDir)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestSecondDaemonTouchesNothing: a second `switchyard run` of a running
// balancer's configuration (a unit started twice, a manual run beside the
// service) is refused before it loads anything, and `switchyard remove`
// refuses the running balancer's pins. The second daemon used to load and
// attach first, and so swap its program into the running one's link and
// rewrite its pinned maps, before its API socket turned it away.
func TestSecondDaemonTouchesNothing(t *testing.T) {
	lab := newLab(t, demo.LabConfig{})
	ctx := testContext(t, time.Minute)
	before, err := lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	web := demo.URL(demo.WebVIP, "/")
	spread(t, ctx, lab, web, 10)
	progBefore := linkProgram(t, lab.PinDir(1))

	// Another program variant: had it been swapped in, the tag would
	// show it.
	topo := lab.Topology()
	out, err := topo.Command(within(t, ctx, 30*time.Second), topo.Balancer(1), lab.Binary(),
		"run", "--program-variant", "1", "--config", lab.ConfigPath(1)).CombinedOutput()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 1 {
		t.Fatalf("second switchyard run: %v, want exit 1\n%s", err, out)
	}
	if want := "pin directory " + lab.PinDir(1) + ": in use by a running switchyard: a balancer already runs on it"; !strings.Contains(string(out), want) {
		t.Errorf("second switchyard run said:\n%s\nwant %q", out, want)
	}
	st, err := lab.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if st.ProgramTag != before.ProgramTag {
		t.Errorf("program tag %s after a second run was refused, want the running one's %s", st.ProgramTag, before.ProgramTag)
	}
	if got := linkProgram(t, lab.PinDir(1)); got != progBefore {
		t.Errorf("the pinned link runs program %d after a second run was refused, want the running daemon's %d", got, progBefore)
	}

	out, err = exec.CommandContext(within(t, ctx, 30*time.Second), lab.Binary(), "remove", "--config", lab.ConfigPath(1)).CombinedOutput()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "stop that switchyard run (SIGTERM) first") {
		t.Errorf("switchyard remove of a running balancer's pins: %v\n%s\nwant exit 1 telling to stop it first", err, out)
	}
	if _, err := os.Stat(lab.PinDir(1) + "/link"); err != nil {
		t.Errorf("the running balancer's pinned link after a refused remove: %v", err)
	}
	spread(t, ctx, lab, web, 10)
}
