package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

var fixedNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeService answers with the sample fixtures and records its calls; the
// kernel is not under test here.
type fakeService struct {
	err error // returned by every method

	mu    sync.Mutex
	calls []string
	// statusHook, if set, runs in Status before it returns.
	statusHook func(ctx context.Context)
	// reloadHook, if set, runs in Reload; its error is Reload's.
	reloadHook func(ctx context.Context) error
}

func (f *fakeService) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeService) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeService) Status(ctx context.Context) (Status, error) {
	f.record("status")
	if f.statusHook != nil {
		f.statusHook(ctx)
	}
	return sampleStatus(fixedNow), f.err
}

func (f *fakeService) Flows(_ context.Context, vip string, limit int) (FlowsResponse, error) {
	f.record("flows vip=%q limit=%d", vip, limit)
	return sampleFlows(), f.err
}

func (f *fakeService) Drain(_ context.Context, backend string, drain bool) (DrainResponse, error) {
	f.record("drain %s %v", backend, drain)
	return DrainResponse{Matched: []string{"web/" + backend}}, f.err
}

func (f *fakeService) Reload(ctx context.Context) (ReloadResponse, error) {
	f.record("reload")
	if f.reloadHook != nil {
		return ReloadResponse{}, f.reloadHook(ctx)
	}
	return ReloadResponse{Generation: 5, Changed: []string{"vip web: backend web-3 added"}}, f.err
}

// startServer serves svc on a socket in a directory Start has to create.
func startServer(t *testing.T, svc Service) (*Server, string) {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "run", "sw.sock")
	s, err := NewServer(ServerConfig{Socket: socket}, svc)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, socket
}

// rawDo sends one request over the socket without the Client, to see the
// status and body the server answers with.
func rawDo(t *testing.T, socket, method, path, body string) (*http.Response, Error) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://switchyard"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e Error
	if resp.StatusCode != http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatalf("%s %s: %s answer is not a JSON api.Error: %v", method, path, resp.Status, err)
		}
	}
	return resp, e
}

func TestRoundTrip(t *testing.T) {
	svc := &fakeService{}
	_, socket := startServer(t, svc)
	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}

	ctx := t.Context()
	c := NewClient(socket)
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := sampleStatus(fixedNow); !reflect.DeepEqual(st, want) {
		t.Errorf("status:\n got %+v\nwant %+v", st, want)
	}
	fl, err := c.Flows(ctx, "web", 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := sampleFlows(); !reflect.DeepEqual(fl, want) {
		t.Errorf("flows:\n got %+v\nwant %+v", fl, want)
	}
	if _, err := c.Flows(ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Flows(ctx, "", 100000); err != nil {
		t.Fatalf("flows at the maximum limit: %v", err)
	}
	d, err := c.Drain(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Matched, []string{"web/web-1"}) {
		t.Errorf("drain matched %q", d.Matched)
	}
	if _, err := c.Undrain(ctx, "web/web-1"); err != nil {
		t.Fatal(err)
	}
	r, err := c.Reload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Generation != 5 || len(r.Changed) != 1 {
		t.Errorf("reload: got %+v", r)
	}

	want := []string{
		"status",
		`flows vip="web" limit=10`,
		`flows vip="" limit=0`,
		`flows vip="" limit=100000`,
		"drain web-1 true",
		"drain web/web-1 false",
		"reload",
	}
	if got := svc.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("service calls:\n got %q\nwant %q", got, want)
	}
}

func TestErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		err      error
		status   int
		sentinel error
	}{
		{fmt.Errorf("no backend named %q: %w", "web-9", ErrNotFound), http.StatusNotFound, ErrNotFound},
		{fmt.Errorf("backend %q is ambiguous, say VIP/NAME: %w", "b", ErrBadRequest), http.StatusBadRequest, ErrBadRequest},
		{fmt.Errorf("/etc/switchyard/switchyard.yaml:12: vips[0].port: 0 is not 1 to 65535: %w", ErrRejected), http.StatusUnprocessableEntity, ErrRejected},
		{Unavailable("switchyard is shutting down: its control loop has stopped"), http.StatusServiceUnavailable, ErrUnavailable},
		{errors.New("read conn table: operation not permitted"), http.StatusInternalServerError, nil},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			_, socket := startServer(t, &fakeService{err: tc.err})
			resp, e := rawDo(t, socket, http.MethodPost, "/v1/reload", "")
			if resp.StatusCode != tc.status || e.Error != tc.err.Error() {
				t.Errorf("answer %d %q, want %d %q", resp.StatusCode, e.Error, tc.status, tc.err.Error())
			}

			_, err := NewClient(socket).Reload(t.Context())
			if err == nil || err.Error() != tc.err.Error() {
				t.Errorf("client error %q, want the daemon's message %q", err, tc.err.Error())
			}
			for _, s := range []error{ErrNotFound, ErrBadRequest, ErrRejected, ErrUnavailable, ErrNoDaemon} {
				if errors.Is(err, s) != (s == tc.sentinel) {
					t.Errorf("errors.Is(%q, %v) = %v", err, s, !(s == tc.sentinel))
				}
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	svc := &fakeService{}
	_, socket := startServer(t, svc)
	for _, tc := range []struct {
		method, path, body string
		status             int
		msg                string
	}{
		{"POST", "/v1/drain", "web-1", 400, "request body"},
		{"POST", "/v1/drain", "", 400, "request body is empty"},
		{"POST", "/v1/drain", `{"backend": ""}`, 400, "name a backend"},
		{"POST", "/v1/drain", `{"backend": "a", "vip": "web"}`, 400, `unknown field "vip"`},
		{"POST", "/v1/undrain", `{"backend": "a"} {}`, 400, "data after the JSON object"},
		{"POST", "/v1/drain", `{"backend": "` + strings.Repeat("a", 2<<20) + `"}`, 413, "larger than 1048576 bytes"},
		{"GET", "/v1/flows?limit=ten", "", 400, `limit "ten" is not a whole number`},
		{"GET", "/v1/flows?limit=16777216", "", 400, "limit 16777216 is above the maximum of 100000"},
		{"GET", "/v1/drain", "", 405, "/v1/drain takes POST, not GET"},
		{"POST", "/v1/status", "", 405, "/v1/status takes GET, not POST"},
		{"GET", "/v2/status", "", 404, "no endpoint /v2/status"},
	} {
		resp, e := rawDo(t, socket, tc.method, tc.path, tc.body)
		if resp.StatusCode != tc.status || !strings.Contains(e.Error, tc.msg) {
			t.Errorf("%s %s: answer %d %q, want %d with %q", tc.method, tc.path, resp.StatusCode, e.Error, tc.status, tc.msg)
		}
		if tc.status == 405 && resp.Header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without an Allow header", tc.method, tc.path)
		}
	}
	if calls := svc.Calls(); len(calls) != 0 {
		t.Errorf("bad requests reached the service: %q", calls)
	}

	_, err := NewClient(socket).Drain(t.Context(), "")
	if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "VIP/NAME") {
		t.Errorf("drain of no backend: got %v, want ErrBadRequest saying how to name one", err)
	}
}

