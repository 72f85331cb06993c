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

// timeWaits counts the IPv4 TIME_WAIT sockets whose 4-tuple, seen from
// either end, is one of conns (local and remote address of a connection):
// what those connections left behind, on either side.
func timeWaits(t *testing.T, conns map[[2]netip.AddrPort]bool) int {
	t.Helper()
	socks, err := netlink.SocketDiagTCP(syscall.AF_INET)
	if err != nil {
		t.Fatalf("sock_diag: %v", err)
	}
	n := 0
	for _, s := range socks {
		if s.State != netlink.TCP_TIME_WAIT {
			continue
		}
		src, _ := netip.AddrFromSlice(s.ID.Source.To4())
		dst, _ := netip.AddrFromSlice(s.ID.Destination.To4())
		a, b := netip.AddrPortFrom(src, s.ID.SourcePort), netip.AddrPortFrom(dst, s.ID.DestinationPort)
		if conns[[2]netip.AddrPort{a, b}] || conns[[2]netip.AddrPort{b, a}] {
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
	type end struct {
		conn [2]netip.AddrPort
		err  error
	}
	ends := make(chan end, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, err := io.Copy(io.Discard, c)
				c.Close()
				ends <- end{[2]netip.AddrPort{netip.MustParseAddrPort(c.LocalAddr().String()), netip.MustParseAddrPort(c.RemoteAddr().String())}, err}
			}()
		}
	}()
	addr := netip.MustParseAddrPort(ln.Addr().String())
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
	conns := map[[2]netip.AddrPort]bool{}
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for i := range n {
		select {
		case e := <-ends:
			conns[e.conn] = true
			if !errors.Is(e.err, syscall.ECONNRESET) {
				t.Errorf("the backend saw connection %d end with %v, want a reset", i, e.err)
			}
		case <-timer.C:
			t.Fatalf("the backend saw %d of %d connections end within %s", i, n, deadline)
		}
	}
	if tw := timeWaits(t, conns); tw != 0 {
		t.Errorf("%d checks left %d TIME_WAIT sockets, want none", n, tw)
	}
}
