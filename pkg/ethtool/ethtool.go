// Package ethtool reads and switches offload features of a network device
// with the ethtool ioctl (SIOCETHTOOL), so that the ethtool program need
// not be installed. The ioctl acts on the network namespace of the socket
// it is issued on: the package functions act on the calling thread's
// namespace, a Handle on the one it was opened in, from any thread.
package ethtool

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// value mirrors struct ethtool_value in <linux/ethtool.h>.
type value struct {
	cmd  uint32
	data uint32
}

// ifreqData mirrors struct ifreq with ifr_data set (40 bytes on 64-bit).
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// Handle issues ethtool ioctls in the network namespace it was opened in.
type Handle struct {
	fd int
}

// Open returns a Handle bound to the calling thread's network namespace.
func Open() (*Handle, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket for ethtool ioctls: %w", err)
	}
	return &Handle{fd: fd}, nil
}

// Close releases the handle's socket.
func (h *Handle) Close() error { return unix.Close(h.fd) }

// GRO reports whether generic receive offload is on for ifname, like the
// generic-receive-offload line of `ethtool -k IF`.
func GRO(ifname string) (bool, error) {
	return with(func(h *Handle) (bool, error) { return h.GRO(ifname) })
}

// SetGRO turns generic receive offload of ifname on or off, like
// `ethtool -K IF gro on|off`.
func SetGRO(ifname string, on bool) error {
	_, err := with(func(h *Handle) (bool, error) { return false, h.SetGRO(ifname, on) })
	return err
}

// TxChecksum reports whether TX checksum offload is on for ifname.
func TxChecksum(ifname string) (bool, error) {
	return with(func(h *Handle) (bool, error) { return h.TxChecksum(ifname) })
}

// SetTxChecksum turns TX checksum offload of ifname on or off, like
// `ethtool -K IF tx on|off` (which also switches the segmentation
// offloads that depend on it).
func SetTxChecksum(ifname string, on bool) error {
	_, err := with(func(h *Handle) (bool, error) { return false, h.SetTxChecksum(ifname, on) })
	return err
}

// with runs fn with a Handle of the calling thread's namespace.
func with(fn func(*Handle) (bool, error)) (bool, error) {
	h, err := Open()
	if err != nil {
		return false, err
	}
	defer h.Close()
	return fn(h)
}

// GRO reports whether generic receive offload is on for ifname.
func (h *Handle) GRO(ifname string) (bool, error) {
	v := value{cmd: unix.ETHTOOL_GGRO}
	if err := h.ioctl(ifname, &v); err != nil {
		return false, fmt.Errorf("get generic receive offload of %s: %w", ifname, err)
	}
	return v.data != 0, nil
}

// SetGRO turns generic receive offload of ifname on or off.
func (h *Handle) SetGRO(ifname string, on bool) error {
	v := value{cmd: unix.ETHTOOL_SGRO}
	if on {
		v.data = 1
	}
	if err := h.ioctl(ifname, &v); err != nil {
		return fmt.Errorf("set generic receive offload of %s to %t: %w", ifname, on, err)
	}
	return nil
}

// TxChecksum reports whether TX checksum offload is on for ifname.
func (h *Handle) TxChecksum(ifname string) (bool, error) {
	v := value{cmd: unix.ETHTOOL_GTXCSUM}
	if err := h.ioctl(ifname, &v); err != nil {
		return false, fmt.Errorf("get tx checksum offload of %s: %w", ifname, err)
	}
	return v.data != 0, nil
}

// SetTxChecksum turns TX checksum offload of ifname on or off.
func (h *Handle) SetTxChecksum(ifname string, on bool) error {
	v := value{cmd: unix.ETHTOOL_STXCSUM}
	if on {
		v.data = 1
	}
	if err := h.ioctl(ifname, &v); err != nil {
		return fmt.Errorf("set tx checksum offload of %s to %t: %w", ifname, on, err)
	}
	return nil
}

func (h *Handle) ioctl(ifname string, v *value) error {
	if len(ifname) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long", ifname)
	}
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(h.fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(v)
	if errno != 0 {
		return fmt.Errorf("ioctl SIOCETHTOOL cmd %#x: %w", v.cmd, errno)
	}
	return nil
}

// GROOff records an interface on which a daemon turned generic receive
// offload off for a generic-mode XDP program, having found it on, so that
// it (or the run after a crash, or `switchyard remove`) turns it on again
// once no generic-mode program needs it off. The agent keeps it in its
// state file, the balancer in a file beside its API socket.
type GROOff struct {
	Dev string `json:"dev"`
	// Ifindex tells a re-created interface of the same name (GRO on, as
	// a new device's default) from the one whose GRO was turned off. Dev
	// is asked for too at that index (see Find), as another device may
	// have been given the index of one deleted.
	Ifindex int `json:"ifindex"`
}

// Find looks up, with byIndex (netlink.LinkByIndex, or a Handle's), the
// device at the recorded index. l is nil when there is none: the
// interface was deleted, or created again under a new index (a new
// device's GRO is on by default). other is the name of a device of
// another name at the index (l is then that device), which is either
// another one (given the index with `ip link add ... index N`, or moved
// into the namespace, which keeps its index), whose GRO was never
// touched, or the recorded one renamed: the name alone cannot tell them
// apart, the caller may by other means. A record with no name (written
// by hand) goes by the index alone.
func (g GROOff) Find(byIndex func(int) (netlink.Link, error)) (l netlink.Link, other string, err error) {
	l, err = byIndex(g.Ifindex)
	if _, gone := errors.AsType[netlink.LinkNotFoundError](err); gone {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	if name := l.Attrs().Name; g.Dev != "" && name != g.Dev {
		return l, name, nil
	}
	return l, "", nil
}

// Gone is the line that says the recorded interface is gone and its
// record (where: the record's file, or "in" the state file that holds it)
// dropped, with the device at its index now, other (see Find), left as it
// is. who turned GRO off: "the balancer", "the agent".
func (g GROOff) Gone(who, where, other string) string {
	s := fmt.Sprintf("interface %s (index %d), on which %s turned generic receive offload (GRO) off, is gone: its GRO record %s dropped", g.Dev, g.Ifindex, who, where)
	if other != "" {
		s += fmt.Sprintf(" (index %d is %s now, left as it is; if that is %s renamed, turn its GRO on with `ethtool -K %s gro on`)", g.Ifindex, other, g.Dev, other)
	}
	return s
}
