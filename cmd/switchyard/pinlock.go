package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

// lockPinDir takes the balancer's pin directory (datapath.LockPinDir),
// held until the returned file is closed. A second `switchyard run` of the
// same interface is refused before it loads anything: its load would
// rewrite the running daemon's pinned maps and swap its program under it.
// created says that the lock created the directory.
func lockPinDir(dir string) (f *os.File, created bool, err error) {
	f, created, err = datapath.LockPinDir(dir, "datapath.pin_dir")
	if errors.Is(err, datapath.ErrPinDirLocked) {
		if datapath.PinDirOwner(dir) == "switchyard agent" {
			return nil, false, fmt.Errorf("pin directory %s: %w: a switchyard agent runs with it, and its decap program's pins are there; give this balancer a datapath.pin_dir of its own", dir, err)
		}
		return nil, false, fmt.Errorf("pin directory %s: %w: a balancer already runs on it; stop it before starting another (two on one interface would rewrite each other's maps), or give this one its own datapath.pin_dir", dir, err)
	}
	return f, created, err
}
