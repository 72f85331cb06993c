package topology

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolValue mirrors struct ethtool_value in <linux/ethtool.h>.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData mirrors struct ifreq with ifr_data set (40 bytes on 64-bit).
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// SetTxChecksum turns TX checksum offload of a device in node on or off,
// like `ethtool -K IF tx on|off` (which also switches the segmentation
// offloads that depend on it). It uses the ethtool ioctl, so the ethtool
// program need not be installed.
func (t *Topology) SetTxChecksum(node, ifname string, on bool) error {
	v := ethtoolValue{cmd: unix.ETHTOOL_STXCSUM}
	if on {
		v.data = 1
	}
	if err := t.Do(node, func() error { return ethtoolIoctl(ifname, &v) }); err != nil {
		return fmt.Errorf("%s: set tx checksum offload of %s to %t: %w", node, ifname, on, err)
	}
	return nil
}

// TxChecksum reports whether TX checksum offload is on for a device in node.
func (t *Topology) TxChecksum(node, ifname string) (bool, error) {
	v := ethtoolValue{cmd: unix.ETHTOOL_GTXCSUM}
	if err := t.Do(node, func() error { return ethtoolIoctl(ifname, &v) }); err != nil {
		return false, fmt.Errorf("%s: get tx checksum offload of %s: %w", node, ifname, err)
	}
	return v.data != 0, nil
}

// ethtoolIoctl must run inside the device's namespace: the ioctl acts on
// the namespace of the socket it is issued on.
func ethtoolIoctl(ifname string, v *ethtoolValue) error {
	if len(ifname) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long", ifname)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(v)
	if errno != 0 {
		return fmt.Errorf("ioctl SIOCETHTOOL cmd %#x: %w", v.cmd, errno)
	}
	return nil
}
