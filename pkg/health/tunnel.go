package health

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// TunnelDialer opens the connections of a check that goes through the
// tunnel: to the VIP's address, from a socket whose SO_MARK (Mark) tells
// the balancer's tc program which backend to encapsulate its packets to
// (pkg/datapath HCMark). The backend's decap hands the inner packet to
// the VIP on its lo, and the service answers from the VIP straight to
// this host. Setting a mark needs CAP_NET_ADMIN.
//
// A value, so that two checks through the same backend compare equal
// (Monitor.Set keeps a check whose Checker did not change).
type TunnelDialer struct {
	Mark uint32
}

// DialContext implements Dialer.
func (d TunnelDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	nd := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(d.Mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set SO_MARK %#x on the check's socket: %w (needs CAP_NET_ADMIN)", d.Mark, serr)
		}
		return nil
	}}
	return nd.DialContext(ctx, network, address)
}

// TunnelCheck is a check through the tunnel (its Checker dials with a
// TunnelDialer): its errors say so, and name the backend, as the
// address they carry is the VIP's.
type TunnelCheck struct {
	Checker Checker
	Backend netip.Addr
}

// Check implements Checker.
func (c TunnelCheck) Check(ctx context.Context) error {
	if err := c.Checker.Check(ctx); err != nil {
		return fmt.Errorf("through the tunnel to backend %s: %w", c.Backend, err)
	}
	return nil
}
