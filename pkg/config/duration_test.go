package config

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// A duration written without a unit gets a hint; one that names a
// duration to write must name one that reads: 0x10 was told to write
// 0x10s, and 1e3 1e3s.
func TestDurationHintReads(t *testing.T) {
	for _, tc := range []struct{ in, wantErr string }{
		{"1", "1 has no unit; write a duration such as 1s or 1ms"},
		{"-1", "-1 has no unit; write a duration such as -1s or -1ms"},
		{"+2", "+2 has no unit; write a duration such as +2s or +2ms"},
		{"1.5", "1.5 has no unit; write a duration such as 1.5s or 1.5ms"},
		{".5", ".5 has no unit; write a duration such as .5s or .5ms"},
		{"1.", "1. has no unit; write a duration such as 1.s or 1.ms"},
		{"010", "010 has no unit; write a duration such as 010s or 010ms"},
		// Numbers to YAML, but no unit after them makes a duration.
		{"0x10", "0x10 is a number with no unit; write a duration in decimal digits with a unit, such as 1s, 500ms or 1m30s"},
		{"0o10", "0o10 is a number with no unit; write a duration in decimal digits with a unit"},
		{"0b1", "0b1 is a number with no unit; write a duration in decimal digits with a unit"},
		{"1_000", "1_000 is a number with no unit; write a duration in decimal digits with a unit"},
		{"1e3", "1e3 is a number with no unit; write a duration in decimal digits with a unit"},
		{".inf", ".inf is a number with no unit; write a duration in decimal digits with a unit"},
		{".nan", ".nan is a number with no unit; write a duration in decimal digits with a unit"},
	} {
		var got struct {
			D Duration `yaml:"d"`
		}
		err := yaml.Unmarshal([]byte("d: "+tc.in), &got)
		if err == nil {
			t.Errorf("%s: read as %v, want the error %q", tc.in, time.Duration(got.D), tc.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %q, want %q", tc.in, err, tc.wantErr)
		}
		for _, unit := range []string{"s", "ms"} {
			if !strings.Contains(err.Error(), " such as "+tc.in+unit) {
				continue
			}
			if _, perr := time.ParseDuration(tc.in + unit); perr != nil {
				t.Errorf("%s: the error %q suggests %s, which is no duration either: %v", tc.in, err, tc.in+unit, perr)
			}
		}
	}
}
