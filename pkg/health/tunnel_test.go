package health

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTunnelDialerMarks: the connections of a check via tunnel carry the
// mark that tells the balancer's tc program which backend to send them
// to, UDP as well as TCP.
func TestTunnelDialerMarks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: setting SO_MARK needs CAP_NET_ADMIN (CI runs as root; run `sudo make test`)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	const mark = 0x53590007
	for _, c := range []struct{ network, addr string }{{"tcp", ln.Addr().String()}, {"udp", pc.LocalAddr().String()}} {
		conn, err := TunnelDialer{Mark: mark}.DialContext(t.Context(), c.network, c.addr)
		if err != nil {
			t.Fatalf("%s: %v", c.network, err)
		}
		raw, err := conn.(interface {
			SyscallConn() (syscall.RawConn, error)
		}).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var got int
		var gerr error
		raw.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
		conn.Close()
		if gerr != nil || got != mark {
			t.Errorf("%s: SO_MARK %#x (%v), want %#x", c.network, got, gerr, mark)
		}
	}
}

// TestTunnelCheckSaysTunnel: a failed check via tunnel says so and names
// the backend, as the address in its checker's error is the VIP's.
func TestTunnelCheckSaysTunnel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := netip.MustParseAddrPort(ln.Addr().String())
	be := netip.MustParseAddr("10.2.1.2")
	if err := (TunnelCheck{Checker: TCPChecker{Addr: up}, Backend: be}).Check(context.Background()); err != nil {
		t.Fatalf("check of a listening port: %v", err)
	}
	ln.Close() // nothing listens there now
	err = TunnelCheck{Checker: TCPChecker{Addr: up}, Backend: be}.Check(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "through the tunnel to backend 10.2.1.2: tcp check: ") {
		t.Errorf("check of a closed port: %v, want an error that starts with the tunnel and the backend", err)
	}
}
