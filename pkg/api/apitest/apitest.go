// Package apitest holds assertions on the API's types that the daemons'
// tests share.
package apitest

import (
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/api"
)

// RequireLastKnownState fails t unless st, the program state of the n-th
// status taken while the kernel refused to let the attachment check read
// the link's, program's and maps' info (EPERM), shows the last state found
// (attached, link pinned, maps pinned), counts no detachment and names the
// check's error: a check that cannot read is not a detachment, nor a
// missing pin.
func RequireLastKnownState(t testing.TB, n int, st api.ProgramState) {
	t.Helper()
	if !st.ProgramAttached || st.ProgramDetached != "" || st.ProgramDetachments != 0 ||
		!strings.Contains(st.AttachCheckError, "operation not permitted") {
		t.Errorf("status %d with the link's info refused: program_attached %v, program_detached %q, program_detachments %d, attach_check_error %q; "+
			"want attached (the last state found), not counted, the check's error shown", n,
			st.ProgramAttached, st.ProgramDetached, st.ProgramDetachments, st.AttachCheckError)
	}
	// Nor is the pin, which the same read checks, said to be gone.
	if !st.LinkPinned || st.LinkPinError != "" {
		t.Errorf("status %d with the link's info refused: link_pinned %v, link_pin_error %q; want pinned (the last state found)", n, st.LinkPinned, st.LinkPinError)
	}
	// Nor the maps, whose check reads their info too: they were said
	// not all pinned, the next run to create them afresh.
	if !st.MapsPinned || st.MapPinError != "" {
		t.Errorf("status %d with the maps' info refused: maps_pinned %v, map_pin_error %q; want pinned (the last state found)", n, st.MapsPinned, st.MapPinError)
	}
}
