package testserver

import (
	"errors"
	"fmt"
	"io"
)

// patternPeriod is prime, so that a stream shifted by any whole number of
// buffers or pages (both powers of two) no longer matches: a dropped,
// repeated or reordered chunk is caught.
const patternPeriod = 251

// PatternByte is byte off of every /download body.
func PatternByte(off int64) byte { return byte(off % patternPeriod) }

// PatternReader returns a reader of the first n bytes of the /download
// pattern.
func PatternReader(n int64) io.Reader { return &patternReader{remaining: n} }

type patternReader struct{ off, remaining int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	k := int(r.off % patternPeriod)
	for i := range p {
		p[i] = byte(k)
		if k++; k == patternPeriod {
			k = 0
		}
	}
	r.off += int64(len(p))
	r.remaining -= int64(len(p))
	return len(p), nil
}

// ErrPatternMismatch reports a /download body that differs from the
// pattern.
var ErrPatternMismatch = errors.New("content differs from the download pattern")

// VerifyPattern reads r to the end and checks that it is the pattern from
// offset 0. It returns the number of bytes read; on a mismatch the error
// wraps ErrPatternMismatch and names the first differing offset.
func VerifyPattern(r io.Reader) (int64, error) {
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := r.Read(buf)
		for i, b := range buf[:n] {
			if want := PatternByte(off + int64(i)); b != want {
				return off + int64(i), fmt.Errorf("%w: byte %d is %#x, want %#x", ErrPatternMismatch, off+int64(i), b, want)
			}
		}
		off += int64(n)
		if err == io.EOF {
			return off, nil
		}
		if err != nil {
			return off, err
		}
	}
}
