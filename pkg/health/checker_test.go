package health

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// listen returns the address of a loopback TCP listener that accepts and
// closes connections until the test ends.
func listen(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go acceptAndClose(ln)
	return netip.MustParseAddrPort(ln.Addr().String())
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// closedAddr returns a loopback address on which nothing listens.
func closedAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	return ap
}

// recordingDialer dials with a net.Dialer, or fails with err, and counts
// the dials: it stands for a Dialer that dials in another namespace.
type recordingDialer struct {
	err   error
	block bool // wait for ctx instead of dialing
	dials atomic.Int32
	last  atomic.Value // "network address" of the last dial
}

func (d *recordingDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d.dials.Add(1)
	d.last.Store(network + " " + address)
	switch {
	case d.block:
		<-ctx.Done()
		return nil, ctx.Err()
	case d.err != nil:
		return nil, d.err
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, address)
}

func TestTCPChecker(t *testing.T) {
	open := listen(t)
	closed := closedAddr(t)
	errNoRoute := errors.New("no route to host")
	for _, tc := range []struct {
		name      string
		addr      netip.AddrPort
		dialer    *recordingDialer
		wantErr   string
		wantErrIs error
	}{
		{name: "listening", addr: open},
		{name: "nothing listening", addr: closed, wantErr: "connection refused"},
		{name: "injected dialer is used", addr: open, dialer: &recordingDialer{}},
		{name: "dialer error is the reason", addr: open, dialer: &recordingDialer{err: errNoRoute}, wantErrIs: errNoRoute},
		{name: "bounded by the context", addr: open, dialer: &recordingDialer{block: true}, wantErrIs: context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := TCPChecker{Addr: tc.addr}
			if tc.dialer != nil {
				c.Dialer = tc.dialer
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err := c.Check(ctx)
			checkErr(t, err, tc.wantErr, tc.wantErrIs)
			if tc.dialer != nil {
				if got, want := tc.dialer.last.Load(), "tcp "+tc.addr.String(); tc.dialer.dials.Load() != 1 || got != want {
					t.Errorf("dialer saw %d dials, last %v; want 1 dial of %q", tc.dialer.dials.Load(), got, want)
				}
			}
		})
	}
}

func TestTCPCheckerIPv6(t *testing.T) {
	// Not skipped without ::1: the balancer serves IPv6 VIPs and the
	// e2e lab needs IPv6, so a host without it cannot run the suite.
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatalf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	c := TCPChecker{Addr: netip.MustParseAddrPort(ln.Addr().String())}
	if err := c.Check(context.Background()); err != nil {
		t.Errorf("check of %s: %v", c.Addr, err)
	}
}

