package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/config"
)

// Service is what the balancer daemon (`switchyard run`) implements. Its errors choose the status of
// the answer: wrap ErrNotFound, ErrBadRequest or ErrRejected; anything
// else is a 500. The error text is shown to the user as it is.
type Service interface {
	Status(ctx context.Context) (Status, error)
	// Flows lists connection-table entries of the VIP named vip ("" for
	// every VIP), at most limit of them (<= 0: a default of 1000; the
	// server refuses more than MaxFlowsLimit).
	Flows(ctx context.Context, vip string, limit int) (FlowsResponse, error)
	// Drain drains (drain true) or undrains a backend named as in
	// DrainRequest.
	Drain(ctx context.Context, backend string, drain bool) (DrainResponse, error)
	Reload(ctx context.Context) (ReloadResponse, error)
}

// AgentService is what the backend agent (`switchyard agent`) implements,
// with the same error rules as Service.
type AgentService interface {
	AgentStatus(ctx context.Context) (AgentStatus, error)
}

// The agent's endpoints live under their own path, so that a balancer
// client pointed at an agent's socket (or the other way round) is told so
// instead of decoding one daemon's status as the other's.
const agentStatusPath = "/v1/agent/status"

// MaxSocketPath is the longest path a unix socket may have (sun_path holds
// 108 bytes with the terminating NUL).
const MaxSocketPath = 107

const (
	// maxBody bounds request bodies; the largest legitimate one is a
	// DrainRequest of a few dozen bytes.
	maxBody = 1 << 20
	// shutdownTimeout bounds how long Close waits for requests in flight.
	shutdownTimeout = 5 * time.Second
	// probeTimeout bounds the check for a live daemon on an existing socket.
	probeTimeout = time.Second
	// readHeaderTimeout and readTimeout bound how long a request may take
	// to arrive (its headers, then the whole of it): a client that sends
	// half a request and stalls would hold its connection and goroutine
	// forever. There is no write timeout: it would cut the answer of a
	// long request (a flows dump of MaxFlowsLimit entries, a reload),
	// which the client's own --timeout bounds.
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Socket is the path of the unix socket; "" means
	// config.DefaultAPISocket (for NewAgentServer,
	// config.DefaultAgentAPISocket).
	Socket string
	// Logger logs failed requests and the removal of a stale socket; nil
	// means no logging.
	Logger *slog.Logger
}

func (c ServerConfig) socket() string {
	if c.Socket == "" {
		return config.DefaultAPISocket
	}
	return c.Socket
}

// Validate checks the socket path.
func (c ServerConfig) Validate() error {
	s := c.socket()
	switch {
	case !filepath.IsAbs(s):
		return fmt.Errorf("api socket %q is not an absolute path", s)
	case len(s) > MaxSocketPath:
		return fmt.Errorf("api socket %q is %d bytes, longer than the %d a unix socket path may have", s, len(s), MaxSocketPath)
	}
	return nil
}

// Server serves a Service on a unix socket. Its methods are safe for
// concurrent use.
type Server struct {
	socket string
	log    *slog.Logger
	routes map[string]route
	// daemon is the command that serves this API, other its
	// counterpart's, and foreign the paths the counterpart serves: a
	// request for one of them was meant for the other daemon.
	daemon, other string
	foreign       []string
	// readHeaderTimeout and readTimeout are the package's; tests shorten
	// them.
	readHeaderTimeout, readTimeout time.Duration

	mu      sync.Mutex
	started bool
	closed  bool
	http    *http.Server
	ln      net.Listener // bound by Listen or Start
	sock    os.FileInfo  // the socket file Listen created, to remove only it
	lock    *os.File     // the socket's lock file, held while serving
	wg      sync.WaitGroup
}

// route is one endpoint: its method and what answers it.
type route struct {
	method string
	handle func(r *http.Request) (any, error)
}

// NewServer returns a Server of the balancer daemon's svc; Start makes it
// listen.
func NewServer(cfg ServerConfig, svc Service) (*Server, error) {
	if svc == nil {
		return nil, errors.New("api server needs a Service")
	}
	s, err := newServer(cfg, config.DefaultAPISocket)
	if err != nil {
		return nil, err
	}
	s.daemon, s.other, s.foreign = "switchyard run", "switchyard agent", []string{agentStatusPath}
	s.routes = map[string]route{
		"/v1/status":  {http.MethodGet, func(r *http.Request) (any, error) { return svc.Status(r.Context()) }},
		"/v1/flows":   {http.MethodGet, func(r *http.Request) (any, error) { return flows(r, svc) }},
		"/v1/drain":   {http.MethodPost, func(r *http.Request) (any, error) { return drain(r, svc, true) }},
		"/v1/undrain": {http.MethodPost, func(r *http.Request) (any, error) { return drain(r, svc, false) }},
		"/v1/reload":  {http.MethodPost, func(r *http.Request) (any, error) { return svc.Reload(r.Context()) }},
	}
	return s, nil
}

