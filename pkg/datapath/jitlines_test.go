package datapath

import (
	"strings"
	"testing"
)

// TestLoadedJITCode: the JIT layout of a loaded balancer maps its code to
// its source lines, in order, and nothing outside the code to any line.
func TestLoadedJITCode(t *testing.T) {
	requireRoot(t)
	bal, err := LoadBalancer(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	c, err := LoadedJITCode("xdp_balancer")
	if err != nil {
		t.Fatal(err)
	}
	if c.Start == 0 || c.End <= c.Start || len(c.Lines) < 100 {
		t.Fatalf("code [%#x, %#x) with %d lines: want an address, a size and the program's lines", c.Start, c.End, len(c.Lines))
	}
	if c.Lines[0].Addr != c.Start {
		t.Errorf("first line at %#x, want the code's start %#x", c.Lines[0].Addr, c.Start)
	}
	if got := c.Line(c.Start); !strings.HasPrefix(got, "balancer.bpf.c:") || !strings.Contains(got, "int xdp_balancer(") {
		t.Errorf("Line(start) = %q, want the program's first line in balancer.bpf.c", got)
	}
	sawParse := false
	for i, l := range c.Lines {
		if l.Addr < c.Start || l.Addr >= c.End || (i > 0 && l.Addr < c.Lines[i-1].Addr) {
			t.Fatalf("line %d (%s) at %#x: outside [%#x, %#x) or out of order", i, l.Source, l.Addr, c.Start, c.End)
		}
		if got := c.Line(l.Addr); got == "" {
			t.Errorf("Line(%#x) = \"\", want a source line", l.Addr)
		}
		if strings.HasPrefix(l.Source, "parsing.h:") {
			sawParse = true
		}
	}
	if !sawParse {
		t.Errorf("no line of parsing.h: the inlined headers' lines are missing")
	}
	if got := c.Line(c.End); got != "" {
		t.Errorf("Line(end) = %q, want \"\"", got)
	}
	if got := c.Line(c.Start - 1); got != "" {
		t.Errorf("Line(start-1) = %q, want \"\"", got)
	}
	if _, err := LoadedJITCode("no_such_prog"); err == nil || !strings.Contains(err.Error(), "no BPF program named no_such_prog") {
		t.Errorf("unknown program: err = %v, want one naming it", err)
	}
}