func TestHTTPChecker(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusOK)
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/host":
			// A backend serving several names answers for its own.
			if r.Host != "app.example.com" {
				w.WriteHeader(http.StatusMisdirectedRequest)
			}
		case "/ua":
			// Backends' logs tell the checks from clients by it.
			if r.UserAgent() != "switchyard-health-check" {
				w.WriteHeader(http.StatusBadRequest)
			}
		case "/slow":
			<-r.Context().Done()
		case "/hungbody":
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "/endless":
			chunk := bytes.Repeat([]byte("x"), 4096)
			for {
				if _, err := w.Write(chunk); err != nil {
					return // the check hung up
				}
			}
		}
	})
	plain := httptest.NewServer(handler)
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(handler) // self-signed, like the backends'
	defer tlsSrv.Close()

	for _, tc := range []struct {
		name      string
		c         HTTPChecker
		wantErr   string
		wantErrIs error
	}{
		{name: "200", c: HTTPChecker{URL: plain.URL + "/ok"}},
		{name: "503 is down", c: HTTPChecker{URL: plain.URL + "/down"},
			wantErr: "status 503 Service Unavailable, want 200", wantErrIs: ErrUnexpectedStatus},
		{name: "expected status other than 200", c: HTTPChecker{URL: plain.URL + "/nocontent", ExpectStatus: 204}},
		{name: "200 when 204 is expected", c: HTTPChecker{URL: plain.URL + "/ok", ExpectStatus: 204},
			wantErr: "status 200 OK, want 204"},
		{name: "the check names itself in User-Agent", c: HTTPChecker{URL: plain.URL + "/ua"}},
		{name: "the configured Host", c: HTTPChecker{URL: plain.URL + "/host", Host: "app.example.com"}},
		{name: "the configured Host over https", c: HTTPChecker{URL: tlsSrv.URL + "/host", Host: "app.example.com"}},
		{name: "Host is the address by default", c: HTTPChecker{URL: plain.URL + "/host"},
			wantErr: "status 421 Misdirected Request", wantErrIs: ErrUnexpectedStatus},
		{name: "redirect is not followed", c: HTTPChecker{URL: plain.URL + "/moved"}, wantErr: "status 302 Found, want 200"},
		{name: "https with a self-signed certificate", c: HTTPChecker{URL: tlsSrv.URL + "/ok"}},
		{name: "https 503", c: HTTPChecker{URL: tlsSrv.URL + "/down"}, wantErrIs: ErrUnexpectedStatus},
		{name: "bounded by the context", c: HTTPChecker{URL: plain.URL + "/slow"}, wantErrIs: context.DeadlineExceeded},
		{name: "nothing listening", c: HTTPChecker{URL: "http://" + closedAddr(t).String() + "/"}, wantErr: "connection refused"},
		{name: "not a URL", c: HTTPChecker{URL: "http://[::1"}, wantErr: "http check"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			checkErr(t, tc.c.Check(ctx), tc.wantErr, tc.wantErrIs)
		})
	}

	// The body is read up to MaxHTTPBody: a 200 whose body never ends is
	// healthy at once, not after the check's timeout (where the monitor
	// would count it a failure, ErrSlow).
	t.Run("200 with a body that never ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := (HTTPChecker{URL: plain.URL + "/endless"}).Check(ctx); err != nil {
			t.Errorf("Check() = %v, want healthy", err)
		}
		if ctx.Err() != nil {
			t.Errorf("Check() returned only when its context ended: it read the whole endless body")
		}
	})

	// A body that stops coming is a backend that does not answer: the
	// read is bounded by the check's timeout, and the reason says it was
	// the body.
	t.Run("200 whose body stalls", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		checkErr(t, (HTTPChecker{URL: plain.URL + "/hungbody"}).Check(ctx),
			"status 200 OK, but the body did not arrive within the timeout", context.DeadlineExceeded)
	})

	t.Run("injected dialer is used", func(t *testing.T) {
		d := &recordingDialer{}
		c := HTTPChecker{URL: tlsSrv.URL + "/ok", Dialer: d}
		if err := c.Check(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d.dials.Load() != 1 {
			t.Errorf("dialer used %d times, want 1", d.dials.Load())
		}
	})
}

// rawHTTP serves every connection one canned response head, with body
// written after it, then waits for the client to close and sends on the
// returned channel how it did: io.EOF for a clean close (FIN), an error
// such as ECONNRESET for a reset. A backend logs the latter as an error.
func rawHTTP(t *testing.T, head string, body []byte) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	closes := make(chan error, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					closes <- fmt.Errorf("read request: %w", err)
					return
				}
				c.Write([]byte(head))
				c.Write(body)
				_, err := io.Copy(io.Discard, c)
				if err == nil {
					err = io.EOF // io.Copy reports EOF as success
				}
				closes <- err
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/", closes
}

// The check reads the body before it closes, so that a backend sees the
// connection closed, not reset: closing a socket whose receive buffer
// still holds data sends a RST, which backends log as an error. The body
// is larger than the client's header buffer, so that most of it is left
// in the socket when the check does not read it.
func TestHTTPCheckerReadsTheBody(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 32<<10)
	url, closes := rawHTTP(t, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body)), body)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := (HTTPChecker{URL: url}).Check(ctx); err != nil {
		t.Fatalf("Check() = %v, want healthy", err)
	}
	select {
	case err := <-closes:
		if err != io.EOF {
			t.Errorf("the backend saw the check's connection end with %v, want a clean close (EOF)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the check did not close its connection")
	}
}

