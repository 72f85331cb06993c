package config

import (
	"fmt"
	"math"
	"regexp"
	"time"
)

// The ranges of the fields, for a value the decoder cannot even hold (a
// number beyond int, a duration beyond time.Duration): validation, which
// names them for the others, never sees it. Keys are field paths with the
// list indexes left out: vips[].port.

// intRanges is what each integer field accepts, as its validation says.
var intRanges = map[string]string{
	"datapath.conn_table_size":    fmt.Sprintf("%d to %d", MinConnTableSize, MaxConnTableSize),
	"datapath.mtu":                "0 (the interface MTU) or 576 to 65535",
	"encap.gue_port":              "1 to 65535",
	"gue_port":                    "0 (GUE decap off) to 65535",
	"vips[].port":                 "0 (all ports) to 65535",
	"vips[].table_size":           "one of " + intList(TableSizes()),
	"vips[].health.port":          "0 (the VIP's port) to 65535",
	"vips[].health.expect_status": "100 to 599",
	"vips[].health.rise":          fmt.Sprintf("1 to %d", MaxRiseFall),
	"vips[].health.fall":          fmt.Sprintf("1 to %d", MaxRiseFall),
	"vips[].backends[].weight":    "1 to 65535",
}

// durationRange is the largest value of a duration field, and a value to
// suggest.
type durationRange struct{ max, example string }

var durationRanges = map[string]durationRange{
	"datapath.udp_idle_timeout": {shortDuration(MaxUDPIdleTimeout), "30s"},
	"vips[].health.interval":    {shortDuration(MaxHealthInterval), "1s"},
	"vips[].health.timeout":     {"below the interval, so below " + shortDuration(MaxHealthInterval), "500ms"},
}

var listIndex = regexp.MustCompile(`\[[0-9]+\]`)

// genericPath is path without its list indexes: vips[3].port is
// vips[].port.
func genericPath(path string) string { return listIndex.ReplaceAllString(path, "[]") }

// intRange names the range of the integer field at path: its validation's,
// else the int type's.
func intRange(path string) string {
	if r, ok := intRanges[genericPath(path)]; ok {
		return r
	}
	return fmt.Sprintf("%d to %d", math.MinInt, math.MaxInt)
}

// tooLongDuration is the error for a duration written correctly that
// time.Duration cannot hold: its maximum is about 292 years.
func tooLongDuration(path, value string) string {
	msg := fmt.Sprintf("%s is too long for a duration (the longest is %s, about 292 years)", userValue(value), time.Duration(math.MaxInt64))
	if r, ok := durationRanges[genericPath(path)]; ok {
		return fmt.Sprintf("%s, and this field's maximum is %s; write e.g. %s", msg, r.max, r.example)
	}
	return msg + "; write e.g. 1s"
}
