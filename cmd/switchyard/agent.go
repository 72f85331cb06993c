package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/switchyard-lb/switchyard/pkg/agent"
	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/metrics"
)

func runAgent(args []string) error {
	fs := newFlagSet("agent")
	cfgPath := fs.String("config", defaultAgentConfigFile, "agent configuration file")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	modeFlag := fs.String("attach-mode", "native", "native, generic or auto")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	// Signals from here on end the agent cleanly: one that arrives while
	// Start waits for the host's other agents (their lock) ends the wait,
	// and Start undoes what it did; one that arrives while Start is
	// changing the host lets Start finish, and the agent then stops at
	// once and undoes it all. An agent killed outright (SIGKILL,
	// the OOM killer, a panic) leaves its sysctls, VIPs and pins; it has
	// recorded them in its state file before making them, and its next
	// run takes them over and undoes them when it stops.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The agent has no reload, and SIGHUP's default action would kill it
	// as abruptly: one sent out of habit (the balancer's reload signal)
	// or by a closing terminal must leave it running.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	log, err := newLogger(*level)
	if err != nil {
		return err
	}
	// A flag's value is checked with the other flags, before the file:
	// a wrong call is told as such (exit 2), not as a missing config.
	mode, err := datapath.ParseAttachMode(*modeFlag)
	if err != nil {
		return &usageError{err.Error()}
	}
	cfg, err := config.LoadAgent(*cfgPath)
	if err != nil {
		return err
	}
	// Status and logs name the file by its absolute path.
	*cfgPath = absPath(*cfgPath)
	if os.Geteuid() != 0 {
		return errNotRoot
	}
	// The state file lives beside the API socket, as the balancer's
	// drains file beside its own: /run/switchyard by default.
	a, err := agent.New(agent.Config{Agent: *cfg, Logger: log, AttachMode: mode,
		StateDir: filepath.Dir(cfg.API.Socket), ConfigPath: *cfgPath})
	if err != nil {
		return err
	}
	// The socket is taken before the host is touched: an agent already
	// serving it (this configuration started twice) is refused without a
	// change. A status asked for meanwhile waits for Start.
	gate := &startGate{AgentService: a, started: make(chan struct{})}
	srv, err := api.NewAgentServer(api.ServerConfig{Socket: cfg.API.Socket, Logger: log}, gate)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	defer srv.Close()
	// So is the metrics address, served once Start has returned (scrapes
	// wait in the backlog meanwhile): one in use ended a start that had
	// taken over a killed agent's changes, and undid them, taking its
	// decap program off the interface.
	var ms *metrics.Server
	if cfg.Metrics.Listen != "" {
		ms = metrics.NewServer(metrics.ServerConfig{Listen: cfg.Metrics.Listen, Logger: log}, metrics.NewRegistry(a.Collector()))
		if err := ms.Listen(); err != nil {
			return err
		}
		defer ms.Close()
	}
	err = a.StartContext(ctx)
	close(gate.started)
	if ctx.Err() != nil && agent.Cancelled(err) {
		log.Info("agent stopped while it waited for the host's other agents: nothing changed on the host")
		return nil
	}
	if err != nil {
		return err
	}
	defer func() {
		// The socket and the listener close first, answering the
		// requests in flight: a status asked for while the agent undoes
		// its changes was answered "agent is not running" and logged as
		// an error; it now finds no agent, as after the stop.
		if err := srv.Close(); err != nil {
			log.Warn("stop serving", "error", err)
		}
		if ms != nil {
			if err := ms.Close(); err != nil {
				log.Warn("stop serving", "error", err)
			}
		}
		if err := a.Stop(); err != nil {
			log.Error("clean shutdown incomplete", "error", err)
		} else {
			log.Info("agent stopped; decap detached, its VIPs and sysctls undone (those another running agent of the host shares stay for it)")
		}
	}()
	if ms != nil {
		if err := ms.Start(); err != nil {
			return err
		}
	}
	log.Info("agent running", "interface", cfg.Interface, "vips", cfg.VIPs, "api", cfg.API.Socket)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-a.Lost():
			// Nothing is decapsulated any more: stop (undoing the
			// host's changes) and exit with the error, so that a
			// service manager starts the agent again.
			return err
		case <-hup:
			log.Warn("SIGHUP ignored: the agent has no reload; restart it (SIGTERM, then start it again) to apply a changed configuration", "config", *cfgPath)
		}
	}
}

// startGate holds the agent's status requests until Start has returned:
// one that came between the socket opening and Start taking the agent's
// lock was answered "agent is not running" and logged as an error.
type startGate struct {
	api.AgentService
	started chan struct{} // closed once Start has returned
}

func (g *startGate) AgentStatus(ctx context.Context) (api.AgentStatus, error) {
	select {
	case <-g.started:
	case <-ctx.Done():
		return api.AgentStatus{}, ctx.Err()
	}
	return g.AgentService.AgentStatus(ctx)
}
