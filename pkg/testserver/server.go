// Package testserver is the small server that runs on every demo and test
// backend. Each answer names the backend, so a client can tell where the
// balancers sent it:
//
//	GET  /                      200 "backend=<name>\n"
//	GET  /healthz               200 "ok", or 503 after POST /healthz/fail
//	POST /healthz/fail, /ok     make /healthz fail or pass
//	GET  /stream?interval=100ms&count=N
//	                            a line "backend=<name> seq=<n>\n" (n from 1)
//	                            every interval, flushed; count 0 = until the
//	                            client goes away
//	GET  /download?bytes=N      N bytes of the pattern (PatternReader), N ≤ 1 GiB
//	POST /upload                "bytes=<n> sha256=<hex>\n" of the body
//	UDP                         each datagram echoed as "backend=<name> <payload>"
//
// Every HTTP response carries the header "X-Backend: <name>".
package testserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of the request parameters.
const (
	MaxDownloadBytes      = 1 << 30
	MaxUploadBytes        = 1 << 30
	MinStreamInterval     = time.Millisecond
	DefaultStreamInterval = 100 * time.Millisecond
)

// Config configures a Server.
type Config struct {
	// Name identifies the backend in every answer. Required.
	Name string
	// HTTPAddr is the HTTP listen address, "" for none. A wildcard address
	// (":80") accepts on the VIPs the agent puts on lo and on the backend's
	// own address (health checks), over IPv4 and IPv6.
	HTTPAddr string
	// UDPAddr is the UDP echo listen address, "" for none.
	UDPAddr string
}

// DefaultConfig returns the defaults of `switchyard testserver`.
func DefaultConfig() Config {
	return Config{HTTPAddr: ":80", UDPAddr: ":53"}
}

// Validate reports whether the configuration is usable.
func (c Config) Validate() error {
	if c.Name == "" {
		return errors.New("testserver: Name is empty: set the backend name (--name be1)")
	}
	if c.HTTPAddr == "" && c.UDPAddr == "" {
		return errors.New("testserver: HTTPAddr (--http) and UDPAddr (--udp) are both empty: set at least one listen address, e.g. --http :80")
	}
	// Each field is named with its flag of `switchyard testserver`, the
	// only way a user sets it.
	for _, a := range []struct{ field, addr string }{{"HTTPAddr (--http)", c.HTTPAddr}, {"UDPAddr (--udp)", c.UDPAddr}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("testserver: %s %q: %w (want host:port, e.g. \":80\")", a.field, a.addr, err)
		}
	}
	return nil
}

// ErrStarted is returned by Start on a server that was already started or
// closed.
var ErrStarted = errors.New("testserver: already started or closed")

// Server is a test backend server. Create it with New, then Start it; the
// listeners are opened by Start, so to serve inside a network namespace
// call Start from a thread in that namespace.
type Server struct {
	cfg Config
	log *slog.Logger

	unhealthy atomic.Bool

	mu       sync.Mutex
	started  bool
	closed   bool
	http     *http.Server
	httpAddr net.Addr
	udp      *udpEcho
	cancel   context.CancelFunc // ends every request context
	wg       sync.WaitGroup     // serve loops and HTTP handlers
}

// New returns a server for cfg. log may be nil.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log.With("component", "testserver", "backend", cfg.Name)}, nil
}

// Start opens the listeners and serves in the background until Close.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return ErrStarted
	}
	var (
		ln  net.Listener
		udp *udpEcho
		err error
	)
	if s.cfg.HTTPAddr != "" {
		if ln, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
			return fmt.Errorf("testserver: listen HTTP on %s: %w", s.cfg.HTTPAddr, err)
		}
	}
	if s.cfg.UDPAddr != "" {
		if udp, err = listenUDP("udp", s.cfg.UDPAddr, s.cfg.Name, s.log); err != nil {
			if ln != nil {
				ln.Close()
			}
			return fmt.Errorf("testserver: listen UDP on %s: %w", s.cfg.UDPAddr, err)
		}
	}
	s.started = true

	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if ln != nil {
		s.httpAddr = ln.Addr()
		s.http = &http.Server{
			Handler:           s.handler(),
			ReadHeaderTimeout: 10 * time.Second,
			BaseContext:       func(net.Listener) context.Context { return ctx },
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
		s.wg.Go(func() {
			if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("http server stopped", "error", err)
			}
		})
		s.log.Info("serving http", "addr", s.httpAddr.String())
	}
	if udp != nil {
		s.udp = udp
		s.wg.Go(udp.serve)
		s.log.Info("serving udp echo", "addr", udp.conn.LocalAddr().String())
	}
	return nil
}

