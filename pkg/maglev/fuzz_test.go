package maglev

import (
	"errors"
	"slices"
	"testing"
)

// decodeBackends turns fuzz bytes into backends, 3+len(ID) bytes each:
// [idLen%8] [weight base] [weight shift%25 | value] [id bytes…]. Weights span
// 0 to nearly 2^32 so the zero-weight error and the overflow bound in
// before() are both exercised; IDs are short so duplicates and empty IDs are
// common.
func decodeBackends(data []byte) []Backend {
	var bes []Backend
	for len(data) >= 3 {
		idLen := int(data[0] % 8)
		weight := uint32(data[1]) << (data[2] % 25)
		value := uint32(data[2])
		data = data[3:]
		idLen = min(idLen, len(data))
		bes = append(bes, Backend{ID: string(data[:idLen]), Weight: weight, Value: value})
		data = data[idLen:]
	}
	return bes
}

func FuzzBuild(f *testing.F) {
	f.Add(uint64(0), uint8(0), []byte{})
	f.Add(uint64(1), uint8(0), []byte{1, 1, 0, 'a', 1, 1, 1, 'b'})
	f.Add(uint64(42), uint8(1), []byte{2, 255, 24, 'a', 'b', 2, 1, 0, 'c', 'd', 3, 7, 3, 'x', 'y', 'z'})
	f.Add(uint64(7), uint8(2), []byte{1, 0, 5, 'a'})               // zero weight
	f.Add(uint64(7), uint8(3), []byte{1, 1, 5, 'a', 1, 1, 6, 'a'}) // duplicate ID
	f.Add(uint64(7), uint8(0), []byte{1, 1, 5, 'a', 1, 1, 5, 'b'}) // duplicate value
	f.Add(uint64(7), uint8(0), []byte{0, 1, 5, 1, 2, 6, 'a'})      // empty ID
	f.Add(^uint64(0), uint8(3), []byte{7, 200, 20, 'l', 'o', 'n', 'g', 'i', 'd', '!'})

	sizes := Sizes()[:4] // small tables keep each iteration fast

	f.Fuzz(func(t *testing.T, seed uint64, sizeIdx uint8, data []byte) {
		cfg := Config{Size: sizes[int(sizeIdx)%len(sizes)], Seed: seed}
		b, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		bes := decodeBackends(data)
		table, err := b.Build(bes)
		reversed := slices.Clone(bes)
		slices.Reverse(reversed)
		// The second Build also runs on buffers left over from the first,
		// and sorts the turns a few buckets at a time, across many windows.
		b.window = 1 + int(seed%61)
		table2, err2 := b.Build(reversed)

		// Input that breaks a rule must be refused, for a reason it breaks.
		wrong := invalidReasons(cfg, bes)
		if err != nil {
			for _, sentinel := range wrong {
				if errors.Is(err, sentinel) {
					if err2 == nil {
						t.Fatalf("Build failed with %v but succeeded on the reversed input", err)
					}
					return
				}
			}
			t.Fatalf("Build error %v wraps none of the sentinels the input calls for, %v", err, wrong)
		}
		if len(wrong) > 0 {
			t.Fatalf("Build accepted input that breaks its rules (%v)", wrong)
		}
		if err2 != nil {
			t.Fatalf("Build succeeded but failed on the reversed input: %v", err2)
		}

		if uint64(len(table)) != cfg.Size {
			t.Fatalf("len(table) = %d, want %d", len(table), cfg.Size)
		}
		if d := Diff(table, table2); d != 0 {
			t.Fatalf("reversing the input moved %d slots", d)
		}
		if len(bes) <= 64 { // the reference is O(M·N)
			if d := Diff(table, referenceBuild(cfg, bes)); d != 0 {
				t.Fatalf("Build differs from referenceBuild in %d slots", d)
			}
		}
		valid := make(map[uint32]bool, len(bes))
		for _, be := range bes {
			valid[be.Value] = true
		}
		for i, v := range table {
			if len(bes) == 0 {
				if v != Empty {
					t.Fatalf("no backends but table[%d] = %d, want Empty", i, v)
				}
				continue
			}
			if !valid[v] {
				t.Fatalf("table[%d] = %d, which is not the Value of any backend", i, v)
			}
		}
	})
}

// invalidReasons returns the sentinel errors that Build may give for bes,
// worked out independently of Build: none for valid input.
func invalidReasons(cfg Config, bes []Backend) []error {
	var wrong []error
	if uint64(len(bes)) >= cfg.Size {
		wrong = append(wrong, ErrTooManyBackends)
	}
	ids := map[string]bool{}
	values := map[uint32]bool{}
	for _, be := range bes {
		if be.ID == "" || be.Value == Empty {
			wrong = append(wrong, ErrInvalidBackend)
		}
		if be.Weight == 0 {
			wrong = append(wrong, ErrZeroWeight)
		}
		if ids[be.ID] {
			wrong = append(wrong, ErrDuplicateID)
		}
		if values[be.Value] {
			wrong = append(wrong, ErrDuplicateValue)
		}
		ids[be.ID], values[be.Value] = true, true
	}
	return wrong
}
