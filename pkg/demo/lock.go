package demo

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrRunning is returned by Run and Cleanup while another demo runs on
// this host: its lab has the same fixed names (Prefix, WorkDir, PinBase),
// so cleaning up "leftovers" would tear down the running demo under it.
var ErrRunning = errors.New("another switchyard demo is running on this host")

// lockName is an abstract unix socket in the host's network namespace. It
// exists exactly as long as a process holds it open: a killed demo leaves
// no stale lock behind, and nothing is left on disk.
const lockName = "@switchyard-demo"

// lock makes this process the host's one running demo until release is
// called (or the process ends).
func lock() (release func(), err error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: lockName, Net: "unix"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%w%s: wait until it has finished (it removes its lab itself), or stop it with Ctrl-C in its terminal", ErrRunning, lockHolder())
	}
	if err != nil {
		return nil, fmt.Errorf("take the demo's lock (abstract unix socket %s): %w", lockName, err)
	}
	return func() { l.Close() }, nil
}

// lockHolder names the process that holds the lock, as " (pid N)", or ""
// when it cannot be told.
func lockHolder() string {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: lockName, Net: "unix"})
	if err != nil {
		return ""
	}
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return ""
	}
	var cred *unix.Ucred
	if err := rc.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cred == nil {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", cred.Pid)
}