// HTTPAddr is the bound HTTP address, nil before Start or without HTTP.
func (s *Server) HTTPAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAddr
}

// UDPAddr is the bound UDP address, nil before Start or without UDP.
func (s *Server) UDPAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp == nil {
		return nil
	}
	return s.udp.conn.LocalAddr()
}

// SetHealthy makes GET /healthz pass or fail, as POST /healthz/ok and
// /healthz/fail do.
func (s *Server) SetHealthy(ok bool) { s.unhealthy.Store(!ok) }

// Close stops the listeners, ends open connections (streams included) and
// waits until every goroutine of the server has returned. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var errs []error
	// Connections first, so that an open stream breaks off as it would if
	// the backend died, instead of ending cleanly when its handler sees
	// the cancelled context.
	if s.http != nil {
		errs = append(errs, s.http.Close())
	}
	if s.cancel != nil {
		s.cancel()
	}
	if s.udp != nil {
		errs = append(errs, s.udp.conn.Close())
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleRoot)
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("POST /healthz/fail", func(w http.ResponseWriter, r *http.Request) {
		s.SetHealthy(false)
		io.WriteString(w, "failing\n")
	})
	mux.HandleFunc("POST /healthz/ok", func(w http.ResponseWriter, r *http.Request) {
		s.SetHealthy(true)
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /stream", s.handleStream)
	mux.HandleFunc("GET /download", s.handleDownload)
	mux.HandleFunc("POST /upload", s.handleUpload)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Counted so that Close can wait for handlers, which
		// http.Server.Close does not. A request that races with Close is
		// refused rather than counted after Close started waiting.
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			http.Error(w, "server closing", http.StatusServiceUnavailable)
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		defer s.wg.Done()
		w.Header().Set("X-Backend", s.cfg.Name)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) handleRoot(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "backend=%s\n", s.cfg.Name)
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	if s.unhealthy.Load() {
		http.Error(w, "failing", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok")
}

func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	interval := DefaultStreamInterval
	if v := r.URL.Query().Get("interval"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < MinStreamInterval {
			http.Error(w, fmt.Sprintf("bad interval %q: want a duration of at least %s, e.g. 100ms", v, MinStreamInterval), http.StatusBadRequest)
			return
		}
		interval = d
	}
	count, err := queryInt(r, "count", 0, 0, 1<<40)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc := http.NewResponseController(w)
	t := time.NewTicker(interval)
	defer t.Stop()
	for seq := int64(1); count == 0 || seq <= count; seq++ {
		if seq > 1 {
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		if _, err := fmt.Fprintf(w, "backend=%s seq=%d\n", s.cfg.Name, seq); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) {
	n, err := queryInt(r, "bytes", -1, 0, MaxDownloadBytes)
	if err == nil && n < 0 {
		err = errors.New("missing bytes: want /download?bytes=N")
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	io.Copy(w, PatternReader(n))
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, http.MaxBytesReader(w, r.Body, MaxUploadBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("upload larger than %d bytes", MaxUploadBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "bytes=%d sha256=%s\n", n, hex.EncodeToString(h.Sum(nil)))
}

// queryInt parses query parameter name as an integer in [lo, hi]; def
// when absent.
func queryInt(r *http.Request, name string, def, lo, hi int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("bad %s %q: want an integer from %d to %d", name, v, lo, hi)
	}
	return n, nil
}
