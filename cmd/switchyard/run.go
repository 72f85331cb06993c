package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/balancer"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/ethtool"
	"github.com/switchyard-lb/switchyard/pkg/metrics"
)

// hiddenRunFlags are run's flags for tests, left out of its -h.
var hiddenRunFlags = []string{"program-variant"}

func runRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	cfgPath := fs.String("config", defaultConfigFile, "configuration file")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	variant := fs.Uint("program-variant", 0, "load a functionally identical BPF program with a different tag (upgrade tests)")
	hideFlags(fs, hiddenRunFlags...)
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	// Signals from here on end the run cleanly: a SIGTERM during start-up
	// lets it finish (pins complete) and then returns at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A SIGHUP's default action ends the process: caught from here on, one
	// that comes during start-up (an upgrade's table copy takes a moment)
	// waits and reloads once the daemon runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	log, err := newLogger(*level)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	// Reloads read the file again, and status, logs and errors name it:
	// by its absolute path, which means the same from any directory.
	*cfgPath = absPath(*cfgPath)
	if os.Geteuid() != 0 {
		return errNotRoot
	}
	mode, err := datapath.ParseAttachMode(string(cfg.Datapath.AttachMode))
	if err != nil {
		return err
	}
	pinDir := cfg.Datapath.PinDir
	if pinDir == "" {
		pinDir = datapath.DefaultPinDir(cfg.Datapath.Interface)
	}
	// Before the load, which pins the maps: a mistyped interface must
	// not leave a pin directory (and its connection table) behind.
	ifc, err := datapath.LookupInterface(cfg.Datapath.Interface)
	if err != nil {
		return err
	}
	// Before the load too: a second daemon of this interface must not
	// touch the maps and program the running one uses.
	lock, created, err := lockPinDir(pinDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	// A first start that fails (a driver without native XDP, a
	// first apply the kernel refuses) leaves nothing behind: neither its maps (64 MiB
	// of connection table at the default size), pinned for no one, nor
	// its program, attached with no daemon to check the backends. The
	// pins of an earlier run hold its flows, and stay. Told apart under
	// the lock, by what the directory holds: one that was missing before
	// the lock may hold the pins of a run that took it first; an empty
	// one (a run killed before it pinned anything, or one an admin
	// prepared) holds none. Only a directory this start created goes
	// with its pins: one that was there stays, empty, as it was found.
	fresh := datapath.PinDirEmpty(lock)
	running := false
	groTurnedOff := false
	groRecordFile := groFile(cfg.API.Socket, pinDir)
	defer func() {
		// Before the lock is let go: no other start may take the
		// directory meanwhile.
		if fresh && !running {
			remove := datapath.RemoveBalancerPins
			if created {
				remove = datapath.RemoveBalancer
			}
			if err := remove(pinDir); err != nil {
				// GRO stays off with the program, perhaps still
				// attached, and its record, for that remove.
				log.Error("a failed first start could not remove what it pinned: run `switchyard remove --config FILE` with its configuration", "pins", pinDir, "error", err)
				return
			}
			// With the program gone, GRO goes back on as it was.
			groBackOn(log, cfg.Datapath.Interface, groRecordFile, groTurnedOff)
		}
	}()

	// A start over a full connection table, an upgrade's copies and the
	// tables of many VIPs take seconds: the log says it began, and
	// "switchyard running" how long it took.
	started := time.Now()
	log.Info("switchyard starting", "config", *cfgPath, "interface", cfg.Datapath.Interface, "pins", pinDir, "vips", len(cfg.VIPs))

	// The socket and the metrics address are taken before the load and
	// the attach, and served once the balancer runs (requests wait in
	// the backlog meanwhile): a start that cannot serve (another
	// daemon's socket, a file in the way, a port in use) changes nothing
	// on the interface, where it attached, or swapped its program into a
	// running link, and only then failed.
	svc := &lateService{}
	srv, err := api.NewServer(api.ServerConfig{Socket: cfg.API.Socket, Logger: log}, svc)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return fmt.Errorf("api.socket: %w", err)
	}
	defer srv.Close()
	servers := []interface{ Close() error }{srv}
	var ms *metrics.Server
	if cfg.Metrics.Listen != "" {
		reg := metrics.NewRegistry(metrics.NewCollector(func(ctx context.Context) (api.Status, error) { return svc.Status(ctx) }, log))
		ms = metrics.NewServer(metrics.ServerConfig{Listen: cfg.Metrics.Listen, Logger: log}, reg)
		if err := ms.Listen(); err != nil {
			return err
		}
		defer ms.Close()
		servers = append(servers, ms)
	}

	dp, err := datapath.LoadBalancer(datapath.Options{
		PinDir: pinDir, ConnTableSize: uint32(cfg.Datapath.ConnTableSize), Logger: log,
		ProgramVariant: uint32(*variant),
	})
	if err != nil {
		return err
	}
	defer dp.Close()
	res, err := dp.Attach(cfg.Datapath.Interface, mode)
	if err != nil {
		return err
	}
	if res.Replaced {
		log.Info("reused the pinned datapath: program replaced in place, flows kept",
			"interface", cfg.Datapath.Interface, "old_tag", res.OldTag, "new_tag", res.NewTag, "mode", res.Mode)
	} else {
		log.Info("XDP balancer attached", "interface", cfg.Datapath.Interface, "mode", res.Mode, "tag", res.NewTag, "pins", pinDir)
	}
	if res.Mode == datapath.AttachGeneric {
		groTurnedOff = groOffForGeneric(log, cfg.Datapath.Interface, ifc.Index, groRecordFile)
	} else {
		// Native mode runs before GRO: GRO a generic-mode run turned
		// off (this interface's before a mode change, or another's)
		// goes back on.
		restoreGROLogged(log, groRecordFile, 0)
	}
	// A start over an earlier run's pins whose program no longer ran on
	// the interface (created again, or its link detached) attached one
	// there: if it fails, it takes it off again, and GRO goes back on, as
	// a first start does, but the pins, and with them the flows, stay.
	// (Deferred after dp.Close, so that it runs first.)
	defer func() {
		if running || fresh || res.Taken {
			return
		}
		if err := dp.Detach(); err != nil {
			log.Error("a failed start could not take off the program it attached, which balances with no daemon to check the backends: fix the cause of the failure and start again, or take it off with `switchyard remove --config FILE` (drops the pinned flows)",
				"interface", cfg.Datapath.Interface, "error", err)
			return
		}
		groBackOn(log, cfg.Datapath.Interface, groRecordFile, groTurnedOff)
	}()

	// Checks via tunnel: always attached (unmarked packets pass it
	// untouched), so that a reload can turn them on; held by this
	// process alone, as only its checks mark packets.
	var hcTunnel balancer.HealthTunnel
	hc, hcErr := dp.LoadHCEncap()
	if hcErr == nil {
		if hcErr = hc.Attach(cfg.Datapath.Interface); hcErr != nil {
			hc.Close()
		} else {
			defer hc.Close()
			hcTunnel = hc
		}
	}
	if hcErr != nil {
		log.Warn("health checks via tunnel are not available: a configuration with health.via tunnel is refused", "interface", cfg.Datapath.Interface, "error", hcErr)
	}

	drainFile, legacyDrainFile := drainFiles(cfg.API.Socket, pinDir)
	bal, err := balancer.New(balancer.Config{
		ConfigPath: *cfgPath, Initial: cfg, Datapath: dp, Logger: log,
		AttachMode: res.Mode.String(), ProgramTag: res.NewTag,
		DrainFile: drainFile, LegacyDrainFile: legacyDrainFile,
		HealthTunnel: hcTunnel, HealthTunnelErr: hcErr,
	})
	if err != nil {
		return err
	}

	// Before the servers serve, which orders it before every request.
	svc.Balancer = bal
	if err := srv.Start(); err != nil {
		return fmt.Errorf("api.socket: %w", err)
	}
	if ms != nil {
		if err := ms.Start(); err != nil {
			return err
		}
		log.Info("metrics", "url", "http://"+ms.Addr().String()+"/metrics")
	}

	running = true
	go reloadOnHUP(ctx, hup, bal)
	log.Info("switchyard running", "config", *cfgPath, "api", cfg.API.Socket, "vips", len(cfg.VIPs), "seconds", time.Since(started).Seconds())
	err = bal.Run(stopServersFirst(ctx, log, servers...))
	if errors.Is(err, balancer.ErrInterfaceGone) {
		// Nothing stays attached: exit with the error (the balancer
		// logged it), for a service manager to start the daemon again.
		return err
	}
	log.Info("switchyard stopped; the datapath stays attached and keeps forwarding (`switchyard remove` uninstalls it)")
	return err
}