func TestStartRemovesStaleSocket(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "sw.sock")
	// A daemon that died leaves its socket file behind.
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := NewClient(socket).Status(t.Context()); !errors.Is(err, ErrNoDaemon) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("client on a stale socket: got %v, want ErrNoDaemon", err)
	}

	s, err := NewServer(ServerConfig{Socket: socket}, &fakeService{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("start over a stale socket: %v", err)
	}
	defer s.Close()
	if _, err := NewClient(socket).Status(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestStartRefusesLiveSocket(t *testing.T) {
	_, socket := startServer(t, &fakeService{})

	second, err := NewServer(ServerConfig{Socket: socket}, &fakeService{})
	if err != nil {
		t.Fatal(err)
	}
	err = second.Start()
	if !errors.Is(err, ErrSocketInUse) || !strings.Contains(err.Error(), "another daemon is listening on "+socket) {
		t.Fatalf("second server on a live socket: got %v, want ErrSocketInUse naming the socket", err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewClient(socket).Status(t.Context()); err != nil {
		t.Fatalf("the first daemon stopped answering: %v", err)
	}
}

func TestStartRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sw.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerConfig{Socket: path}, &fakeService{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("start over a regular file: got %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Errorf("the regular file was changed: %q, %v", b, err)
	}
}

func TestCloseRemovesOnlyItsSocket(t *testing.T) {
	first, socket := startServer(t, &fakeService{})
	// Someone removes the socket and listens on the path (a daemon of an
	// earlier release, which takes no lock).
	if err := os.Remove(socket); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(socket); err != nil {
		t.Fatalf("closing the first daemon removed the other's socket: %v", err)
	}
	other.Close()

	second, err := NewServer(ServerConfig{Socket: socket}, &fakeService{})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Start(); err != nil {
		t.Fatalf("start after the first daemon closed: %v", err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
	if err := second.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Daemons started at the same time on one socket: one serves it, the
// others are refused. Before, each found no daemon on the socket, and the
// later ones replaced the socket of the earlier ones, which ran on,
// unreachable, beside them. The socket left by a daemon that died is
// there in half of the rounds.
func TestStartAtOnceOnOneSocket(t *testing.T) {
	for round := range 20 {
		socket := filepath.Join(t.TempDir(), "sw.sock")
		if round%2 == 1 {
			ln, err := net.Listen("unix", socket)
			if err != nil {
				t.Fatal(err)
			}
			ln.(*net.UnixListener).SetUnlinkOnClose(false)
			ln.Close()
		}
		const daemons = 4
		servers := make([]*Server, daemons)
		errs := make([]error, daemons)
		var wg sync.WaitGroup
		for i := range daemons {
			s, err := NewServer(ServerConfig{Socket: socket}, &fakeService{})
			if err != nil {
				t.Fatal(err)
			}
			servers[i] = s
			t.Cleanup(func() { s.Close() })
			wg.Go(func() { errs[i] = s.Start() })
		}
		wg.Wait()
		var serving []*Server
		for i, err := range errs {
			switch {
			case err == nil:
				serving = append(serving, servers[i])
			case !errors.Is(err, ErrSocketInUse):
				t.Fatalf("round %d: a refused daemon: %v, want ErrSocketInUse", round, err)
			}
		}
		if len(serving) != 1 {
			t.Fatalf("round %d: %d of %d daemons started at once on %s serve it, want 1 (the others unreachable)", round, len(serving), daemons, socket)
		}
		if _, err := NewClient(socket).Status(t.Context()); err != nil {
			t.Fatalf("round %d: the daemon that started does not answer: %v", round, err)
		}
		if err := serving[0].Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCloseFinishesRequestsInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	svc := &fakeService{statusHook: func(context.Context) {
		close(entered)
		<-release
	}}
	s, socket := startServer(t, svc)

	answered := make(chan error, 1)
	go func() {
		_, err := NewClient(socket).Status(context.Background())
		answered <- err
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	// Close stops listening first: wait for that, then let the request end.
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.Dial("unix", socket)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("Close did not stop listening")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-answered; err != nil {
		t.Errorf("request in flight during Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Lstat(socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
}

func TestClientNoDaemon(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "switchyard.sock")
	_, err := NewClient(socket).Status(t.Context())
	if !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("got %v, want ErrNoDaemon", err)
	}
	want := "cannot reach switchyard at " + socket + ": is `switchyard run` running? (use --socket to point elsewhere)"
	if err.Error() != want {
		t.Errorf("message:\n got %q\nwant %q", err, want)
	}
}

// A socket path where nothing listens says why, and what to do: the
// kernel refuses a connection to a regular file, a directory and a
// killed daemon's socket alike, and each was told as no daemon running.
func TestClientNothingListens(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	file := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		client *Client
		want   string
	}{
		{NewClient(stale), "cannot reach switchyard at " + stale + ": nothing listens on this socket: the `switchyard run` that made it was killed or crashed"},
		{NewAgentClient(stale), "the `switchyard agent` that made it was killed or crashed (a stopped one removes it); start it again"},
		{NewClient(file), "cannot reach switchyard at " + file + ": it is a file, not a socket: give --socket the daemon's api.socket"},
		{NewClient(dir), "cannot reach switchyard at " + dir + ": it is a directory, not a socket"},
		// A path through a file is no socket either; it was "talk to
		// switchyard at ...: connect: not a directory".
		{NewClient(filepath.Join(file, "sw.sock")), "cannot reach switchyard at " + filepath.Join(file, "sw.sock") + ": is `switchyard run` running?"},
	} {
		_, err := tc.client.Status(t.Context())
		if !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ErrNoDaemon with %q", tc.client.socket, err, tc.want)
		}
	}
}

func TestClientPermissionDenied(t *testing.T) {
	// Root may connect to any socket, so build the error a user gets.
	c := NewClient("/run/switchyard/switchyard.sock")
	err := c.transportError(http.MethodGet, &url.Error{Op: "Get", URL: "http://switchyard/v1/status", Err: &net.OpError{
		Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES),
	}})
	if !errors.Is(err, fs.ErrPermission) || errors.Is(err, ErrNoDaemon) {
		t.Errorf("got %v, want an error matching fs.ErrPermission and not ErrNoDaemon", err)
	}
	if !strings.Contains(err.Error(), "/run/switchyard/switchyard.sock") || !strings.Contains(err.Error(), "run this as root") {
		t.Errorf("message %q does not say to run as root", err)
	}
}

func TestClientTimeout(t *testing.T) {
	_, socket := startServer(t, &fakeService{statusHook: func(ctx context.Context) { <-ctx.Done() }})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := NewClient(socket).Status(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not answer in time") {
		t.Errorf("got %v, want a deadline error saying the daemon did not answer", err)
	}
	if strings.Contains(err.Error(), "may still") {
		t.Errorf("got %v: a status request changes nothing", err)
	}
}

// syncBuffer is a log destination the server's goroutines and the test
// share.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// expiring is a context whose deadline passes when the test calls expire.
// A timer short enough to keep a test quick can run out on a loaded
// machine before the request has reached the daemon, which then has no
// request to see the client give up on.
type expiring struct {
	context.Context
	done chan struct{}
	once sync.Once
}

func newExpiring() *expiring {
	// Background, not t.Context(): context.Cause would find the test's
	// context through Value and report its nil cause.
	return &expiring{Context: context.Background(), done: make(chan struct{})}
}

func (e *expiring) expire()               { e.once.Do(func() { close(e.done) }) }
func (e *expiring) Done() <-chan struct{} { return e.done }

func (e *expiring) Err() error {
	select {
	case <-e.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// A change the client stops waiting for may still be made (the control
// loop carries out what it took): the client says so and where to look,
// and the daemon does not log it as a failed request.
func TestClientGivesUpOnAChange(t *testing.T) {
	var logs syncBuffer
	ctx := newExpiring()
	svc := &fakeService{reloadHook: func(sctx context.Context) error {
		ctx.expire() // the request has reached the daemon: now give up
		<-sctx.Done()
		return sctx.Err()
	}}
	socket := startLogged(t, svc, &logs)

	_, err := NewClient(socket).Reload(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "may still have carried out the request: `switchyard status` shows whether it did") {
		t.Errorf("got %v, want a deadline error saying the reload may still happen", err)
	}

	waitGaveUp(t, &logs)
	if out := logs.String(); strings.Contains(out, "level=ERROR") || strings.Contains(out, "status=500") {
		t.Errorf("a request its client gave up on is logged as a failure:\n%s", out)
	}
}

// A read the client stops waiting for changed nothing: the daemon's log
// says the client gave up, not that a change may have been made.
func TestClientGivesUpOnARead(t *testing.T) {
	var logs syncBuffer
	ctx := newExpiring()
	// As the daemon's does, Status ends with the request's context.
	svc := &fakeService{err: context.Canceled, statusHook: func(sctx context.Context) {
		ctx.expire() // the request has reached the daemon: now give up
		<-sctx.Done()
	}}
	socket := startLogged(t, svc, &logs)

	if _, err := NewClient(socket).Status(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want a deadline error", err)
	}
	waitGaveUp(t, &logs)
	if out := logs.String(); strings.Contains(out, "change") {
		t.Errorf("a status request its client gave up on is logged as a change that may have been made:\n%s", out)
	}
}

// startLogged starts a server of svc that logs into logs, and returns
// its socket.
func startLogged(t *testing.T, svc Service, logs *syncBuffer) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "sw.sock")
	s, err := NewServer(ServerConfig{Socket: socket, Logger: slog.New(slog.NewTextHandler(logs, nil))}, svc)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return socket
}

// waitGaveUp waits (5 s at most) until the server has logged that a
// client gave up on its request.
func waitGaveUp(t *testing.T, logs *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "api client gave up before the answer") {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not log the client giving up:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServerConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		socket, msg string
	}{
		{"run/sw.sock", "not an absolute path"},
		{"/" + strings.Repeat("s", 200), "longer than the 107"},
	} {
		if _, err := NewServer(ServerConfig{Socket: tc.socket}, &fakeService{}); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("socket %.20q: got %v, want an error with %q", tc.socket, err, tc.msg)
		}
	}
	if err := (ServerConfig{}).Validate(); err != nil {
		t.Errorf("default socket: %v", err)
	}
	if s, err := NewServer(ServerConfig{}, &fakeService{}); err != nil || s.Socket() != "/run/switchyard/switchyard.sock" {
		t.Errorf("default socket: %v, %v", s, err)
	}
}

// The Client closes its connection once it has the answer. A Client has no
// Close, and callers make one per request (the demo polls every 10 ms): a
// connection kept alive would hold a file and a goroutine in the daemon,
// and three goroutines in the caller, for the daemon's idle timeout.
func TestClientClosesItsConnection(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "sw.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	afterAnswer := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			afterAnswer <- err
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		req, err := http.ReadRequest(br)
		if err != nil {
			afterAnswer <- err
			return
		}
		io.Copy(io.Discard, req.Body)
		body := `{"node":"lb1"}`
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		// Bounded: a client that keeps the connection sends nothing more.
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = br.ReadByte()
		afterAnswer <- err
	}()
	st, err := NewClient(socket).Status(t.Context())
	if err != nil || st.Node != "lb1" {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if err := <-afterAnswer; !errors.Is(err, io.EOF) {
		t.Errorf("after the answer the connection gave %v, want EOF: the client kept it open", err)
	}
}

// serveForeign serves h on a unix socket: another program, or a proxy, in
// the daemon's place.
func serveForeign(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "foreign.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return socket
}

// Answers that are not the daemon's JSON still give the user the status
// and text they carried, and the sentinel of the status.
func TestClientForeignAnswers(t *testing.T) {
	socket := serveForeign(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/status":
			http.Error(w, "upstream gone", http.StatusBadGateway)
		case "/v1/flows":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"flows": [`)
		case "/v1/drain":
			// JSON, but not an api.Error: its text is all there is.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"message": "backend pool locked"}`)
		case "/v1/undrain":
			// Written out as it was, this spread over several lines
			// and coloured (or retitled) the user's terminal.
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, "<html>\n<body>\x1b[31mNot here\x1b]0;title\x07</body>\n</html>\n")
		case "/v1/reload":
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html>welcome</html>\n")
		default:
			http.NotFound(w, r)
		}
	})
	// Each says that the socket may be another program's: the text alone
	// ("502 Bad Gateway: upstream gone") left the user to guess.
	foreign := socket + " answered %s, not as switchyard does: is it another program's socket? give --socket the daemon's api.socket: %s"
	c := NewClient(socket)
	_, err := c.Status(t.Context())
	if want := fmt.Sprintf(foreign, "502 Bad Gateway", `"upstream gone"`); err == nil || err.Error() != want {
		t.Errorf("status: got %v, want %s", err, want)
	}
	for _, s := range []error{ErrNotFound, ErrBadRequest, ErrRejected, ErrNoDaemon} {
		if errors.Is(err, s) {
			t.Errorf("status: %v matches %v", err, s)
		}
	}
	if _, err := c.AgentStatus(t.Context()); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), fmt.Sprintf(foreign, "404 Not Found", `"404 page not found"`)) {
		t.Errorf("agent status: got %v, want ErrNotFound with the text", err)
	}
	if _, err := c.Drain(t.Context(), "be1"); err == nil || err.Error() != fmt.Sprintf(foreign, "500 Internal Server Error", `"{\"message\": \"backend pool locked\"}"`) {
		t.Errorf("drain: got %v, want the status and the JSON that is not an api.Error", err)
	}
	_, err = c.Undrain(t.Context(), "be1")
	if want := fmt.Sprintf(foreign, "404 Not Found", `"<html>\n<body>\x1b[31mNot here\x1b]0;title\a</body>\n</html>"`); err == nil || err.Error() != want {
		t.Errorf("undrain:\n got %v\nwant %s", err, want)
	}
	if _, err := c.Reload(t.Context()); err == nil || !strings.Contains(err.Error(), "read the answer of switchyard at "+socket+": it is not JSON, as switchyard's are: is it another program's socket?") {
		t.Errorf("reload: got %v, want an error saying the answer is not switchyard's", err)
	}
	if _, err := c.Flows(t.Context(), "", 0); err == nil || !strings.Contains(err.Error(), "read the answer of switchyard at "+socket) {
		t.Errorf("flows: got %v, want an error naming the socket whose answer was cut short", err)
	}
}

