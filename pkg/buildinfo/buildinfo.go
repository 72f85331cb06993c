// Package buildinfo says which build of switchyard this is: the module
// version and the VCS revision `go build` embeds from git, and the Go
// version. `switchyard version`, both daemons' status and their
// switchyard_build_info metrics show it, so that after an in-place upgrade
// an operator can check which binary runs.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// Unknown stands for what the binary does not record: a binary built
// without VCS information (`go test`, `go build -buildvcs=false`, a build
// outside a git checkout) has no revision.
const Unknown = "unknown"

// Info is one build of switchyard.
type Info struct {
	// Version is the module version: a release tag, or the pseudo-version
	// `go build` derives from git (with +dirty for a modified tree).
	Version string `json:"version"`
	// Revision is the git commit the binary was built from; Time is its
	// commit time (RFC 3339, "" if unknown); Modified says the tree had
	// changes not committed.
	Revision  string `json:"revision"`
	Time      string `json:"revision_time,omitempty"`
	Modified  bool   `json:"modified"`
	GoVersion string `json:"go_version"`
}

// Read returns this binary's build information.
var Read = sync.OnceValue(func() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: Unknown, Revision: Unknown, GoVersion: runtime.Version()}
	}
	return FromBuildInfo(bi)
})

// FromBuildInfo is the Info of bi, "unknown" for what it lacks.
func FromBuildInfo(bi *debug.BuildInfo) Info {
	in := Info{Version: bi.Main.Version, Revision: Unknown, GoVersion: bi.GoVersion}
	if in.Version == "" || in.Version == "(devel)" {
		in.Version = Unknown
	}
	if in.GoVersion == "" {
		in.GoVersion = runtime.Version()
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}
