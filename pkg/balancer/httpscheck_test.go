package balancer

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

// httpsCheckConfig's timeout is not the test's subject, and a check that
// runs out of it fails as a refused handshake would: the first check's
// handshake (cold TLS and certificate code, under -race) took 171 ms on a
// 2-core machine with four busy loops beside it, past the 150 ms it had,
// and CI machines can be three times slower. 900 ms is over five times
// that, under the 1 s interval it must be shorter than.
const httpsCheckConfig = `
datapath:
  interface: lo
  conn_table_size: 4096
api:
  socket: /tmp/unused.sock
metrics:
  listen: ""
vips:
  - name: web
    address: 10.100.0.1
    port: 443
    table_size: 251
    health: {type: https, sni: app.example.com, host: app.example.com, interval: 1s, timeout: 900ms, rise: 1, fall: 1}
    backends:
      - {name: be1, address: 10.2.1.2}
`

// An https check sends the configured sni and host to each backend: a
// backend that refuses a handshake without its name (as many appliances
// serving several names do), and answers 421 Misdirected Request to a
// Host that is not its name (as Apache does when it differs from the
// SNI), stays up.
func TestHTTPSCheckSendsTheConfiguredNames(t *testing.T) {
	seen := make(chan string, 64)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "app.example.com" {
			w.WriteHeader(http.StatusMisdirectedRequest)
		}
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes, before the fix
	srv.TLS = &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		select {
		case seen <- hello.ServerName:
		default:
		}
		if hello.ServerName != "app.example.com" {
			return nil, fmt.Errorf("no certificate for server name %q", hello.ServerName)
		}
		return nil, nil
	}}
	srv.StartTLS()
	defer srv.Close()
	dialer := redirectingDialer{to: map[string]string{"tcp 10.2.1.2:443": srv.Listener.Addr().String()}}
	r := newCheckedRig(t, httpsCheckConfig, datapath.Options{}, nil, dialer)

	var be api.Backend
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := r.b.Status(r.ctx)
		if err != nil {
			t.Fatal(err)
		}
		be = st.VIPs[0].Backends[0]
		if be.Checks >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s on, be1 has had %d checks, want 2", be.Checks)
		}
	}
	if !be.Healthy || be.FailedChecks != 0 || be.HealthInfo != "" {
		t.Errorf("be1: healthy %v, %d of %d checks failed, last %q; want every check passed", be.Healthy, be.FailedChecks, be.Checks, be.HealthInfo)
	}
	if got := <-seen; got != "app.example.com" {
		t.Errorf("the backend saw SNI %q, want app.example.com", got)
	}
}
