package testserver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// checkGoroutines fails the test if, after its cleanups (registered later,
// so run earlier), more goroutines run than before it started.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			now := runtime.NumGoroutine()
			if now <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines before the test, %d after:\n%s", before, now, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// start runs a server for the test and closes it, and the test's client,
// in t.Cleanup.
func start(t *testing.T, cfg Config) (*Server, *http.Client) {
	t.Helper()
	checkGoroutines(t)
	if cfg.Name == "" {
		cfg.Name = "be7"
	}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func startHTTP(t *testing.T) (*Server, *http.Client, string) {
	t.Helper()
	s, c := start(t, Config{HTTPAddr: "127.0.0.1:0"})
	return s, c, "http://" + s.HTTPAddr().String()
}

func do(t *testing.T, c *http.Client, method, url string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, string(b)
}

func TestRootNamesBackend(t *testing.T) {
	_, c, base := startHTTP(t)
	resp, body := do(t, c, "GET", base+"/", nil)
	if resp.StatusCode != 200 || body != "backend=be7\n" {
		t.Errorf("GET / = %d %q, want 200 %q", resp.StatusCode, body, "backend=be7\n")
	}
	if got := resp.Header.Get("X-Backend"); got != "be7" {
		t.Errorf("X-Backend = %q, want be7", got)
	}
	resp, _ = do(t, c, "GET", base+"/nothing-here", nil)
	if resp.StatusCode != 404 || resp.Header.Get("X-Backend") != "be7" {
		t.Errorf("GET /nothing-here = %d with X-Backend %q, want 404 with be7", resp.StatusCode, resp.Header.Get("X-Backend"))
	}
}

func TestHealthzCanBeMadeToFail(t *testing.T) {
	s, c, base := startHTTP(t)
	steps := []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/healthz", 200, "ok"},
		{"POST", "/healthz/fail", 200, "failing\n"},
		{"GET", "/healthz", 503, "failing\n"},
		{"POST", "/healthz/ok", 200, "ok\n"},
		{"GET", "/healthz", 200, "ok"},
		{"GET", "/healthz/fail", 405, ""}, // only POST changes state
		{"GET", "/healthz", 200, "ok"},
	}
	for _, st := range steps {
		resp, body := do(t, c, st.method, base+st.path, nil)
		if resp.StatusCode != st.code || (st.body != "" && body != st.body) {
			t.Errorf("%s %s = %d %q, want %d %q", st.method, st.path, resp.StatusCode, body, st.code, st.body)
		}
	}
	s.SetHealthy(false)
	if resp, _ := do(t, c, "GET", base+"/healthz", nil); resp.StatusCode != 503 {
		t.Errorf("after SetHealthy(false): %d, want 503", resp.StatusCode)
	}
}

func TestStream(t *testing.T) {
	_, c, base := startHTTP(t)

	t.Run("Count", func(t *testing.T) {
		resp, body := do(t, c, "GET", base+"/stream?interval=5ms&count=3", nil)
		want := "backend=be7 seq=1\nbackend=be7 seq=2\nbackend=be7 seq=3\n"
		if resp.StatusCode != 200 || body != want {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
		if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
			t.Errorf("transfer encoding %v, want chunked", resp.TransferEncoding)
		}
	})

	// Each line is flushed when written: the first arrives at once although
	// the next is an hour away, and hanging up ends the handler (Close in
	// the cleanup would wait for it otherwise).
	t.Run("FlushedAndEndsWithClient", func(t *testing.T) {
		for _, q := range []string{"interval=1h&count=2", "interval=1h"} {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"/stream?"+q, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || line != "backend=be7 seq=1\n" {
				t.Errorf("%s: first line %q, %v", q, line, err)
			}
			resp.Body.Close()
			cancel()
		}
	})

	t.Run("UntilClientGoesAway", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/stream?interval=1ms", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		for i := 1; i <= 50; i++ {
			line, err := r.ReadString('\n')
			if want := fmt.Sprintf("backend=be7 seq=%d\n", i); err != nil || line != want {
				t.Fatalf("line %d = %q, %v; want %q", i, line, err, want)
			}
		}
	})

	for _, q := range []string{"interval=0s", "interval=fast", "count=-1", "count=x"} {
		if resp, _ := do(t, c, "GET", base+"/stream?"+q, nil); resp.StatusCode != 400 {
			t.Errorf("/stream?%s = %d, want 400", q, resp.StatusCode)
		}
	}
}