// TestHTTPCheckerAsksForNoCompression: a check sends no Accept-Encoding,
// so a backend does not compress its answer for every check, every
// interval: Go's client asked for gzip by default. The backend is a real
// server that records the request's headers.
func TestHTTPCheckerAsksForNoCompression(t *testing.T) {
	got := make(chan http.Header, 1)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
	})
	plain := httptest.NewServer(handler)
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(handler)
	defer tlsSrv.Close()
	for _, tc := range []struct {
		name string
		c    HTTPChecker
	}{
		{"http", HTTPChecker{URL: plain.URL + "/"}},
		{"https", HTTPChecker{URL: tlsSrv.URL + "/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tc.c.Check(ctx); err != nil {
				t.Fatalf("Check() = %v, want healthy", err)
			}
			if h := <-got; h.Values("Accept-Encoding") != nil {
				t.Errorf("the check sent Accept-Encoding: %q, want none", h.Values("Accept-Encoding"))
			}
		})
	}
}

// TestHTTPCheckerBodyLimitCountsWireBytes: MaxHTTPBody counts the bytes
// the backend sent, not what they inflate to. The backend sends a gzip
// body anyway (some do, unasked): 1 MiB of zeros, then 16 KiB that do
// not compress, in about 18 KiB. A check that inflated it stopped after
// 64 KiB inflated, a few dozen bytes of the stream, and closed on the
// rest with a reset; it now reads the 18 KiB and closes cleanly.
func TestHTTPCheckerBodyLimitCountsWireBytes(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(make([]byte, 1<<20))
	noise := make([]byte, 16<<10)
	rand.Read(noise)
	zw.Write(noise)
	zw.Close()
	if gz.Len() >= MaxHTTPBody || gz.Len() < 8<<10 {
		t.Fatalf("test body is %d bytes gzipped, want 8 KiB to MaxHTTPBody", gz.Len())
	}
	url, closes := rawHTTP(t, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", gz.Len()), gz.Bytes())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := (HTTPChecker{URL: url}).Check(ctx); err != nil {
		t.Fatalf("Check() = %v, want healthy", err)
	}
	select {
	case err := <-closes:
		if err != io.EOF {
			t.Errorf("the backend saw the check's connection end with %v, want a clean close (EOF): the check cut a %d-byte body", err, gz.Len())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the check did not close its connection")
	}
}

func checkErr(t *testing.T, err error, wantErr string, wantErrIs error) {
	t.Helper()
	if wantErr == "" && wantErrIs == nil {
		if err != nil {
			t.Errorf("Check() = %v, want healthy", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Check() = nil, want an error")
	}
	if wantErr != "" && !strings.Contains(err.Error(), wantErr) {
		t.Errorf("Check() = %q, want it to contain %q", err, wantErr)
	}
	if wantErrIs != nil && !errors.Is(err, wantErrIs) {
		t.Errorf("Check() = %v, want errors.Is %v", err, wantErrIs)
	}
}

// A backend's status reason is quoted in the check's failure, which
// status, logs and health changes show, cut to maxReason bytes; headers
// beyond maxHTTPHeader fail the check rather than being held.
func TestHTTPCheckerBoundsWhatItQuotes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	long := strings.Repeat("é", 4000) // two bytes each: the cut falls inside one
	url, _ := rawHTTP(t, "HTTP/1.1 503 "+long+"\r\nContent-Length: 0\r\n\r\n", nil)
	err := (HTTPChecker{URL: url}).Check(ctx)
	if !errors.Is(err, ErrUnexpectedStatus) {
		t.Fatalf("Check() = %v, want ErrUnexpectedStatus", err)
	}
	if msg := err.Error(); len(msg) > 300 || !utf8.ValidString(msg) || !strings.Contains(msg, "bytes more)") {
		t.Errorf("the failure quotes %d bytes (valid UTF-8: %t), want the reason cut to %d bytes and marked: %.200q",
			len(msg), utf8.ValidString(msg), maxReason, msg)
	}

	huge := "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("a", 2*maxHTTPHeader) + "\r\nContent-Length: 0\r\n\r\n"
	url, _ = rawHTTP(t, huge, nil)
	if err := (HTTPChecker{URL: url}).Check(ctx); err == nil || !strings.Contains(err.Error(), "header") {
		t.Errorf("Check() of an answer with %d bytes of headers = %v, want a failure naming the headers", 2*maxHTTPHeader, err)
	}
}
