package balancer

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

// loopbackUDP answers every datagram with reply(request) from a loopback
// socket until the test ends.
func loopbackUDP(t *testing.T, reply func([]byte) []byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(reply(buf[:n]), from)
		}
	}()
	return pc.LocalAddr().String()
}

// redirectingDialer dials checks of a backend address, keyed by "network
// address", to the loopback server standing for it, and refuses
// everything else: no check leaves the test's process.
type redirectingDialer struct{ to map[string]string }

func (d redirectingDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if to, ok := d.to[network+" "+address]; ok {
		var nd net.Dialer
		return nd.DialContext(ctx, network, to)
	}
	return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError("not redirected: " + network + " " + address)}
}

// udpCheckConfig's timeout is not the test's subject, yet be1 must pass
// every check, and a reply later than the timeout fails one: 50 ms for a
// datagram's round trip through a goroutine of the test, under -race, on
// a loaded 2-core CI machine (some three times slower than others) is a
// scheduling delay away from failing. 900 ms leaves a wrong reply as the
// only way for be1 to fail; the interval must be longer than it.
const udpCheckConfig = `
datapath:
  interface: lo
  conn_table_size: 4096
api:
  socket: /tmp/unused.sock
metrics:
  listen: ""
vips:
  - name: dns
    address: 10.100.0.1
    port: 53
    protocol: udp
    table_size: 251
    health: {type: udp, send_binary: "12 34 00 ff", expect_binary: "12 34", interval: 1s, timeout: 900ms, rise: 1, fall: 1}
    backends:
      - {name: be1, address: 10.2.1.2}
      - {name: be2, address: 10.2.2.2}
`

// A udp check sends the configured bytes to the backend's address and VIP
// port, and a backend whose answer does not start with the expected bytes
// goes down and out of the table, with the reply in its reason.
func TestUDPCheckSendsTheConfiguredRequest(t *testing.T) {
	answer := func(req []byte) []byte {
		if string(req) != "\x12\x34\x00\xff" {
			return []byte("wrong request " + string(req))
		}
		return []byte("\x12\x34\x81\x80")
	}
	be1 := loopbackUDP(t, answer)
	be2 := loopbackUDP(t, func(req []byte) []byte { return []byte("\x99\x99") })
	dialer := redirectingDialer{to: map[string]string{"udp 10.2.1.2:53": be1, "udp 10.2.2.2:53": be2}}
	r := newCheckedRig(t, udpCheckConfig, datapath.Options{}, nil, dialer)

	var info1, info2 string
	var st1, st2 api.Backend
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := r.b.Status(r.ctx)
		if err != nil {
			t.Fatal(err)
		}
		var up1, down2 bool
		for _, be := range st.VIPs[0].Backends {
			switch be.Name {
			case "be1":
				up1, info1, st1 = be.Healthy && be.TableSlots > 0 && be.HealthInfo == "" && be.Checks > 0, be.HealthInfo, be
			case "be2":
				down2, info2, st2 = !be.Healthy && be.TableSlots == 0, be.HealthInfo, be
			}
		}
		if up1 && down2 && info2 != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s on: be1 %q, be2 %q; want be1 up (its answer starts with 12 34) and be2 down and out of the table", info1, info2)
		}
	}
	if !strings.Contains(info2, "replied hex 99 99, want a reply starting with hex 12 34") {
		t.Errorf("be2's reason %q does not show its reply and the expected start", info2)
	}
	// The status counts the checks (the metrics read these).
	if st1.Check != "udp" || st1.FailedChecks != 0 || st1.LastCheckSeconds <= 0 {
		t.Errorf("be1 status %+v, want check udp, %d checks none failed, a last check duration", st1, st1.Checks)
	}
	if st2.Check != "udp" || st2.FailedChecks == 0 || st2.Checks < st2.FailedChecks {
		t.Errorf("be2 status %+v, want check udp with failed checks counted", st2)
	}
}
