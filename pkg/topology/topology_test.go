package topology

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const testPrefix = "sytopo"

func newTestTopology(t *testing.T) *Topology {
	t.Helper()
	return NewForTest(t, Config{Prefix: testPrefix, Balancers: 2, Backends: 3})
}

// echoServer accepts connections on l and echoes each one back until l is
// closed; it is stopped in t.Cleanup.
func echoServer(t *testing.T, l net.Listener) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
}

func exchange(t *testing.T, topo *Topology, from, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := topo.Dialer(from).DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("hello through the router " + addr)
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
	if remote := c.RemoteAddr().String(); remote != addr {
		t.Errorf("remote address %s, want %s", remote, addr)
	}
}

func TestClientReachesBackendThroughRouter(t *testing.T) {
	topo := newTestTopology(t)
	for _, tc := range []struct {
		name, listen string
	}{
		{"IPv4", "10.2.2.2:8080"},
		{"IPv6", "[fd00:2:2::2]:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := topo.Listen(topo.Backend(2), "tcp", tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			echoServer(t, l)
			exchange(t, topo, topo.Client(), tc.listen)
		})
	}
}

func TestHTTPClientFromClient(t *testing.T) {
	topo := newTestTopology(t)
	l, err := topo.Listen(topo.Backend(3), "tcp", ":8081")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	remotes := map[string]bool{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		remotes[r.RemoteAddr] = true
		mu.Unlock()
		fmt.Fprint(w, "hi")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	for _, tc := range []struct {
		name      string
		client    *http.Client
		wantConns int
	}{
		{"NewConnectionPerRequest", topo.HTTPClient(topo.Client()), 3},
		{"KeepAlive", topo.HTTPClientKeepAlive(topo.Client()), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.client.CloseIdleConnections()
			mu.Lock()
			clear(remotes)
			mu.Unlock()
			for range 3 {
				req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://[fd00:2:3::2]:8081/", nil)
				resp, err := tc.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "hi" {
					t.Fatalf("body %q", body)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(remotes) != tc.wantConns {
				t.Errorf("3 requests used %d connections, want %d: %v", len(remotes), tc.wantConns, remotes)
			}
			for r := range remotes {
				if !strings.HasPrefix(r, "[fd00::2]:") {
					t.Errorf("request came from %s, want the client fd00::2", r)
				}
			}
		})
	}
}

func TestUDPFromClient(t *testing.T) {
	topo := newTestTopology(t)
	pc, err := topo.ListenPacket(topo.Backend(1), "udp", "10.2.1.2:5353")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	c, err := topo.Dialer(topo.Client()).DialContext(t.Context(), "udp", "10.2.1.2:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q, %v; want ping", buf[:n], err)
	}
}

func TestLinks(t *testing.T) {
	topo := newTestTopology(t)
	router := topo.Router()

	mtus := []struct {
		node, ifname string
		want         int
	}{
		{topo.Client(), "eth0", 1500},
		{router, "cl0", 1500},
	}
	for i := 1; i <= 2; i++ {
		mtus = append(mtus, struct {
			node, ifname string
			want         int
		}{topo.Balancer(i), "eth0", 1600}, struct {
			node, ifname string
			want         int
		}{router, RouterBalancerIf(i), 1600})
	}
	for i := 1; i <= 3; i++ {
		mtus = append(mtus, struct {
			node, ifname string
			want         int
		}{topo.Backend(i), "eth0", 1600}, struct {
			node, ifname string
			want         int
		}{router, RouterBackendIf(i), 1600})
	}
	for _, m := range mtus {
		l, err := topo.Link(m.node, m.ifname)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.Attrs().MTU; got != m.want {
			t.Errorf("%s %s: MTU %d, want %d", m.node, m.ifname, got, m.want)
		}
		if l.Attrs().OperState != netlink.OperUp {
			t.Errorf("%s %s: operstate %s, want up", m.node, m.ifname, l.Attrs().OperState)
		}
	}

	for _, c := range []struct {
		node, ifname string
		want         bool
	}{
		{router, "lb1", false},
		{router, "lb2", false},
		{topo.Client(), "eth0", false},
		{topo.Balancer(1), "eth0", false},
		{topo.Balancer(2), "eth0", false},
		// Untouched devices keep the veth default, proving the read works.
		{router, "be1", true},
		{topo.Backend(1), "eth0", true},
	} {
		on, err := topo.TxChecksum(c.node, c.ifname)
		if err != nil {
			t.Fatal(err)
		}
		if on != c.want {
			t.Errorf("%s %s: tx checksumming %t, want %t", c.node, c.ifname, on, c.want)
		}
	}

	// GRO reads back what was set, both ways (the veth default is off).
	for _, want := range []bool{true, false} {
		if err := topo.SetGRO(topo.Backend(1), "eth0", want); err != nil {
			t.Fatal(err)
		}
		if on, err := topo.GRO(topo.Backend(1), "eth0"); err != nil || on != want {
			t.Errorf("%s eth0: GRO %t (%v) after setting it %t", topo.Backend(1), on, err, want)
		}
	}

	for key, want := range map[string]string{
		"net.ipv4.ip_forward":                "1",
		"net.ipv6.conf.all.forwarding":       "1",
		"net.ipv4.fib_multipath_hash_policy": "1",
		"net.ipv6.fib_multipath_hash_policy": "1",
	} {
		got, err := topo.SysctlValue(router, key)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("router %s = %s, want %s", key, got, want)
		}
		// The client must not have been changed along with the router.
		if got, err := topo.SysctlValue(topo.Client(), key); err != nil {
			t.Errorf("client %s: %v", key, err)
		} else if got == want {
			t.Errorf("client %s = %s too: sysctl leaked out of the router namespace", key, got)
		}
	}

	err := topo.Netlink(router, func(h *netlink.Handle) error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			dst := ipNet(VIPPrefixIPv4)
			if fam == netlink.FAMILY_V6 {
				dst = ipNet(VIPPrefixIPv6)
			}
			routes, err := h.RouteListFiltered(fam, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
			if err != nil {
				return err
			}
			hops := 0
			for _, r := range routes {
				hops += len(r.MultiPath)
			}
			if hops != 2 {
				t.Errorf("route to %s: %d nexthops in %v, want one per balancer (2)", dst, hops, routes)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLinkDownCutsBackend(t *testing.T) {
	topo := newTestTopology(t)
	l, err := topo.Listen(topo.Backend(1), "tcp", "10.2.1.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, l)
	exchange(t, topo, topo.Client(), "10.2.1.2:8080")

	if err := topo.LinkDown(topo.Router(), "be1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if c, err := topo.Dialer(topo.Client()).DialContext(ctx, "tcp", "10.2.1.2:8080"); err == nil {
		c.Close()
		t.Fatal("dial succeeded with the router's be1 down")
	}

	if err := topo.LinkUp(topo.Router(), "be1"); err != nil {
		t.Fatal(err)
	}
	exchange(t, topo, topo.Client(), "10.2.1.2:8080")
}

// TestDoStaysInNamespace runs many concurrent Do calls: each must see its
// own namespace, which breaks at once if Do forgets LockOSThread.
func TestDoStaysInNamespace(t *testing.T) {
	topo := newTestTopology(t)
	nodes := topo.Nodes()
	var wg sync.WaitGroup
	for i := range 200 {
		node := nodes[i%len(nodes)]
		wg.Go(func() {
			err := topo.Do(node, func() error {
				for range 10 {
					cur, err := netns.Get()
					if err != nil {
						return err
					}
					same := cur.Equal(topo.NsHandle(node))
					cur.Close()
					if !same {
						return fmt.Errorf("running in %s, want %s", cur, node)
					}
					time.Sleep(time.Microsecond) // let the scheduler move us if it could
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestCommandRunsInNode(t *testing.T) {
	topo := newTestTopology(t)
	out, err := topo.Command(t.Context(), topo.Client(), "cat", "/proc/net/dev").Output()
	if err != nil {
		t.Fatalf("nsenter cat /proc/net/dev: %v", err)
	}
	var devs []string
	for _, line := range strings.Split(string(out), "\n")[2:] {
		if name, _, ok := strings.Cut(line, ":"); ok {
			devs = append(devs, strings.TrimSpace(name))
		}
	}
	if strings.Join(devs, ",") != "lo,eth0" && strings.Join(devs, ",") != "eth0,lo" {
		t.Errorf("client devices %v, want lo and eth0", devs)
	}
	// The mount namespace is the caller's: a file created here is visible.
	f, err := os.CreateTemp("", "sytopo")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer os.Remove(f.Name())
	if err := topo.Command(t.Context(), topo.Router(), "test", "-e", f.Name()).Run(); err != nil {
		t.Errorf("file %s not visible through Command: %v", f.Name(), err)
	}
}

func netnsNames(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir(NetnsDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestCloseRemovesNamespaces(t *testing.T) {
	topo := newTestTopology(t)
	prefix := topo.Prefix()
	if got := netnsNames(t, prefix); len(got) != 7 {
		t.Fatalf("namespaces %v, want 7 (client, router, 2 balancers, 3 backends)", got)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if got := netnsNames(t, prefix); len(got) != 0 {
		t.Errorf("namespaces left after Close: %v", got)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := topo.Do(topo.Client(), func() error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close = %v, want ErrClosed", err)
	}
}

func TestCleanupRemovesLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: NOT ROOT — this test builds network namespaces and needs root (run `sudo go test`)")
	}
	var topo *Topology
	for {
		var err error
		topo, err = New(Config{Prefix: RandomPrefix(testPrefix), Balancers: 1, Backends: 1})
		if errors.Is(err, ErrPrefixInUse) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	prefix := topo.Prefix()
	t.Cleanup(func() { Cleanup(prefix) })

	// A server left running in a node, as after an interrupted demo.
	cmd := topo.Command(context.Background(), topo.Backend(1), "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	// nsenter enters the namespace after it starts: under load, a scan
	// right away could find it still in ours.
	want, _ := statNs(topo.NsPath(topo.Backend(1)))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if id, ok := statNs(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); ok && id == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process did not enter the node's namespace")
		}
	}

	// Forget the topology as a killed process would: drop the handles,
	// leave the names.
	topo.mu.Lock()
	for _, h := range topo.nodes {
		h.Close()
	}
	topo.closed = true
	topo.mu.Unlock()

	if err := Cleanup(prefix); err != nil {
		t.Fatal(err)
	}
	if got := netnsNames(t, prefix); len(got) != 0 {
		t.Errorf("namespaces left after Cleanup: %v", got)
	}
	select {
	case <-exited:
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) {
			t.Errorf("process left in the namespace ended with %v, want killed", waitErr)
		}
	case <-time.After(5 * time.Second):
		t.Error("process left in the namespace still runs after Cleanup")
	}
	if err := Cleanup(prefix); err != nil {
		t.Errorf("Cleanup with nothing left: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Prefix: "sy1234", Balancers: 1, Backends: 1}, true},
		{Config{Prefix: "sy123456", Balancers: 3, Backends: 4}, true},
		{Config{Prefix: "", Balancers: 1, Backends: 1}, false},
		{Config{Prefix: "sy1234567", Balancers: 1, Backends: 1}, false},
		{Config{Prefix: "sy-1", Balancers: 1, Backends: 1}, false},
		{Config{Prefix: "sy/1", Balancers: 1, Backends: 1}, false},
		{Config{Prefix: "sy1", Balancers: 0, Backends: 1}, false},
		{Config{Prefix: "sy1", Balancers: 1, Backends: 0}, false},
		{Config{Prefix: "sy1", Balancers: 256, Backends: 1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%t", tc.cfg, err, tc.ok)
		}
	}
}

func TestRandomPrefix(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		p := RandomPrefix(testPrefix)
		if err := validatePrefix(p); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(p, testPrefix) || len(p) != MaxPrefixLen {
			t.Fatalf("RandomPrefix(%q) = %q", testPrefix, p)
		}
		seen[p] = true
	}
	if len(seen) < 10 {
		t.Errorf("20 draws gave only %d distinct prefixes", len(seen))
	}
	if p := RandomPrefix("averylongbase"); len(p) != MaxPrefixLen || p[:6] != "averyl" {
		t.Errorf("RandomPrefix of a long base = %q", p)
	}
}

func TestAddresses(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{BalancerIPv4(2).String(), "10.1.2.2"},
		{BalancerIPv6(2).String(), "fd00:1:2::2"},
		{RouterBalancerIPv6(12).String(), "fd00:1:12::1"},
		{BackendIPv4(3).String(), "10.2.3.2"},
		{BackendIPv6(3).String(), "fd00:2:3::2"},
		{RouterBackendIPv4(3).String(), "10.2.3.1"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
}

// TestRouterSpreadsVIPOverBalancers stands in for the balancers' XDP
// program: each balancer owns the VIP on lo and answers every datagram
// with its number. Flows that differ only in source port must reach both,
// which needs the multipath route and the L4 hash policy. A flow's first
// datagram may be lost while a neighbour is still being resolved on a
// busy host (CI lost 19 of 64 once), so each flow retries until answered:
// its retries take the same path, and the answer says which one.
func TestRouterSpreadsVIPOverBalancers(t *testing.T) {
	topo := newTestTopology(t)
	for _, vip := range []string{"10.100.0.1", "fd00:100::1"} {
		t.Run(vip, func(t *testing.T) {
			for i := 1; i <= 2; i++ {
				bits := 128
				if strings.Contains(vip, ".") {
					bits = 32
				}
				if err := topo.AddAddr(topo.Balancer(i), "lo", netip.PrefixFrom(netip.MustParseAddr(vip), bits)); err != nil {
					t.Fatal(err)
				}
				pc, err := topo.ListenPacket(topo.Balancer(i), "udp", net.JoinHostPort(vip, "53"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { pc.Close() })
				go func() {
					buf := make([]byte, 64)
					for {
						_, from, err := pc.ReadFrom(buf)
						if err != nil {
							return
						}
						pc.WriteTo([]byte{byte(i)}, from)
					}
				}()
			}
			const flows, tries = 64, 10
			n := [3]int{}
			for f := range flows {
				c, err := topo.Dialer(topo.Client()).DialContext(t.Context(), "udp", net.JoinHostPort(vip, "53"))
				if err != nil {
					t.Fatal(err)
				}
				lb := 0
				for try := 0; try < tries && lb == 0; try++ {
					c.Write([]byte("x"))
					c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					buf := make([]byte, 1)
					if k, err := c.Read(buf); err == nil && k == 1 && buf[0] >= 1 && buf[0] <= 2 {
						lb = int(buf[0])
					}
				}
				c.Close()
				if lb == 0 {
					t.Fatalf("flow %d: no answer from either balancer after %d tries (so far lb1 %d, lb2 %d)", f, tries, n[1], n[2])
				}
				n[lb]++
			}
			if n[1] == 0 || n[2] == 0 {
				t.Errorf("%d flows split lb1 %d / lb2 %d: want both balancers used", flows, n[1], n[2])
			}
			t.Logf("lb1 %d, lb2 %d", n[1], n[2])
		})
	}
}

func TestAttachPassCalledInRouter(t *testing.T) {
	var got []string
	var topo *Topology
	topo = NewForTest(t, Config{Prefix: testPrefix, Balancers: 3, Backends: 1,
		AttachPass: func(ns netns.NsHandle, ifname string) error {
			cur, err := netns.Get()
			if err != nil {
				return err
			}
			defer cur.Close()
			if !cur.Equal(ns) {
				return fmt.Errorf("AttachPass for %s runs outside the router namespace", ifname)
			}
			if _, err := net.InterfaceByName(ifname); err != nil {
				return err
			}
			got = append(got, ifname)
			return nil
		}})
	if strings.Join(got, ",") != "lb1,lb2,lb3" {
		t.Errorf("AttachPass called for %v, want lb1, lb2, lb3", got)
	}
	_ = topo

	// An error from AttachPass fails New and leaves nothing behind.
	prefix := RandomPrefix(testPrefix)
	t.Cleanup(func() { Cleanup(prefix) })
	_, err := New(Config{Prefix: prefix, Balancers: 1, Backends: 1,
		AttachPass: func(netns.NsHandle, string) error { return errors.New("no XDP here") }})
	if err == nil || !strings.Contains(err.Error(), "no XDP here") {
		t.Errorf("New with a failing AttachPass = %v", err)
	}
	if left := netnsNames(t, prefix); len(left) != 0 {
		t.Errorf("failed New left %v", left)
	}
}

// TestAddIPv4AddrToDownLink: adding an IPv4 address does not wait for
// IPv6 readiness, which a link that is down never reaches (no link-local
// address): AddAddr failed after 5 s with "IPv6 addresses not ready".
func TestAddIPv4AddrToDownLink(t *testing.T) {
	topo := NewForTest(t, Config{Prefix: "sytopa4", Balancers: 1, Backends: 1})
	node := topo.Balancer(1)
	if err := topo.Netlink(node, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "down0"}, PeerName: "down1"})
	}); err != nil {
		t.Fatal(err)
	}
	if err := topo.AddAddr(node, "down0", netip.MustParsePrefix("10.9.0.1/24")); err != nil {
		t.Fatalf("add an IPv4 address to a link that is down: %v", err)
	}
}
