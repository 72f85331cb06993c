package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/switchyard-lb/switchyard/pkg/agent"
	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
)

// Default configuration files of run and agent, which check reads too.
const (
	defaultConfigFile      = "/etc/switchyard/switchyard.yaml"
	defaultAgentConfigFile = "/etc/switchyard/agent.yaml"
)

// runCheck reads a configuration file as `switchyard run` (with --agent:
// `switchyard agent`) reads it at start, and by `switchyard reload`, and
// says whether they would take it: before a reload, in CI, or before an
// upgrade, whose validation may refuse a file the running release took.
// It makes the checks those commands make before they touch the host, and
// none after: it needs no root, and touches no bpffs, netlink or socket,
// so the interface, pins, socket and metrics address are checked only at
// the start.
func runCheck(args []string) error {
	fs := newFlagSet("check")
	cfgPath := fs.String("config", "", fmt.Sprintf("configuration file to check (default %s; with --agent %s)", defaultConfigFile, defaultAgentConfigFile))
	agentFlag := fs.Bool("agent", false, "check a backend agent's configuration file (as switchyard agent reads it) instead of the balancer's")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	if *agentFlag {
		if *cfgPath == "" {
			*cfgPath = defaultAgentConfigFile
		}
		return checkAgent(*cfgPath)
	}
	if *cfgPath == "" {
		*cfgPath = defaultConfigFile
	}
	return checkBalancer(*cfgPath)
}

// checkBalancer makes runRun's checks of the file at path that come before
// the host is touched.
func checkBalancer(path string) error {
	cfg, err := config.Load(path)
	if errors.Is(err, config.ErrOtherKind) {
		return fmt.Errorf("%w\nto check it as the agent's file: switchyard check --agent --config %s", err, path)
	}
	if err != nil {
		return err
	}
	if _, err := datapath.ParseAttachMode(string(cfg.Datapath.AttachMode)); err != nil {
		return err
	}
	if err := (api.ServerConfig{Socket: cfg.API.Socket}).Validate(); err != nil {
		return err
	}
	backends := 0
	for _, v := range cfg.VIPs {
		backends += len(v.Backends)
	}
	fmt.Printf("configuration %s is valid: %s, %s\n", path, count(len(cfg.VIPs), "VIP"), count(backends, "backend"))
	return nil
}

// checkAgent makes runAgent's checks of the file at path that come before
// the host is touched.
func checkAgent(path string) error {
	cfg, err := config.LoadAgent(path)
	if errors.Is(err, config.ErrOtherKind) {
		return fmt.Errorf("%w\nto check it as the balancer's file: switchyard check --config %s", err, path)
	}
	if err != nil {
		return err
	}
	// New only validates and names the pin directory and state file.
	if _, err := agent.New(agent.Config{Agent: *cfg, StateDir: filepath.Dir(cfg.API.Socket)}); err != nil {
		return err
	}
	if err := (api.ServerConfig{Socket: cfg.API.Socket}).Validate(); err != nil {
		return err
	}
	vips := "no VIPs (it only decapsulates)"
	if len(cfg.VIPs) > 0 {
		vips = fmt.Sprintf("%s (%s)", count(len(cfg.VIPs), "VIP"), strings.Join(cfg.VIPs, ", "))
	}
	encap := fmt.Sprintf("every address of %s but link-local ones, followed as they change", cfg.Interface)
	if len(cfg.EncapAddresses) > 0 {
		encap = strings.Join(cfg.EncapAddresses, ", ")
	}
	fmt.Printf("agent configuration %s is valid: interface %s, %s, encap addresses %s\n", path, cfg.Interface, vips, encap)
	return nil
}

// count is n and noun, in the plural unless n is 1.
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
