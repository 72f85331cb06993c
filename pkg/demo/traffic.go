package demo

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/testserver"
)

// URL is "http://VIP:PORT" + path, with IPv6 addresses in brackets.
func URL(vip netip.AddrPort, path string) string { return "http://" + vip.String() + path }

// HTTPClient returns a client that sends from the client node, a new
// connection (a new flow, from a new source port) for every request.
func (l *Lab) HTTPClient() *http.Client { return l.topo.HTTPClient(l.topo.Client()) }

// Get fetches url from the client node on a new connection and returns the
// backend that answered (the X-Backend header) and the body. A status
// other than 200 is an error.
func (l *Lab) Get(ctx context.Context, url string) (backend string, body []byte, err error) {
	c := l.HTTPClient()
	defer c.CloseIdleConnections()
	return get(ctx, c, url)
}

func get(ctx context.Context, c *http.Client, url string) (string, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", nil, fmt.Errorf("GET %s: read the body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", body, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return resp.Header.Get("X-Backend"), body, nil
}

// Spread sends n GET requests for url from the client node, each on a new
// connection, at most parallel at a time, each bounded by perRequest, and
// counts the answers by backend. Requests that fail are counted under "".
// It returns ctx's error when ctx ends, else a *SpreadError when any
// request failed (with the counts either way).
func (l *Lab) Spread(ctx context.Context, url string, n, parallel int, perRequest time.Duration) (map[string]int, error) {
	if parallel < 1 {
		parallel = 1
	}
	c := l.HTTPClient()
	defer c.CloseIdleConnections()
	counts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	var firstErr error
	for range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return counts, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, perRequest)
			defer cancel()
			be, _, err := get(rctx, c, url)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				be = ""
				if firstErr == nil {
					firstErr = err
				}
			}
			counts[be]++
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return counts, ctx.Err()
	}
	if counts[""] > 0 {
		return counts, &SpreadError{Failed: counts[""], Total: n, First: firstErr}
	}
	return counts, nil
}

// SpreadError says how many requests of a Spread failed.
type SpreadError struct {
	Failed, Total int
	First         error
}

func (e *SpreadError) Error() string {
	return fmt.Sprintf("%d of %d requests failed; the first: %v", e.Failed, e.Total, e.First)
}

// Stream is a long-lived GET /stream connection from the client node.
// A goroutine reads its lines ("backend=<name> seq=<n>") and checks that
// they come from one backend in sequence.
type Stream struct {
	backend string
	cancel  context.CancelFunc
	done    chan struct{}

	mu     sync.Mutex
	lines  int
	last   time.Time
	maxGap time.Duration
	err    error
	notify chan struct{} // closed and replaced on every line
}

// OpenStream opens GET /stream?interval=<interval> on vip from the client
// node and returns once the first line has arrived.
func (l *Lab) OpenStream(ctx context.Context, vip netip.AddrPort, interval time.Duration) (*Stream, error) {
	c := l.HTTPClient()
	sctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, URL(vip, "/stream?interval="+interval.String()), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	// Bound the connection and the headers by ctx, not the stream itself.
	type result struct {
		resp *http.Response
		err  error
	}
	rc := make(chan result, 1)
	go func() {
		resp, err := c.Do(req)
		rc <- result{resp, err}
	}()
	var r result
	select {
	case r = <-rc:
	case <-ctx.Done():
		cancel()
		r = <-rc
		if r.err == nil {
			r.resp.Body.Close()
		}
		return nil, fmt.Errorf("open stream: %w", ctx.Err())
	}
	if r.err != nil {
		cancel()
		return nil, fmt.Errorf("open stream: %w", r.err)
	}
	if r.resp.StatusCode != http.StatusOK {
		r.resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("open stream: %s", r.resp.Status)
	}
	s := &Stream{
		backend: r.resp.Header.Get("X-Backend"),
		cancel:  cancel,
		done:    make(chan struct{}),
		notify:  make(chan struct{}),
	}
	go s.read(r.resp.Body, c)
	if err := s.WaitLines(ctx, 1); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Stream) read(body io.ReadCloser, c *http.Client) {
	defer close(s.done)
	defer c.CloseIdleConnections()
	defer body.Close()
	sc := bufio.NewScanner(body)
	prefix := "backend=" + s.backend + " seq="
	var err error
	for sc.Scan() {
		line := sc.Text()
		s.mu.Lock()
		seq, perr := strconv.Atoi(strings.TrimPrefix(line, prefix))
		if !strings.HasPrefix(line, prefix) || perr != nil || seq != s.lines+1 {
			s.err = fmt.Errorf("stream to %s: line %d is %q, want %s%d", s.backend, s.lines+1, line, prefix, s.lines+1)
			s.mu.Unlock()
			return
		}
		now := time.Now()
		if s.lines > 0 {
			s.maxGap = max(s.maxGap, now.Sub(s.last))
		}
		s.lines, s.last = seq, now
		close(s.notify)
		s.notify = make(chan struct{})
		s.mu.Unlock()
	}
	err = sc.Err()
	if err == nil {
		err = io.EOF
	}
	s.mu.Lock()
	if s.err == nil {
		s.err = fmt.Errorf("stream to %s ended after %d lines: %w", s.backend, s.lines, err)
	}
	s.mu.Unlock()
}

// Backend is the backend the stream landed on.
func (s *Stream) Backend() string { return s.backend }

// Lines is the number of lines received so far.
func (s *Stream) Lines() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lines
}

// MaxGap is the longest time between two consecutive lines so far.
func (s *Stream) MaxGap() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxGap
}