func TestDownload(t *testing.T) {
	_, c, base := startHTTP(t)
	for _, n := range []int64{0, 1, 250, 251, 252, 1_000_003} {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", fmt.Sprintf("%s/download?bytes=%d", base, n), nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := VerifyPattern(resp.Body)
		resp.Body.Close()
		if err != nil || got != n || resp.ContentLength != n {
			t.Errorf("bytes=%d: read %d (Content-Length %d): %v", n, got, resp.ContentLength, err)
		}
	}
	for _, q := range []string{"", "bytes=", "bytes=-1", "bytes=abc", fmt.Sprintf("bytes=%d", MaxDownloadBytes+1)} {
		if resp, _ := do(t, c, "GET", base+"/download?"+q, nil); resp.StatusCode != 400 {
			t.Errorf("/download?%s = %d, want 400", q, resp.StatusCode)
		}
	}
}

func TestUpload(t *testing.T) {
	_, c, base := startHTTP(t)
	for _, n := range []int64{0, 5, 3 << 20} {
		h := sha256.New()
		io.Copy(h, PatternReader(n))
		want := fmt.Sprintf("bytes=%d sha256=%s\n", n, hex.EncodeToString(h.Sum(nil)))
		resp, body := do(t, c, "POST", base+"/upload", PatternReader(n))
		if resp.StatusCode != 200 || body != want {
			t.Errorf("upload %d bytes: %d %q, want 200 %q", n, resp.StatusCode, body, want)
		}
	}
}

func TestUDPEchoTagsBackend(t *testing.T) {
	s, _ := start(t, Config{UDPAddr: "127.0.0.1:0"})
	if s.HTTPAddr() != nil {
		t.Errorf("HTTPAddr = %v without HTTP, want nil", s.HTTPAddr())
	}
	c, err := net.Dial("udp", s.UDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, payload := range []string{"hello", "", strings.Repeat("x", 60000)} {
		if got := udpRoundTrip(t, c, payload); got != "backend=be7 "+payload {
			t.Errorf("echo of %d bytes: got %d bytes %.40q", len(payload), len(got), got)
		}
	}
}

// TestUDPReplyComesFromAddressAsked proves the direct-server-return case on
// loopback: with a wildcard socket, a datagram sent to 127.0.0.2 (standing
// for a VIP on lo) must be answered from 127.0.0.2, or the client's
// connected socket, which only accepts its peer, never sees the reply.
func TestUDPReplyComesFromAddressAsked(t *testing.T) {
	for _, tc := range []struct{ listen, dial string }{
		{":0", "127.0.0.2"}, // dual-stack socket, IPv4 client
		{":0", "::1"},       // dual-stack socket, IPv6 client
		{"0.0.0.0:0", "127.0.0.3"},
	} {
		t.Run(tc.listen+"_"+tc.dial, func(t *testing.T) {
			s, _ := start(t, Config{UDPAddr: tc.listen})
			_, port, _ := net.SplitHostPort(s.UDPAddr().String())
			c, err := net.Dial("udp", net.JoinHostPort(tc.dial, port))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := udpRoundTrip(t, c, "ping"); got != "backend=be7 ping" {
				t.Errorf("got %q", got)
			}
		})
	}
	t.Run("udp4Socket", func(t *testing.T) {
		checkGoroutines(t)
		u, err := listenUDP("udp4", "0.0.0.0:0", "be7", slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		go u.serve()
		defer u.conn.Close()
		_, port, _ := net.SplitHostPort(u.conn.LocalAddr().String())
		c, err := net.Dial("udp", "127.0.0.4:"+port)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := udpRoundTrip(t, c, "ping"); got != "backend=be7 ping" {
			t.Errorf("got %q", got)
		}
	})
}

func udpRoundTrip(t *testing.T, c net.Conn, payload string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(payload)); err != nil {
		t.Fatalf("send: %v", err)
	}
	buf := make([]byte, 70000)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply from %s: %v", c.RemoteAddr(), err)
	}
	return string(buf[:n])
}

