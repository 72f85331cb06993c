package health

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxUDPPayload bounds UDPChecker's Send and Expect: one datagram that
// needs no fragmentation on a 1500-byte path, IPv6 and UDP headers
// included.
const MaxUDPPayload = 1452

// quoteMax is how much of a payload a reason shows.
const quoteMax = 64

// UDPChecker sends Send in one datagram to Addr and waits for a reply from
// it; the backend is healthy if the reply starts with Expect (any reply
// when Expect is empty). UDP has no handshake, so an answer is the only
// proof that the service runs: a backend that stays silent fails at the
// timeout, and one whose host answers with an ICMP port unreachable fails
// at once ("connection refused"). One datagram per check is sent, not
// resent: a lost request or reply fails that check, and Fall absorbs it.
//
// Every check uses a new socket, so a late reply to an earlier check is
// never taken for the answer to this one.
type UDPChecker struct {
	Addr netip.AddrPort
	// Send is the request, e.g. a DNS query; at most MaxUDPPayload bytes.
	Send string
	// Expect is the start of a healthy reply; "" accepts any reply.
	Expect string
	// Dialer opens the socket; nil means a plain net.Dialer.
	Dialer Dialer
}

// Check implements Checker.
func (c UDPChecker) Check(ctx context.Context) error {
	if len(c.Send) > MaxUDPPayload || len(c.Expect) > MaxUDPPayload {
		return fmt.Errorf("udp check: request of %d or expected reply of %d bytes, over %d: %w",
			len(c.Send), len(c.Expect), MaxUDPPayload, ErrInvalidTarget)
	}
	conn, err := dialerOrDefault(c.Dialer).DialContext(ctx, "udp", c.Addr.String())
	if err != nil {
		return fmt.Errorf("udp check: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A context without a deadline can still be cancelled (the target
	// removed, the monitor closed): unblock the read then.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := conn.Write([]byte(c.Send)); err != nil {
		return c.failed(ctx, "send", err)
	}
	// Room for the expected prefix and a little more to show in the
	// reason (one byte more than quote shows, so it knows to mark the
	// cut); the rest of a longer datagram is dropped by the kernel.
	buf := make([]byte, max(len(c.Expect), quoteMax)+1)
	n, err := conn.Read(buf)
	if err != nil {
		return c.failed(ctx, "receive", err)
	}
	if got := string(buf[:n]); len(got) < len(c.Expect) || got[:len(c.Expect)] != c.Expect {
		return fmt.Errorf("udp check: %s replied %s, want a reply starting with %s: %w",
			c.Addr, quote(got), quote(c.Expect), ErrUnexpectedReply)
	}
	return nil
}

func (c UDPChecker) failed(ctx context.Context, op string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("udp check: no reply from %s before the timeout: %w", c.Addr, ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The socket's deadline is the context's, whose own timer may
		// not have fired yet.
		return fmt.Errorf("udp check: no reply from %s before the timeout: %w", c.Addr, context.DeadlineExceeded)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("udp check: %s: %w (an ICMP port unreachable: nothing listens on udp port %d)", op, err, c.Addr.Port())
	}
	return fmt.Errorf("udp check: %s: %w", op, err)
}

// quote shows a payload in a reason: quoted if it is printable text, else
// as hexadecimal bytes (as the configuration's send_binary and
// expect_binary write them); cut at quoteMax bytes.
func quote(s string) string {
	cut := ""
	if len(s) > quoteMax {
		s, cut = s[:quoteMax], "..."
	}
	printable := utf8.ValidString(s)
	for _, r := range s {
		printable = printable && unicode.IsPrint(r)
	}
	if printable {
		return strconv.Quote(s) + cut
	}
	return "hex " + strings.TrimSpace(fmt.Sprintf("% x", s)) + cut
}
