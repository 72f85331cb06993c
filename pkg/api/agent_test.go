package api

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// agentService answers with sampleAgentStatus, or err.
type agentService struct{ err error }

func (a agentService) AgentStatus(context.Context) (AgentStatus, error) {
	return sampleAgentStatus(fixedNow), a.err
}

// sampleAgentStatus is an agent whose IPv4 VIP went missing from lo,
// one of whose sysctls the admin changed since, and which keeps GRO off.
func sampleAgentStatus(now time.Time) AgentStatus {
	return AgentStatus{
		Node: "be1", Interface: "eth0", AttachMode: "native", ProgramTag: "0a1b2c3d4e5f6071", ProgramState: ProgramState{ProgramAttached: true},
		ConfigFile: "/etc/switchyard/agent.yaml", PinDir: "/sys/fs/bpf/switchyard-agent/eth0",
		StateFile: "/run/switchyard/agent-eth0.json", StartedAt: now.Add(-90 * time.Second),
		EncapAddresses: []string{"10.2.1.2", "fd00:2:1::2"}, EncapFollowsInterface: true, GUEPort: 6080,
		VIPs: []AgentVIP{
			{Address: "10.100.0.1", OnLo: false, Added: false},
			{Address: "fd00:100::1", OnLo: true, Added: false},
		},
		Sysctls: []AgentSysctl{
			{Name: "net.ipv4.conf.all.arp_ignore", Old: "0", Set: "1", Now: "1"},
			{Name: "net.ipv4.conf.eth0.arp_announce", Old: "0", Set: "2", Now: "1"},
		},
		GRO: &AgentGRO{Interface: "eth0", WasOn: true, NowOn: false},
		Counters: map[string]uint64{"decap_ipv4_outer": 12000, "decap_ipv6_outer": 34, "decap_gue": 5,
			"pass": 77, "drop_inner_not_ip": 0, "drop_ce_not_ect": 2, "bad_outer_csum": 3, "bad_outer_ip_len": 0},
	}
}

func startAgentServer(t *testing.T, svc AgentService) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "agent.sock")
	s, err := NewAgentServer(ServerConfig{Socket: socket}, svc)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return socket
}

func TestAgentStatusRoundTrip(t *testing.T) {
	socket := startAgentServer(t, agentService{})
	got, err := NewAgentClient(socket).AgentStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := sampleAgentStatus(fixedNow); !reflect.DeepEqual(got, want) {
		t.Errorf("AgentStatus:\n got %+v\nwant %+v", got, want)
	}
	_, err = NewAgentClient(startAgentServer(t, agentService{err: errors.New("read the decap counters: boom")})).AgentStatus(context.Background())
	if err == nil || err.Error() != "read the decap counters: boom" {
		t.Errorf("failing AgentStatus: %v", err)
	}
}

