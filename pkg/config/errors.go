package config

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// Sentinel errors. Every error from Load, Parse and Validate wraps one of
// these (or fs.ErrNotExist and friends when the file cannot be read), so the
// daemon can tell "fix your file" from "cannot read your file".
var (
	// ErrInvalid: the file is not valid YAML, or its content breaks a rule.
	// Each problem is a *FieldError; all of them are joined in one error.
	ErrInvalid = errors.New("invalid configuration")
	// ErrEmpty: the file holds no YAML document at all.
	ErrEmpty = errors.New("configuration file is empty")
	// ErrTooLarge: the file is larger than MaxFileSize.
	ErrTooLarge = errors.New("configuration file is too large")
	// ErrOtherKind: the file is the other daemon's, an agent's given to
	// Load or the balancer's to LoadAgent. The one *FieldError that says
	// so matches it, besides ErrInvalid, so that a caller that can read
	// either kind (`switchyard check`) can say how.
	ErrOtherKind = errors.New("configuration file of the other daemon")
)

// FieldError is one problem with one field. Its message says what is wrong
// and how to fix it, e.g.
//
//	switchyard.yaml:14: vips[0].port: 70000 is out of range; use 0 (all ports) to 65535
//
// It wraps ErrInvalid. Use errors.As to get the first one, or unwrap the
// joined error (interface{ Unwrap() []error }) to get them all.
type FieldError struct {
	File string // file name as given to Load or Parse; "" from Validate
	Line int    // 1-based line in File; 0 if unknown
	Path string // field path such as "vips[0].backends[1].address"; "" for the whole file
	Msg  string // what is wrong, then "; " and the fix

	otherKind bool // the file is the other daemon's: matches ErrOtherKind
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Is makes errors.Is(err, ErrOtherKind) true for the error that says the
// file is the other daemon's.
func (e *FieldError) Is(target error) bool { return e.otherKind && target == ErrOtherKind }

// problems collects FieldErrors while validating, so that a user sees every
// problem of a file at once.
type problems []*FieldError

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// join returns nil for no problems, otherwise every problem ordered by line
// (stable, so problems on one line keep the order they were found in).
func join(ps []*FieldError) error {
	if len(ps) == 0 {
		return nil
	}
	ps = slices.Clone(ps)
	slices.SortStableFunc(ps, func(a, b *FieldError) int { return cmp.Compare(a.Line, b.Line) })
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// maxQuoted is the most bytes of a value from the file that an error
// quotes: enough to tell which value it is, where the whole of a 10 KB one
// (a paste gone wrong, a generated file) would bury the message and its
// fix.
const maxQuoted = 64

// userValue is a value from the file as an error shows it, formatted with
// %s or %q (%v is %s): whole up to maxQuoted bytes, else its first
// maxQuoted bytes (cut where a character starts), then "... (N bytes)".
// Every error that quotes what the user wrote passes it through this.
type userValue string

func (v userValue) Format(f fmt.State, verb rune) {
	head, cut := v.head()
	if verb == 'q' {
		fmt.Fprintf(f, "%q", head)
	} else {
		io.WriteString(f, head)
	}
	if cut {
		fmt.Fprintf(f, "... (%d bytes)", len(v))
	}
}

// head is what of v an error quotes, and whether that is less than v.
func (v userValue) head() (string, bool) {
	if len(v) <= maxQuoted {
		return string(v), false
	}
	i := maxQuoted
	for i > 0 && !utf8.RuneStart(v[i]) {
		i--
	}
	return string(v[:i]), true
}
