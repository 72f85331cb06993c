package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/switchyard-lb/switchyard/pkg/config"
)

// Client talks to a daemon's Server. Bound each call with its context: the
// Client has no timeout of its own. Its methods are safe for concurrent
// use.
//
// Errors say what the user can do: ErrNoDaemon if nothing listens on the
// socket; an error matching fs.ErrPermission if the socket is not the
// user's; otherwise the daemon's own message, matching ErrNotFound,
// ErrBadRequest or ErrRejected by the status of the answer.
type Client struct {
	socket string
	daemon string // the command that serves the socket, for errors
	http   *http.Client
}

// NewClient returns a Client of the balancer daemon (`switchyard run`)
// listening on socket ("" means config.DefaultAPISocket).
func NewClient(socket string) *Client {
	if socket == "" {
		socket = config.DefaultAPISocket
	}
	return newClient(socket, "switchyard run")
}

// NewAgentClient returns a Client of the backend agent (`switchyard
// agent`) listening on socket ("" means config.DefaultAgentAPISocket). Of
// its methods only AgentStatus applies.
func NewAgentClient(socket string) *Client {
	if socket == "" {
		socket = config.DefaultAgentAPISocket
	}
	return newClient(socket, "switchyard agent")
}

func newClient(socket, daemon string) *Client {
	var d net.Dialer
	return &Client{
		socket: socket,
		daemon: daemon,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", socket)
			},
			// One connection per request: a Client has no Close, and
			// callers make one per request (the CLI, the demo's polls),
			// so a kept-alive connection would hold a file and a
			// goroutine in the daemon until its idle timeout, one more
			// per poll. Connecting to a unix socket is cheap.
			DisableKeepAlives: true,
		}},
	}
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, nil, &s)
	return s, err
}

// AgentStatus returns the backend agent's status.
func (c *Client) AgentStatus(ctx context.Context) (AgentStatus, error) {
	var s AgentStatus
	err := c.do(ctx, http.MethodGet, agentStatusPath, nil, nil, &s)
	return s, err
}

// Flows lists connection-table entries of the VIP named vip ("" for every
// VIP), at most limit of them (<= 0: the daemon's default).
func (c *Client) Flows(ctx context.Context, vip string, limit int) (FlowsResponse, error) {
	q := url.Values{}
	if vip != "" {
		q.Set("vip", vip)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var f FlowsResponse
	err := c.do(ctx, http.MethodGet, "/v1/flows", q, nil, &f)
	return f, err
}

// Drain stops new flows to a backend: "NAME" (in every VIP) or "VIP/NAME".
func (c *Client) Drain(ctx context.Context, backend string) (DrainResponse, error) {
	var d DrainResponse
	err := c.do(ctx, http.MethodPost, "/v1/drain", nil, DrainRequest{Backend: backend}, &d)
	return d, err
}

// Undrain lets a drained backend take new flows again.
func (c *Client) Undrain(ctx context.Context, backend string) (DrainResponse, error) {
	var d DrainResponse
	err := c.do(ctx, http.MethodPost, "/v1/undrain", nil, DrainRequest{Backend: backend}, &d)
	return d, err
}

// Reload makes the daemon re-read its configuration file. An invalid file
// gives an error matching ErrRejected that names the problems; the daemon
// keeps running the previous configuration.
func (c *Client) Reload(ctx context.Context) (ReloadResponse, error) {
	var r ReloadResponse
	err := c.do(ctx, http.MethodPost, "/v1/reload", nil, nil, &r)
	return r, err
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	u := "http://switchyard" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode the request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("build the request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.transportError(method, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c.answerError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if _, ok := errors.AsType[*json.SyntaxError](err); ok {
			return fmt.Errorf("read the answer of switchyard at %s: it is not JSON, as switchyard's are: %s: %w", c.socket, notSwitchyard, err)
		}
		return fmt.Errorf("read the answer of switchyard at %s: %w", c.socket, err)
	}
	return nil
}

// transportError words a failure to exchange a request for the user.
func (c *Client) transportError(method string, err error) error {
	// The *url.Error adds `Get "http://switchyard/v1/status"`, which
	// means nothing to the user.
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.ECONNREFUSED):
		return &dialError{
			message: fmt.Sprintf("cannot reach switchyard at %s: %s", c.socket, c.whyNoDaemon(err)),
			kind:    ErrNoDaemon,
			cause:   err,
		}
	case errors.Is(err, fs.ErrPermission):
		return &dialError{
			message: fmt.Sprintf("permission denied on %s: the switchyard API is root-only; run this as root (e.g. with sudo)", c.socket),
			cause:   err,
		}
	case errors.Is(err, context.DeadlineExceeded) && method != http.MethodGet:
		// The daemon carries out a request its control loop has taken
		// even when the client stops waiting: a drain or reload may have
		// happened.
		return fmt.Errorf("switchyard at %s did not answer in time (use --timeout to wait longer); it may still have carried out the request: `switchyard status` shows whether it did: %w", c.socket, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("switchyard at %s did not answer in time (use --timeout to wait longer): %w", c.socket, err)
	}
	return fmt.Errorf("talk to switchyard at %s: %w", c.socket, err)
}

// whyNoDaemon says why nothing answered on the socket, and what to do, for
// a dial that failed with err. The kernel refuses a connection to any
// file that is not a listening socket alike: a regular file or a
// directory at the path (a mistyped --socket, say) was told as a daemon
// not running, and the socket a killed daemon left as if there were none.
func (c *Client) whyNoDaemon(err error) string {
	fi, serr := os.Stat(c.socket)
	switch {
	case !errors.Is(err, syscall.ECONNREFUSED) || serr != nil:
		return fmt.Sprintf("is `%s` running? (use --socket to point elsewhere)", c.daemon)
	case fi.IsDir():
		return "it is a directory, not a socket: give --socket the daemon's api.socket"
	case fi.Mode()&fs.ModeSocket == 0:
		return "it is a file, not a socket: give --socket the daemon's api.socket"
	}
	return fmt.Sprintf("nothing listens on this socket: the `%s` that made it was killed or crashed (a stopped one removes it); start it again (or use --socket to point elsewhere)", c.daemon)
}

// answerError turns an error answer into an error with the daemon's message.
func (c *Client) answerError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	var e Error
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return &serverError{message: e.Error, sentinel: sentinelOf(resp.StatusCode)}
	}
	// Not one of our answers: another program serves the socket. Its
	// body went to the terminal as it was, HTML over several lines,
	// escape sequences and all.
	return &serverError{
		message:  fmt.Sprintf("%s answered %s, not as switchyard does: %s: %s", c.socket, resp.Status, notSwitchyard, excerpt(data)),
		sentinel: sentinelOf(resp.StatusCode),
	}
}

// notSwitchyard is what to do when another program answers on the socket.
const notSwitchyard = "is it another program's socket? give --socket the daemon's api.socket"

// excerpt is the start of a foreign answer's body, quoted: one line,
// with control characters escaped.
func excerpt(data []byte) string {
	const max = 200
	s := strings.TrimSpace(string(data))
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