// Err is nil while the stream is healthy, else why it broke or ended.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// WaitLines waits until the stream has received at least n lines in all.
// It fails when the stream breaks or ctx ends first.
func (s *Stream) WaitLines(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		lines, err, notify := s.lines, s.err, s.notify
		s.mu.Unlock()
		if lines >= n {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-notify:
		case <-s.done:
		case <-ctx.Done():
			return fmt.Errorf("stream to %s: %d lines, want %d: %w", s.backend, lines, n, ctx.Err())
		}
	}
}

// Advance waits for n more lines than the stream has now.
func (s *Stream) Advance(ctx context.Context, n int) error {
	return s.WaitLines(ctx, s.Lines()+n)
}

// Close ends the stream and waits for its reader.
func (s *Stream) Close() {
	s.cancel()
	<-s.done
}

// UDP sends payload to vip from the client node on a new socket (a new
// flow) and returns the echo ("backend=<name> <payload>"). Datagrams can
// be lost: it sends up to 5 times, waiting up to timeout/5 for an answer.
func (l *Lab) UDP(ctx context.Context, vip netip.AddrPort, payload string, timeout time.Duration) (string, error) {
	c, err := l.topo.Dialer(l.topo.Client()).DialContext(ctx, "udp", vip.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	var last error
	for range 5 {
		if _, err := c.Write([]byte(payload)); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(timeout / 5))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		last = err
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
	return "", fmt.Errorf("UDP to %s: no answer: %w", vip, last)
}

// Ping sends ICMP (or ICMPv6) echo requests to addr from the client node
// through a raw socket, up to 5 within timeout, and returns the round-trip
// time of the first matching echo reply from addr.
func (l *Lab) Ping(ctx context.Context, addr netip.Addr, timeout time.Duration) (time.Duration, error) {
	network, laddr, reqType, replyType := "ip4:icmp", "0.0.0.0", byte(8), byte(0)
	if addr.Is6() {
		network, laddr, reqType, replyType = "ip6:ipv6-icmp", "::", 128, 129
	}
	pc, err := l.topo.ListenPacket(l.topo.Client(), network, laddr)
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	id := uint16(os.Getpid())
	payload := []byte("switchyard-lab-ping")
	dst := &net.IPAddr{IP: addr.AsSlice()}
	buf := make([]byte, 1500)
	for seq := uint16(1); seq <= 5; seq++ {
		msg := make([]byte, 8+len(payload))
		msg[0] = reqType
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], seq)
		copy(msg[8:], payload)
		if addr.Is4() {
			// The kernel fills in the ICMPv6 checksum (it covers a
			// pseudo-header), not the ICMPv4 one.
			binary.BigEndian.PutUint16(msg[2:], inetChecksum(msg))
		}
		sent := time.Now()
		if _, err := pc.WriteTo(msg, dst); err != nil {
			return 0, fmt.Errorf("send echo request to %s: %w", addr, err)
		}
		deadline := sent.Add(timeout / 5)
		for {
			pc.SetReadDeadline(deadline)
			n, from, err := pc.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return 0, err
			}
			b := buf[:n]
			// An IPv4 raw socket may hand over the IP header too.
			if addr.Is4() && n >= 20 && b[0]>>4 == 4 {
				b = b[int(b[0]&0x0f)*4:]
			}
			ip, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP)
			if ok && ip.Unmap() == addr && len(b) >= 8 && b[0] == replyType &&
				binary.BigEndian.Uint16(b[4:]) == id && binary.BigEndian.Uint16(b[6:]) == seq &&
				string(b[8:]) == string(payload) {
				return time.Since(sent), nil
			}
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	return 0, fmt.Errorf("no echo reply from %s to 5 requests", addr)
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// Upload POSTs n bytes of the test pattern to vip's /upload from the client
// node and checks the server's byte count and SHA-256 against what was
// sent. It returns the backend that answered.
func (l *Lab) Upload(ctx context.Context, vip netip.AddrPort, n int64) (string, error) {
	h := sha256.New()
	io.Copy(h, testserver.PatternReader(n))
	want := fmt.Sprintf("bytes=%d sha256=%s\n", n, hex.EncodeToString(h.Sum(nil)))

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, URL(vip, "/upload"), testserver.PatternReader(n))
	if err != nil {
		return "", err
	}
	req.ContentLength = n
	c := l.HTTPClient()
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("upload %d bytes to %s: %w", n, vip, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("upload %d bytes to %s: read the answer: %w", n, vip, err)
	}
	be := resp.Header.Get("X-Backend")
	if resp.StatusCode != http.StatusOK || string(body) != want {
		return be, fmt.Errorf("upload %d bytes to %s (%s): %s %q, want %q", n, vip, be, resp.Status, body, want)
	}
	return be, nil
}

// Download GETs n bytes from vip's /download from the client node and
// verifies every byte against the test pattern. It returns the backend
// that answered.
func (l *Lab) Download(ctx context.Context, vip netip.AddrPort, n int64) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, URL(vip, "/download?bytes="+strconv.FormatInt(n, 10)), nil)
	if err != nil {
		return "", err
	}
	c := l.HTTPClient()
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("download %d bytes from %s: %w", n, vip, err)
	}
	defer resp.Body.Close()
	be := resp.Header.Get("X-Backend")
	if resp.StatusCode != http.StatusOK {
		return be, fmt.Errorf("download from %s (%s): %s", vip, be, resp.Status)
	}
	got, err := testserver.VerifyPattern(resp.Body)
	if err != nil {
		return be, fmt.Errorf("download from %s (%s): %w", vip, be, err)
	}
	if got != n {
		return be, fmt.Errorf("download from %s (%s): %d bytes, want %d", vip, be, got, n)
	}
	return be, nil
}
