package metrics

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestServer(t *testing.T) {
	reg := NewRegistry(NewCollector(staticStatus(sampleStatus()), nil))
	s := NewServer(ServerConfig{Listen: "127.0.0.1:0"}, reg)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "http://" + s.Addr().String()

	code, _, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	for _, want := range []string{
		`switchyard_vip_packets_total{address="10.0.0.100",port="80",protocol="tcp",vip="web"} 12345`,
		`switchyard_backend_packets_total{address="10.2.1.1",backend="web-1"} 4000`,
		`switchyard_datapath_drops_total{reason="no_backend"} 12`,
		`switchyard_info{attach_mode="native",interface="eth0",node="lb1",program_tag="5f1c0a9e3b2d7c41"} 1`,
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if err := testutil.ScrapeAndCompare(base+"/metrics", strings.NewReader(wantSample),
		"switchyard_vip_packets_total", "switchyard_backend_weight", "switchyard_info"); err != nil {
		t.Error(err)
	}

	code, ctype, body := get(t, base+"/")
	if code != http.StatusOK || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(body, `href="/metrics"`) {
		t.Errorf("/: %d %s %q, want a page linking /metrics", code, ctype, body)
	}
	if code, _, _ := get(t, base+"/nope"); code != http.StatusNotFound {
		t.Errorf("/nope: %d, want 404", code)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + "/metrics"); err == nil {
		t.Error("still serving after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestServerAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := NewServer(ServerConfig{Listen: ln.Addr().String()}, NewRegistry(NewCollector(staticStatus(sampleStatus()), nil)))
	err = s.Start()
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("got %v, want EADDRINUSE", err)
	}
	for _, want := range []string{"metrics.listen", ln.Addr().String(), "already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if s.Addr() != nil {
		t.Errorf("Addr %v after a failed Start", s.Addr())
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

func TestServerDisabled(t *testing.T) {
	s := NewServer(ServerConfig{}, NewRegistry(NewCollector(staticStatus(sampleStatus()), nil)))
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Errorf("disabled server listens on %v", s.Addr())
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

// A client that sends half a request and stalls is cut off: without a
// read timeout, a scrape whose body never came held its connection (and
// a goroutine) for ever. The timeouts are shortened; the connection must
// be closed well before the read below gives up.
func TestStalledRequestIsClosed(t *testing.T) {
	for _, tc := range []struct{ name, request string }{
		{"half the headers", "GET /metrics HTTP/1.1\r\nHost: switchyard\r\n"},
		{"half the body", "GET /metrics HTTP/1.1\r\nHost: switchyard\r\nContent-Length: 100\r\n\r\nab"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewServer(ServerConfig{Listen: "127.0.0.1:0"}, NewRegistry(NewCollector(staticStatus(sampleStatus()), nil)))
			s.readHeaderTimeout, s.readTimeout = 100*time.Millisecond, 200*time.Millisecond
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			conn, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tc.request); err != nil {
				t.Fatal(err)
			}
			if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(conn); err != nil {
				t.Fatalf("server still holds a connection 5 s after the request stalled (%q): %v; answered so far: %q", tc.request, err, got)
			}
		})
	}
}

// TestServerStartAfterClose: a server closed before it started (the daemon
// shutting down during startup) must not start listening afterwards, where
// nothing would ever close it.
func TestServerStartAfterClose(t *testing.T) {
	s := NewServer(ServerConfig{Listen: "127.0.0.1:0"}, NewRegistry(NewCollector(staticStatus(sampleStatus()), nil)))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
	if s.Addr() != nil {
		t.Errorf("closed server listens on %v", s.Addr())
		s.http.Close() // nothing else would
	}
}
