package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

// errPinDirInUse: a running daemon holds the pin directory.
var errPinDirInUse = errors.New("in use by a running switchyard")

// lockPinDir creates the balancer's pin directory if need be and takes an
// exclusive flock on it, held until the returned file is closed (by the
// process's exit at the latest, however it ends). A second `switchyard
// run` of the same interface is refused before it loads anything: its
// load would rewrite the running daemon's pinned maps and swap its program
// under it. The lock is taken again when the directory it was taken on
// was removed meanwhile (`switchyard remove`).
func lockPinDir(dir string) (*os.File, error) {
	if err := datapath.CheckBPFFS(dir); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory %s: %w; datapath.pin_dir must name a directory root can create on a bpffs mounted read-write (mount -t bpf bpf /sys/fs/bpf)", dir, err)
		}
		f, err := tryLockDir(dir)
		if err != nil {
			if errors.Is(err, errPinDirInUse) {
				if datapath.PinDirOwner(dir) == "switchyard agent" {
					return nil, fmt.Errorf("pin directory %s: %w: a switchyard agent runs with it, and its decap program's pins are there; give this balancer a datapath.pin_dir of its own", dir, err)
				}
				return nil, fmt.Errorf("pin directory %s: %w: a balancer already runs on it; stop it before starting another (two on one interface would rewrite each other's maps), or give this one its own datapath.pin_dir", dir, err)
			}
			return nil, err
		}
		var held, now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, fmt.Errorf("stat pin directory %s: %w", dir, err)
		}
		if err := unix.Stat(dir, &now); err == nil && now.Dev == held.Dev && now.Ino == held.Ino {
			return f, nil
		}
		f.Close()
		if attempt == 10 {
			return nil, fmt.Errorf("lock pin directory %s: it was removed and created again 10 times meanwhile: something removes it as it is created (a clean-up of bpffs, or switchyard remove in a loop); stop that, then start again", dir)
		}
	}
}

// tryLockDir opens dir and takes its exclusive flock without waiting: an
// error wrapping errPinDirInUse if a daemon holds it.
func tryLockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open pin directory %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errPinDirInUse
		}
		return nil, fmt.Errorf("lock pin directory %s: %w", dir, err)
	}
	return f, nil
}
