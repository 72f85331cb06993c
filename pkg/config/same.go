package config

import (
	"net/netip"
	"reflect"
)

// Same reports whether a and b, two values of one configuration type
// (Config, AgentConfig, or a struct or field of theirs), configure the same
// thing. It is reflect.DeepEqual but for addresses and prefixes, which are
// kept as the file spells them: a field tagged `compare:"addr"`,
// `compare:"prefix"` or `compare:"hostport"` (a string, or a list of
// them) compares by its parsed, canonical value, so that fd00:0::1,
// FD00::1 and fd00::1 are one address, and a file that only writes one
// differently changes nothing on reload. Values that do not parse (which
// Validate refuses) compare as strings.
func Same(a, b any) bool {
	return sameValue("", reflect.ValueOf(a), reflect.ValueOf(b))
}

// SameField is Same for a and b, two values of the field f of a
// configuration struct: what a reload compares field by field.
func SameField(f reflect.StructField, a, b reflect.Value) bool {
	return sameValue(f.Tag.Get("compare"), a, b)
}

func sameValue(kind string, a, b reflect.Value) bool {
	if a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.String:
		return sameSpelling(kind, a.String(), b.String())
	case reflect.Struct:
		t := a.Type()
		for i := range t.NumField() {
			if !SameField(t.Field(i), a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Len() != b.Len() || a.IsNil() != b.IsNil() {
			return false
		}
		for i := range a.Len() {
			if !sameValue(kind, a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map, reflect.Pointer, reflect.Interface, reflect.Func, reflect.Chan:
		// Not in the configuration today; Equal would panic on a map.
		return reflect.DeepEqual(a.Interface(), b.Interface())
	}
	return a.Equal(b)
}

// sameSpelling compares two spellings of a value of the kind a compare
// tag names.
func sameSpelling(kind, a, b string) bool {
	if a == b {
		return true
	}
	switch kind {
	case "addr":
		pa, errA := netip.ParseAddr(a)
		pb, errB := netip.ParseAddr(b)
		return errA == nil && errB == nil && pa == pb
	case "prefix":
		pa, errA := netip.ParsePrefix(a)
		pb, errB := netip.ParsePrefix(b)
		return errA == nil && errB == nil && pa == pb
	case "hostport":
		// A host name (localhost:9301) is compared as written.
		pa, errA := netip.ParseAddrPort(a)
		pb, errB := netip.ParseAddrPort(b)
		return errA == nil && errB == nil && pa == pb
	}
	return false
}
