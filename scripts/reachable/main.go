// Command reachable counts the instructions of the balancer program that
// the IPv4 common path can reach: from xdp_balancer's entry, without the
// branch into parse_rest (the target of parse_common's first conditional
// jump, its frame-length test, which every other PARSE_MORE test jumps to
// as well). A change off the common path must leave this number, and with
// -list the instructions themselves, as they were. Needs llvm-objdump-16.
//
//	go run ./scripts/reachable pkg/datapath/balancer_bpfel.o
//	go run ./scripts/reachable -list OLD.o > old; go run ./scripts/reachable -list NEW.o > new; diff old new
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var (
	insnLine = regexp.MustCompile(`^\s*(\d+):\s+(.*)$`)
	jump     = regexp.MustCompile(`goto ([+-](?:0x[0-9a-f]+|\d+))`)
	label    = regexp.MustCompile(`\s*<[^>]*>`)
)

func main() {
	objdump := flag.String("objdump", "llvm-objdump-16", "the llvm-objdump to disassemble with")
	section := flag.String("section", "xdp", "the program's ELF section")
	list := flag.Bool("list", false, "print the reachable instructions (jump targets left out), then the count")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: reachable [-list] OBJECT.o")
		os.Exit(2)
	}
	out, err := exec.Command(*objdump, "-d", "--no-show-raw-insn", "--section="+*section, flag.Arg(0)).Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "reachable: %s %s: %v\n", *objdump, flag.Arg(0), err)
		os.Exit(1)
	}
	insns := map[int]string{}
	var idx []int
	for _, l := range strings.Split(string(out), "\n") {
		m := insnLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		i, _ := strconv.Atoi(m[1])
		insns[i] = strings.TrimSpace(m[2])
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		fmt.Fprintf(os.Stderr, "reachable: no instructions in section %s of %s\n", *section, flag.Arg(0))
		os.Exit(1)
	}
	// Indices count 8-byte slots (a 64-bit immediate load takes two), as
	// jump offsets do.
	next := map[int]int{}
	for k := 0; k+1 < len(idx); k++ {
		next[idx[k]] = idx[k+1]
	}
	succ := func(i int) []int {
		s := insns[i]
		var out []int
		if s == "exit" {
			return nil
		}
		if m := jump.FindStringSubmatch(s); m != nil {
			off, _ := strconv.ParseInt(m[1], 0, 64)
			out = append(out, i+1+int(off))
			if strings.HasPrefix(s, "goto") {
				return out
			}
		}
		if n, ok := next[i]; ok {
			out = append(out, n)
		}
		return out
	}
	cut := -1
	for _, i := range idx {
		if strings.HasPrefix(insns[i], "if ") && jump.MatchString(insns[i]) {
			cut = succ(i)[0]
			break
		}
	}
	seen := map[int]bool{}
	stack := []int{idx[0]}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[i] || i == cut {
			continue
		}
		seen[i] = true
		stack = append(stack, succ(i)...)
	}
	if *list {
		var r []int
		for i := range seen {
			r = append(r, i)
		}
		sort.Ints(r)
		for _, i := range r {
			fmt.Println(jump.ReplaceAllString(label.ReplaceAllString(insns[i], ""), "goto"))
		}
	}
	fmt.Printf("%s: %d instructions reachable on the common path (of %d; parse_rest from slot %d)\n",
		flag.Arg(0), len(seen), len(idx), cut)
}
