package balancer

import (
	"slices"
	"strings"
	"testing"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
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

// respellConfig is baseConfig with an IPv6 VIP and every global address
// field set, and respelled, the same file with each of those addresses
// written another way: IPv4 has one spelling (netip refuses leading
// zeros), IPv6 many.
var respellConfig = strings.Replace(baseConfig, "metrics:\n  listen: \"\"\n",
	"metrics:\n  listen: \"[fd00:9::5]:9301\"\nencap: {source_v6: fd00:9::5, source_prefix_v6: fd00:16::/64}\nnexthop: {gateway: fe80::1}\n", 1) + `  - name: web6
    address: fd00:100::1
    port: 80
    table_size: 251
    health: {type: none}
    backends:
      - {name: be1, address: fd00:2:1::2}
      - {name: be2, address: fd00:2:2::2}
`

var respelled = strings.NewReplacer(
	"[fd00:9::5]:9301", "[FD00:9::5]:09301",
	"source_v6: fd00:9::5", "source_v6: FD00:9:0::0005",
	"fd00:16::/64", "FD00:0016:0::/64",
	"fe80::1", "FE80:0::1",
	"address: fd00:100::1", "address: fd00:100:0:0:0:0:0:1",
	"fd00:2:1::2", "fd00:2:1::0.0.0.2",
	"fd00:2:2::2", "FD00:2:2:0::2",
).Replace(respellConfig)

// A reload compared addresses as the file spells them: fd00::1 written
// fd00:0::1 or FD00::1 was a changed backend, VIP or setting in the
// reload's lines, and a new generation of a configuration that did not
// change.
func TestDescribeChangesComparesAddressesParsed(t *testing.T) {
	parse := func(yaml string) *config.Config {
		t.Helper()
		c, err := config.Parse([]byte(yaml), "switchyard.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old, cur := parse(respellConfig), parse(respelled)
	if cur.VIPByName("web6").Backends[0].Address == old.VIPByName("web6").Backends[0].Address {
		t.Fatal("the respelled file writes the backend's address as the first one does")
	}
	if changes := describeChanges(old, cur); len(changes) != 0 {
		t.Errorf("changes of a file that only writes its addresses otherwise: %v, want none", changes)
	}
	if err := immutableChanged(old, cur); err != nil {
		t.Errorf("metrics.listen written otherwise: %v, want no refusal", err)
	}
	if settingsChanged(old, cur) {
		t.Error("the datapath settings changed with the spelling of their addresses")
	}

	// A real change is still one, shown as each file writes it.
	changed := parse(strings.NewReplacer("address: fd00:100:0:0:0:0:0:1", "address: fd00:100::2",
		"fd00:2:1::0.0.0.2", "FD00:2:1::3", "FE80:0::1", "fe80::2").Replace(respelled))
	var got []string
	for _, c := range describeChanges(cur, changed) {
		got = append(got, c.String())
	}
	want := []string{
		"vip web6: backend be1 changed: address fd00:2:1::0.0.0.2 -> FD00:2:1::3",
		"vip web6 settings changed: address fd00:100:0:0:0:0:0:1 -> fd00:100::2",
		"global settings changed: nexthop.gateway FE80:0::1 -> fe80::2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("changes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if !settingsChanged(cur, changed) {
		t.Error("a new nexthop.gateway is no change of the datapath settings")
	}
}

// The same through a running balancer: a reload of the respelled file
// reports no change and keeps the generation and the datapath as they
// were; a reload that changes an address moves them.
func TestReloadOfRespelledAddressesChangesNothing(t *testing.T) {
	r := newRig(t, respellConfig, datapath.Options{})
	before := r.vips()
	st, err := r.b.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	gen := st.ConfigGeneration

	r.write(respelled)
	resp, err := r.b.Reload(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Changed) != 0 || len(resp.Changes) != 0 || resp.Generation != gen {
		t.Errorf("reload of the respelled file: generation %d (was %d), changes %q; want none, the generation kept", resp.Generation, gen, resp.Changed)
	}
	if after := r.vips(); !mapsEqual(before, after) {
		t.Error("reload of the respelled file touched the datapath")
	}

	r.write(strings.Replace(respelled, "FD00:2:2:0::2", "fd00:2:2::9", 1))
	resp, err = r.b.Reload(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"vip web6: backend be2 changed: address FD00:2:2:0::2 -> fd00:2:2::9"}; !slices.Equal(resp.Changed, want) || resp.Generation != gen+1 {
		t.Errorf("reload of a new address: generation %d, changes %q; want %d, %q", resp.Generation, resp.Changed, gen+1, want)
	}
	if s := r.slots("web6"); s["fd00:2:2::9"] == 0 || s["fd00:2:2::2"] != 0 {
		t.Errorf("web6's slots after the address changed: %v, want fd00:2:2::9's, none of fd00:2:2::2", s)
	}
}
