package health

import (
	"context"
	"fmt"
	"net/netip"
)

// TCPChecker opens a TCP connection to Addr and closes it. A backend is
// healthy if its kernel completes the handshake; whether the server then
// answers is not checked (use HTTPChecker for that).
type TCPChecker struct {
	Addr netip.AddrPort
	// Dialer opens the connection; nil means a plain net.Dialer.
	Dialer Dialer
}

// Check implements Checker.
func (c TCPChecker) Check(ctx context.Context) error {
	conn, err := dialerOrDefault(c.Dialer).DialContext(ctx, "tcp", c.Addr.String())
	if err != nil {
		return fmt.Errorf("tcp check: %w", err)
	}
	// A close error says nothing about the backend: the handshake was done.
	_ = conn.Close()
	return nil
}
