package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const (
	// shutdownTimeout bounds how long Close waits for scrapes in flight.
	shutdownTimeout = 5 * time.Second
	// readHeaderTimeout and readTimeout bound how long a request may take
	// to arrive (its headers, then the whole of it): a client that sends
	// half a request and stalls would hold its connection and goroutine
	// forever. There is no write timeout: a scrape is the scraper's to
	// bound.
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Listen is the host:port to serve on (port 0: any free port); ""
	// disables the server: Start does nothing.
	Listen string
	// Logger logs failed scrapes; nil means no logging.
	Logger *slog.Logger
}

// Server serves a registry over HTTP: /metrics for Prometheus, and / with
// a link to it. Its methods are safe for concurrent use.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	handler http.Handler
	// readHeaderTimeout and readTimeout are the package's; tests shorten
	// them.
	readHeaderTimeout, readTimeout time.Duration

	mu      sync.Mutex
	started bool
	closed  bool
	http    *http.Server
	ln      net.Listener // bound by Listen or Start
	addr    net.Addr
	wg      sync.WaitGroup
}

// NewServer returns a Server of reg (not nil); Start makes it listen.
func NewServer(cfg ServerConfig, reg *prometheus.Registry) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "metrics")
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// A series the registry refuses should not hide all the others.
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<html><head><title>switchyard</title></head><body><p>switchyard: <a href="/metrics">metrics</a></p></body></html>`+"\n")
	})
	return &Server{cfg: cfg, log: log, handler: mux, readHeaderTimeout: readHeaderTimeout, readTimeout: readTimeout}
}

// Listen listens on cfg.Listen, serving nothing until Start: a daemon
// listens before it changes anything, so that an address it cannot have
// ends its start before its program is attached. Connections made
// meanwhile wait in the backlog. With an empty cfg.Listen it does
// nothing. Its errors are Start's.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listen()
}

func (s *Server) listen() error {
	if s.started || s.closed {
		return errors.New("metrics server already started")
	}
	if s.ln != nil || s.cfg.Listen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("metrics.listen: %s is already in use by another program: stop it, choose another port, or set metrics.listen to \"\" to disable metrics: %w", s.cfg.Listen, err)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("metrics.listen: %s is not an address of this host: %w", s.cfg.Listen, err)
	case err != nil:
		return fmt.Errorf("metrics.listen: listen on %s: %w", s.cfg.Listen, err)
	}
	s.ln, s.addr = ln, ln.Addr()
	return nil
}

// Start listens on cfg.Listen (unless Listen did) and serves in the
// background until Close. With an empty cfg.Listen it does nothing. Its
// errors name the configuration field, metrics.listen.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.listen(); err != nil {
		return err
	}
	s.started = true
	if s.ln == nil {
		return nil
	}
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.readHeaderTimeout,
		ReadTimeout:       s.readTimeout,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	ln := s.ln
	s.wg.Go(func() {
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server stopped", "addr", s.addr.String(), "error", err)
		}
	})
	return nil
}

// Addr is the address the Server listens on; nil before Start or when
// disabled.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Close stops listening and waits up to 5 seconds for scrapes in flight.
// It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srv, ln := s.http, s.ln
	s.mu.Unlock()
	if srv == nil {
		if ln != nil { // listened, never served
			return ln.Close()
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("metrics server: scrapes still running after %v: %w", shutdownTimeout, err), srv.Close())
	}
	s.wg.Wait()
	return err
}
