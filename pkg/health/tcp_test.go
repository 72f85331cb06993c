package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// timeWaits counts the TIME_WAIT sockets on loopback whose 4-tuple has
// port as its local or remote port: the sockets that connections to a
// listener on port left behind, on either side.
func timeWaits(t *testing.T, port uint16) int {
	t.Helper()
	socks, err := netlink.SocketDiagTCP(syscall.AF_INET)
	if err != nil {
		t.Fatalf("sock_diag: %v", err)
	}
	n := 0
	for _, s := range socks {
		if s.State == netlink.TCP_TIME_WAIT && (s.ID.DestinationPort == port || s.ID.SourcePort == port) {
			n++
		}
	}
	return n
}

// TestTCPCheckerLeavesNoTimeWait: a tcp check resets its connection, so
// no check leaves a TIME_WAIT socket behind, on the balancer or the
// backend; a normal close left one on the balancer per check, 60,000 for
// 1,000 backends checked every second. The backend is a real listener
// that, as a server does, waits for the client to speak or hang up, and
// records how each connection ended.
func TestTCPCheckerLeavesNoTimeWait(t *testing.T) {
	const n = 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ends := make(chan error, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, err := io.Copy(io.Discard, c)
				c.Close()
				ends <- err
			}()
		}
	}()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	if tw := timeWaits(t, addr.Port()); tw != 0 {
		t.Fatalf("%d TIME_WAIT sockets on a new listener's port", tw)
	}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := (TCPChecker{Addr: addr}).Check(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Check() = %v, want healthy", err)
		}
	}
	// Once the backend has closed its side of every connection, a normal
	// close has put the check's side in TIME_WAIT.
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for i := range n {
		select {
		case err := <-ends:
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the backend saw connection %d end with %v, want a reset", i, err)
			}
		case <-timer.C:
			t.Fatalf("the backend saw %d of %d connections end within %s", i, n, deadline)
		}
	}
	if tw := timeWaits(t, addr.Port()); tw != 0 {
		t.Errorf("%d checks left %d TIME_WAIT sockets, want none", n, tw)
	}
}
