package config

import (
	"net/netip"
	"os"
	"path/filepath"
)

// Agent defaults.
const (
	DefaultAgentAPISocket     = "/run/switchyard/agent.sock"
	DefaultAgentMetricsListen = "127.0.0.1:9302"
	DefaultAgentPinDirBase    = "/sys/fs/bpf/switchyard-agent" // the pin dir is DefaultAgentPinDirBase/<interface>
)

const exampleAgentConfig = "configs/agent.yaml"

// AgentConfig is the configuration of the agent on a backend appliance
// (`switchyard agent`): it decapsulates what the balancers send and puts
// the VIPs on lo for direct server return.
type AgentConfig struct {
	Node Node `yaml:"node"`
	// Interface receives the encapsulated packets. Required.
	Interface string `yaml:"interface"`
	// EncapAddresses are the outer destination addresses decapsulated here
	// (the backend addresses the balancers use), unicast and routed: not
	// link-local or reserved, as backends[].address. Empty means every
	// address of Interface but link-local ones, followed as they change.
	EncapAddresses []string `yaml:"encap_addresses" compare:"addr"`
	// GUEPort is the UDP port GUE packets arrive on; 0 disables GUE decap
	// (IPIP is always decapsulated). Default: 6080.
	GUEPort int `yaml:"gue_port"`
	// VIPs are added to lo so that the servers accept the decapsulated
	// packets and reply to clients directly.
	VIPs []string `yaml:"vips" compare:"addr"`
	// PinDir is the bpffs directory for pinned maps and links. Empty means
	// DefaultAgentPinDirBase/<interface>.
	PinDir string `yaml:"pin_dir"`
	// API.Socket is where the agent serves its status (`switchyard status
	// --agent`); its directory also holds the agent's state file.
	API     API     `yaml:"api"`
	Metrics Metrics `yaml:"metrics"`
}

// EncapAddrs returns EncapAddresses parsed (nil means every address of the
// interface). Valid after Validate.
func (c *AgentConfig) EncapAddrs() []netip.Addr { return addrs(c.EncapAddresses) }

// VIPAddrs returns VIPs parsed. Valid after Validate.
func (c *AgentConfig) VIPAddrs() []netip.Addr { return addrs(c.VIPs) }

func addrs(ss []string) []netip.Addr {
	if ss == nil {
		return nil
	}
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = addr(s)
	}
	return out
}

// DefaultAgentConfig returns an AgentConfig holding every static default.
func DefaultAgentConfig() AgentConfig {
	return AgentConfig{
		GUEPort: DefaultGUEPort,
		API:     API{Socket: DefaultAgentAPISocket},
		Metrics: Metrics{Listen: DefaultAgentMetricsListen},
	}
}

// LoadAgent reads and parses the agent config file at path.
func LoadAgent(path string) (*AgentConfig, error) {
	data, err := readFile(path, exampleAgentConfig)
	if err != nil {
		return nil, err
	}
	return ParseAgent(data, path)
}

// ParseAgent parses an agent config: it decodes data over
// DefaultAgentConfig, applies the derived defaults and validates. name is
// the file name used in error messages.
func ParseAgent(data []byte, name string) (*AgentConfig, error) {
	c := DefaultAgentConfig()
	err := parseInto(data, name, agentFile, balancerFile, &c, func(func(string) bool) problems {
		c.ApplyDefaults()
		return c.validate()
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// ApplyDefaults fills the derived defaults; see Config.ApplyDefaults.
func (c *AgentConfig) ApplyDefaults() {
	if c.Node.Name == "" {
		c.Node.Name, _ = os.Hostname()
	}
	if c.PinDir == "" && c.Interface != "" {
		c.PinDir = filepath.Join(DefaultAgentPinDirBase, c.Interface)
	}
}

// Validate checks c as ApplyDefaults would complete it (c itself is not
// changed) and returns every problem joined, each a *FieldError wrapping
// ErrInvalid, or nil.
func (c *AgentConfig) Validate() error {
	d := *c
	d.ApplyDefaults()
	return join(d.validate())
}

// loopbackName is the loopback interface, on which the agent puts the VIPs.
const loopbackName = "lo"

func (c *AgentConfig) validate() problems {
	var p problems
	checkNodeName(&p, c.Node.Name, "for this appliance")
	checkInterface(&p, "interface", c.Interface, "receives the encapsulated packets")
	if c.Interface == loopbackName {
		// The balancers' packets arrive on a NIC, never on lo, which the
		// agent keeps the VIPs on: a decap program there strips nothing,
		// lo's addresses (the VIPs among them) would become encap
		// addresses, and the address watcher would take lo's changes for
		// the interface's and no longer follow VIPs removed from it.
		p.add("interface", "lo cannot be the agent's interface: the encapsulated packets arrive on the NIC the balancers send them to (the one with this backend's address in their vips[].backends, e.g. eth0), and lo is where the agent keeps the VIPs; name that NIC")
	}
	checkUniqueAddrs(&p, "encap_addresses", c.EncapAddresses)
	if len(c.EncapAddresses) > MaxEncapAddrs {
		p.add("encap_addresses", "%d addresses are more than the decap program's limit of %d; list only those the balancers send to (the backend addresses in their vips[].backends)",
			len(c.EncapAddresses), MaxEncapAddrs)
	}
	checkPort(&p, "gue_port", c.GUEPort, 0, "GUE decap off")
	checkUniqueAddrs(&p, "vips", c.VIPs)
	if c.PinDir != "" || c.Interface != "" {
		checkPinDir(&p, "pin_dir", c.PinDir, filepath.Join(DefaultAgentPinDirBase, c.Interface))
	}
	checkSocket(&p, "api.socket", c.API.Socket, DefaultAgentAPISocket)
	checkListen(&p, "metrics.listen", c.Metrics.Listen, DefaultAgentMetricsListen)
	return p
}
