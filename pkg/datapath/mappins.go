package datapath

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
)

// restoreMapPins checks that each map of maps (by pin name) is pinned
// under pinDir, and pins it again if someone removed its pin (rm, or a
// tool that cleans bpffs). The daemon's handles keep the maps alive
// meanwhile, and the program on the pinned link keeps using them; but a
// new run (after a kill, an in-place upgrade or a plain restart) finds
// its maps by their pins, and creates a missing one afresh: its contents
// (counters, for the balancer its state) are lost, and the program that
// run attaches uses the new map. It returns the names it pinned again; an
// error wraps notPinned and names every pin that stays missing or holds
// another map, or, when no pin was found wrong but a map's info could not
// be read (the bpf() call refused by a seccomp profile or an LSM, as
// ErrAttachCheckFailed's), wraps ErrMapPinCheckFailed, which says nothing
// of the pins. Without a pin directory there is nothing to check.
//
// The map is pinned through a handle of its own, pinned nowhere yet
// (the daemon's handle still names the pin as its own, and cilium/ebpf
// takes a pin at that name for done): BPF_OBJ_PIN then fails with EEXIST
// rather than replace a pin someone made there meanwhile.
func restoreMapPins(pinDir string, held map[string]*ebpf.Map, notPinned error, program, daemon string) ([]string, error) {
	if pinDir == "" {
		return nil, nil
	}
	if _, err := os.Stat(pinDir); err != nil {
		return nil, fmt.Errorf("%w: the pin directory %s was removed (%w): stop the %s with SIGTERM and start it again", notPinned, pinDir, err, daemon)
	}
	var restored []string
	var errs, unread []error
	for _, name := range slices.Sorted(maps.Keys(held)) {
		m := held[name]
		if m == nil {
			continue
		}
		path := filepath.Join(pinDir, name)
		info, err := m.Info()
		if err != nil {
			unread = append(unread, fmt.Errorf("read the %s's map %s: %w", program, name, err))
			continue
		}
		id, _ := info.ID()
		pinned, err := pinnedMapID(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if pinned == id {
			continue
		}
		if pinned != 0 {
			errs = append(errs, fmt.Errorf("%s holds map %d, not the %s's map %d: it was replaced by hand; remove it (the %s then pins its map again)",
				path, pinned, program, id, daemon))
			continue
		}
		own, err := ebpf.NewMapFromID(id)
		if err != nil {
			errs = append(errs, fmt.Errorf("open the %s's map %s (%d): %w", program, name, id, err))
			continue
		}
		err = own.Pin(path)
		own.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("pin it again at %s: %w", path, err))
			continue
		}
		restored = append(restored, name)
	}
	if len(errs) > 0 {
		return restored, fmt.Errorf("%w: %w", notPinned, errors.Join(errs...))
	}
	if len(unread) > 0 {
		return restored, fmt.Errorf("%w: %w", ErrMapPinCheckFailed, errors.Join(unread...))
	}
	return restored, nil
}

// ErrMapPinCheckFailed: the daemon could not read its maps' info to check
// their pins (EPERM from a seccomp profile or an LSM policy that changed,
// ENOMEM), which says nothing of the pins: the daemon keeps what it last
// found, as it does for its link's pin on ErrAttachCheckFailed.
var ErrMapPinCheckFailed = errors.New("could not check the maps' pins")
