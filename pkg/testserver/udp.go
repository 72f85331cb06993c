package testserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpEcho answers every datagram with "backend=<name> " and the payload.
//
// The reply's source address is the datagram's destination address, set
// per packet with IP_PKTINFO / IPV6_PKTINFO. A wildcard-bound socket would
// otherwise let routing pick the source: behind the balancer the request
// goes to the VIP on lo, the kernel would answer from eth0's address, and
// the client's connected socket would discard the reply.
type udpEcho struct {
	conn   *net.UDPConn
	inet6  bool // AF_INET6 socket (dual-stack for a wildcard address)
	prefix []byte
	log    *slog.Logger
}

// listenUDP opens the echo socket; network is "udp" except in tests.
func listenUDP(network, addr, name string, log *slog.Logger) (*udpEcho, error) {
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		return nil, err
	}
	u := &udpEcho{conn: pc.(*net.UDPConn), prefix: []byte("backend=" + name + " "), log: log}
	if err := u.enablePktinfo(); err != nil {
		u.conn.Close()
		return nil, fmt.Errorf("enable packet info on %s: %w", u.conn.LocalAddr(), err)
	}
	return u, nil
}

func (u *udpEcho) enablePktinfo() error {
	rc, err := u.conn.SyscallConn()
	if err != nil {
		return err
	}
	var sockErr error
	err = rc.Control(func(fd uintptr) {
		var domain int
		domain, sockErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if sockErr != nil {
			return
		}
		u.inet6 = domain == unix.AF_INET6
		if u.inet6 {
			// Also covers IPv4 datagrams on a dual-stack socket: they
			// report a v4-mapped destination, and a v4-mapped
			// IPV6_PKTINFO source is accepted when sending to IPv4.
			sockErr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			sockErr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	return errors.Join(err, sockErr)
}

func (u *udpEcho) serve() {
	buf := make([]byte, len(u.prefix)+64<<10)
	copy(buf, u.prefix)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := u.conn.ReadMsgUDPAddrPort(buf[len(u.prefix):], oob)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			u.log.Warn("udp read failed", "error", err)
			continue
		}
		reply := buf[:len(u.prefix)+n]
		src, ok := pktinfoDst(oob[:oobn])
		var replyOOB []byte
		if ok && !src.IsMulticast() {
			replyOOB = u.pktinfo(src)
		}
		if _, _, err := u.conn.WriteMsgUDPAddrPort(reply, replyOOB, from); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			u.log.Warn("udp reply failed", "client", from, "source", src, "error", err)
		}
	}
}

// pktinfoDst returns the destination address carried by a received
// IP_PKTINFO or IPV6_PKTINFO control message.
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO &&
			len(m.Data) >= int(unsafe.Sizeof(unix.Inet6Pktinfo{})):
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom16(info.Addr), true
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO &&
			len(m.Data) >= int(unsafe.Sizeof(unix.Inet4Pktinfo{})):
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom4(info.Addr), true
		}
	}
	return netip.Addr{}, false
}

// pktinfo builds the control message that makes src the reply's source;
// the outgoing device is left to routing.
func (u *udpEcho) pktinfo(src netip.Addr) []byte {
	if u.inet6 {
		return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: src.As16()})
	}
	return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: src.Unmap().As4()})
}
