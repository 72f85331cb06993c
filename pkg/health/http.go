package health

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxHTTPBody is how much of a response body HTTPChecker reads, in bytes
// as they came (less chunked framing): a check asks for no compression,
// and inflates none it gets. A longer body is cut, and its connection
// closed with a reset.
const MaxHTTPBody = 64 << 10

// HTTPChecker sends GET URL and expects ExpectStatus. Redirects are not
// followed: a 301 is compared with ExpectStatus like any other status.
// Every check opens a new connection (no keep-alive), so a backend that has
// stopped accepting connections is noticed, and proxy environment variables
// are ignored: the check goes straight to the backend.
//
// For https URLs the backend's certificate is NOT verified: backends
// commonly use self-signed certificates, the check sends nothing secret, and
// what it tests is whether the backend answers, not who it is. For the same
// reason the check offers every TLS 1.2 cipher suite crypto/tls has (see
// checkCipherSuites), not only Go's default ones.
type HTTPChecker struct {
	// URL is http:// or https:// with the backend's address, e.g.
	// "http://10.2.1.2:80/healthz" or "https://[fd00:2:1::2]:443/".
	URL string
	// ExpectStatus is the status of a healthy backend; 0 means 200.
	ExpectStatus int
	// ServerName, for an https URL, is the name sent in the TLS handshake
	// (SNI), for a backend that serves several names or refuses a
	// handshake without one. "" sends none: the URL's host is an address,
	// which TLS does not send as a name (RFC 6066).
	ServerName string
	// Host is the request's Host header, for a backend that serves
	// several names. "" means ServerName for an https URL that has one
	// (with the URL's port unless it is 443, as a browser writes it), else
	// the URL's host, the backend's address and port.
	Host string
	// Dialer opens the connection; nil means a plain net.Dialer.
	Dialer Dialer
}

// Check implements Checker.
func (c HTTPChecker) Check(ctx context.Context) error {
	want := c.ExpectStatus
	if want == 0 {
		want = http.StatusOK
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return fmt.Errorf("http check: %w", err)
	}
	req.Header.Set("User-Agent", "switchyard-health-check")
	req.Host = c.hostHeader(req.URL)

	// A Transport per check keeps HTTPChecker a plain comparable value
	// (see Monitor.Set); with keep-alives off it holds nothing afterwards.
	tr := &http.Transport{
		DialContext: dialerOrDefault(c.Dialer).DialContext,
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // see the type's doc
			MinVersion:         tls.VersionTLS12,
			CipherSuites:       checkCipherSuites(),
			// Classical key exchange only: Go's default adds the hybrid
			// X25519MLKEM768, whose 1,216-byte key share makes the
			// ClientHello span TCP segments, which some older
			// appliances and middleboxes fail on. The check keeps no
			// secret worth a post-quantum exchange.
			CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521},
			ServerName:       c.ServerName,
		},
		DisableKeepAlives: true,
		// No "Accept-Encoding: gzip", which Go sends by default: a
		// backend would compress every check's answer, every
		// interval, for a check that wants its status, and the
		// MaxHTTPBody bound would count inflated bytes, so that a
		// small compressed body could be cut with a reset.
		DisableCompression: true,
		// A check reads a status line, not a page of headers: Go's
		// default would hold up to 1 MiB of them per check.
		MaxResponseHeaderBytes: maxHTTPHeader,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http check: %w", err)
	}
	// The status decides, but the body is read (up to MaxHTTPBody) before
	// the close: closing a socket whose receive buffer still holds data
	// sends a reset, which the backend logs as an error, every interval.
	// Unlike TCPChecker, the check does not reset on purpose either: the
	// request says "Connection: close", so the server closes first and
	// the TIME_WAIT socket is the backend's, not the balancer's.
	// The read is bounded by ctx, the check's timeout: a body that stalls
	// fails the check, as a backend that does not answer does. Other read
	// errors (a backend that resets after its response, a length header
	// that lies) leave the status to decide, as before the read.
	_, bodyErr := io.Copy(io.Discard, io.LimitReader(resp.Body, MaxHTTPBody))
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("http check: GET %s: status %s, want %d: %w", c.URL, statusLine(resp.Status), want, ErrUnexpectedStatus)
	}
	if ctx.Err() != nil {
		// The read ended with the timeout, even if it ended without an
		// error: a server that finishes a stalled response when the
		// check closes the connection at its timeout (Go's do, over
		// TLS, on the close_notify) sends the body's end before the
		// check's read stops, and the check read it as complete.
		if bodyErr == nil {
			bodyErr = ctx.Err()
		}
		return fmt.Errorf("http check: GET %s: status %s, but the body did not arrive within the timeout: %w", c.URL, statusLine(resp.Status), bodyErr)
	}
	return nil
}

// hostHeader is the request's Host header; "" leaves it to the URL. An
// https check that sends a server name sends it as Host too unless Host is
// set: a backend that serves several names picks the site by Host, and
// Apache and nginx answer 421 Misdirected Request (or the default site's
// page) when Host names another site than SNI, the backend's address
// (HAProxy's checks send no Host unless told; a browser sends both alike).
func (c HTTPChecker) hostHeader(u *url.URL) string {
	switch {
	case c.Host != "":
		return c.Host
	case c.ServerName == "" || u.Scheme != "https":
		return ""
	case u.Port() == "" || u.Port() == "443":
		return c.ServerName
	}
	return net.JoinHostPort(c.ServerName, u.Port())
}

// checkCipherSuites returns the TLS 1.2 cipher suites an https check
// offers: all that crypto/tls implements, RSA key exchange, CBC-SHA256 and
// 3DES ones included, which Go no longer offers by default and older
// appliances may be limited to. The check verifies no certificate and
// sends nothing secret, so a weak suite costs it nothing, while a missing
// one fails the handshake and takes a working backend out. RC4 is left
// out: RFC 7465 forbids offering it. (TLS 1.3 suites are not configurable,
// and always offered.)
func checkCipherSuites() []uint16 {
	var ids []uint16
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if slices.Contains(s.SupportedVersions, tls.VersionTLS12) && !strings.Contains(s.Name, "_RC4_") {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

// maxHTTPHeader bounds the status line and headers of a check's answer.
const maxHTTPHeader = 64 << 10

// maxReason is the longest status reason a check's failure quotes: the
// reason shows in status, logs and `health changed` lines, where a
// backend's kilobytes of reason phrase would drown everything else.
const maxReason = 128

// statusLine is the status ("503 Service Unavailable") with its reason
// cut to maxReason bytes (at a character boundary), marked as cut.
func statusLine(status string) string {
	if len(status) <= maxReason {
		return status
	}
	cut := maxReason
	for cut > 0 && !utf8.RuneStart(status[cut]) {
		cut--
	}
	return status[:cut] + fmt.Sprintf("... (%d bytes more)", len(status)-cut)
}