// lateService is the API's and the metrics' balancer, which exists only
// after the attach, where the servers listen before the load: set before
// they serve.
type lateService struct{ *balancer.Balancer }

// stopServersFirst returns a context for the control loop that ends once
// ctx has ended and the servers are closed: a stop answers the requests in
// flight and refuses later ones at the socket (no daemon, as after the
// stop), where requests that met the stopped loop were answered "shutting
// down" and logged as errors (API) or failed scrapes (metrics).
func stopServersFirst(ctx context.Context, log *slog.Logger, servers ...interface{ Close() error }) context.Context {
	loop, stop := context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, func() {
		defer stop()
		for _, s := range servers {
			if err := s.Close(); err != nil {
				log.Warn("stop serving", "error", err)
			}
		}
	})
	return loop
}

// groOffForGeneric turns generic receive offload (GRO) off on iface
// (index ifindex), on which the balancer runs in generic (skb) mode:
// generic XDP runs after GRO, so it would see the packets GRO merged,
// larger than the MTU, and drop them or answer "too big", stalling bulk
// TCP to the VIPs. (The kernel itself turns LRO and hardware GRO off when
// a generic XDP program is attached.) GRO stays off while the datapath
// stays attached, after the daemon too: that it was on is written to
// record first (see groRecord), for a native-mode start, `switchyard
// remove` or a failed start to turn it on again. A record of another
// interface (one gone, or created again) is dealt with first; while it
// cannot be (a generic-mode program still runs there, say), GRO stays on
// here: this interface's record would take the other's place, and
// nothing would turn the other's GRO on again. A failure is not fatal:
// the balancer forwards what GRO did not merge. It reports whether it
// turned GRO off.
func groOffForGeneric(log *slog.Logger, iface string, ifindex int, record string) bool {
	settled := restoreGROLogged(log, record, ifindex) == nil
	on, err := ethtool.GRO(iface)
	if err == nil && on && !settled {
		log.Warn("generic receive offload (GRO) left on for generic-mode XDP: the GRO record names another interface, whose GRO could not be turned on again, and this one's record would replace it; "+
			"fix what the error before names, then start the balancer again, which turns GRO off; meanwhile packets GRO merges beyond the MTU reach the balancer, which drops them or answers \"too big\"",
			"interface", iface, "record", record)
		return false
	}
	if err == nil && on {
		if rerr := writeGRORecord(record, iface, ifindex); rerr != nil {
			log.Warn("could not record that generic receive offload (GRO) was on: it is turned off all the same, and stays off after `switchyard remove` or a native-mode start; "+
				"turn it on again then with `ethtool -K "+iface+" gro on`, and make the API socket's directory writable", "interface", iface, "error", rerr)
		}
		err = ethtool.SetGRO(iface, false)
		if err != nil {
			// GRO stays on: nothing to turn on again.
			if rerr := removeGRORecord(record); rerr != nil {
				log.Warn("could not remove the GRO record: GRO is on, as it was before generic mode; remove the file", "record", record, "error", rerr)
			}
		}
	}
	switch {
	case err != nil:
		log.Warn("could not turn off generic receive offload (GRO) for generic-mode XDP: packets GRO merges beyond the MTU reach the balancer, which drops them or answers \"too big\"; "+
			"turn it off with `ethtool -K "+iface+" gro off`, or use native mode", "interface", iface, "error", err)
	case on:
		log.Info("generic receive offload (GRO) turned off: in generic mode the XDP program would see the packets GRO merged, larger than the MTU; "+
			"it stays off while the balancer is attached, and `switchyard remove` or a native-mode start turns it on again", "interface", iface, "record", record)
	}
	return err == nil && on
}

