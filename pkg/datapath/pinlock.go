package datapath

import (
	"errors"
	"fmt"
	"os"

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
// directory guards nothing.
func LockPinDir(dir, field string) (*os.File, error) {
	if err := CheckBPFFS(dir); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory %s: %w; %s must name a directory root can create on a bpffs mounted read-write (mount -t bpf bpf /sys/fs/bpf)", dir, err, field)
		}
		f, err := TryLockPinDir(dir)
		if err != nil {
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
