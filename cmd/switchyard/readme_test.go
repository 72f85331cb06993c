package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/test/readme"
)

// commandFlags runs `switchyard NAME -h` (the test binary as switchyard)
// and returns the flags it lists.
func commandFlags(t *testing.T, name string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], name, "-h")
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("switchyard %s -h: %v; stderr %q", name, err, stderr.String())
	}
	// The flag package lists each flag as "  -name" (with " type" if it
	// takes a value) on a line of its own, its usage indented below.
	flagLine := regexp.MustCompile(`^  -([a-z0-9-]+)`)
	var out []string
	sc := bufio.NewScanner(strings.NewReader(stderr.String()))
	for sc.Scan() {
		if m := flagLine.FindStringSubmatch(sc.Text()); m != nil {
			out = append(out, m[1])
		}
	}
	if len(out) == 0 {
		t.Fatalf("switchyard %s -h lists no flags: %q", name, stderr.String())
	}
	return out
}

// The README names every command in its binaries row, documents every
// flag of every command, and names no flag
// that no command has: `demo --keep` and the testserver's flags were
// missing, found only with -h.
func TestREADMENamesEveryCommandAndFlag(t *testing.T) {
	text := readme.Text(t)
	binaries := regexp.MustCompile("(?m)^\\| binaries \\|.*$").FindString(text)
	// `switchyard --version` is main's own, for `switchyard version`.
	all := append(slices.Clone(hiddenRunFlags), "version")
	for _, c := range commands {
		if !strings.Contains(binaries, "`"+c.name+"`") {
			t.Errorf("the README's binaries row (%q) does not name the command %s", binaries, c.name)
		}
		for _, f := range commandFlags(t, c.name) {
			all = append(all, f)
			if !regexp.MustCompile(`--` + regexp.QuoteMeta(f) + `([^a-z0-9-]|$)`).MatchString(text) {
				t.Errorf("switchyard %s has --%s, which the README does not name", c.name, f)
			}
		}
	}
	for _, f := range regexp.MustCompile("(?:^|[\\s\\[(`])--([a-z][a-z0-9-]*)").FindAllStringSubmatch(text, -1) {
		if !slices.Contains(all, f[1]) {
			t.Errorf("the README names --%s, which no command has", f[1])
		}
	}
}

// The README's "Two commands" names every package scripts/install-deps.sh
// installs for `make demo` and `make test` (the benchmark peers aside):
// it said iproute2, util-linux and curl after the script had come to
// install gcc and libc6-dev for the race detector too.
func TestREADMENamesEveryInstalledPackage(t *testing.T) {
	script, err := os.ReadFile("../../scripts/install-deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	para := readme.Paragraph(t, "Both install what they need")
	before, _, _ := strings.Cut(string(script), "if [[ \"${BENCH")
	pkgs := regexp.MustCompile(`need\+=\(([a-z0-9.+-]+)\)`).FindAllStringSubmatch(before, -1)
	if len(pkgs) == 0 {
		t.Fatal("scripts/install-deps.sh installs no package (need+=(...)) before its BENCH part")
	}
	for _, m := range pkgs {
		if !regexp.MustCompile(`(^|[^a-z0-9.+-])` + regexp.QuoteMeta(m[1]) + `([^a-z0-9+-]|$)`).MatchString(para) {
			t.Errorf("scripts/install-deps.sh installs %s, which the README's \"Both install what they need\" does not name", m[1])
		}
	}
}
