// Package ethtool reads and switches offload features of a network device
// with the ethtool ioctl (SIOCETHTOOL), so that the ethtool program need
// not be installed. The ioctl acts on the network namespace of the socket
// it is issued on: the package functions act on the calling thread's
// namespace, a Handle on the one it was opened in, from any thread.
package ethtool

import (
	"fmt"
	"runtime"
	"unsafe"

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
	// a new device's default) from the one whose GRO was turned off. The
	// agent finds the interface by it after a rename; the balancer asks
	// for Dev too at that index, as another device may have been given
	// the index of one deleted.
	Ifindex int `json:"ifindex"`
}
