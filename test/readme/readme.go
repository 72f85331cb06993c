// Package readme reads the repository's README.md for the tests that hold
// the documentation to the code (every flag, metric, counter, field and
// error documented): one reader, so that they all cut the README's text
// the same way.
package readme

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// path is README.md at the module root, found from this file's place in
// the tree, whatever package's directory the test runs in.
func path() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "README.md")
}

// Text is the whole README.
func Text(tb testing.TB) string {
	tb.Helper()
	data, err := os.ReadFile(path())
	if err != nil {
		tb.Fatal(err)
	}
	return string(data)
}

// from is the README from the first occurrence of start on.
func from(tb testing.TB, start string) string {
	tb.Helper()
	s := Text(tb)
	i := strings.Index(s, start)
	if i < 0 {
		tb.Fatalf("the README has no %q", start)
	}
	return s[i:]
}

// Item is the README's text from the first occurrence of start to the end
// of its paragraph or list item: the next line that starts an item ("- ")
// or a heading ("#"), or an empty line.
func Item(tb testing.TB, start string) string {
	tb.Helper()
	s := from(tb, start)
	for _, end := range []string{"\n- ", "\n#", "\n\n"} {
		if j := strings.Index(s, end); j >= 0 {
			s = s[:j]
		}
	}
	return s
}

// Paragraph is the README's text from the first occurrence of start to
// the next empty line, its lines joined with spaces.
func Paragraph(tb testing.TB, start string) string {
	tb.Helper()
	s, _, _ := strings.Cut(from(tb, start), "\n\n")
	return strings.ReplaceAll(s, "\n", " ")
}

// Section is the README's section under the heading line title (such as
// "## Troubleshooting"), up to the next heading of the same level.
func Section(tb testing.TB, title string) string {
	tb.Helper()
	s := Text(tb)
	i := strings.Index(s, "\n"+title+"\n")
	if i < 0 {
		tb.Fatalf("the README has no %s section", title)
	}
	s = s[i+1:]
	level, _, _ := strings.Cut(title, " ")
	if j := strings.Index(s[len(title):], "\n"+level+" "); j >= 0 {
		s = s[:len(title)+j]
	}
	return s
}
