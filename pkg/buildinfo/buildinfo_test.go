package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   debug.BuildInfo
		want Info
	}{
		{"go test binary", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: ""}},
			Info{Version: Unknown, Revision: Unknown, GoVersion: "go1.26.8"}},
		{"built outside git", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			Info{Version: Unknown, Revision: Unknown, GoVersion: "go1.26.8"}},
		{"built in a modified git tree", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201115152-f3f1151abcde+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "f3f1151abcde"}, {Key: "vcs.time", Value: "2026-12-01T11:51:52Z"}, {Key: "vcs.modified", Value: "true"}}},
			Info{Version: "v0.0.0-20261201115152-f3f1151abcde+dirty", Revision: "f3f1151abcde", Time: "2026-12-01T11:51:52Z", Modified: true, GoVersion: "go1.26.8"}},
	} {
		if got := FromBuildInfo(&tc.bi); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