// A client of one daemon pointed at the other's socket is told which
// command serves it, instead of reading one status as the other's.
func TestWrongDaemonSocket(t *testing.T) {
	agentSock := startAgentServer(t, agentService{})
	_, err := NewClient(agentSock).Status(context.Background())
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), agentSock+" is the socket of `switchyard agent`, not of `switchyard run`: add --agent") {
		t.Errorf("balancer status on the agent's socket: %v", err)
	}
	_, balSock := startServer(t, &fakeService{})
	_, err = NewAgentClient(balSock).AgentStatus(context.Background())
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), balSock+" is the socket of `switchyard run`, not of `switchyard agent`: leave out --agent") {
		t.Errorf("agent status on the balancer's socket: %v", err)
	}
	// Each daemon knows every path of the other's.
	bal, err := NewServer(ServerConfig{Socket: "/run/b.sock"}, &fakeService{})
	if err != nil {
		t.Fatal(err)
	}
	ag, err := NewAgentServer(ServerConfig{Socket: "/run/a.sock"}, agentService{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(bal.paths(), slices.Sorted(slices.Values(ag.foreign))) ||
		!slices.Equal(ag.paths(), slices.Sorted(slices.Values(bal.foreign))) {
		t.Errorf("balancer serves %v, the agent takes %v for its; agent serves %v, the balancer takes %v for its",
			bal.paths(), ag.foreign, ag.paths(), bal.foreign)
	}
	// Any other path is still an unknown endpoint.
	resp, body := rawDo(t, agentSock, http.MethodGet, "/v2/whatever", "")
	if resp.StatusCode != http.StatusNotFound || body.Error != "no endpoint /v2/whatever (this daemon serves /v1/agent/status)" {
		t.Errorf("unknown endpoint: %d %q", resp.StatusCode, body.Error)
	}
}

func TestAgentServerDefaultSocket(t *testing.T) {
	s, err := NewAgentServer(ServerConfig{}, agentService{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Socket() != "/run/switchyard/agent.sock" {
		t.Errorf("default agent socket %s", s.Socket())
	}
	if _, err := NewAgentServer(ServerConfig{}, nil); err == nil {
		t.Error("NewAgentServer without a service: no error")
	}
}

func TestWriteAgentStatus(t *testing.T) {
	var b strings.Builder
	if err := writeAgentStatus(&b, sampleAgentStatus(fixedNow), fixedNow); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"node:             be1 (agent), up 1m30s\n",
		"interface:        eth0 (native), decap program 0a1b2c3d4e5f6071\n",
		"decapsulates to:  10.2.1.2, fd00:2:1::2 (the addresses of eth0)\n",
		"GUE:              UDP port 6080\n",
		"packets:          12.0k decapsulated (12.0k IPv4 outer, 34 IPv6 outer, 5 of them GUE), 77 passed untouched\n",
		"10.100.0.1   MISSING: packets to it are dropped (restart the agent to put it back)  -\n",
		"fd00:100::1  yes",
		"net.ipv4.conf.all.arp_ignore     0    1    1\n",
		"net.ipv4.conf.eth0.arp_announce  0    2    1 (changed since: kept at stop)\n",
		"\nGRO of eth0 turned off for the generic-mode decap program: was on, now off (turned on again at stop)\n",
		"drops: ce_not_ect 2\n",
		"bad outer headers (passed untouched, for the stack to drop): csum 3\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("agent status lacks %q", want)
		}
	}
	if strings.Contains(out, " \n") {
		t.Error("a line ends in spaces")
	}

	// GRO someone turned on again behind the agent's back shows.
	on := sampleAgentStatus(fixedNow)
	on.GRO.NowOn = true
	b.Reset()
	if err := writeAgentStatus(&b, on, fixedNow); err != nil {
		t.Fatal(err)
	}
	if want := "was on, now ON: turned on since, the decap program sees merged packets (`ethtool -K eth0 gro off` turns it off again)\n"; !strings.Contains(b.String(), want) {
		t.Errorf("agent status with GRO on again lacks %q:\n%s", want, b.String())
	}

	// An interface renamed while the agent runs shows under its current
	// name, and from which one it was renamed.
	renamed := sampleAgentStatus(fixedNow)
	renamed.Interface, renamed.ConfiguredInterface = "ethrn0", "eth0"
	b.Reset()
	if err := writeAgentStatus(&b, renamed, fixedNow); err != nil {
		t.Fatal(err)
	}
	if want := "interface:        ethrn0 (native), decap program 0a1b2c3d4e5f6071; renamed from eth0 (the configured interface) while the agent ran\n"; !strings.Contains(b.String(), want) {
		t.Errorf("agent status of a renamed interface lacks %q:\n%s", want, b.String())
	}

	// A decap program no longer on its interface shows where the
	// operator reads the interface: nothing is decapsulated.
	detached := sampleAgentStatus(fixedNow)
	detached.ProgramAttached, detached.ProgramDetachments = false, 1
	detached.ProgramDetached = "its link (ID 7) was detached from the interface (`bpftool link detach`?)"
	b.Reset()
	if err := writeAgentStatus(&b, detached, fixedNow); err != nil {
		t.Fatal(err)
	}
	if want := "interface:        eth0 (native), decap program 0a1b2c3d4e5f6071 NOT ATTACHED: encapsulated packets are not decapsulated; its link (ID 7) was detached from the interface (`bpftool link detach`?)\n"; !strings.Contains(b.String(), want) {
		t.Errorf("agent status with the decap program detached lacks %q:\n%s", want, b.String())
	}

	// A check that could not read the link shows the last state found,
	// and says it is no more.
	detached.AttachCheckError = "read the decap program's link: operation not permitted"
	b.Reset()
	if err := writeAgentStatus(&b, detached, fixedNow); err != nil {
		t.Fatal(err)
	}
	if want := "NOT ATTACHED: encapsulated packets are not decapsulated; its link (ID 7) was detached from the interface (`bpftool link detach`?) (attachment NOT CHECKED, last known state shown: read the decap program's link: operation not permitted)\n"; !strings.Contains(b.String(), want) {
		t.Errorf("agent status with a failed check lacks %q:\n%s", want, b.String())
	}

	// A link pin the agent restored, and one it cannot.
	pins := sampleAgentStatus(fixedNow)
	pins.PinDir, pins.LinkPinned, pins.LinkPinRestores = "/sys/fs/bpf/switchyard/agent/eth0", true, 2
	b.Reset()
	if err := writeAgentStatus(&b, pins, fixedNow); err != nil {
		t.Fatal(err)
	}
	if want := "pins:             /sys/fs/bpf/switchyard/agent/eth0 (the link's pin was removed by hand and pinned again 2 times)\n"; !strings.Contains(b.String(), want) {
		t.Errorf("agent status with a restored link pin lacks %q:\n%s", want, b.String())
	}
	// Counts read as the balancer's do: "1 time", and map pins counted
	// as pins (three removed at once are 3 pins restored, not 3 times).
	pins.LinkPinRestores, pins.MapPinRestores = 1, 3
	b.Reset()
	if err := writeAgentStatus(&b, pins, fixedNow); err != nil {
		t.Fatal(err)
	}
	if want := "pins:             /sys/fs/bpf/switchyard/agent/eth0 (the link's pin was removed by hand and pinned again 1 time) (map pins removed by hand and pinned again: 3 pins)\n"; !strings.Contains(b.String(), want) {
		t.Errorf("agent status with a restored link pin and map pins lacks %q:\n%s", want, b.String())
	}
	pins.LinkPinned, pins.LinkPinError, pins.MapPinRestores = false, "the pin directory /sys/fs/bpf/switchyard/agent/eth0 was removed", 0
	b.Reset()
	if err := writeAgentStatus(&b, pins, fixedNow); err != nil {
		t.Fatal(err)
	}
	if want := "(link NOT PINNED: a kill or an in-place upgrade of the agent detaches the decap program; the pin directory /sys/fs/bpf/switchyard/agent/eth0 was removed)\n"; !strings.Contains(b.String(), want) {
		t.Errorf("agent status with the link not pinned lacks %q:\n%s", want, b.String())
	}

	// An agent following an interface without addresses (link-local ones
	// aside, which it does not follow) decapsulates nothing: say so. No
	// GUE, no VIPs, no sysctls changed.
	empty := AgentStatus{Interface: "eth1", EncapFollowsInterface: true, EncapAddresses: []string{}}
	b.Reset()
	if err := writeAgentStatus(&b, empty, fixedNow); err != nil {
		t.Fatal(err)
	}
	out = b.String()
	for _, want := range []string{
		"decapsulates to:  NONE: eth1 has no address the balancers can reach (link-local ones are not followed), nothing is decapsulated\n",
		"GUE:              off\n",
		"VIPs on lo: none configured\n",
		"sysctls changed: none",
		"drops: none\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("empty agent status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "GRO") {
		t.Errorf("agent status that turned no GRO off speaks of it:\n%s", out)
	}
}
