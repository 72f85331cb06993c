package api

import (
	"errors"
	"net/http"
)

// Errors a Service returns, wrapped with details, to choose the HTTP status
// of the answer. The Client returns errors that match the same sentinels,
// so callers on both sides branch on them with errors.Is.
var (
	// ErrNotFound: an unknown VIP or backend (404).
	ErrNotFound = errors.New("not found")
	// ErrBadRequest: a malformed request (400).
	ErrBadRequest = errors.New("bad request")
	// ErrRejected: a well-formed request the daemon refused, such as a
	// reload of an invalid configuration (422). The error text says why,
	// with file:line details.
	ErrRejected = errors.New("rejected")
	// ErrUnavailable: the daemon is stopping (or its start failed) and
	// did not carry out the request (503). Not a fault of the request nor
	// of the daemon: it is logged as a warning, not an error.
	ErrUnavailable = errors.New("unavailable")
)

// Unavailable returns an error with text msg that matches ErrUnavailable,
// for a Service's own sentinel of a daemon that is not running.
func Unavailable(msg string) error { return &unavailableError{msg} }

type unavailableError struct{ msg string }

func (e *unavailableError) Error() string        { return e.msg }
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }

// ErrNoDaemon: the Client found nothing listening on its socket.
var ErrNoDaemon = errors.New("no switchyard daemon on the socket")

// ErrSocketInUse: Server.Start found another daemon answering on the socket.
var ErrSocketInUse = errors.New("socket in use by another daemon")

// statusOf maps an error of a Service to an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrRejected):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// sentinelOf is the inverse of statusOf, for the Client; nil for statuses
// without a sentinel.
func sentinelOf(status int) error {
	switch status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusBadRequest:
		return ErrBadRequest
	case http.StatusUnprocessableEntity:
		return ErrRejected
	case http.StatusServiceUnavailable:
		return ErrUnavailable
	}
	return nil
}

// serverError is an error answer of the daemon: its message as the daemon
// wrote it, matching the sentinel of its status.
type serverError struct {
	message  string
	sentinel error
}

func (e *serverError) Error() string { return e.message }
func (e *serverError) Unwrap() error { return e.sentinel }

// dialError is a failure to connect to the daemon's socket, worded for the
// user of the CLI. It matches both its kind (ErrNoDaemon, or nil) and the
// cause (e.g. syscall.ECONNREFUSED, fs.ErrPermission).
type dialError struct {
	message string
	kind    error
	cause   error
}

func (e *dialError) Error() string { return e.message }

func (e *dialError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.cause}
	}
	return []error{e.kind, e.cause}
}
