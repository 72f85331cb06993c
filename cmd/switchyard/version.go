package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/switchyard-lb/switchyard/pkg/buildinfo"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

// versionInfo is what `switchyard version --json` prints.
type versionInfo struct {
	buildinfo.Info
	// Programs are the kernel tags of the embedded BPF programs, to
	// compare with the program_tag of `switchyard status` (and status
	// --agent); ProgramsError says why they could not be computed.
	Programs      *datapath.EmbeddedTags `json:"programs,omitempty"`
	ProgramsError string                 `json:"programs_error,omitempty"`
}

func runVersion(args []string) error {
	fs := newFlagSet("version")
	jsonOut := fs.Bool("json", false, "print JSON for scripts")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	v := versionInfo{Info: buildinfo.Read()}
	if tags, err := datapath.ReadEmbeddedTags(); err != nil {
		v.ProgramsError = err.Error()
	} else {
		v.Programs = &tags
	}
	if *jsonOut {
		return printJSON(v)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "version:\t%s\n", v.Version)
	rev := v.Revision
	if v.Time != "" {
		rev += " (" + v.Time + ")"
	}
	if v.Modified {
		rev += ", modified: built with changes not committed"
	}
	fmt.Fprintf(tw, "revision:\t%s\n", rev)
	fmt.Fprintf(tw, "go:\t%s\n", v.GoVersion)
	if v.Programs != nil {
		fmt.Fprintf(tw, "balancer program:\t%s\n", v.Programs.Balancer)
		fmt.Fprintf(tw, "decap program:\t%s\n", v.Programs.Decap)
		fmt.Fprintf(tw, "\t(kernel tags, %s as this kernel computes them: `switchyard status` shows the running program's as program_tag)\n", v.Programs.Hash)
	} else {
		fmt.Fprintf(tw, "programs:\tunknown: %s\n", v.ProgramsError)
	}
	return tw.Flush()
}
