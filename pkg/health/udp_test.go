package health

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// udpServer answers every datagram on a loopback socket of network with
// reply(request), or stays silent when reply returns nil. It stops when
// the test ends.
func udpServer(t *testing.T, network, addr string, reply func([]byte) []byte) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if r := reply(buf[:n]); r != nil {
				pc.WriteTo(r, from)
			}
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// closedUDP returns a loopback UDP address on which nothing listens: the
// kernel answers it with an ICMP port unreachable.
func closedUDP(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(pc.LocalAddr().String())
	pc.Close()
	return ap
}

func TestUDPChecker(t *testing.T) {
	echo := udpServer(t, "udp4", "127.0.0.1:0", func(req []byte) []byte {
		return append([]byte("backend=be1 "), req...)
	})
	silent := udpServer(t, "udp4", "127.0.0.1:0", func([]byte) []byte { return nil })
	// A DNS-like binary exchange: the reply's first two bytes repeat the
	// request's ID.
	binary := udpServer(t, "udp4", "127.0.0.1:0", func(req []byte) []byte {
		if len(req) < 2 {
			return nil
		}
		return []byte{req[0], req[1], 0x81, 0x80}
	})
	long := udpServer(t, "udp4", "127.0.0.1:0", func([]byte) []byte { return []byte(strings.Repeat("x", 1000)) })
	errNoRoute := errors.New("no route to host")

	for _, tc := range []struct {
		name      string
		c         UDPChecker
		dialer    *recordingDialer
		wantErr   string
		wantErrIs error
	}{
		{name: "any reply", c: UDPChecker{Addr: echo, Send: "ping"}},
		{name: "reply starts with expect", c: UDPChecker{Addr: echo, Send: "ping", Expect: "backend=be1 ping"}},
		{name: "reply does not start with expect", c: UDPChecker{Addr: echo, Send: "ping", Expect: "backend=be2"},
			wantErr: `replied "backend=be1 ping", want a reply starting with "backend=be2"`, wantErrIs: ErrUnexpectedReply},
		{name: "reply shorter than expect", c: UDPChecker{Addr: echo, Send: "p", Expect: "backend=be1 ping"},
			wantErrIs: ErrUnexpectedReply},
		{name: "binary payloads", c: UDPChecker{Addr: binary, Send: "\x12\x34\x01\x00", Expect: "\x12\x34\x81"}},
		{name: "binary mismatch is quoted", c: UDPChecker{Addr: binary, Send: "\x12\x34\x01\x00", Expect: "\x12\x35"},
			wantErr: `replied hex 12 34 81 80, want a reply starting with hex 12 35`, wantErrIs: ErrUnexpectedReply},
		{name: "long reply is cut in the reason", c: UDPChecker{Addr: long, Send: "ping", Expect: "y"},
			wantErr: `replied "` + strings.Repeat("x", 64) + `"...`},
		{name: "nothing listening: port unreachable", c: UDPChecker{Addr: closedUDP(t), Send: "ping"},
			wantErr: "nothing listens on udp port", wantErrIs: syscall.ECONNREFUSED},
		{name: "silent service fails at the timeout", c: UDPChecker{Addr: silent, Send: "ping"},
			wantErr: "no reply from " + silent.String() + " before the timeout", wantErrIs: context.DeadlineExceeded},
		{name: "injected dialer is used", c: UDPChecker{Addr: echo, Send: "ping"}, dialer: &recordingDialer{}},
		{name: "dialer error is the reason", c: UDPChecker{Addr: echo, Send: "ping"},
			dialer: &recordingDialer{err: errNoRoute}, wantErrIs: errNoRoute},
		{name: "request too long", c: UDPChecker{Addr: echo, Send: strings.Repeat("x", MaxUDPPayload+1)},
			wantErrIs: ErrInvalidTarget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.dialer != nil {
				tc.c.Dialer = tc.dialer
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			checkErr(t, tc.c.Check(ctx), tc.wantErr, tc.wantErrIs)
			if tc.dialer != nil {
				if got, want := tc.dialer.last.Load(), "udp "+tc.c.Addr.String(); tc.dialer.dials.Load() != 1 || got != want {
					t.Errorf("dialer saw %d dials, last %v; want 1 dial of %q", tc.dialer.dials.Load(), got, want)
				}
			}
		})
	}
}

// TestUDPCheckerCancelled: a check whose context has no deadline returns
// when the context is cancelled (a target removed, the monitor closed),
// not never.
func TestUDPCheckerCancelled(t *testing.T) {
	received := make(chan struct{}, 1)
	silent := udpServer(t, "udp4", "127.0.0.1:0", func([]byte) []byte {
		select {
		case received <- struct{}{}:
		default:
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- UDPChecker{Addr: silent, Send: "ping"}.Check(ctx) }()
	// Cancelled once the request is out, so that the check waits for its
	// reply (cancelled before, it would end in its dial).
	select {
	case <-received:
	case err := <-done:
		t.Fatalf("Check() = %v before the server got its request", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the server got no request in 5s")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Check() = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Check() still blocked 5s after its context was cancelled")
	}
}

func TestUDPCheckerIPv6(t *testing.T) {
	echo := udpServer(t, "udp6", "[::1]:0", func(req []byte) []byte { return req })
	c := UDPChecker{Addr: echo, Send: "ping", Expect: "ping"}
	if err := c.Check(context.Background()); err != nil {
		t.Errorf("check of %s: %v", c.Addr, err)
	}
}
