package config

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/test/readme"
)

// parenthesis is the text of s from start to the parenthesis that closes
// the one start is in (or opens, if it ends with one).
func parenthesis(t *testing.T, s, start string) string {
	t.Helper()
	i := strings.Index(s, start)
	if i < 0 {
		t.Fatalf("the README has no %q", start)
	}
	depth := 1
	if strings.HasSuffix(start, "(") {
		depth = 0
	}
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return s[i:j]
			}
		}
	}
	return s[i:]
}

// yamlNames are the YAML field names of typ.
func yamlNames(typ reflect.Type) []string {
	var out []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		out = append(out, name)
	}
	return out
}

// The README's Configuration section names each file's sections, and
// each field of a VIP, its health check and its backends (in prose:
// table_size as "table size"), so that the overview a reader starts
// from leaves none out: it did not mention health.port.
func TestREADMENamesEveryConfigField(t *testing.T) {
	balancer := readme.Paragraph(t, "Main sections of the balancer file:")
	for _, name := range yamlNames(reflect.TypeFor[Config]()) {
		if !strings.Contains(balancer, "`"+name+"`") {
			t.Errorf("the README's balancer sections do not name `%s`", name)
		}
	}
	// A VIP's and a backend's fields are written as words ("VIP names
	// match"), a health check's as names: "port" is a word of its prose
	// too.
	for _, tc := range []struct {
		typ   reflect.Type
		text  string
		quote bool
	}{
		{reflect.TypeFor[VIP](), balancer[strings.Index(balancer, "and `vips`, each with"):strings.Index(balancer, "backend names are")], false},
		{reflect.TypeFor[Health](), parenthesis(t, balancer, "health check ("), true},
		{reflect.TypeFor[Backend](), parenthesis(t, balancer, "backends ("), false},
	} {
		for _, name := range yamlNames(tc.typ) {
			var ok bool
			switch {
			case name == "type" || name == "health":
				continue // named by its values (`tcp`, `http`, ...), or its parenthesis
			case tc.quote:
				ok = strings.Contains(tc.text, "`"+name+"`")
			default:
				ok = regexp.MustCompile(`(^|[^a-z_])(` + regexp.QuoteMeta(name) + `|` + strings.ReplaceAll(name, "_", " ") + `)s?([^a-z_]|$)`).MatchString(tc.text)
			}
			if !ok {
				t.Errorf("the README's Configuration does not name %s's field %s in %q", tc.typ.Name(), name, tc.text)
			}
		}
	}
	agent := readme.Paragraph(t, "The agent's file holds")
	for _, name := range yamlNames(reflect.TypeFor[AgentConfig]()) {
		if !strings.Contains(agent, "`"+name+"`") {
			t.Errorf("the README's agent file paragraph does not name `%s`", name)
		}
	}
}
