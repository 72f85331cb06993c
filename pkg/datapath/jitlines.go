package datapath

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
)

// JITCode is where the kernel's JIT put a loaded program, and which line
// of its C source each stretch of that code came from: what a profiler
// needs to attribute sampled instruction addresses (scripts/jitprof).
type JITCode struct {
	Start, End uint64    // the program's machine code: [Start, End)
	Lines      []JITLine // by Addr, ascending
}

// JITLine is the code of one source line, from Addr up to the next
// JITLine's Addr.
type JITLine struct {
	Addr   uint64
	Source string // "balancer.bpf.c:412 return forward(ctx, &p, vm, &cr, icmp);"
}

// Line returns the source line that the instruction at addr came from, or
// "" if addr is not in the program.
func (c JITCode) Line(addr uint64) string {
	if addr < c.Start || addr >= c.End {
		return ""
	}
	i := sort.Search(len(c.Lines), func(i int) bool { return c.Lines[i].Addr > addr }) - 1
	if i < 0 {
		return ""
	}
	return c.Lines[i].Source
}

// LoadedJITCode reads the JIT code layout of the newest loaded program
// called name (as bpftool lists it: the first 15 characters). It needs
// root, and net.core.bpf_jit_kallsyms on for the code's address.
func LoadedJITCode(name string) (JITCode, error) {
	var info *ebpf.ProgramInfo
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			break
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		pi, err := p.Info()
		p.Close()
		if err == nil && pi.Name == name {
			info = pi
		}
	}
	if info == nil {
		return JITCode{}, fmt.Errorf("no BPF program named %s is loaded", name)
	}
	addrs, ok := info.JitedKsymAddrs()
	if !ok || len(addrs) == 0 {
		return JITCode{}, fmt.Errorf("%s: no JIT address (run as root, with net.core.bpf_jit_kallsyms=1)", name)
	}
	size, err := info.JitedSize()
	if err != nil {
		return JITCode{}, fmt.Errorf("%s: JIT size: %w", name, err)
	}
	starts, ok := info.JitedLineInfos()
	if !ok {
		return JITCode{}, fmt.Errorf("%s: no JIT line info (loaded without BTF?)", name)
	}
	lines, err := info.LineInfos()
	if err != nil {
		return JITCode{}, fmt.Errorf("%s: line info: %w", name, err)
	}
	c := JITCode{Start: uint64(addrs[0])}
	c.End = c.Start + uint64(size)
	for i, l := range lines {
		if i >= len(starts) {
			break
		}
		src := fmt.Sprintf("%s:%d %s", filepath.Base(l.Line.FileName()), l.Line.LineNumber(),
			strings.Join(strings.Fields(l.Line.Line()), " "))
		c.Lines = append(c.Lines, JITLine{starts[i], src})
	}
	sort.SliceStable(c.Lines, func(i, j int) bool { return c.Lines[i].Addr < c.Lines[j].Addr })
	return c, nil
}
