package health

import (
	"context"
	"fmt"
	"net/netip"
)

// TCPChecker opens a TCP connection to Addr and resets it. A backend is
// healthy if its kernel completes the handshake; whether the server then
// answers is not checked (use HTTPChecker for that).
//
// The connection is closed with a reset (SO_LINGER 0), as HAProxy closes
// its TCP checks: a normal close leaves the balancer's side in TIME_WAIT
// for 60 seconds, one socket per check, which with 1,000 backends checked
// every second is 60,000 sockets, and their 4-tuples, held for nothing. The
// backend's application, if it accepted the connection, sees it reset
// instead of closed.
type TCPChecker struct {
	Addr netip.AddrPort
	// Dialer opens the connection; nil means a plain net.Dialer. The
	// reset needs a connection with SetLinger (a *net.TCPConn, or one
	// wrapping it that has the method); another is closed normally.
	Dialer Dialer
}

// linger is what a connection needs to be closed with a reset.
type linger interface{ SetLinger(sec int) error }

// Check implements Checker.
func (c TCPChecker) Check(ctx context.Context) error {
	conn, err := dialerOrDefault(c.Dialer).DialContext(ctx, "tcp", c.Addr.String())
	if err != nil {
		return fmt.Errorf("tcp check: %w", err)
	}
	// Errors here say nothing about the backend: the handshake was done.
	// A failed SetLinger leaves a normal close, and one TIME_WAIT socket.
	if l, ok := conn.(linger); ok {
		_ = l.SetLinger(0)
	}
	_ = conn.Close()
	return nil
}
