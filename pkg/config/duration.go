package config

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in YAML the way time.ParseDuration
// reads it: "1s", "500ms", "1m30s". A bare number is rejected because its
// unit would be a guess. Convert with time.Duration(d).
type Duration time.Duration

// durationSyntax is what time.ParseDuration reads: decimal numbers, each
// with a unit.
var durationSyntax = regexp.MustCompile(`^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)

// errDurationTooLong: a duration written as time.ParseDuration reads it,
// but beyond what time.Duration holds. The decoder names the field's
// maximum in its place.
var errDurationTooLong = errors.New("too long for a duration")

// plainDecimal is a number in decimal digits, with a fraction or not: what
// time.ParseDuration reads once a unit follows.
var plainDecimal = regexp.MustCompile(`^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$`)

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("expected a duration such as 1s or 500ms")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		if n.ShortTag() == "!!int" || n.ShortTag() == "!!float" {
			// Only a plain decimal number takes a unit to become a
			// duration: 0x10s, 1e3s, 1_000s and .infs are none.
			if plainDecimal.MatchString(n.Value) {
				return fmt.Errorf("%s has no unit; write a duration such as %ss or %sms", userValue(n.Value), userValue(n.Value), userValue(n.Value))
			}
			return fmt.Errorf("%s is a number with no unit; write a duration in decimal digits with a unit, such as 1s, 500ms or 1m30s", userValue(n.Value))
		}
		if durationSyntax.MatchString(n.Value) {
			return fmt.Errorf("%s is %w (the longest is %s, about 292 years); write e.g. 1s", userValue(n.Value), errDurationTooLong, time.Duration(math.MaxInt64))
		}
		return fmt.Errorf("%q is not a duration; write one such as 1s, 500ms or 1m30s", userValue(n.Value))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler, so a printed config reads back.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

func (d Duration) String() string { return time.Duration(d).String() }

// shortDuration writes d as String does, without its zero minutes and
// seconds: 1h, 24h, 1h30m rather than 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
