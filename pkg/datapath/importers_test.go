package datapath

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOnlyDatapathImportsEbpf: no Go file of the module outside
// pkg/datapath (test files included; pkg/datapath/datapathtest is inside)
// imports cilium/ebpf or one of its packages. The rest of the code talks
// to the datapath through this package's API (STYLE.md rule 2), so the
// kernel's objects keep one owner: a test that opened a pinned link or map
// by itself tested cilium/ebpf's view of it, not the one the daemon has.
func TestOnlyDatapathImportsEbpf(t *testing.T) {
	root := moduleRoot(t)
	datapathDir := filepath.Join(root, "pkg", "datapath")
	const ebpfPath = "github.com/cilium/ebpf"
	var offenders []string
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			// What the go command ignores too: not part of the module's
			// packages.
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			if path == datapathDir {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		files++
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			if p == ebpfPath || strings.HasPrefix(p, ebpfPath+"/") {
				rel, _ := filepath.Rel(root, path)
				offenders = append(offenders, rel+" imports "+p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("found no Go file outside pkg/datapath under %s: the test proves nothing", root)
	}
	if len(offenders) > 0 {
		t.Errorf("only pkg/datapath may import cilium/ebpf (STYLE.md rule 2); move what these need into pkg/datapath, or pkg/datapath/datapathtest for test support:\n%s",
			strings.Join(offenders, "\n"))
	}
}

// moduleRoot is the directory of the go.mod above the test's directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