// NewAgentServer returns a Server of the backend agent's svc, on
// cfg.Socket or config.DefaultAgentAPISocket; Start makes it listen.
func NewAgentServer(cfg ServerConfig, svc AgentService) (*Server, error) {
	if svc == nil {
		return nil, errors.New("api server needs an AgentService")
	}
	s, err := newServer(cfg, config.DefaultAgentAPISocket)
	if err != nil {
		return nil, err
	}
	s.daemon, s.other = "switchyard agent", "switchyard run"
	s.foreign = []string{"/v1/status", "/v1/flows", "/v1/drain", "/v1/undrain", "/v1/reload"}
	s.routes = map[string]route{
		agentStatusPath: {http.MethodGet, func(r *http.Request) (any, error) { return svc.AgentStatus(r.Context()) }},
	}
	return s, nil
}

func newServer(cfg ServerConfig, defaultSocket string) (*Server, error) {
	if cfg.Socket == "" {
		cfg.Socket = defaultSocket
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{socket: cfg.Socket, log: log.With("component", "api"), readHeaderTimeout: readHeaderTimeout, readTimeout: readTimeout}, nil
}

// Socket is the path the Server listens on.
func (s *Server) Socket() string { return s.socket }

// Listen takes the socket's lock file, replaces a stale socket and binds
// the socket, serving nothing until Start: a daemon listens before it
// changes anything, so that a socket it cannot have (another daemon's, a
// file in the way) ends its start before its program is attached.
// Connections made meanwhile wait in the socket's backlog. Its errors are
// Start's.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listen()
}

func (s *Server) listen() error {
	if s.started || s.closed {
		return errors.New("api server already started")
	}
	if s.ln != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.socket), 0o755); err != nil {
		return fmt.Errorf("create the directory of the api socket: %w", err)
	}
	lock, err := s.lockSocket()
	if err != nil {
		return err
	}
	if err := s.removeStale(); err != nil {
		lock.Close()
		return err
	}
	ln, err := listenPrivate(s.socket)
	if err != nil {
		lock.Close()
		return err
	}
	fi, err := os.Lstat(s.socket)
	if err != nil {
		ln.Close()
		lock.Close()
		return fmt.Errorf("check the api socket: %w", err)
	}
	s.ln, s.sock, s.lock = ln, fi, lock
	return nil
}

// Start listens on the socket (unless Listen did) and serves in the
// background until Close. It creates the socket's directory (0755) if
// needed and replaces a stale socket left by a daemon that died, but fails
// with ErrSocketInUse if a daemon answers on it or holds its lock file
// (the socket's path and ".lock", which the Server holds until Close). The
// socket is made 0600: only its owner (root, for the daemon) may connect.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.listen(); err != nil {
		return err
	}
	s.started = true
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.readHeaderTimeout,
		ReadTimeout:       s.readTimeout,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	ln := s.ln
	s.wg.Go(func() {
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("api server stopped", "socket", s.socket, "error", err)
		}
	})
	return nil
}

// listenPrivate listens on a unix socket at path that only its owner can
// connect to from the moment it exists there. A socket is created with the
// mode the umask leaves (with umask 0 or 002, writable, so connectable, by
// others) until a chmod: it is bound in a fresh directory only the owner
// can enter, restricted to 0600, and then renamed into place. If the
// temporary path would be too long for a socket, it is bound in place and
// restricted at once.
func listenPrivate(path string) (net.Listener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".sy")
	if err != nil {
		return nil, fmt.Errorf("create a private directory beside the api socket: %w", err)
	}
	defer os.Remove(dir)
	tmp := filepath.Join(dir, "s")
	if len(tmp) > MaxSocketPath {
		tmp = path
	}
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// Close removes the file itself, and only if it is still ours.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	err = os.Chmod(tmp, 0o600)
	if err == nil && tmp != path {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("restrict the api socket to its owner: %w", err)
	}
	return ln, nil
}

// lockSocket takes the lock file beside the socket (its path and
// ".lock"), which the Server holds until Close and the kernel releases
// when the daemon dies. The probe for a live daemon and the socket's
// replacement are not atomic: two daemons started at once both found no
// daemon, and the later one's socket replaced the earlier one's, which
// then ran unreachable. The lock file stays: removing it would let a
// daemon lock a new file while another holds the old one.
func (s *Server) lockSocket() (*os.File, error) {
	path := s.socket + ".lock"
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the lock file of the api socket: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another daemon is listening on %s (it holds %s): stop it first, or give this one another socket: %w", s.socket, path, ErrSocketInUse)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// removeStale removes a socket file nothing answers on. A daemon that
// holds no lock (of an earlier release) is found by connecting.
func (s *Server) removeStale() error {
	fi, err := os.Lstat(s.socket)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check the api socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: move it away or choose another path", s.socket)
	}
	conn, err := net.DialTimeout("unix", s.socket, probeTimeout)
	if err == nil {
		conn.Close()
		return fmt.Errorf("another daemon is listening on %s: stop it first, or give this one another socket: %w", s.socket, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("check for a daemon on %s: %w", s.socket, err)
	}
	if err := os.Remove(s.socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the stale api socket: %w", err)
	}
	s.log.Info("removed a stale api socket", "socket", s.socket)
	return nil
}

// Close stops listening, waits up to 5 seconds for requests in flight, and
// removes the socket file. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srv, ln, sock, lock := s.http, s.ln, s.sock, s.lock
	s.mu.Unlock()
	if ln == nil {
		return nil
	}
	// After the socket is gone, so that a daemon that takes the lock next
	// finds no socket of this one.
	defer lock.Close()
	var err error
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		err = srv.Shutdown(ctx)
		if err != nil {
			err = errors.Join(fmt.Errorf("api server: requests still running after %v: %w", shutdownTimeout, err), srv.Close())
		}
		s.wg.Wait()
	} else {
		// Listened, never served: connections in the backlog are
		// refused with the listener.
		ln.Close()
	}
	// A daemon started after this one may have replaced the socket: leave
	// its socket alone.
	if fi, statErr := os.Lstat(s.socket); statErr == nil && os.SameFile(fi, sock) {
		if rmErr := os.Remove(s.socket); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("remove the api socket: %w", rmErr))
		}
	}
	return err
}

