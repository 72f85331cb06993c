package api

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/test/readme"
)

// jsonNames are the JSON field names of t and of the structs of this
// package it holds (directly, in slices or by pointer), in order.
func jsonNames(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		if f.Anonymous && f.Tag.Get("json") == "" {
			// Embedded: its fields are the struct's own in JSON.
			out = append(out, jsonNames(f.Type)...)
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		out = append(out, name)
		ft := f.Type
		if ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]() {
			out = append(out, jsonNames(ft)...)
		}
	}
	return out
}

// The README names every field that `switchyard status`, `flows`,
// `drain` and `reload` print with --json, as it does those of `status
// --agent --json`: scripts are written from it.
func TestREADMENamesEveryJSONField(t *testing.T) {
	for _, tc := range []struct {
		start string
		typ   reflect.Type
	}{
		{"`switchyard status --json` gives", reflect.TypeFor[Status]()},
		{"`switchyard flows --json` gives", reflect.TypeFor[FlowsResponse]()},
		{"`switchyard drain --json` (and `undrain`) gives", reflect.TypeFor[DrainResponse]()},
		{"`switchyard reload --json` gives", reflect.TypeFor[ReloadResponse]()},
		{"`--json` gives the same as `node`", reflect.TypeFor[AgentStatus]()},
	} {
		item := readme.Item(t, tc.start)
		for _, name := range jsonNames(tc.typ) {
			if !strings.Contains(item, "`"+name+"`") {
				t.Errorf("the README's %s... does not name the field `%s`", tc.start, name)
			}
		}
	}
}
