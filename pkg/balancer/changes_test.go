package balancer

import (
	"slices"
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/config"
)

// A reload says what it changed, field by field: it said only "vip web:
// backend be1 changed" or "vip web settings changed", so an operator who
// reloaded a file edited by someone else (or by a tool) could not tell a
// weight from an address, and a script could not tell either without
// diffing the files itself.
func TestDescribeChangesNamesTheFields(t *testing.T) {
	parse := func(yaml string) *config.Config {
		t.Helper()
		c, err := config.Parse([]byte(yaml), "switchyard.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := parse(baseConfig)
	for _, tc := range []struct {
		name string
		edit func(string) string
		want []string
	}{
		{"weight", func(s string) string {
			return strings.Replace(s, "{name: be1, address: 10.2.1.2}", "{name: be1, address: 10.2.1.2, weight: 3}", 1)
		}, []string{"vip web: backend be1 changed: weight 1 -> 3"}},
		{"address and drained", func(s string) string {
			return strings.Replace(s, "{name: be2, address: 10.2.2.2}", "{name: be2, address: 10.2.2.9, drained: true}", 1)
		}, []string{"vip web: backend be2 changed: address 10.2.2.2 -> 10.2.2.9, drained false -> true"}},
		{"VIP options and health", func(s string) string {
			return strings.Replace(s, "table_size: 251\n    health: {type: none}\n    backends:\n      - {name: be1, address: 10.2.1.2}\n      - {name: be2",
				"table_size: 509\n    hash: source\n    health: {type: http, path: /health check, interval: 2s}\n    backends:\n      - {name: be1, address: 10.2.1.2}\n      - {name: be2", 1)
		}, []string{`vip web settings changed: hash 5tuple -> source, table_size 251 -> 509, health.type none -> http, health.port 0 -> 80, health.path "" -> "/health check", health.expect_status 0 -> 200, health.interval 1s -> 2s`}},
		{"global settings", func(s string) string {
			return strings.Replace(s, "conn_table_size: 4096\n", "conn_table_size: 4096\n  mtu: 1400\nnode: {name: lb7}\n", 1)
		}, []string{"global settings changed: node.name " + old.Node.Name + " -> lb7, datapath.mtu 0 -> 1400"}},
		// A value too long for a line is left out of it; --json has it.
		{"long value", func(s string) string {
			return strings.Replace(s, "hash: source\n    table_size: 251\n    health: {type: none}",
				"hash: source\n    table_size: 251\n    health: {type: udp, send: "+strings.Repeat("x", 50)+"}", 1)
		}, []string{"vip dns settings changed: health.type none -> udp, health.port 0 -> 53, health.send"}},
		{"added, removed, renamed", func(s string) string {
			s = strings.Replace(s, "      - {name: be3, address: 10.2.3.2, weight: 2}\n", "      - {name: be4, address: 10.2.3.2, weight: 2}\n", 1)
			return s + "  - {name: ssh, address: 10.100.0.2, port: 22, protocol: tcp, health: {type: none}, backends: [{name: be1, address: 10.2.1.2}]}\n"
		}, []string{"vip web: backend be4 added", "vip web: backend be3 removed", "vip ssh added"}},
		// The order of the backends is no change: Maglev sorts them.
		{"reordered", func(s string) string {
			return strings.Replace(s, "      - {name: be1, address: 10.2.1.2}\n      - {name: be2, address: 10.2.2.2}\n",
				"      - {name: be2, address: 10.2.2.2}\n      - {name: be1, address: 10.2.1.2}\n", 1)
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edited := tc.edit(baseConfig)
			if edited == baseConfig {
				t.Fatal("the edit changed nothing in baseConfig")
			}
			changes := describeChanges(old, parse(edited))
			var got []string
			for _, c := range changes {
				got = append(got, c.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("changes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}

	// The structured form, for --json, carries the values whole. (Fields
	// the file leaves out have their defaults: the check's port is the
	// VIP's.)
	long := strings.Repeat("x", 50)
	changes := describeChanges(old, parse(strings.Replace(baseConfig, "hash: source\n    table_size: 251\n    health: {type: none}",
		"hash: source\n    table_size: 251\n    health: {type: udp, send: "+long+"}", 1)))
	want := api.Change{Kind: "changed", VIP: "dns", Fields: []api.FieldChange{
		{Field: "health.type", From: "none", To: "udp"},
		{Field: "health.port", From: "0", To: "53"},
		{Field: "health.send", From: "", To: long},
	}}
	if len(changes) != 1 || changes[0].Kind != want.Kind || changes[0].VIP != want.VIP || changes[0].Backend != "" || !slices.Equal(changes[0].Fields, want.Fields) {
		t.Errorf("changes %+v, want [%+v]", changes, want)
	}
}
