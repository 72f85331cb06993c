// Package health checks backends and turns the results into a healthy or
// unhealthy state with rise/fall hysteresis.
//
// A Checker probes one backend once; one file per kind of check (tcp.go,
// http.go, udp.go). A Monitor runs the checks of many targets, one
// goroutine each, and reports state changes. The health type "none" of the
// configuration is a Target without a Checker: always healthy.
package health

import (
	"context"
	"errors"
	"net"
)

// Checker probes one backend once. It returns nil if the backend is
// healthy, or an error saying why not. It must return promptly once ctx is
// done: the Monitor bounds every check by the target's Timeout through ctx.
type Checker interface {
	Check(ctx context.Context) error
}

// Dialer opens network connections; *net.Dialer is one. Checkers dial from
// the network namespace of the calling thread, which is the process's
// namespace unless something switched the thread: to check from another
// namespace, run the process there or inject a Dialer that dials there.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Sentinel errors.
var (
	// ErrClosed: the Monitor was closed.
	ErrClosed = errors.New("health monitor closed")
	// ErrInvalidTarget: Set was given a target it cannot run.
	ErrInvalidTarget = errors.New("invalid health check target")
	// ErrUnexpectedStatus: an HTTP check got a status other than the
	// expected one.
	ErrUnexpectedStatus = errors.New("unexpected HTTP status")
	// ErrUnexpectedReply: a UDP check got a reply that does not start
	// with the expected bytes.
	ErrUnexpectedReply = errors.New("unexpected UDP reply")
	// ErrSlow: a check succeeded, but only after its timeout (the Checker
	// ignored its context).
	ErrSlow = errors.New("check succeeded after its timeout")
)

func dialerOrDefault(d Dialer) Dialer {
	if d == nil {
		return &net.Dialer{}
	}
	return d
}
