package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// problemPaths are the field paths of the problems err joins, in order.
func problemPaths(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var out []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		out = append(out, fe.Path)
	}
	return out
}

// A field that failed to decode keeps its default, and so does everything
// inside it: the problems validation finds there are noise next to the
// real one and are left out, while those of its siblings, and of fields
// whose path merely starts with the same text (vips[1] and vips[10]), are
// reported.
func TestFailedFieldHidesWhatItHolds(t *testing.T) {
	vip := func(i int, extra string) string {
		return fmt.Sprintf("  - {name: v%d, address: 10.100.0.%d, port: 80%s}", i, i+1, extra)
	}
	var eleven []string
	for i := range 11 {
		eleven = append(eleven, vip(i, ""))
	}
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		// Only the root's problem: no "datapath.interface: required".
		{"root not a mapping", "[1, 2]\n", []string{""}},
		// The VIP failed whole: its missing name, address and port are
		// not reported, vips[10]'s bad port is.
		{"list item, and one whose index starts alike", lines(append(append([]string{"datapath: {interface: eth0}", "vips:", vip(0, "")}, "  - 5"),
			append(eleven[2:10], vip(10, ", hash: nope"))...)...),
			[]string{"vips[1]", "vips[10].hash"}},
		// health failed: its defaults are not checked against the VIP (a
		// udp check would want send); the next VIP's health is.
		{"nested mapping", lines("datapath: {interface: eth0}", "vips:",
			vip(0, ", protocol: udp, health: [udp]"), vip(1, ", health: {type: udp}")),
			[]string{"vips[0].health", "vips[1].health.send"}},
		// A port that did not decode is not also "required".
		{"scalar", lines("datapath: {interface: eth0}", "vips:", "  - {name: web, address: 10.100.0.1, port: http}"),
			[]string{"vips[0].port"}},
		// Two levels down: the backend's bad weight is its only problem,
		// and the backends list that failed hides its VIP's table check.
		{"deep", lines("datapath: {interface: eth0}", "vips:",
			vip(0, ", backends: [{name: be1, address: 10.2.1.2, weight: heavy}, {name: be1, address: 10.2.1.3}]"),
			vip(1, ", table_size: 7, backends: {be1: 10.2.1.2}")),
			[]string{"vips[0].backends[0].weight", "vips[0].backends[1].name", "vips[1].backends", "vips[1].table_size"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "t.yaml")
			if got := problemPaths(t, err); !slices.Equal(got, tc.want) {
				t.Errorf("problems at %q, want %q; the error:\n%v", got, tc.want, err)
			}
		})
	}
}

// manyErrors is a file of n VIPs, each with a field that fails to decode
// and one that validation refuses.
func manyErrors(n int) []byte {
	var b strings.Builder
	b.WriteString("datapath: {interface: eth0}\nvips:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: v%d, address: 10.%d.%d.%d, port: 80, hash: x, weight: %d}\n", i, i>>16&255, i>>8&255, i&255+1, i)
	}
	return []byte(b.String())
}

// A file with tens of thousands of problems is refused in time linear in
// their number: a reload is blocked while it is read. Checking each
// problem against every field that failed took 25 s for 50,000.
func BenchmarkParseManyErrors(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		data := manyErrors(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if _, err := Parse(data, "t.yaml"); err == nil {
					b.Fatal("no error")
				}
			}
		})
	}
}

// A file larger than MaxFileSize is refused before it is read (a sparse
// file: nothing is written to disk), by Load and by a reload alike.
func TestLoadRefusesTooLargeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "switchyard.yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for name, load := range map[string]func(string) error{
		"Load":      func(p string) error { _, err := Load(p); return err },
		"Reload":    func(p string) error { _, err := Reload(p); return err },
		"LoadAgent": func(p string) error { _, err := LoadAgent(p); return err },
	} {
		err := load(path)
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "configuration file is too large: more than 256 MiB") {
			t.Errorf("%s of a file of 256 MiB and a byte: %v, want %v", name, err, ErrTooLarge)
		}
	}
}

// readConfig reads up to its limit and no byte more, from a regular file
// and from one whose size stat does not tell (/dev/zero never ends).
func TestReadConfigLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("node: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := readConfig(path, 9); err != nil || string(data) != "node: {}\n" {
		t.Errorf("9 bytes with a limit of 9: %q, %v", data, err)
	}
	if _, err := readConfig(path, 8); !errors.Is(err, ErrTooLarge) {
		t.Errorf("9 bytes with a limit of 8: %v, want %v", err, ErrTooLarge)
	}
	if _, err := readConfig("/dev/zero", 1<<10); !errors.Is(err, ErrTooLarge) {
		t.Errorf("/dev/zero with a limit of 1 KiB: %v, want %v", err, ErrTooLarge)
	}
}

// Every integer and duration field has its range in intRanges or
// durationRanges, for the error of a value beyond its Go type: a field
// added without one would be told the range of int.
func TestEveryNumberFieldHasARange(t *testing.T) {
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			p := fieldPath(path, name)
			switch {
			case f.Type == reflect.TypeFor[Duration]():
				if _, ok := durationRanges[p]; !ok {
					t.Errorf("%s: no entry in durationRanges", p)
				}
			case f.Type.Kind() == reflect.Int:
				if _, ok := intRanges[p]; !ok {
					t.Errorf("%s: no entry in intRanges", p)
				}
			case f.Type.Kind() == reflect.Struct:
				walk(f.Type, p)
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				walk(f.Type.Elem(), p+"[]")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	walk(reflect.TypeFor[AgentConfig](), "")
	if got := intRange("vips[12].backends[3].weight"); got != "1 to 65535" {
		t.Errorf("the range of vips[12].backends[3].weight is %q, want 1 to 65535", got)
	}
}
