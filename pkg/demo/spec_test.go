package demo

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/config"
)

// TestRenderedConfigsParse checks that what a lab writes is a valid
// configuration meaning what the Spec says, so that a lab never fails on
// its own files.
func TestRenderedConfigsParse(t *testing.T) {
	s := DefaultSpec(3, []int{1, 1, 2}, 200*time.Millisecond)
	s.VIP(VIPWeb).Backends[0].Drained = true
	s.AddBackend(4, 3)
	s.RemoveBackend("be2")
	text := render(balancerFile{node: "lb1", pinDir: "/sys/fs/bpf/x/lb1", socket: "/tmp/x/lb1.sock", metrics: "127.0.0.1:9301"}, s)
	cfg, err := config.Parse([]byte(text), "lb1.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if cfg.Datapath.PinDir != "/sys/fs/bpf/x/lb1" || cfg.API.Socket != "/tmp/x/lb1.sock" || cfg.Metrics.Listen != "127.0.0.1:9301" {
		t.Errorf("fixed fields: %+v %+v %+v", cfg.Datapath, cfg.API, cfg.Metrics)
	}
	if len(cfg.VIPs) != 3 {
		t.Fatalf("%d VIPs, want 3", len(cfg.VIPs))
	}
	web := cfg.VIPByName(VIPWeb)
	var got []string
	for _, b := range web.Backends {
		got = append(got, b.Name+"@"+b.Address)
	}
	if strings.Join(got, ",") != "be1@10.2.1.2,be3@10.2.3.2,be4@10.2.4.2" {
		t.Errorf("web backends %v", got)
	}
	if !web.Backends[0].Drained || web.Backends[1].Weight != 2 || web.Backends[2].Weight != 3 {
		t.Errorf("web backends %+v", web.Backends)
	}
	if h := web.Health; h.Type != "http" || h.Path != "/healthz" || time.Duration(h.Interval) != 200*time.Millisecond || h.Fall != 2 {
		t.Errorf("web health %+v", h)
	}
	if b := cfg.VIPByName(VIPWeb6).Backends[0]; b.Address != "fd00:2:1::2" {
		t.Errorf("web6 backend %+v", b)
	}
	if v := cfg.VIPByName(VIPDNS); v.Protocol != config.ProtocolUDP || v.Hash != config.HashSource {
		t.Errorf("dns %+v", v)
	}
	if h := cfg.VIPByName(VIPDNS).Health; h.Type != config.CheckUDP || h.Port != 53 || h.Send != "ping" || h.Expect != "backend=" {
		t.Errorf("dns health %+v, want a udp check of port 53 sending ping, expecting backend=", h)
	}

	atext := renderAgent(agentFile{node: "be2", index: 2, pinDir: "/sys/fs/bpf/x/be2-agent", socket: "/tmp/x/a.sock"})
	acfg, err := config.ParseAgent([]byte(atext), "be2-agent.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, atext)
	}
	if strings.Join(acfg.EncapAddresses, ",") != "10.2.2.2,fd00:2:2::2" || len(acfg.VIPs) != 2 {
		t.Errorf("agent config %+v", acfg)
	}
}

// The commands a kept lab suggests must run as printed: the demo's binary
// is bin/switchyard under make demo, not a "switchyard" on PATH.
func TestKeepTextNamesTheBinaryRun(t *testing.T) {
	const bin = "/home/me/switchyard/bin/switchyard"
	text := keepText(bin, "/var/run/netns/sydemo-client", "/var/run/netns/sydemo-lb1", "/tmp/switchyard-demo/lb1.sock", "/tmp/switchyard-demo/be1-agent.sock", "be2", "/tmp/switchyard-demo")
	for _, want := range []string{
		"sudo " + bin + " status --socket /tmp/switchyard-demo/lb1.sock\n",
		"sudo " + bin + " undrain --socket /tmp/switchyard-demo/lb1.sock be2\n",
		"sudo " + bin + " status --agent --socket /tmp/switchyard-demo/be1-agent.sock\n",
		"sudo " + bin + " demo --cleanup\n",
		"sudo nsenter --net=/var/run/netns/sydemo-client curl http://10.100.0.1:80/\n",
		"sudo nsenter --net=/var/run/netns/sydemo-lb1 curl http://127.0.0.1:9301/metrics\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("keep text lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "sudo switchyard ") {
		t.Errorf("keep text runs a switchyard from PATH:\n%s", text)
	}
}