// groBackOn turns GRO on again on iface, whose generic-mode program a
// start that failed took off, and removes its record: GRO the start
// turned off (turnedOff), or that an earlier generic-mode run recorded
// (a start whose program the interface did not run, its link detached by
// hand).
func groBackOn(log *slog.Logger, iface, record string, turnedOff bool) {
	if !turnedOff {
		restoreGROLogged(log, record, 0)
		return
	}
	if err := ethtool.SetGRO(iface, true); err != nil {
		log.Error("a failed start could not turn generic receive offload (GRO) back on: turn it on with `ethtool -K "+iface+" gro on`", "interface", iface, "record", record, "error", err)
		return
	}
	if err := removeGRORecord(record); err != nil {
		log.Warn("could not remove the GRO record: GRO is on, as it was before generic mode; remove the file", "record", record, "error", err)
	}
}

// reloadOnHUP reloads bal's configuration file on each signal from hup,
// until hup is closed. It logs nothing: the balancer logs a refused reload
// (`reload refused`, naming the file's errors) or a failed one (`reload
// failed`) as it does one asked for through the API, and logged here too,
// each refusal showed twice.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, bal *balancer.Balancer) {
	for range hup {
		bal.Reload(ctx)
	}
}

// drainFiles names the file of operator drains, beside the API socket.
// legacy is the name earlier releases gave that file ("" if the same),
// read while the new one is missing, so an upgrade keeps the drains.
func drainFiles(socket, pinDir string) (file, legacy string) {
	return besideSocket(socket, pinDir, "drains")
}

// besideSocket names a file of kind ("drains", "gro") kept beside the API
// socket for the pin directory pinDir. Daemons whose sockets share a
// directory keep theirs apart by pin directory: the default one
// (/sys/fs/bpf/switchyard/<interface>) gives KIND-<interface>.json, the
// name earlier releases gave the drains; any other adds a hash of its
// whole path to its last element. legacy is KIND-<last element>.json,
// the name earlier releases gave that file ("" if the same).
func besideSocket(socket, pinDir, kind string) (file, legacy string) {
	dir, base := filepath.Dir(socket), filepath.Base(pinDir)
	old := filepath.Join(dir, kind+"-"+base+".json")
	clean := filepath.Clean(pinDir)
	if clean == datapath.DefaultPinDir(base) {
		return old, ""
	}
	sum := sha256.Sum256([]byte(clean))
	return filepath.Join(dir, fmt.Sprintf("%s-%s-%x.json", kind, base, sum[:6])), old
}

// absPath is path made absolute, or path itself if the working directory
// cannot be read.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}