// TestSocketAppearsRestricted watches the socket's directory while the
// server starts, with a umask that would leave a new socket open to
// everyone: the socket must arrive under its name already restricted to
// its owner (renamed into place), never be created there and then
// restricted, which leaves a moment in which anyone may connect. No
// temporary directory is left behind.
func TestSocketAppearsRestricted(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "sy.sock")
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	old := unix.Umask(0)
	s, err := NewServer(ServerConfig{Socket: socket}, &fakeService{})
	if err == nil {
		err = s.Start()
	}
	unix.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatalf("no events in the socket's directory: %v", err)
	}
	var moved bool
	for off := 0; off < n; {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
		off += unix.SizeofInotifyEvent + int(ev.Len)
		if name != "sy.sock" {
			continue
		}
		if ev.Mask&unix.IN_CREATE != 0 {
			t.Error("the socket was created under its name, and restricted only after")
		}
		moved = moved || ev.Mask&unix.IN_MOVED_TO != 0
	}
	if !moved {
		t.Error("the socket was not renamed into place")
	}
	fi, err := os.Lstat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket of mode 0600", fi.Mode())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"sy.sock", "sy.sock.lock"}) {
		t.Errorf("the socket's directory holds %v, want the socket and its lock file alone", names)
	}
	// And it serves.
	if _, err := NewClient(socket).Status(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestSocketAtTheLengthLimit starts a server on a socket path of the
// longest length a unix socket takes, in a directory so long that a path
// in a private directory inside it would be too long: the socket is bound
// in place, restricted, and serves.
func TestSocketAtTheLengthLimit(t *testing.T) {
	// A long directory: the private one in it, and its socket, would be
	// longer than the limit.
	dir := t.TempDir()
	dir = filepath.Join(dir, strings.Repeat("d", MaxSocketPath-len(dir)-len("/s.sock")-1))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "s.sock")
	if len(socket) != MaxSocketPath {
		t.Fatalf("socket path of %d bytes, want %d", len(socket), MaxSocketPath)
	}
	s, err := NewServer(ServerConfig{Socket: socket}, &fakeService{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	fi, err := os.Lstat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode())
	}
	if _, err := NewClient(socket).Status(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A client that sends half a request and stalls is cut off: without a
// read timeout, one whose body never came held its connection (and a
// goroutine) for ever. The timeouts are shortened; the connection must be
// closed well before the read below gives up.
func TestStalledRequestIsClosed(t *testing.T) {
	for _, tc := range []struct{ name, request string }{
		{"half the headers", "GET /v1/status HTTP/1.1\r\nHost: switchyard\r\n"},
		{"half the body", "POST /v1/drain HTTP/1.1\r\nHost: switchyard\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"backend\":"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			socket := filepath.Join(t.TempDir(), "sw.sock")
			s, err := NewServer(ServerConfig{Socket: socket}, &fakeService{})
			if err != nil {
				t.Fatal(err)
			}
			s.readHeaderTimeout, s.readTimeout = 100*time.Millisecond, 200*time.Millisecond
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			conn, err := net.Dial("unix", socket)
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

// The read timeout bounds the request's arrival, not the answer: a request
// that takes longer than it (a large flows dump, a slow reload) is
// answered, its context not cancelled.
func TestSlowAnswerOutlivesTheReadTimeout(t *testing.T) {
	ctxErr := make(chan error, 1)
	svc := &fakeService{statusHook: func(ctx context.Context) {
		select {
		case <-ctx.Done():
		case <-time.After(400 * time.Millisecond): // twice the read timeout: what is under test
		}
		ctxErr <- ctx.Err()
	}}
	socket := filepath.Join(t.TempDir(), "sw.sock")
	s, err := NewServer(ServerConfig{Socket: socket}, svc)
	if err != nil {
		t.Fatal(err)
	}
	s.readHeaderTimeout, s.readTimeout = 100*time.Millisecond, 200*time.Millisecond
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	resp, _ := rawDo(t, socket, http.MethodGet, "/v1/status", "")
	if err := <-ctxErr; resp.StatusCode != http.StatusOK || err != nil {
		t.Errorf("status taking twice the read timeout: %s, its context ended with %v; want 200 OK and the context alive", resp.Status, err)
	}
}

// TestStartRefusesUnlockedLiveSocket: a daemon of an earlier release takes
// no lock file, so only the probe by connecting finds it; its socket must
// be left alone.
func TestStartRefusesUnlockedLiveSocket(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "sw.sock")
	old, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	before, err := os.Lstat(socket)
	if err != nil {
		t.Fatal(err)
	}

	s, err := NewServer(ServerConfig{Socket: socket}, &fakeService{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(); !errors.Is(err, ErrSocketInUse) {
		t.Fatalf("start beside a daemon that holds no lock: got %v, want ErrSocketInUse", err)
	}
	if after, err := os.Lstat(socket); err != nil || !os.SameFile(before, after) {
		t.Errorf("the other daemon's socket was replaced or removed (%v)", err)
	}
}

// TestStartAfterClose: a server closed before it started (the daemon
// shutting down during startup) must not create a socket afterwards, which
// nothing would remove.
func TestStartAfterClose(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "sw.sock")
	s, err := NewServer(ServerConfig{Socket: socket}, &fakeService{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		t.Error("Start after Close succeeded")
		s.http.Close() // nothing else would
		s.wg.Wait()
		s.lock.Close()
	}
	if _, err := os.Lstat(socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a closed server left %s (%v)", socket, err)
	}
}

// TestFailedRequestsLogLevel: a request the daemon failed to answer (500)
// is logged as an error for the operator; one the client got wrong (404)
// only at debug level.
func TestFailedRequestsLogLevel(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("read conn table: operation not permitted"), "level=ERROR"},
		{fmt.Errorf("no backend named %q: %w", "web-9", ErrNotFound), "level=DEBUG"},
		// A daemon that stops refuses what it cannot carry out: nothing
		// failed, so no error in the log of a planned stop.
		{fmt.Errorf("status: %w", Unavailable("agent is not running")), "level=WARN"},
	} {
		var logs syncBuffer
		socket := filepath.Join(t.TempDir(), "sw.sock")
		s, err := NewServer(ServerConfig{Socket: socket, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))},
			&fakeService{err: tc.err})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		rawDo(t, socket, http.MethodPost, "/v1/reload", "")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		var line string
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, "api request failed") {
				line = l
			}
		}
		if !strings.Contains(line, tc.want) {
			t.Errorf("%v: logged %q, want it at %s", tc.err, line, tc.want)
		}
	}
}
