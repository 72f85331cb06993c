package topology

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bpfObjGetInfoByFD is BPF_OBJ_GET_INFO_BY_FD, the bpf() command that
// reads a program's or a link's info, from linux/bpf.h.
const bpfObjGetInfoByFD = 15

// DenyBPFObjInfo runs fn on a thread on which the kernel refuses
// bpf(BPF_OBJ_GET_INFO_BY_FD) with EPERM, as a seccomp profile or an LSM
// policy that changed under a running daemon does: a test of what a
// daemon does when it cannot read its program's or link's info, with the
// kernel, not a stand-in, saying no.
//
// The filter is the thread's alone (seccomp without TSYNC) and cannot be
// lifted: fn runs on a fresh goroutine locked to its OS thread and never
// unlocked, so Go ends the thread when fn returns. Threads the runtime
// starts while that one is locked are cloned from its template thread,
// not from it, and do not inherit the filter. Goroutines fn starts are
// not filtered.
func DenyBPFObjInfo(fn func() error) error {
	return denySyscall(fn, unix.SYS_BPF, bpfObjGetInfoByFD, "BPF_OBJ_GET_INFO_BY_FD")
}

// DenyNetlinkSockets runs fn on a thread on which the kernel refuses
// socket(AF_NETLINK, ...) with EPERM, as a seccomp profile or an LSM
// policy may: a test of what a daemon does when it cannot subscribe to
// the kernel's netlink notifications. The thread is DenyBPFObjInfo's: fn's
// own, filtered for good, in the namespace the process started in.
func DenyNetlinkSockets(fn func() error) error {
	return denySyscall(fn, unix.SYS_SOCKET, unix.AF_NETLINK, "netlink sockets")
}

// denySyscall runs fn on a fresh thread on which the system call nr fails
// with EPERM when its first argument is arg0 (see DenyBPFObjInfo).
func denySyscall(fn func() error, nr, arg0 uint32, what string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// seccomp_data: nr at 0, args[0] at 16 (its low half on a
		// little-endian machine).
		filter := []unix.SockFilter{
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0},
			{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: nr, Jt: 0, Jf: 3},
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 16},
			{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: arg0, Jt: 0, Jf: 1},
			{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
			{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		}
		prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
		if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))); errno != 0 {
			errc <- fmt.Errorf("install a seccomp filter denying %s: %w", what, errno)
			return
		}
		runtime.KeepAlive(filter)
		errc <- fn()
	}()
	return <-errc
}
