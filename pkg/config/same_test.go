package config

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// sameBase is a valid balancer file with every address and prefix field
// set, in IPv6 where the field takes it: IPv4 has one spelling only
// (netip refuses leading zeros), IPv6 many.
const sameBase = `
datapath: {interface: eth0}
encap: {source_v4: 10.0.0.5, source_v6: fd00:9::5, source_prefix_v4: 172.16.0.0/16, source_prefix_v6: fd00:16::/64}
nexthop: {gateway: fe80::1}
metrics: {listen: "[fd00:9::5]:9301"}
vips:
  - name: web6
    address: fd00:100::1
    port: 80
    health: {type: none}
    backends:
      - {name: be1, address: fd00:2:1::2}
`

// A reload compared addresses as the strings of the file: the same
// address written otherwise (fd00:0:100::1, upper case, leading zeros) was
// a change, and moved the configuration's generation.
func TestSameTakesSpellingsOfOneAddress(t *testing.T) {
	parse := func(t *testing.T, yaml string) *Config {
		t.Helper()
		c, err := Parse([]byte(yaml), "switchyard.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	base := parse(t, sameBase)
	for _, tc := range []struct {
		field, from, respelled, changed string
	}{
		{"encap.source_v6", "source_v6: fd00:9::5", "source_v6: FD00:9:0::0005", "source_v6: fd00:9::6"},
		{"encap.source_prefix_v6", "source_prefix_v6: fd00:16::/64", "source_prefix_v6: FD00:0016:0::/64", "source_prefix_v6: fd00:17::/64"},
		{"nexthop.gateway", "gateway: fe80::1", "gateway: FE80:0::1", "gateway: fe80::2"},
		{"metrics.listen", `listen: "[fd00:9::5]:9301"`, `listen: "[FD00:9::5]:09301"`, `listen: "[fd00:9::5]:9302"`},
		{"vips[0].address", "address: fd00:100::1", "address: fd00:100:0:0:0:0:0:1", "address: fd00:100::2"},
		{"vips[0].backends[0].address", "address: fd00:2:1::2", "address: FD00:2:1::0.0.0.2", "address: fd00:2:1::3"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			respelled := parse(t, strings.Replace(sameBase, tc.from, tc.respelled, 1))
			if reflect.DeepEqual(base, respelled) {
				t.Fatal("the respelled file parses to the same strings: the case tests nothing")
			}
			if !Same(*base, *respelled) {
				t.Errorf("%s written %q is not the same as %q", tc.field, tc.respelled, tc.from)
			}
			if changed := parse(t, strings.Replace(sameBase, tc.from, tc.changed, 1)); Same(*base, *changed) {
				t.Errorf("%s changed to %q is the same as %q", tc.field, tc.changed, tc.from)
			}
		})
	}

	agent := func(vips string) *AgentConfig {
		t.Helper()
		c, err := ParseAgent([]byte("interface: eth0\nencap_addresses: [fd00:2:1::2]\nvips: ["+vips+"]\n"), "agent.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if a, b := agent("fd00:100::1, 10.100.0.1"), agent("FD00:100:0::1, 10.100.0.1"); !Same(*a, *b) {
		t.Errorf("agent vips respelled: %q and %q differ", a.VIPs, b.VIPs)
	}
	if a, b := agent("fd00:100::1, 10.100.0.1"), agent("10.100.0.1, fd00:100::1"); Same(*a, *b) {
		t.Errorf("agent vips reordered: %q and %q are the same", a.VIPs, b.VIPs)
	}
}

// Every field that holds an address or prefix says so in its compare tag:
// one without it would go back to comparing spellings.
func TestAddressFieldsAreTaggedForSame(t *testing.T) {
	addressy := regexp.MustCompile(`address|gateway|source_v|source_prefix|listen|^vips$`)
	var walk func(path string, typ reflect.Type)
	walk = func(path string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			ft := f.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			switch {
			case ft.Kind() == reflect.Struct:
				walk(path+name+".", ft)
			case ft.Kind() == reflect.String && addressy.MatchString(name) && f.Tag.Get("compare") == "":
				t.Errorf("%s%s holds an address but has no compare tag", path, name)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
	walk("agent:", reflect.TypeFor[AgentConfig]())
}

// TestSameComparesMapsWithoutPanic: Same takes any configuration type; a
// map (none in the configuration today) compares as reflect.DeepEqual
// would, where reflect.Value.Equal would panic.
func TestSameComparesMapsWithoutPanic(t *testing.T) {
	type withMap struct{ M map[string]string }
	a, b := withMap{map[string]string{"k": "v"}}, withMap{map[string]string{"k": "v"}}
	if !Same(a, b) {
		t.Errorf("Same(%v, %v) = false, want true", a, b)
	}
	b.M["k"] = "w"
	if Same(a, b) {
		t.Errorf("Same(%v, %v) = true, want false", a, b)
	}
}
