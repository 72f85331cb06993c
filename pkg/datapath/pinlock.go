package datapath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrPinDirLocked: another process holds the pin directory's lock (a
// running balancer or agent).
var ErrPinDirLocked = errors.New("in use by a running switchyard")

// LockPinDir creates the pin directory dir if need be (on a bpffs: field
// names the setting that gives it, for the error) and takes an exclusive
// flock on it, held until the returned file is closed (by the process's
// exit at the latest, however it ends). A lock another process holds is
// refused at once, with an error wrapping ErrPinDirLocked. The lock is
// taken again when the directory it was taken on was removed meanwhile (a
// holder that stops, or `switchyard remove`): a lock on a removed
// directory guards nothing. created says that this call created the
// directory it locked, so that a caller refused afterwards removes only
// a directory of its own, never an empty one an admin prepared.
func LockPinDir(dir, field string) (f *os.File, created bool, err error) {
	if err := CheckBPFFS(dir); err != nil {
		return nil, false, err
	}
	for attempt := 0; ; attempt++ {
		created = false
		err := os.MkdirAll(filepath.Dir(filepath.Clean(dir)), 0o700)
		if err == nil {
			if err = os.Mkdir(dir, 0o700); err == nil {
				created = true
			} else if errors.Is(err, fs.ErrExist) {
				err = os.MkdirAll(dir, 0o700) // fails on a file in the way
			}
		}
		if err != nil {
			return nil, false, fmt.Errorf("create pin directory %s: %w; %s must name a directory root can create on a bpffs mounted read-write (mount -t bpf bpf /sys/fs/bpf)", dir, err, field)
		}
		f, err := TryLockPinDir(dir)
		if err != nil {
			return nil, false, err
		}
		var held, now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("stat pin directory %s: %w", dir, err)
		}
		if err := unix.Stat(dir, &now); err == nil && now.Dev == held.Dev && now.Ino == held.Ino {
			return f, created, nil
		}
		f.Close()
		if attempt == 10 {
			return nil, false, fmt.Errorf("lock pin directory %s: it was removed and created again 10 times meanwhile: something removes it as it is created (a clean-up of bpffs, or switchyard remove in a loop); stop that, then start again", dir)
		}
	}
}

// TryLockPinDir opens dir and takes its exclusive flock without waiting:
// ErrPinDirLocked if another process holds it.
func TryLockPinDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open pin directory %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrPinDirLocked
		}
		return nil, fmt.Errorf("lock pin directory %s: %w", dir, err)
	}
	return f, nil
}