// ServeHTTP answers one API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, ok := s.routes[r.URL.Path]
	if !ok {
		msg := fmt.Sprintf("no endpoint %s (this daemon serves %s)", r.URL.Path, strings.Join(s.paths(), ", "))
		if slices.Contains(s.foreign, r.URL.Path) {
			msg = fmt.Sprintf("%s is the socket of `%s`, not of `%s`: %s", s.socket, s.daemon, s.other, switchHint(s.daemon, r.URL.Path))
		}
		writeError(w, http.StatusNotFound, msg)
		return
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s takes %s, not %s", r.URL.Path, rt.method, r.Method))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	v, err := rt.handle(r)
	if err != nil && r.Context().Err() != nil {
		// The client hung up (its --timeout ran out): nobody reads an
		// answer, and the service's error is only that it stopped
		// waiting, not that the request failed. A drain or reload the
		// control loop had taken is carried out all the same; a read
		// (status, flows) changed nothing.
		msg := "api client gave up before the answer; a change it asked for may still have been made"
		if r.Method == http.MethodGet {
			msg = "api client gave up before the answer"
		}
		s.log.Warn(msg, "method", r.Method, "path", r.URL.Path, "error", err)
		return
	}
	if err != nil {
		status := statusOf(err)
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			status = http.StatusRequestEntityTooLarge
		}
		level := slog.LevelDebug
		switch {
		case status == http.StatusServiceUnavailable:
			level = slog.LevelWarn // the daemon is stopping: nothing failed
		case status >= 500:
			level = slog.LevelError
		}
		s.log.Log(r.Context(), level, "api request failed", "method", r.Method, "path", r.URL.Path, "status", status, "error", err)
		writeError(w, status, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) paths() []string {
	var p []string
	for path := range s.routes {
		p = append(p, path)
	}
	sort.Strings(p)
	return p
}

// switchHint says how to talk to daemon, which serves the socket, when
// asked for path, which the other daemon serves.
func switchHint(daemon, path string) string {
	switch {
	case daemon == "switchyard agent" && path == "/v1/status":
		return "add --agent (`switchyard status --agent --socket PATH`)"
	case daemon == "switchyard agent":
		// flows, drain, undrain and reload have no --agent: told to
		// add one, the user got "flag provided but not defined".
		return "this command is the balancer's (an agent answers only `switchyard status --agent`): give --socket the balancer's api.socket (default " + config.DefaultAPISocket + ")"
	}
	return "leave out --agent, or give the agent's socket (its api.socket, default " + config.DefaultAgentAPISocket + ")"
}

func flows(r *http.Request, svc Service) (any, error) {
	q := r.URL.Query()
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			return nil, fmt.Errorf("limit %q is not a whole number: %w", l, ErrBadRequest)
		}
		if n > MaxFlowsLimit {
			return nil, fmt.Errorf("limit %d is above the maximum of %d; ask for fewer flows, or narrow them to one VIP: %w", n, MaxFlowsLimit, ErrBadRequest)
		}
		limit = n
	}
	return svc.Flows(r.Context(), q.Get("vip"), limit)
}

func drain(r *http.Request, svc Service, drain bool) (any, error) {
	var req DrainRequest
	if err := decodeBody(r.Body, &req); err != nil {
		return nil, err
	}
	if req.Backend == "" {
		return nil, fmt.Errorf("name a backend: NAME (in every VIP) or VIP/NAME: %w", ErrBadRequest)
	}
	return svc.Drain(r.Context(), req.Backend, drain)
}

// decodeBody decodes exactly one JSON value of v's type from body.
func decodeBody(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, tokErr := dec.Token(); tokErr != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	if err == nil {
		return nil
	}
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return fmt.Errorf("request body larger than %d bytes: %w", mbe.Limit, err)
	}
	if err == io.EOF {
		return fmt.Errorf("request body is empty: %w", ErrBadRequest)
	}
	return fmt.Errorf("request body: %v: %w", err, ErrBadRequest)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The status is sent: a failure here is the client going away.
	_ = json.NewEncoder(w).Encode(v)
}
