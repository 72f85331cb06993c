// Command jitprof attributes perf samples of a running XDP program to the
// lines of its C source: it reads the program's JIT line info from the
// kernel (pkg/datapath.LoadedJITCode: the program must still be loaded)
// and the sampled instruction addresses from `perf script`, and prints the
// source lines that took the most samples. scripts/profile.sh runs it on
// the new-flow benchmark.
//
// This VM has no PMU, so the samples are cpu-clock interrupts: a stall
// shows on an instruction after the load that caused it, and a line's
// share is to within a few instructions' skid.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

func main() {
	name := flag.String("name", "xdp_balancer", "the program's name (the newest one loaded is taken)")
	data := flag.String("perf", "perf.data", "perf record's output")
	top := flag.Int("top", 25, "how many source lines to print")
	wait := flag.Duration("wait", 0, "with -perf \"\": wait this long for the program to be loaded, then exit")
	flag.Parse()
	if *data == "" {
		if err := waitLoaded(*name, *wait); err != nil {
			fmt.Fprintln(os.Stderr, "jitprof:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*name, *data, *top); err != nil {
		fmt.Fprintln(os.Stderr, "jitprof:", err)
		os.Exit(1)
	}
}

// waitLoaded returns once a program called name is loaded, or fails after
// d.
func waitLoaded(name string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		_, err := datapath.LoadedJITCode(name)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func run(name, data string, top int) error {
	code, err := datapath.LoadedJITCode(name)
	if err != nil {
		return err
	}
	out, err := exec.Command("perf", "script", "-i", data, "-F", "ip").Output()
	if err != nil {
		return fmt.Errorf("perf script -i %s: %w (install linux-perf; run as root)", data, err)
	}
	perLine := map[string]int{}
	var inProg, total int
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		ip, err := strconv.ParseUint(strings.TrimSpace(sc.Text()), 16, 64)
		if err != nil {
			continue
		}
		total++
		if l := code.Line(ip); l != "" {
			inProg++
			perLine[l]++
		}
	}
	if inProg == 0 {
		return fmt.Errorf("none of %d samples in %s's code: was it running while perf recorded?", total, name)
	}
	lines := make([]string, 0, len(perLine))
	for l := range perLine {
		lines = append(lines, l)
	}
	sort.Slice(lines, func(i, j int) bool { return perLine[lines[i]] > perLine[lines[j]] })
	fmt.Printf("%d samples, %.1f%% in %s; its source lines by share of its samples:\n",
		total, 100*float64(inProg)/float64(total), name)
	for i, l := range lines {
		if i == top {
			break
		}
		fmt.Printf("%5.1f%%  %s\n", 100*float64(perLine[l])/float64(inProg), l)
	}
	return nil
}