func TestCloseStopsEverything(t *testing.T) {
	checkGoroutines(t)
	s, err := New(Config{Name: "be1", HTTPAddr: "127.0.0.1:0", UDPAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.HTTPAddr() != nil || s.UDPAddr() != nil {
		t.Error("addresses set before Start")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
	httpAddr, udpAddr := s.HTTPAddr().String(), s.UDPAddr().String()

	// An open stream must not keep Close waiting.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + httpAddr + "/stream?interval=1h")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "backend=be1 seq=1\n" {
		t.Fatalf("stream before Close: first line %q, %v; want it open", line, err)
	}

	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close still waiting after 5s with a stream open")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("stream body ended cleanly after Close, want a broken connection")
	}
	if c, err := net.DialTimeout("tcp", httpAddr, time.Second); err == nil {
		c.Close()
		t.Error("HTTP port still accepts after Close")
	}
	// The UDP port is free again: nothing listens on it.
	pc, err := net.ListenPacket("udp", udpAddr)
	if err != nil {
		t.Errorf("UDP port still bound after Close: %v", err)
	} else {
		pc.Close()
	}
	if err := s.Start(); !errors.Is(err, ErrStarted) {
		t.Errorf("Start after Close = %v, want ErrStarted", err)
	}
}

func TestStartFailsOnBusyPort(t *testing.T) {
	checkGoroutines(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := New(Config{Name: "be1", HTTPAddr: l.Addr().String(), UDPAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		t.Error("Start succeeded on a busy port")
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Name: "be1", HTTPAddr: ":80", UDPAddr: ":53"}, true},
		{Config{Name: "be1", HTTPAddr: ":80"}, true},
		{Config{Name: "be1", UDPAddr: "[::]:53"}, true},
		{Config{HTTPAddr: ":80"}, false},
		{Config{Name: "be1"}, false},
		{Config{Name: "be1", HTTPAddr: "80"}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%t", tc.cfg, err, tc.ok)
		}
	}
	if d := DefaultConfig(); d.HTTPAddr != ":80" || d.UDPAddr != ":53" {
		t.Errorf("DefaultConfig = %+v", d)
	}
}

func TestPattern(t *testing.T) {
	var b bytes.Buffer
	io.CopyBuffer(&b, PatternReader(1000), make([]byte, 7)) // odd chunks
	for i, c := range b.Bytes() {
		if c != PatternByte(int64(i)) {
			t.Fatalf("byte %d = %d, want %d", i, c, PatternByte(int64(i)))
		}
	}
	if n, err := VerifyPattern(bytes.NewReader(b.Bytes())); n != 1000 || err != nil {
		t.Errorf("VerifyPattern = %d, %v", n, err)
	}
	bad := bytes.Clone(b.Bytes())
	bad[600]++
	if n, err := VerifyPattern(bytes.NewReader(bad)); n != 600 || !errors.Is(err, ErrPatternMismatch) {
		t.Errorf("VerifyPattern of a damaged copy = %d, %v; want 600, ErrPatternMismatch", n, err)
	}
	// A chunk missing: the rest is shifted by a power of two.
	shifted := append(bytes.Clone(b.Bytes()[:256]), b.Bytes()[512:]...)
	if _, err := VerifyPattern(bytes.NewReader(shifted)); !errors.Is(err, ErrPatternMismatch) {
		t.Errorf("VerifyPattern of a copy missing 256 bytes: %v", err)
	}
}
