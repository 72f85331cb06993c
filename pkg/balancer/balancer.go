// Package balancer is the control loop of a Switchyard balancer: it turns
// the desired state (configuration, backend health, operator drains) into
// datapath map writes, and keeps the next hop in step with the kernel's
// neighbour table. One goroutine owns all writes; API calls are run on it.
package balancer

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/buildinfo"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/health"
	"github.com/switchyard-lb/switchyard/pkg/maglev"
)

// Datapath is what the control loop needs of the datapath
// (*datapath.Balancer implements it).
type Datapath interface {
	SetSettings(datapath.Settings) error
	NextHopMAC() (net.HardwareAddr, error)
	SetVIP(k datapath.VIPKey, num uint32, flags datapath.VIPFlags) error
	DeleteVIP(k datapath.VIPKey) error
	VIPEpoch(num uint32) (uint32, error)
	RestoreVIP(k datapath.VIPKey, num uint32, flags datapath.VIPFlags, epoch uint32) error
	VIPs() (map[datapath.VIPKey]datapath.VIPMeta, error)
	PublishTable(k datapath.VIPKey, table []uint32) (uint32, error)
	Batch(fn func() error) error
	Table(k datapath.VIPKey, gen uint32) ([]uint32, error)
	SetBackend(id uint32, addr netip.Addr) error
	Backends() (map[uint32]datapath.Backend, error)
	Flows(fn func(datapath.FlowKey, datapath.Conn) bool) error
	CountFlows() (datapath.FlowCounts, error)
	ConnTableSize() uint32
	VIPCounters(num uint32) (datapath.VIPCounters, error)
	BackendCounters(id uint32) (datapath.BackendCounters, error)
	Stats() (map[string]uint64, error)
	// RestoreLinkPin pins the program's link again if its pin was
	// removed; CheckAttached says whether the program still runs on the
	// interface (see checkLinkPin and checkDetached). RestoreMapPins
	// does for the maps what RestoreLinkPin does for the link.
	RestoreLinkPin() (bool, error)
	RestoreMapPins() ([]string, error)
	CheckAttached() error
}

// Config configures a Balancer.
type Config struct {
	ConfigPath string         // re-read on Reload
	Initial    *config.Config // loaded and validated
	Datapath   Datapath
	Logger     *slog.Logger
	// AttachMode and ProgramTag are shown in status.
	AttachMode string
	ProgramTag string
	// HealthDialer, if set, opens health-check connections (tests).
	HealthDialer health.Dialer
	// DrainFile keeps operator drains across daemon restarts ("" = not
	// kept). It belongs on a tmpfs such as /run: a reboot loses the
	// datapath too.
	DrainFile string
	// LegacyDrainFile, if set, is where an earlier release kept the
	// drains DrainFile now keeps: read when DrainFile is missing.
	LegacyDrainFile string
	// HealthTunnel is the attached program that sends checks through
	// the tunnel (datapath.HCEncap), or nil: then HealthTunnelErr says
	// why it is not, and a configuration with a check via tunnel is
	// refused (sent plain, such a check would reach whichever backend
	// the balancers choose for it).
	HealthTunnel    HealthTunnel
	HealthTunnelErr error
}

// HealthTunnel is what the control loop reads of the program that sends
// checks through the tunnel: its counters.
type HealthTunnel interface {
	Stats() (map[string]uint64, error)
}

// ErrNoHealthTunnel: a configuration has a check via tunnel, and the
// program that sends checks through the tunnel is not attached.
var ErrNoHealthTunnel = errors.New("the tunnel health-check program is not attached")

// ErrNoNetworkWatch: the start could not subscribe to the kernel's netlink
// notifications of links, neighbours, addresses and routes.
var ErrNoNetworkWatch = errors.New("cannot watch the network at start (netlink subscription)")

// Balancer is the control loop. Create with New, start with Run.
type Balancer struct {
	dp   Datapath
	log  *slog.Logger
	path string
	info api.Status // parts of the status fixed for the daemon's life

	cfg          *config.Config
	generation   uint64
	reloadFails  uint64
	reloads      uint64 // applied, whether they changed anything or not
	lastErr      string
	drain        map[string]override // by drainKey: "vip/address"
	vipNums      map[datapath.VIPKey]uint32
	backendIDs   map[netip.Addr]uint32
	published    map[datapath.VIPKey]map[uint32]int // slots per backend id of each VIP's active table
	inputs       map[datapath.VIPKey]string         // what each published table was built from
	tablesStale  bool                               // the last table sync failed: the tick tries again
	builders     []map[int]*maglev.Builder          // per build goroutine, by table size; kept for their buffers
	settings     datapath.Settings
	ifaceMTU     int // the interface's MTU when the settings were last synced
	gateway      netip.Addr
	gatewayAmong []netip.Addr // next hops on the interface gateway was chosen among, lowest first
	gatewayLeft  []netip.Addr // next hops of gatewayAmong left because they stopped answering, not taken since
	ifindex      int          // the interface's; 0 until first read (then followed by index, not name)
	ifname       string       // the interface's name when last read
	nhResolved   bool         // the settings the datapath holds carry a next-hop MAC
	// carriedMAC is the next-hop MAC an earlier run left in the pinned
	// settings, kept (until carriedUntil) while the kernel, which has no
	// entry for the router yet, asks it: nil once the router answered,
	// failed to, or the time is up.
	carriedMAC   net.HardwareAddr
	carriedUntil time.Time
	settingsErr  string   // the error of syncSettings last logged: not logged again while it repeats
	noSource     [2]bool  // [0] IPv4, [1] IPv6: backends of the family get packets from no outer source (warned)
	hostWarnings []string // backends at an address of the interface, VIPs at the next hop's, as status shows them (warned)
	health       *health.Monitor
	transitions  chan health.Transition
	dialer       health.Dialer
	tunnel       HealthTunnel // nil: not attached, for tunnelErr
	tunnelErr    error
	requests     chan func()
	stopped      chan struct{} // closed when Run returns: requests fail at once
	stopOnce     sync.Once
	walks        sync.RWMutex // read-held by Flows and Status over their walks of the connection table, outside the loop
	// ids is moved on by apply before it changes a VIP number or backend
	// id: a walk of the connection table outside the loop that spans a
	// change counted entries under numbers and ids the loop has since
	// given to others.
	ids atomic.Uint64
	// counting is held by the walk that counts the connection table for
	// Status; counted (under it) is the latest count, which other status
	// requests take while it is younger than countsMaxAge and its ids
	// are still the loop's: N scrapers at once cost one walk.
	counting     chan struct{}
	counted      *flowCount
	countsMaxAge time.Duration
	netEvents    chan struct{}
	rates        map[uint32]rateSample // by VIP number; cleared when a number is freed or given
	drainFile    string
	legacyDrain  string // read when drainFile is missing
	// What an apply changed that its rollback gives back: the slots it
	// took from removed addresses, the VIPs it deleted and those whose
	// options it changed (which moves their epochs on), with the epochs
	// they had. Reload's rollback hands them to its apply as undo:
	// recycled slots go back to their addresses, deleted VIPs come back
	// with their numbers and epochs, changed ones get their epochs back
	// with their options, so their flows keep their entries.
	recycled    []recycledSlot
	deletedVIPs map[datapath.VIPKey]deletedVIP
	reoptioned  map[datapath.VIPKey]deletedVIP
	undo        *applyUndo
	// What checkLinkPin found: linkPinErr is nil while the program's
	// link is pinned, linkRestores counts the times it was pinned again.
	// What checkDetached found: detachedErr is nil while the program runs
	// on the interface, detachments counts the times it was found not to.
	linkPinErr   error
	linkRestores uint64
	detachedErr  error
	detachments  uint64
	// checkErr: the last attachment check could not read the link or
	// the program (datapath.ErrAttachCheckFailed): detachedErr is then
	// the last state found, not the present one.
	checkErr error
	// What checkMapPins found: mapPinErr is nil while every map is
	// pinned, mapRestores counts the pins made again.
	mapPinErr   error
	mapRestores uint64
}

// recycledSlot is a backend slot an apply took from an address no longer
// configured (old) and gave to a new one.
type recycledSlot struct {
	id       uint32
	old, new netip.Addr
}

// deletedVIP is the number and epoch a VIP had when an apply deleted it
// (or changed its options).
type deletedVIP struct{ num, epoch uint32 }

// applyUndo is what a failed apply changed, for the rollback to give back.
type applyUndo struct {
	recycled   []recycledSlot
	deleted    map[datapath.VIPKey]deletedVIP
	reoptioned map[datapath.VIPKey]deletedVIP
}

// flowCount is a count of the connection table, as of at, taken while the
// loop's VIP numbers and backend ids were those of ids.
type flowCount struct {
	at     time.Time
	ids    uint64
	counts datapath.FlowCounts
}

type rateSample struct {
	at      time.Time
	packets uint64
	rate    float64
}

// New prepares the control loop and applies the initial configuration to
// the datapath, adopting what an earlier run left there (VIP numbers,
// backend ids, tables), so a restart moves no flow.
func New(cfg Config) (*Balancer, error) {
	if cfg.Initial == nil || cfg.Datapath == nil {
		return nil, errors.New("balancer: Initial config and Datapath are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Balancer{
		dp:           cfg.Datapath,
		log:          log.With("component", "balancer"),
		path:         cfg.ConfigPath,
		drain:        map[string]override{},
		vipNums:      map[datapath.VIPKey]uint32{},
		backendIDs:   map[netip.Addr]uint32{},
		published:    map[datapath.VIPKey]map[uint32]int{},
		inputs:       map[datapath.VIPKey]string{},
		transitions:  make(chan health.Transition, 64),
		dialer:       cfg.HealthDialer,
		tunnel:       cfg.HealthTunnel,
		tunnelErr:    cfg.HealthTunnelErr,
		requests:     make(chan func()),
		stopped:      make(chan struct{}),
		netEvents:    make(chan struct{}, 1),
		rates:        map[uint32]rateSample{},
		counting:     make(chan struct{}, 1),
		countsMaxAge: flowCountsMaxAge,
		drainFile:    cfg.DrainFile,
		legacyDrain:  cfg.LegacyDrainFile,
	}
	rewriteDrains, err := b.loadDrains(cfg.Initial)
	if err != nil {
		b.log.Warn("operator drains from the previous run are lost", "file", b.drainFile, "error", err)
	}
	b.info = api.Status{
		Interface:  cfg.Initial.Datapath.Interface,
		AttachMode: cfg.AttachMode, ProgramTag: cfg.ProgramTag, ConfigFile: cfg.ConfigPath,
		Build:     buildinfo.Read(),
		StartedAt: time.Now(),
	}
	hc := health.DefaultConfig()
	hc.Transitions = b.transitions
	// The monitor logs each change as it makes it, a change whose
	// transition a reload cancelled included; the loop does not again.
	hc.Logger = log
	b.health = health.New(hc)

	// The datapath's errors name the map operation alone ("VIP web:
	// write VIP ..."): say which step of the start it was.
	if err := b.adopt(); err != nil {
		b.health.Close()
		return nil, fmt.Errorf("read what an earlier run left in the pinned maps at start: %w", err)
	}
	if _, err := b.apply(cfg.Initial); err != nil {
		b.health.Close()
		return nil, fmt.Errorf("apply the configuration at start: %w", err)
	}
	// Only once the start succeeded: a failed one changes nothing.
	if rewriteDrains {
		if err := b.saveDrains(); err != nil {
			b.log.Warn("operator drains not saved as this start left them; the next start reads the file as it was", "file", b.drainFile, "error", err)
		}
	}
	b.generation = 1
	return b, nil
}

// carriedMACFor bounds how long a restart goes on sending VIP traffic to
// the earlier run's next-hop MAC while the router does not answer: the
// kernel gives an unanswered neighbour up after about 3 s (FAILED), which
// ends it sooner.
const carriedMACFor = 10 * time.Second

// adopt reads the VIP numbers, backend ids and active tables that an
// earlier run left in the (pinned) datapath.
func (b *Balancer) adopt() error {
	mac, err := b.dp.NextHopMAC()
	if err != nil {
		return err
	}
	b.carriedMAC, b.carriedUntil = mac, time.Now().Add(carriedMACFor)
	vips, err := b.dp.VIPs()
	if err != nil {
		return err
	}
	for k, m := range vips {
		b.vipNums[k] = m.Num
		if m.TableSize[m.Gen] > 0 {
			if t, err := b.dp.Table(k, m.Gen); err == nil {
				b.published[k] = slotCounts(t)
			}
		}
	}
	bes, err := b.dp.Backends()
	if err != nil {
		return err
	}
	for id, be := range bes {
		b.backendIDs[be.Addr] = id
	}
	if len(vips) > 0 {
		b.log.Info("adopted datapath state from an earlier run", "vips", len(vips), "backends", len(bes))
	}
	return nil
}

// Run runs the control loop until ctx ends, or until the interface is
// removed (an error wrapping ErrInterfaceGone).
func (b *Balancer) Run(ctx context.Context) error {
	// Last: once stopped is closed, walks end at their next look.
	defer func() { b.walks.Lock(); b.walks.Unlock() }()
	defer b.health.Close()
	defer b.stopOnce.Do(func() { close(b.stopped) })
	if b.ifindex == 0 { // New could not read it
		ifi, err := readIface(b.cfg.Datapath.Interface)
		if err != nil {
			return err
		}
		b.ifindex, b.ifname = ifi.Index, ifi.Name
	}
	if err := watchNetwork(ctx, b.ifindex, b.netEvents, b.log); err != nil {
		return fmt.Errorf("%w: %w; the balancer cannot follow the router's MAC address or the interface without netlink, so it does not run. "+
			"The program stays attached and forwards with the configuration just applied, but no daemon checks the backends: "+
			"free what the error names (raise the open-file limit, LimitNOFILE=, for `too many open files`; allow netlink sockets in the seccomp profile or LSM policy for `operation not permitted`), then start again", ErrNoNetworkWatch, err)
	}
	// The watch sees changes of this index only: a removal before it
	// began would go unnoticed.
	if err := b.checkInterface(b.ifindex); err != nil {
		return err
	}
	// What changed before the watch began (the probe's answer, say).
	b.logSettings(b.syncSettings())
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	b.sampleRates(time.Now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case fn := <-b.requests:
			fn()
		case <-b.transitions:
			b.drainTransitions()
			if err := b.syncTables(); err != nil {
				b.log.Error("rebuild tables after a health change", "error", err)
			}
		case <-b.netEvents:
			// The link deletion message of the interface comes here (or,
			// if the watch broke, the event for what it missed).
			if err := b.checkInterface(b.ifindex); err != nil {
				return err
			}
			b.logSettings(b.syncSettings())
		case now := <-tick.C:
			b.sampleRates(now)
			b.checkLinkPin()
			b.checkMapPins()
			if b.checkDetached() != nil {
				return b.checkInterface(b.ifindex)
			}
			if b.tablesStale {
				// Nothing else may come to rebuild them: a drained or
				// failed backend would stay in its VIP's table.
				if err := b.syncTables(); err != nil {
					b.log.Error("publish tables again", "error", err)
				}
			}
			if !b.nhResolved {
				b.logSettings(b.syncSettings())
			} else {
				// XDP traffic bypasses the kernel's neighbour layer,
				// so nothing else checks that the router still
				// answers: its entry would stay STALE, and VIP
				// traffic go to a dead router, with others at hand,
				// or to the MAC of a router replaced (or failed over
				// to another MAC) without a gratuitous ARP, for good.
				// A datagram makes the kernel check it (unicast
				// ARP/ND) and mark it FAILED if it does not answer;
				// the watch then brings the switch, or the new MAC.
				probeGateway(b.gateway, b.ifname)
			}
		}
	}
}

// checkInterface returns, and logs, an error wrapping ErrInterfaceGone if
// the interface the daemon started on (index) is gone: Run then ends, for
// `switchyard run` to exit with it and a service manager to start it
// again, where it would go on forwarding nothing and saying all is well.
func (b *Balancer) checkInterface(index int) error {
	err := interfaceGone(b.cfg.Datapath.Interface, index)
	if err != nil {
		b.log.Error("interface gone: VIP traffic is no longer balanced", "interface", b.cfg.Datapath.Interface, "error", err)
	}
	return err
}

// checkLinkPin pins the program's link again if someone removed its pin
// while the daemon runs, as no notification would say so: on every tick
// and at each status. A removed pin (rm, a clean-up of bpffs) changes
// nothing at once, as the daemon holds the link too; but the program then
// lives only as long as the process, and a kill or an in-place upgrade
// takes it off, with the balancing of every VIP. The pin is the daemon's
// own state, in the pin directory it holds locked, and the link it holds
// is the very one pinned: pinning it again restores exactly what was
// there. Each restore is logged as a warning, a pin that cannot be
// restored as an error once (until that changes).
func (b *Balancer) checkLinkPin() {
	restored, err := b.dp.RestoreLinkPin()
	if errors.Is(err, datapath.ErrAttachCheckFailed) {
		// A link that could not be read says nothing of the pin: the
		// last state found stands. checkDetached, on the same rounds,
		// meets the same failure and logs and shows it.
		return
	}
	if restored {
		b.linkRestores++
		b.log.Warn("the balancer program's link pin was removed while the daemon ran (rm, or a clean-up of bpffs): pinned again; "+
			"without it a kill or an in-place upgrade of the daemon would have detached the program, and VIP traffic would no longer be balanced", "pin", b.linkPin())
	}
	switch {
	case err != nil && (b.linkPinErr == nil || b.linkPinErr.Error() != err.Error()):
		b.log.Error("the balancer program's link is not pinned: a kill or an in-place upgrade of the daemon detaches the program, and VIP traffic is no longer balanced (a SIGTERM stop is not affected)",
			"error", err)
	case err == nil && b.linkPinErr != nil:
		b.log.Info("the balancer program's link is pinned again", "pin", b.linkPin())
	}
	b.linkPinErr = err
}

// checkMapPins pins again, on every tick and at each status, the maps of
// the program whose pins someone removed while the daemon runs (see
// datapath.Balancer.RestoreMapPins), as checkLinkPin does the link. The
// running program does not need the pins; the next run (a restart, a
// kill, an in-place upgrade) does: it finds the maps by them, and creates
// one it does not find afresh. It takes back the connection table and the
// counters through the link pin, if that is there, but the VIPs, backends
// and Maglev tables start empty, with new epochs, and the per-VIP and
// per-backend counters at 0. Each restore is logged as a warning, a pin
// that cannot be restored as an error once (until that changes).
func (b *Balancer) checkMapPins() {
	restored, err := b.dp.RestoreMapPins()
	if len(restored) > 0 {
		b.mapRestores += uint64(len(restored))
		b.log.Warn("pins of the balancer program's maps were removed while the daemon ran (rm, or a clean-up of bpffs): pinned again; "+
			"without them the next run of the daemon would have created them afresh", "pin_dir", filepath.Dir(b.linkPin()), "maps", fmt.Sprint(restored))
	}
	if errors.Is(err, datapath.ErrMapPinCheckFailed) {
		// Maps whose info could not be read say nothing of their pins:
		// the last state found stands. checkDetached, on the same
		// rounds, meets the same refusal and logs and shows it.
		return
	}
	switch {
	case err != nil && (b.mapPinErr == nil || b.mapPinErr.Error() != err.Error()):
		b.log.Error("the balancer program's maps are not all pinned: the next run of the daemon creates the missing ones afresh", "error", err)
	case err == nil && b.mapPinErr != nil:
		b.log.Info("the balancer program's maps are pinned again", "pin_dir", filepath.Dir(b.linkPin()))
	}
	b.mapPinErr = err
}

// checkDetached checks, on every tick and at each status, that the
// program still runs on the interface: no notification says that its link
// was detached (`bpftool link detach`) or made to run another program.
//
// Such a program is not attached again: the daemon cannot tell a mistake
// from an operator who took it off on purpose (to send the traffic to the
// host's stack, or to let another XDP program run), and another tool's
// program now on the interface would have to be taken off first, for the
// two to fight over the hook. Cilium's agent and Katran do not watch the
// hook either: they attach at their next start (Cilium also when it
// reloads its datapath), as `switchyard run` does (a pinned
// link found detached is replaced, the pinned maps and flows kept). It is
// logged as an error once, counted, and shown in status and metrics until
// the program runs again.
//
// It returns an error wrapping ErrInterfaceGone, and changes nothing, if
// the program went with the interface: the loop then ends
// (checkInterface).
func (b *Balancer) checkDetached() error {
	err := b.dp.CheckAttached()
	if errors.Is(err, datapath.ErrAttachCheckFailed) {
		// A read that failed says nothing of the attachment: no
		// detachment is counted, and the last state found stands.
		if b.checkErr == nil || b.checkErr.Error() != err.Error() {
			b.log.Error("could not check that the balancer program still runs on its interface: its last known state stands",
				"interface", b.cfg.Datapath.Interface, "error", err)
		}
		b.checkErr = err
		return nil
	}
	if b.checkErr != nil {
		b.log.Info("the balancer program's attachment can be checked again", "interface", b.cfg.Datapath.Interface)
		b.checkErr = nil
	}
	if err != nil && b.ifindex != 0 {
		if gone := interfaceGone(b.cfg.Datapath.Interface, b.ifindex); gone != nil {
			return gone
		}
	}
	switch {
	case err != nil && b.detachedErr == nil:
		b.detachments++
		b.log.Error("the balancer program no longer runs on its interface, though the daemon runs: VIP traffic is not balanced; "+
			"it is not attached again behind the operator's back: restart switchyard run to attach it again (flows are kept)",
			"interface", b.cfg.Datapath.Interface, "error", err)
	case err == nil && b.detachedErr != nil:
		b.log.Info("the balancer program runs on its interface again", "interface", b.cfg.Datapath.Interface)
	}
	b.detachedErr = err
	return nil
}

// linkPin is where the program's link is pinned, for the log.
func (b *Balancer) linkPin() string {
	if b.cfg.Datapath.PinDir == "" {
		return filepath.Join(datapath.DefaultPinDir(b.cfg.Datapath.Interface), "link")
	}
	return filepath.Join(b.cfg.Datapath.PinDir, "link")
}

// drainTransitions takes every queued health transition (the tables are
// rebuilt once for all of them).
func (b *Balancer) drainTransitions() {
	for {
		select {
		case <-b.transitions:
		default:
			return
		}
	}
}

// ErrStopped is what requests get once the control loop has stopped (the
// daemon is shutting down).
var ErrStopped = api.Unavailable("switchyard is shutting down: its control loop has stopped")

// do runs fn on the control loop and waits for it; ErrStopped once Run has
// returned, where the request would wait for its deadline (and hold up the
// API server's shutdown).
func (b *Balancer) do(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case b.requests <- func() { fn(); close(done) }:
	case <-b.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// apply makes the datapath match cfg and makes it the running
// configuration. It returns a summary of the changes. On an error the
// datapath may hold part of cfg, but the health checks are still the
// running configuration's (they change last).
func (b *Balancer) apply(cfg *config.Config) ([]api.Change, error) {
	b.ids.Add(1)
	old := b.cfg
	changes := describeChanges(old, cfg)
	b.cfg = cfg
	b.recycled, b.deletedVIPs, b.reoptioned = nil, map[datapath.VIPKey]deletedVIP{}, map[datapath.VIPKey]deletedVIP{}
	// Nothing that can fail may come after the datapath batch below: its
	// end gives recycled backend slots their new addresses, their old
	// flows' entries emptied, which no rollback brings back. The health
	// checks change after it (see there), so their targets are checked
	// now, before anything changed.
	if b.tunnel == nil {
		for i := range cfg.VIPs {
			if h := cfg.VIPs[i].Health; h.Via == config.ViaTunnel && h.Type != config.CheckNone {
				err := fmt.Errorf("vips[%d].health.via: tunnel, but %w", i, ErrNoHealthTunnel)
				if b.tunnelErr != nil {
					err = fmt.Errorf("%w (%w)", err, b.tunnelErr)
				}
				return changes, fmt.Errorf("%w; set via: direct, or fix that and restart the daemon", err)
			}
		}
	}
	targets := b.healthTargets()
	if err := health.ValidateTargets(targets); err != nil {
		return changes, err
	}
	if err := b.syncSettings(); err != nil {
		// A missing next hop is not fatal: traffic starts when the
		// neighbour appears (the watch tells us). Nor is a refusal of
		// settings the file did not change (the interface's MTU, say):
		// the watch tries them again when the interface changes. But
		// settings a new file asks for and the datapath refuses are not
		// applied: the file is not.
		_, nextHop := errors.AsType[*nextHopError](err)
		if !nextHop && old != nil && settingsChanged(old, cfg) {
			return changes, err
		}
		b.logSettings(err)
	}
	// One batch: the datapath publishes its VIP index once, at the end.
	err := b.dp.Batch(func() error {
		if err := b.syncVIPs(); err != nil {
			return err
		}
		if err := b.syncTables(); err != nil {
			return err
		}
		// Last: a VIP deleted and created again by a rollback would
		// start a new epoch, its established flows' entries unused.
		return b.deleteGoneVIPs()
	})
	if err != nil {
		return changes, err
	}
	// Only once the datapath took cfg: the monitor forgets the state of a
	// target it drops, so a rollback to the running configuration would
	// bring a removed backend that had failed its checks back as healthy.
	// The tables above need no new targets (one without a state is
	// healthy, as a new target starts), but a target whose check is
	// turned off becomes healthy now, and Set sends no transition for it.
	//
	// cfg is in force from here: a rollback would not give the flows of
	// recycled slots back, and once Set ran it would restart the checks
	// cfg changed and bring the backends it removed back healthy, dead
	// ones included. Set cannot fail here: its targets were checked
	// above, and the monitor is closed only when Run returns, once the
	// loop (where apply runs, or in New, before it) has ended. Were it to
	// fail anyway, it changed nothing: the running checks go on, and
	// cfg's new backends count as healthy until they have checks, as new
	// targets do.
	// Again, now that syncVIPs gave new backends their slots, which
	// checks through the tunnel mark their packets with.
	targets = b.healthTargets()
	if err := b.health.Set(targets); err != nil {
		b.log.Error("health checks not changed to the new configuration; its datapath is in force", "error", err)
	}
	// A table that fails to publish is tried again on the tick, as after
	// a health change.
	if err := b.syncTables(); err != nil {
		b.log.Error("rebuild tables after a health change", "error", err)
	}
	return changes, nil
}

func vipKey(v *config.VIP) datapath.VIPKey {
	p := datapath.ProtoTCP
	if v.Protocol == config.ProtocolUDP {
		p = datapath.ProtoUDP
	}
	return datapath.VIPKey{Addr: v.Addr(), Port: uint16(v.Port), Proto: p}
}

func vipFlags(v *config.VIP) datapath.VIPFlags {
	var f datapath.VIPFlags
	if v.Hash == config.HashSource {
		f |= datapath.VIPHashSource
	}
	if !v.Conntrack {
		f |= datapath.VIPNoConntrack
	}
	return f
}

// nextHopError is a next hop not (yet) resolved: settings were written,
// without it.
type nextHopError struct{ err error }

func (e *nextHopError) Error() string { return e.err.Error() }
func (e *nextHopError) Unwrap() error { return e.err }

// settingsChanged reports whether cur changes the fields of old that
// syncSettings writes to the datapath.
func settingsChanged(old, cur *config.Config) bool {
	return old.Datapath.MTU != cur.Datapath.MTU || old.Datapath.ICMPTooBig != cur.Datapath.ICMPTooBig ||
		old.Datapath.UDPIdleTimeout != cur.Datapath.UDPIdleTimeout || !config.Same(old.Encap, cur.Encap) || !config.Same(old.Nexthop, cur.Nexthop)
}

// logSettings logs an error of syncSettings, if any. A next hop not
// resolved (yet) is a warning wherever the sync came from (start, reload,
// tick or network event): the neighbour usually answers, and the watch
// brings it. Settings the datapath refused are an error.
//
// An error is logged once, not again while every sync (the tick's, every
// 2 s while the next hop is unresolved) returns it: status and
// switchyard_nexthop_resolved say it lasts. A sync that succeeds, or
// another error, makes it new again.
func (b *Balancer) logSettings(err error) {
	if err == nil || err.Error() == b.settingsErr {
		return
	}
	b.settingsErr = err.Error()
	if _, nextHop := errors.AsType[*nextHopError](err); nextHop {
		b.log.Warn("datapath settings", "error", err)
		return
	}
	b.log.Error("datapath settings", "error", err)
}

// syncSettings resolves the interface and next hop and writes the
// balancer-wide settings when they changed. A next hop that is not
// resolved is a *nextHopError, after the rest is written.
func (b *Balancer) syncSettings() error {
	cfg := b.cfg
	// By index once known: the program stays on the interface when it is
	// renamed, and another interface may take the name.
	var ifi ifaceInfo
	var err error
	if b.ifindex == 0 {
		if ifi, err = readIface(cfg.Datapath.Interface); err == nil {
			b.ifindex, b.ifname = ifi.Index, ifi.Name
		}
	} else {
		ifi, err = readIfaceAt(b.ifindex, b.ifname)
	}
	if err != nil {
		return err
	}
	if ifi.Name != b.ifname {
		if ifi.Name != cfg.Datapath.Interface {
			b.log.Warn("interface renamed: the daemon follows it, but a restart looks for datapath.interface; set datapath.interface to the new name, or rename the interface back",
				"datapath.interface", cfg.Datapath.Interface, "name", ifi.Name)
		} else {
			b.log.Info("interface has the name datapath.interface gives again", "interface", ifi.Name)
		}
		b.ifname = ifi.Name
	}
	s := datapath.Settings{
		SourceMAC: ifi.MAC,
		// An interface MTU above 65535 (lo's is 65536) exceeds any IP
		// packet; truncated to 16 bits it would be a tiny or zero MTU.
		MTU:            uint16(min(ifi.MTU, math.MaxUint16)),
		ICMPTooBig:     cfg.Datapath.ICMPTooBig,
		SourceV4:       ifi.AddrV4,
		SourceV6:       ifi.AddrV6,
		SourcePrefixV4: cfg.Encap.SourcePrefixV4Net(),
		SourcePrefixV6: cfg.Encap.SourcePrefixV6Net(),
		UDPIdleTimeout: time.Duration(cfg.Datapath.UDPIdleTimeout),
	}
	if cfg.Datapath.MTU > 0 {
		s.MTU = uint16(cfg.Datapath.MTU)
	}
	if a := cfg.Encap.SourceV4Addr(); a.IsValid() {
		s.SourceV4 = a
	}
	if a := cfg.Encap.SourceV6Addr(); a.IsValid() {
		s.SourceV6 = a
	}
	if cfg.Encap.Type == config.EncapGUE {
		s.GUEPort = uint16(cfg.Encap.GUEPort)
	}
	var nhErr error
	prevGateway := b.gateway
	hops, err := nextHopsFor(ifi.Index, cfg.Nexthop.GatewayAddr())
	if err != nil {
		nhErr = err
		// Status would name a router the host no longer routes to.
		b.gateway, b.gatewayAmong, b.gatewayLeft = netip.Addr{}, nil, nil
	} else {
		gw, mac, prevFailed := chooseNextHop(ifi.Index, hops, b.gateway, b.gatewayLeft)
		if len(hops) > 1 && !slices.Equal(hops, b.gatewayAmong) {
			b.log.Info("the default route has several next hops on the interface: VIP traffic goes to one, the lowest address that answers ARP/ND, but not back to one that stopped answering while another answers; nexthop.gateway picks another",
				"interface", cfg.Datapath.Interface, "gateway", gw, "next_hops", len(hops))
		}
		if gw != prevGateway && prevGateway.IsValid() && !slices.Contains(hops, prevGateway) {
			// The routes changed (another default route, a router
			// replaced by one at another address): all VIP traffic
			// goes to another box.
			b.log.Info("next hop changed with the default route", "from", prevGateway, "to", gw)
		}
		if gw != prevGateway && slices.Contains(hops, prevGateway) {
			if prevFailed {
				b.log.Warn("next hop switched to another router of the multipath default route: the one before no longer answers ARP/ND; check it, or set nexthop.gateway to pin one",
					"from", prevGateway, "from_neighbour", neighbourState(ifi.Index, prevGateway), "to", gw, "to_neighbour", neighbourState(ifi.Index, gw))
				b.gatewayLeft = append(b.gatewayLeft, prevGateway)
			} else {
				// One that had not answered yet (at the start, say).
				b.log.Info("next hop changed to a lower next hop of the multipath default route that answers",
					"from", prevGateway, "to", gw)
			}
		}
		b.gatewayLeft = slices.DeleteFunc(b.gatewayLeft, func(a netip.Addr) bool { return a == gw || !slices.Contains(hops, a) })
		b.gateway, b.gatewayAmong = gw, hops
		switch {
		case mac != nil:
			s.NextHopMAC = mac
			b.carriedMAC = nil
		case b.carriedMAC != nil && time.Now().Before(b.carriedUntil) && neighbourState(ifi.Index, gw) != "FAILED":
			// A restart that finds no neighbour entry for the router
			// (flushed while the daemon was down, say): the MAC the
			// earlier run pinned goes on being used while the kernel
			// asks, as the kernel itself uses a stale entry while it
			// probes. Writing none would drop all VIP traffic until
			// the answer.
			s.NextHopMAC = b.carriedMAC
			for _, h := range hops {
				probeGateway(h, ifi.Name)
			}
			if !b.nhResolved {
				b.log.Info("next hop not resolved yet: VIP traffic goes on to the MAC the earlier run used while the router is asked",
					"gateway", gw, "mac", b.carriedMAC.String(), "for_at_most", carriedMACFor)
			}
		default:
			b.carriedMAC = nil
			// All of them: another router that answers ends the drops.
			for _, h := range hops {
				probeGateway(h, ifi.Name)
			}
			nhErr = unresolvedError(ifi.Index, ifi.Name, gw)
		}
	}
	changed := !reflect.DeepEqual(s, b.settings)
	// The router at the same address answers from another MAC (replaced,
	// a failover without a virtual MAC): all VIP traffic goes elsewhere.
	movedMAC := b.nhResolved && s.NextHopMAC != nil && b.gateway == prevGateway && !bytes.Equal(s.NextHopMAC, b.settings.NextHopMAC)
	// With datapath.mtu set, the settings do not follow the interface's
	// MTU, so its change is looked at on its own.
	if (changed || ifi.MTU != b.ifaceMTU) && cfg.Datapath.MTU > ifi.MTU {
		// Outer packets up to datapath.mtu leave through an interface
		// that cannot send them: the driver drops them, and no "too
		// big" tells the clients.
		b.log.Warn("datapath.mtu is above the interface's MTU: encapsulated packets between the two are lost; lower datapath.mtu or raise the interface's MTU",
			"interface", cfg.Datapath.Interface, "datapath.mtu", cfg.Datapath.MTU, "interface_mtu", ifi.MTU)
	}
	b.ifaceMTU = ifi.MTU
	if changed {
		if min, why := cfg.MinMTU(); int(s.MTU) < min && int(s.MTU) >= datapath.MinMTU {
			// Taken from the interface (config checks its own datapath.mtu):
			// the large packets of some clients will find no MTU they
			// can use. Everything else works.
			b.log.Warn("interface MTU too small for these VIPs; raise it or set datapath.mtu", "interface", cfg.Datapath.Interface, "mtu", s.MTU, "need", min, "why", why)
		}
		// A refused write leaves the datapath with the settings before:
		// status and the next-hop metric say what it holds.
		if err := b.dp.SetSettings(s); err != nil {
			return err
		}
		if movedMAC {
			b.log.Info("next hop MAC changed", "gateway", b.gateway, "from", net.HardwareAddr(b.settings.NextHopMAC).String(), "to", s.NextHopMAC.String())
		}
		b.settings = s
	}
	b.checkSources(s)
	b.checkHostAddrs(ifi)
	if resolved := s.NextHopMAC != nil; resolved != b.nhResolved {
		if resolved {
			b.log.Info("next hop resolved", "gateway", b.gateway, "mac", s.NextHopMAC.String())
		} else {
			// Lost with its route, it is the one before.
			b.log.Warn("next hop lost", "gateway", cmp.Or(b.gateway, prevGateway))
		}
		b.nhResolved = resolved
	}
	if nhErr != nil {
		return &nextHopError{nhErr}
	}
	b.settingsErr = ""
	return nil
}

// checkSources warns, once each time it starts, that a family's backends
// get packets with no outer source: with encap.source_v4 (or _v6) and the
// source prefix empty and no address of the interface to take, the
// datapath writes 0.0.0.0 (or ::), which routers and receivers drop as a
// martian. The watch brings an address added later.
func (b *Balancer) checkSources(s datapath.Settings) {
	var used [2]bool // IPv4, IPv6 backends
	for i := range b.cfg.VIPs {
		for _, be := range b.cfg.VIPs[i].Backends {
			if be.Addr().Is6() {
				used[1] = true
			} else {
				used[0] = true
			}
		}
	}
	for i, fam := range []struct {
		name, field, unspecified string
		source                   netip.Addr
		prefix                   netip.Prefix
	}{
		{"IPv4", "encap.source_v4", "0.0.0.0", s.SourceV4, s.SourcePrefixV4},
		{"IPv6", "encap.source_v6", "::", s.SourceV6, s.SourcePrefixV6},
	} {
		missing := used[i] && !fam.source.IsValid() && !fam.prefix.IsValid()
		if missing == b.noSource[i] {
			continue
		}
		b.noSource[i] = missing
		if missing {
			b.log.Warn(fmt.Sprintf("no outer %s source: %s is empty and the interface has no %s address that routers forward (link-local, loopback and 240.0.0.0/4 ones are not taken, nor tentative, dadfailed or deprecated IPv6 ones), so packets to %s backends leave from %s and are dropped on the way; add such an address to the interface or set %s",
				fam.name, fam.field, fam.name, fam.name, fam.unspecified, fam.field),
				"interface", b.cfg.Datapath.Interface)
		} else if used[i] {
			from := fam.source.String()
			if fam.prefix.IsValid() {
				from = fam.prefix.String()
			}
			b.log.Info(fmt.Sprintf("outer %s source found", fam.name), "interface", b.cfg.Datapath.Interface, "source", from)
		}
	}
}

// syncVIPs adds and updates VIPs and backend slots. The VIPs that left the
// configuration stay (deleteGoneVIPs removes them) unless the new ones need
// their numbers.
func (b *Balancer) syncVIPs() error {
	want := map[datapath.VIPKey]*config.VIP{}
	added := 0
	for i := range b.cfg.VIPs {
		k := vipKey(&b.cfg.VIPs[i])
		want[k] = &b.cfg.VIPs[i]
		if _, ok := b.vipNums[k]; !ok {
			added++
		}
	}
	if len(b.vipNums)+added > datapath.MaxVIPs {
		if err := b.deleteGoneVIPs(); err != nil {
			return err
		}
	}
	used := map[uint32]bool{}
	for _, n := range b.vipNums {
		used[n] = true
	}
	keys := make([]datapath.VIPKey, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return want[keys[i]].Name < want[keys[j]].Name })
	// A rollback's VIPs that the failed apply deleted come back first,
	// with their numbers and epochs, before a new VIP takes a number.
	restored := map[datapath.VIPKey]bool{}
	if b.undo != nil {
		for _, k := range keys {
			d, ok := b.undo.deleted[k]
			if _, has := b.vipNums[k]; !ok || has || used[d.num] {
				continue
			}
			if err := b.dp.RestoreVIP(k, d.num, vipFlags(want[k]), d.epoch); err != nil {
				return err
			}
			used[d.num], restored[k] = true, true
			b.vipNums[k] = d.num
			delete(b.rates, d.num)
			b.log.Info("VIP restored", "vip", want[k].Name, "key", k, "num", d.num)
		}
	}
	// New options move a VIP's epoch on (its entries no longer serve):
	// the epoch it had is noted first, for a rollback to put back.
	metas, err := b.dp.VIPs()
	if err != nil {
		return err
	}
	for _, k := range keys {
		if restored[k] {
			continue
		}
		num, ok := b.vipNums[k]
		if !ok {
			for used[num] {
				num++
			}
			used[num] = true
			b.vipNums[k] = num
			delete(b.rates, num) // a number's samples are its VIP's
			b.log.Info("VIP added", "vip", want[k].Name, "key", k, "num", num)
		} else if b.undo != nil {
			if d, ok := b.undo.reoptioned[k]; ok && d.num == num {
				if err := b.dp.RestoreVIP(k, num, vipFlags(want[k]), d.epoch); err != nil {
					return err
				}
				b.log.Info("VIP options restored", "vip", want[k].Name, "key", k, "num", num)
				continue
			}
		}
		if m, ok := metas[k]; ok && m.Num == num && m.Flags != vipFlags(want[k]) {
			if _, noted := b.reoptioned[k]; !noted {
				epoch, err := b.dp.VIPEpoch(num)
				if err != nil {
					return err
				}
				b.reoptioned[k] = deletedVIP{num: num, epoch: epoch}
			}
		}
		if err := b.dp.SetVIP(k, num, vipFlags(want[k])); err != nil {
			return err
		}
	}
	// Backend slots: one per address. Addresses that left the config keep
	// their slot (and so their established flows) until the id is needed.
	if b.undo != nil {
		if err := b.giveBackSlots(b.undo.recycled); err != nil {
			return err
		}
	}
	usedIDs := map[uint32]bool{}
	for _, id := range b.backendIDs {
		usedIDs[id] = true
	}
	var rc *recycler
	for i := range b.cfg.VIPs {
		for _, be := range b.cfg.VIPs[i].Backends {
			a := be.Addr()
			if _, ok := b.backendIDs[a]; ok {
				continue
			}
			id, ok := freeBackendID(usedIDs)
			var old netip.Addr
			if !ok {
				if rc == nil {
					var err error
					if rc, err = b.newRecycler(); err != nil {
						return err
					}
				}
				if old, ok = rc.next(); !ok {
					return fmt.Errorf("more than %d backend addresses: the datapath limit", datapath.MaxBackends)
				}
				id = b.backendIDs[old]
			}
			if err := b.dp.SetBackend(id, a); err != nil {
				return err
			}
			// Only once written: a rollback finds the slot as the
			// running configuration left it, or in recycled.
			if old.IsValid() {
				delete(b.backendIDs, old)
				b.recycled = append(b.recycled, recycledSlot{id: id, old: old, new: a})
				b.log.Info("backend slot of a removed address given to a new one", "id", id, "previous", old, "address", a)
			}
			b.backendIDs[a] = id
			usedIDs[id] = true
		}
	}
	return nil
}

// deleteGoneVIPs removes the VIPs that are not in the configuration.
func (b *Balancer) deleteGoneVIPs() error {
	want := map[datapath.VIPKey]bool{}
	for i := range b.cfg.VIPs {
		want[vipKey(&b.cfg.VIPs[i])] = true
	}
	for k := range b.vipNums {
		if want[k] {
			continue
		}
		num := b.vipNums[k]
		epoch, err := b.dp.VIPEpoch(num)
		if err != nil {
			return err
		}
		if err := b.dp.DeleteVIP(k); err != nil {
			return err
		}
		b.deletedVIPs[k] = deletedVIP{num: num, epoch: epoch}
		delete(b.rates, b.vipNums[k])
		delete(b.vipNums, k)
		delete(b.published, k)
		delete(b.inputs, k)
		b.log.Info("VIP removed", "vip", k)
	}
	return nil
}

// giveBackSlots gives the slots a failed apply recycled (rs) back to the
// addresses it took them from, latest first. The failed apply's batch did
// not give them their new addresses in the datapath (datapath.Batch holds
// them back when it fails), so their flows kept their entries and the
// failed file's tables, published meanwhile, sent those slots' new flows
// to the addresses given back; the rollback's batch then writes no new
// address, and empties no entry.
func (b *Balancer) giveBackSlots(rs []recycledSlot) error {
	for _, r := range slices.Backward(rs) {
		if b.backendIDs[r.new] != r.id {
			continue
		}
		if _, ok := b.backendIDs[r.old]; ok {
			continue
		}
		if err := b.dp.SetBackend(r.id, r.old); err != nil {
			return err
		}
		delete(b.backendIDs, r.new)
		b.backendIDs[r.old] = r.id
		b.log.Info("backend slot given back to the address a failed reload took it from", "id", r.id, "address", r.old, "from", r.new)
	}
	return nil
}

// freeBackendID is the lowest backend id not in used.
func freeBackendID(used map[uint32]bool) (uint32, bool) {
	for id := uint32(0); id < datapath.MaxBackends; id++ {
		if !used[id] {
			return id, true
		}
	}
	return 0, false
}

// recycler hands out, when every backend slot is taken, the addresses no
// longer configured whose slots may go to new ones, best first: those no
// VIP's active table names (a table that still does sends the new flows
// of its slots to the slot's new address until the reload's tables are
// published) and with the fewest flows left (a slot's entries are emptied
// when it gets a new address: those flows are placed by Maglev again),
// lowest id first for a deterministic choice.
type recycler struct{ order []netip.Addr }

func (b *Balancer) newRecycler() (*recycler, error) {
	inCfg := map[netip.Addr]bool{}
	for i := range b.cfg.VIPs {
		for _, be := range b.cfg.VIPs[i].Backends {
			inCfg[be.Addr()] = true
		}
	}
	inTable := map[uint32]bool{}
	for _, counts := range b.published {
		for id := range counts {
			inTable[id] = true
		}
	}
	counts, err := b.dp.CountFlows()
	if err != nil {
		return nil, fmt.Errorf("every backend slot is taken; count the flows of those of removed addresses: %w", err)
	}
	flows := map[uint32]uint64{}
	for k, c := range counts.ByBackend {
		flows[k.BackendID] += uint64(c.Flows)
	}
	rc := &recycler{}
	for a := range b.backendIDs {
		if !inCfg[a] {
			rc.order = append(rc.order, a)
		}
	}
	key := func(a netip.Addr) (bool, uint64, uint32) {
		id := b.backendIDs[a]
		return inTable[id], flows[id], id
	}
	slices.SortFunc(rc.order, func(x, y netip.Addr) int {
		xt, xf, xi := key(x)
		yt, yf, yi := key(y)
		if xt != yt {
			if xt {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(xf, yf), cmp.Compare(xi, yi))
	})
	return rc, nil
}

// next is the next address whose slot may go, if any is left.
func (rc *recycler) next() (netip.Addr, bool) {
	if len(rc.order) == 0 {
		return netip.Addr{}, false
	}
	a := rc.order[0]
	rc.order = rc.order[1:]
	return a, true
}

// healthKey names a VIP's backend as operators do: VIP/NAME.
func healthKey(vip, backend string) string { return vip + "/" + backend }

// checkKey names the health target of a VIP's backend by what the
// datapath knows them by, the VIP's address, port and protocol and the
// backend's address, not by their names: renaming either (which moves no
// flow) keeps the backend's health, where a new key would start it healthy
// and send a dead backend new flows until it failed fall checks again; a
// new address is a new machine, checked afresh. Addresses are unique
// within a VIP, and VIP keys within a configuration.
func checkKey(v *config.VIP, be config.Backend) string {
	return vipKey(v).String() + "/" + be.Addr().String()
}

// drainKey names an operator drain of a VIP's backend: by the VIP's name,
// as operators and the drains file name it, and the backend's address, as
// health does (a renamed backend stays drained).
func drainKey(vip string, be config.Backend) string { return vip + "/" + be.Addr().String() }

// healthTargets are the monitor's targets for the running configuration:
// one per (VIP, backend).
func (b *Balancer) healthTargets() []health.Target {
	var targets []health.Target
	for i := range b.cfg.VIPs {
		v := &b.cfg.VIPs[i]
		for _, be := range v.Backends {
			t := health.Target{
				Key: checkKey(v, be), Name: healthKey(v.Name, be.Name), Interval: time.Duration(v.Health.Interval),
				Timeout: time.Duration(v.Health.Timeout), Rise: v.Health.Rise, Fall: v.Health.Fall,
			}
			port := v.Health.Port
			if port == 0 {
				port = v.Port
			}
			ap := netip.AddrPortFrom(be.Addr(), uint16(port))
			dialer := b.dialer
			if v.Health.Via == config.ViaTunnel {
				// To the VIP, in packets the tc program encapsulates
				// to this backend's slot, as the datapath sends
				// clients' (the slot is known once syncVIPs gave it).
				ap = netip.AddrPortFrom(v.Addr(), uint16(port))
				dialer = health.TunnelDialer{Mark: datapath.HCMark(b.backendIDs[be.Addr()])}
			}
			switch v.Health.Type {
			case config.CheckTCP:
				t.Checker = health.TCPChecker{Addr: ap, Dialer: dialer}
			case config.CheckHTTP, config.CheckHTTPS:
				u := string(v.Health.Type) + "://" + ap.String() + v.Health.Path
				t.Checker = health.HTTPChecker{URL: u, ExpectStatus: v.Health.ExpectStatus, ServerName: v.Health.SNI,
					Host: v.Health.Host, Dialer: dialer}
			case config.CheckUDP:
				t.Checker = health.UDPChecker{Addr: ap, Send: string(v.Health.Request()), Expect: string(v.Health.Reply()), Dialer: dialer}
			}
			if v.Health.Via == config.ViaTunnel && t.Checker != nil {
				t.Checker = health.TunnelCheck{Checker: t.Checker, Backend: be.Addr()}
			}
			targets = append(targets, t)
		}
	}
	return targets
}

func (b *Balancer) drained(vip string, be config.Backend) bool {
	if o, ok := b.drain[drainKey(vip, be)]; ok {
		return o.drained
	}
	return be.Drained
}

func (b *Balancer) healthy(v *config.VIP, be config.Backend) bool {
	st, ok := b.health.State(checkKey(v, be))
	return !ok || st.Healthy
}

// syncTables rebuilds every VIP's Maglev table from the backends that are
// healthy and not drained, and publishes those that changed, in one
// datapath batch.
func (b *Balancer) syncTables() error {
	err := b.dp.Batch(b.publishTables)
	b.tablesStale = err != nil
	return err
}

func (b *Balancer) publishTables() error {
	var jobs []*tableJob
	for i := range b.cfg.VIPs {
		v := &b.cfg.VIPs[i]
		k := vipKey(v)
		var in []maglev.Backend
		for _, be := range v.Backends {
			if b.drained(v.Name, be) || !b.healthy(v, be) {
				continue
			}
			in = append(in, maglev.Backend{ID: be.Addr().String(), Weight: uint32(be.Weight), Value: b.backendIDs[be.Addr()]})
		}
		// A health change touches one backend: skip the (milliseconds
		// long) build for every VIP whose inputs did not change.
		sig := fmt.Sprint(v.TableSize, in)
		if _, ok := b.published[k]; ok && b.inputs[k] == sig {
			continue
		}
		jobs = append(jobs, &tableJob{vip: v, key: k, in: in, sig: sig})
	}
	if len(jobs) == 0 {
		return nil
	}
	// Many tables take seconds (512 VIPs of 65,537 slots: about 1.5 s on
	// 2 cores, at a start, a reload, or a backend they all share going
	// down): say so at the start, and at the end how long it took. One
	// table, as a health change of one VIP's backend needs, has its
	// "table published" line alone.
	start := time.Now()
	if len(jobs) > 1 {
		b.log.Info("building Maglev tables", "vips", len(jobs))
	}
	b.buildTables(jobs)
	metas, err := b.dp.VIPs()
	if err != nil {
		return err
	}
	published := 0
	for _, j := range jobs {
		if j.err != nil {
			return fmt.Errorf("VIP %s: %w", j.vip.Name, j.err)
		}
		if _, ok := b.published[j.key]; ok {
			// Inputs changed, the table need not have (backends
			// reordered in the file; a restart's first build): the
			// active table is read back rather than kept in memory.
			active, err := b.dp.Table(j.key, metas[j.key].Gen)
			if err != nil {
				return err
			}
			if slices.Equal(active, j.table) {
				b.inputs[j.key] = j.sig
				continue
			}
		}
		gen, err := b.dp.PublishTable(j.key, j.table)
		if err != nil {
			return err
		}
		// Only now: a table that failed to publish is built again
		// at the next sync, not skipped as already published.
		b.inputs[j.key] = j.sig
		b.published[j.key] = slotCounts(j.table)
		b.log.Info("table published", "vip", j.vip.Name, "generation", gen, "backends", len(j.in))
		published++
	}
	if len(jobs) > 1 {
		b.log.Info("Maglev tables built", "vips", len(jobs), "published", published, "seconds", time.Since(start).Seconds())
	}
	return nil
}

// slotCounts counts a table's slots per backend id: what the control loop
// keeps of a published table, for status. Not the table itself (256 KiB
// per VIP at the default size, 4 MiB at the largest): when it needs that,
// it reads the datapath's.
func slotCounts(table []uint32) map[uint32]int {
	// Ids are datapath backend ids, below MaxBackends: counted in an
	// array first, a map increment per slot costs ten times more.
	var counts [datapath.MaxBackends]int32
	for _, id := range table {
		if id < datapath.MaxBackends {
			counts[id]++
		}
	}
	out := map[uint32]int{}
	for id, n := range counts {
		if n > 0 {
			out[uint32(id)] = int(n)
		}
	}
	return out
}

// tableJob is the Maglev build of one VIP whose inputs changed.
type tableJob struct {
	vip   *config.VIP
	key   datapath.VIPKey
	in    []maglev.Backend
	sig   string
	table []uint32
	err   error
}

// parallelBuilds is false only for a benchmark's baseline.
var parallelBuilds = true

// buildTables builds the jobs' tables on up to GOMAXPROCS goroutines: a
// backend that many VIPs share fails, and every one of them needs a new
// table of milliseconds. A Builder is not safe for concurrent use, so each
// goroutine has its own set (b.builders[w]), kept for its buffers.
func (b *Balancer) buildTables(jobs []*tableJob) {
	workers := min(runtime.GOMAXPROCS(0), len(jobs))
	if !parallelBuilds {
		workers = min(1, len(jobs))
	}
	for len(b.builders) < workers {
		b.builders = append(b.builders, map[int]*maglev.Builder{})
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		own := b.builders[w]
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(jobs)); i = next.Add(1) - 1 {
				j := jobs[i]
				j.table, j.err = buildTable(own, j.vip.TableSize, j.in)
			}
		})
	}
	wg.Wait()
}

// buildTable builds a table of size slots with the builder for that size in
// builders, made on first use.
func buildTable(builders map[int]*maglev.Builder, size int, in []maglev.Backend) ([]uint32, error) {
	mb, ok := builders[size]
	if !ok {
		var err error
		if mb, err = maglev.New(maglev.Config{Size: uint64(size)}); err != nil {
			return nil, err
		}
		builders[size] = mb
	}
	return mb.Build(in)
}

// Reload re-reads the configuration file. An invalid file is refused whole
// and the running configuration stays in force.
func (b *Balancer) Reload(ctx context.Context) (api.ReloadResponse, error) {
	var resp api.ReloadResponse
	var rerr error
	err := b.do(ctx, func() {
		cfg, err := config.Reload(b.path)
		if err == nil {
			err = immutableChanged(b.cfg, cfg)
		}
		if err != nil {
			b.reloadFails++
			b.lastErr = err.Error()
			b.log.Error("reload refused; the running configuration stays in force", "error", err)
			rerr = fmt.Errorf("configuration refused, the running one stays in force (%w):\n%w", api.ErrRejected, err)
			return
		}
		old := b.cfg
		dropped := b.dropOutvotedDrains(old, cfg)
		changes, err := b.apply(cfg)
		if err != nil {
			// The datapath took part of cfg: put the running
			// configuration back, so that it stays in force.
			maps.Copy(b.drain, dropped)
			b.reloadFails++
			err = fmt.Errorf("apply the configuration: %w", err)
			undo := &applyUndo{recycled: b.recycled, deleted: b.deletedVIPs, reoptioned: b.reoptioned}
			b.undo = undo
			_, rbErr := b.apply(old)
			b.undo = nil
			if rbErr != nil {
				err = fmt.Errorf("%w; restoring the running configuration failed too, so the datapath may hold parts of both (reload again): %w", err, rbErr)
			} else {
				err = fmt.Errorf("%w; the running configuration stays in force", err)
			}
			b.lastErr = err.Error()
			b.log.Error("reload failed", "error", err)
			rerr = err
			return
		}
		if len(dropped) > 0 {
			// As a restart says it (loadDrains): the operator's drain or
			// undrain of these no longer holds.
			var names []string
			for key, o := range dropped {
				names = append(names, drainName(key, o))
			}
			slices.Sort(names)
			b.log.Info("operator drains ended: the file changed these backends' drained, or no longer has them", "backends", names)
		}
		if renamed := b.renameDrains(); len(dropped) > 0 || len(renamed) > 0 {
			if len(renamed) > 0 {
				b.log.Info("operator drains kept over a rename: they follow the backend's address", "backends", renamed)
			}
			if err := b.saveDrains(); err != nil {
				b.log.Warn("operator drains outvoted by the file but not saved: a restart will bring them back", "file", b.drainFile, "error", err)
			}
		}
		// The generation is the applied configuration's: a reload of
		// the same file (a config manager's SIGHUP on every run, say)
		// is no new configuration, and would make the generation, and
		// an alert on its changes, move for nothing. reloads counts
		// them all.
		b.reloads++
		if len(changes) > 0 {
			b.generation++
		}
		b.lastErr = ""
		resp = api.ReloadResponse{Generation: b.generation, Changes: changes}
		for _, c := range changes {
			resp.Changed = append(resp.Changed, c.String())
		}
		b.log.Info("configuration reloaded", "generation", b.generation, "changes", len(changes))
		b.logChanges(resp.Changed)
	})
	if err != nil {
		return api.ReloadResponse{}, err // given up: resp is the loop's until fn ends
	}
	return resp, rerr
}

// maxLoggedChanges bounds the lines a reload logs: the first ones tell a
// SIGHUP's sender (who gets no answer) what the reload did, and a reload
// of thousands of backends does not flood the log with the rest.
const maxLoggedChanges = 20

// logChanges logs a reload's change lines, as switchyard reload prints
// them, one record each, the first maxLoggedChanges of them, and then
// how many more were not logged.
func (b *Balancer) logChanges(lines []string) {
	for i, line := range lines {
		if i == maxLoggedChanges {
			b.log.Info("reload changed", "change", fmt.Sprintf("and %d more, not logged", len(lines)-i))
			return
		}
		b.log.Info("reload changed", "change", line)
	}
}

// renameDrains gives each override the name its backend (by address) has
// in the running configuration, and returns "VIP/OLD is now VIP/NEW" for
// each it renamed.
func (b *Balancer) renameDrains() []string {
	var out []string
	for key, o := range b.drain {
		vip, a, _ := strings.Cut(key, "/")
		ap, err := netip.ParseAddr(a)
		if err != nil {
			continue
		}
		if be := backendByAddr(b.cfg.VIPByName(vip), ap); be != nil && be.Name != o.name {
			out = append(out, drainName(key, o)+" is now "+healthKey(vip, be.Name))
			o.name = be.Name
			b.drain[key] = o
		}
	}
	slices.Sort(out)
	return out
}

// dropOutvotedDrains forgets the operator's drain or undrain of every
// backend whose `drained` the file changes from old to cur: the newest word
// wins, so an old undrain cannot keep a backend in service that the file
// now drains (nor an old drain keep out one it undrains), and an override
// that agreed with the file ends too, so that the backend follows the file
// from then on. (So an override that stays has the `drained` it was given
// under, which loadDrains compares with the file at a restart.)
// It forgets those of backends cur does not have too (dropGoneDrains). It
// returns what it forgot.
func (b *Balancer) dropOutvotedDrains(old, cur *config.Config) map[string]override {
	dropped := b.dropGoneDrains(cur)
	for i := range cur.VIPs {
		v := &cur.VIPs[i]
		ov := old.VIPByName(v.Name)
		if ov == nil {
			continue
		}
		for _, be := range v.Backends {
			key := drainKey(v.Name, be)
			o, ok := b.drain[key]
			if ob := backendByAddr(ov, be.Addr()); ok && ob != nil && ob.Drained != be.Drained {
				dropped[key] = o
				delete(b.drain, key)
			}
		}
	}
	return dropped
}

// dropGoneDrains forgets the operator's drain or undrain of every backend
// that cfg does not have (by address, in its VIP: a renamed backend is the
// same one, a name given another address a new one): a file that adds a
// backend of that address again has the newest word on it, and the drain
// file would otherwise keep every backend ever drained. It returns what it
// forgot.
func (b *Balancer) dropGoneDrains(cfg *config.Config) map[string]override {
	dropped := map[string]override{}
	for key, o := range b.drain {
		vip, a, _ := strings.Cut(key, "/")
		ap, _ := netip.ParseAddr(a)
		if backendByAddr(cfg.VIPByName(vip), ap) == nil {
			dropped[key] = o
			delete(b.drain, key)
		}
	}
	return dropped
}

// immutableChanged refuses changes that need a restart.
func immutableChanged(old, cur *config.Config) error {
	var errs []error
	check := func(field string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			errs = append(errs, fmt.Errorf("%s changed from %v to %v: this needs a restart of switchyard run, not a reload", field, a, b))
		}
	}
	check("datapath.interface", old.Datapath.Interface, cur.Datapath.Interface)
	// Cleaned: /sys/fs/bpf/x/ and /sys/fs/bpf/x are one directory.
	check("datapath.pin_dir", filepath.Clean(old.Datapath.PinDir), filepath.Clean(cur.Datapath.PinDir))
	check("datapath.attach_mode", old.Datapath.AttachMode, cur.Datapath.AttachMode)
	check("datapath.conn_table_size", old.Datapath.ConnTableSize, cur.Datapath.ConnTableSize)
	check("api.socket", old.API.Socket, cur.API.Socket)
	// As the address and port it is: [FD00::1]:9301 is [fd00::1]:9301.
	if !config.Same(old.Metrics, cur.Metrics) {
		check("metrics.listen", old.Metrics.Listen, cur.Metrics.Listen)
	}
	return errors.Join(errs...)
}

// describeChanges lists what cur changes of old, for the operator: each
// VIP and backend added, removed or changed (with the fields that changed),
// and the global settings' fields. A backend is its name in its VIP: a
// renamed one is removed and added. Only the order of the VIPs or
// backends changed is no change.
func describeChanges(old, cur *config.Config) []api.Change {
	if old == nil {
		return nil
	}
	var out []api.Change
	for i := range cur.VIPs {
		v := &cur.VIPs[i]
		ov := old.VIPByName(v.Name)
		if ov == nil {
			out = append(out, api.Change{Kind: "added", VIP: v.Name})
			continue
		}
		for _, be := range v.Backends {
			ob := ov.BackendByName(be.Name)
			if ob == nil {
				out = append(out, api.Change{Kind: "added", VIP: v.Name, Backend: be.Name})
			} else if f := fieldChanges(nil, "", reflect.ValueOf(*ob), reflect.ValueOf(be)); len(f) > 0 {
				out = append(out, api.Change{Kind: "changed", VIP: v.Name, Backend: be.Name, Fields: f})
			}
		}
		for _, be := range ov.Backends {
			if v.BackendByName(be.Name) == nil {
				out = append(out, api.Change{Kind: "removed", VIP: v.Name, Backend: be.Name})
			}
		}
		if f := fieldChanges(nil, "", reflect.ValueOf(*ov), reflect.ValueOf(*v), "backends"); len(f) > 0 {
			out = append(out, api.Change{Kind: "changed", VIP: v.Name, Fields: f})
		}
	}
	for i := range old.VIPs {
		if cur.VIPByName(old.VIPs[i].Name) == nil {
			out = append(out, api.Change{Kind: "removed", VIP: old.VIPs[i].Name})
		}
	}
	if f := fieldChanges(nil, "", reflect.ValueOf(*old), reflect.ValueOf(*cur), "vips"); len(f) > 0 {
		out = append(out, api.Change{Kind: "changed", Fields: f})
	}
	return out
}

// fieldChanges appends to out the fields in which a and b, structs of one
// configuration type, differ, named by their YAML names after prefix
// (a nested struct's fields joined with dots: health.interval), with their
// values as the file writes them. Fields are compared as config.SameField
// has it: an address or prefix only written differently (fd00:0::1 for
// fd00::1) is no change, and a changed one is shown as each file writes it.
// It leaves out the top-level fields skip names.
func fieldChanges(out []api.FieldChange, prefix string, a, b reflect.Value, skip ...string) []api.FieldChange {
	t := a.Type()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if slices.Contains(skip, name) {
			continue
		}
		fa, fb := a.Field(i), b.Field(i)
		if fa.Kind() == reflect.Struct {
			out = fieldChanges(out, prefix+name+".", fa, fb)
			continue
		}
		if !config.SameField(t.Field(i), fa, fb) {
			out = append(out, api.FieldChange{Field: prefix + name, From: fmt.Sprint(fa.Interface()), To: fmt.Sprint(fb.Interface())})
		}
	}
	return out
}

// Drain stops (or, with drain false, resumes) new flows to a backend; its
// established flows continue. backend is "NAME" (every VIP) or "VIP/NAME".
func (b *Balancer) Drain(ctx context.Context, backend string, drain bool) (api.DrainResponse, error) {
	var resp api.DrainResponse
	var rerr error
	err := b.do(ctx, func() {
		vipName, beName, scoped := strings.Cut(backend, "/")
		if !scoped {
			vipName, beName = "", backend
		}
		for i := range b.cfg.VIPs {
			v := &b.cfg.VIPs[i]
			if scoped && v.Name != vipName {
				continue
			}
			if be := v.BackendByName(beName); be != nil {
				b.drain[drainKey(v.Name, *be)] = override{drained: drain, file: be.Drained, name: be.Name}
				resp.Matched = append(resp.Matched, healthKey(v.Name, be.Name))
			}
		}
		if len(resp.Matched) == 0 {
			switch {
			case !scoped:
				rerr = fmt.Errorf("no backend %q in any VIP; name it NAME or VIP/NAME as `switchyard status` shows (%w)", backend, api.ErrNotFound)
			case b.cfg.VIPByName(vipName) == nil:
				rerr = fmt.Errorf("no VIP %q; name the backend NAME or VIP/NAME as `switchyard status` shows (%w)", vipName, api.ErrNotFound)
			default:
				rerr = fmt.Errorf("VIP %q has no backend %q; name it as the BACKEND column of `switchyard status` shows (%w)", vipName, beName, api.ErrNotFound)
			}
			return
		}
		verb := "drained"
		if !drain {
			verb = "undrained"
		}
		// Saved whatever the publish does: the drain is in force either
		// way, as a failed publish is tried again on every tick.
		if err := b.saveDrains(); err != nil {
			b.log.Warn("drain applied but not saved: a restart will forget it", "file", b.drainFile, "error", err)
		}
		if err := b.syncTables(); err != nil {
			rerr = fmt.Errorf("%s %s, but its tables could not be published; the daemon tries again every 2 s: %w",
				strings.Join(resp.Matched, ", "), verb, err)
			return
		}
		b.log.Info("backend "+verb, "backends", resp.Matched)
		if drain {
			// `drain be1` drains be1 in every VIP: in one where it was the
			// last in service, the operator may not have meant to stop
			// every new flow.
			for _, vip := range b.vipsWithoutBackends(resp.Matched) {
				resp.Warnings = append(resp.Warnings, fmt.Sprintf("VIP %s has no backend left for new flows (each is drained or down): they are dropped, counted as no_backend, until one is undrained (`switchyard undrain %s/NAME`) or comes up", vip, vip))
				b.log.Warn("a drain left a VIP no backend for new flows: they are dropped (no_backend)", "vip", vip)
			}
		}
	})
	if err != nil {
		return api.DrainResponse{}, err // given up: resp is the loop's until fn ends
	}
	return resp, rerr
}

// vipsWithoutBackends names, of the VIPs of the backends keys names
// ("VIP/NAME"), those left with no backend for new flows.
func (b *Balancer) vipsWithoutBackends(keys []string) []string {
	var out []string
	for _, key := range keys {
		vip, _, _ := strings.Cut(key, "/")
		v := b.cfg.VIPByName(vip)
		if v == nil || slices.Contains(out, vip) || slices.ContainsFunc(v.Backends, func(be config.Backend) bool {
			return !b.drained(v.Name, be) && b.healthy(v, be)
		}) {
			continue
		}
		out = append(out, vip)
	}
	return out
}

func (b *Balancer) sampleRates(now time.Time) {
	for _, num := range b.vipNums {
		c, err := b.dp.VIPCounters(num)
		if err != nil {
			continue
		}
		prev, ok := b.rates[num]
		s := rateSample{at: now, packets: c.Packets}
		if ok && now.After(prev.at) && c.Packets >= prev.packets {
			s.rate = float64(c.Packets-prev.packets) / now.Sub(prev.at).Seconds()
		}
		b.rates[num] = s
	}
}

// Status reports VIPs, backends, health and datapath counters, read from
// the maps now, and the connection table's flows, counted at most
// flowCountsMaxAge ago.
//
// The control loop reads its own state and the counters; the count of
// the connection table (a walk of 1Mi entries by default, some 20 ms, more
// under load) runs on the caller's goroutine, where every scrape and
// `switchyard status` held up health transitions, network events, drains
// and reloads. Status requests at once share one count. A count that a
// reload overlapped (it may give a VIP number or backend id to another)
// is taken again with the status; after statusTries such tries, on the
// loop, as before.
func (b *Balancer) Status(ctx context.Context) (api.Status, error) {
	// Held over the walk: Run returns (and the daemon closes the
	// datapath) only once no walk reads it.
	b.walks.RLock()
	defer b.walks.RUnlock()
	for try := 1; ; try++ {
		var st api.Status
		var names flowNames
		var rerr error
		onLoop := try == statusTries
		err := b.do(ctx, func() {
			if st, names, rerr = b.status(); rerr != nil || !onLoop {
				return
			}
			var flows datapath.FlowCounts
			if flows, rerr = b.dp.CountFlows(); rerr == nil {
				rerr = b.addFlows(&st, names, flows)
			}
		})
		if err != nil {
			// Given up (or stopped) while fn may still run on the
			// loop: st is the loop's until it ends.
			return api.Status{}, err
		}
		if rerr != nil || onLoop {
			return st, rerr
		}
		flows, err := b.countFlows(ctx, names.ids)
		if err != nil {
			return st, err
		}
		if err := b.addFlows(&st, names, flows); err != nil {
			return st, err
		}
		if b.ids.Load() == names.ids {
			return st, nil
		}
	}
}

// statusTries is how many times Status takes the status and counts the
// connection table outside the loop while reloads change VIP numbers or
// backend ids under the count, before it counts on the loop.
const statusTries = 3

// flowCountsMaxAge is how old a count of the connection table Status may
// give.
const flowCountsMaxAge = time.Second

// flowNames is what status gives the connection table's counts to, as
// the control loop had it: the VIP number of each of the status's VIPs,
// the address of each backend id, and the loop's ids.
type flowNames struct {
	nums  []uint32
	addrs map[uint32]netip.Addr
	ids   uint64
}

// countFlows counts the connection table, or gives the count that another
// status request took under the same VIP numbers and backend ids (ids)
// less than countsMaxAge ago, waiting for one under way.
func (b *Balancer) countFlows(ctx context.Context, ids uint64) (datapath.FlowCounts, error) {
	select {
	case b.counting <- struct{}{}:
	case <-ctx.Done():
		return datapath.FlowCounts{}, ctx.Err()
	}
	defer func() { <-b.counting }()
	if c := b.counted; c != nil && c.ids == ids && time.Since(c.at) < b.countsMaxAge {
		return c.counts, nil
	}
	at := time.Now()
	flows, err := b.dp.CountFlows()
	if err != nil {
		return flows, err
	}
	// A count that a reload overlapped is given to no one else.
	if b.ids.Load() == ids {
		b.counted = &flowCount{at: at, ids: ids, counts: flows}
	}
	return flows, nil
}

// status reads the status but for the flows (see addFlows), on the loop.
func (b *Balancer) status() (api.Status, flowNames, error) {
	names := flowNames{addrs: make(map[uint32]netip.Addr, len(b.backendIDs)), ids: b.ids.Load()}
	for a, id := range b.backendIDs {
		names.addrs[id] = a
	}
	st := b.info
	st.Node = b.cfg.Node.Name // a reload may rename it
	st.ConfigGeneration = b.generation
	st.ReloadFailures = b.reloadFails
	st.Reloads = b.reloads
	st.LastReloadError = b.lastErr
	st.Warnings = slices.Clone(b.hostWarnings)
	st.NextHop = api.NextHop{Resolved: b.nhResolved}
	// A status is a moment someone looks (each scrape too): the link
	// is checked then, besides the ticks. An interface gone is the
	// loop's to report.
	b.checkLinkPin()
	st.LinkPinned = b.linkPinErr == nil
	if b.linkPinErr != nil {
		// The status says "not pinned" by itself.
		st.LinkPinError = strings.TrimPrefix(b.linkPinErr.Error(), datapath.ErrBalancerLinkNotPinned.Error()+": ")
	}
	b.checkMapPins()
	st.MapsPinned, st.MapPinRestores = b.mapPinErr == nil, b.mapRestores
	if b.mapPinErr != nil {
		st.MapPinError = strings.TrimPrefix(b.mapPinErr.Error(), datapath.ErrBalancerMapsNotPinned.Error()+": ")
	}
	if err := b.checkDetached(); err != nil {
		st.ProgramDetached = err.Error()
	} else if b.detachedErr != nil {
		st.ProgramDetached = strings.TrimPrefix(b.detachedErr.Error(), datapath.ErrDetached.Error()+": ")
	}
	st.ProgramAttached = st.ProgramDetached == ""
	if b.checkErr != nil {
		st.AttachCheckError = strings.TrimPrefix(b.checkErr.Error(), datapath.ErrAttachCheckFailed.Error()+": ")
	}
	st.ProgramDetachments, st.LinkPinRestores = b.detachments, b.linkRestores
	if b.gateway.IsValid() { // else "", not "invalid IP"
		st.NextHop.Gateway = b.gateway.String()
	}
	if b.nhResolved {
		st.NextHop.MAC = net.HardwareAddr(b.settings.NextHopMAC).String()
	}
	st.ConnTable = api.ConnTable{Capacity: b.dp.ConnTableSize()}
	var err error
	if b.tunnel != nil {
		if st.HealthTunnel, err = b.tunnel.Stats(); err != nil {
			return st, names, fmt.Errorf("read the tunnel health-check counters: %w", err)
		}
	}
	if st.Counters, err = b.dp.Stats(); err != nil {
		return st, names, err
	}
	metas, err := b.dp.VIPs()
	if err != nil {
		return st, names, err
	}
	for i := range b.cfg.VIPs {
		v := &b.cfg.VIPs[i]
		k := vipKey(v)
		num := b.vipNums[k]
		names.nums = append(names.nums, num)
		av := api.VIP{
			Name: v.Name, Address: v.Addr().String(), Port: uint16(v.Port), Protocol: string(v.Protocol),
			Hash: string(v.Hash), Conntrack: v.Conntrack, TableSize: uint32(v.TableSize),
			Generation: metas[k].Gen, PacketRate: b.rates[num].rate,
		}
		// A counter that cannot be read fails the status: shown as 0,
		// it would fall and rise again, which Prometheus takes for a
		// reset (its rate counting the whole count again).
		c, err := b.dp.VIPCounters(num)
		if err != nil {
			return st, names, fmt.Errorf("VIP %s: %w", v.Name, err)
		}
		av.Packets, av.Bytes, av.NewFlows = c.Packets, c.Bytes, c.NewFlows
		av.ConnHits, av.ConnMisses = c.ConnHits, c.ConnMisses
		// Between samples, the rate since the latest one is fresher.
		if s, ok := b.rates[num]; ok && time.Since(s.at) > 500*time.Millisecond && c.Packets >= s.packets {
			av.PacketRate = float64(c.Packets-s.packets) / time.Since(s.at).Seconds()
		}
		if v.Health.Via == config.ViaTunnel && v.Health.Type != config.CheckNone {
			av.HealthVia = string(config.ViaTunnel)
		}
		slots := b.published[k]
		for _, be := range v.Backends {
			id := b.backendIDs[be.Addr()]
			ab := api.Backend{
				Name: be.Name, Address: be.Addr().String(), ID: id, Weight: uint32(be.Weight),
				Healthy: true, Drained: b.drained(v.Name, be), TableSlots: slots[id],
			}
			hs, ok := b.health.State(checkKey(v, be))
			if ok {
				ab.Healthy, ab.Since, ab.HealthInfo = hs.Healthy, hs.Since, hs.LastError
			}
			if v.Health.Type == config.CheckNone {
				// The monitor has a target for it too, always healthy.
				// It keeps the counts of a check a reload turned off,
				// for one turned on again: they are not this backend's
				// now (the metrics have no series of them either).
				ab.HealthInfo = "no check"
			} else {
				ab.Check = string(v.Health.Type)
				ab.Checks, ab.FailedChecks, ab.LastCheckSeconds = hs.Checks, hs.Failed, hs.LastDuration.Seconds()
			}
			c, err := b.dp.BackendCounters(id)
			if err != nil {
				return st, names, fmt.Errorf("VIP %s backend %s: %w", v.Name, be.Name, err)
			}
			ab.Packets, ab.Bytes = c.Packets, c.Bytes
			av.Backends = append(av.Backends, ab)
		}
		st.VIPs = append(st.VIPs, av)
	}
	return st, names, nil
}

// addFlows gives st, read by status with names, the connection table's
// count flows: the table's entries, each backend row's flows, and rows of
// the removed backends that still hold flows. It reads only names and the
// datapath, not the loop's state, so runs on any goroutine.
func (b *Balancer) addFlows(st *api.Status, names flowNames, flows datapath.FlowCounts) error {
	st.ConnTable.Entries = flows.Total
	for i := range st.VIPs {
		av, num := &st.VIPs[i], names.nums[i]
		listed := map[uint32]bool{}
		for j := range av.Backends {
			ab := &av.Backends[j]
			listed[ab.ID] = true
			fc := flows.ByBackend[datapath.VIPBackend{VIPNum: num, BackendID: ab.ID}]
			ab.Flows, ab.ActiveFlows = fc.Flows, fc.Active
		}
		removed, err := b.removedBackends(num, listed, names.addrs, flows)
		if err != nil {
			return fmt.Errorf("VIP %s: %w", av.Name, err)
		}
		av.Backends = append(av.Backends, removed...)
	}
	return nil
}

// removedBackends are the rows of VIP number num's backends that its
// configuration no longer lists (listed has the ids of those it does) but
// that still hold flows of the VIP: a removed backend keeps its slot, so
// its established flows continue, to the address the slot has now. Named
// by their address (addrs: the loop's, by id), in the order of their ids.
func (b *Balancer) removedBackends(num uint32, listed map[uint32]bool, addrs map[uint32]netip.Addr, flows datapath.FlowCounts) ([]api.Backend, error) {
	var out []api.Backend
	var bes map[uint32]datapath.Backend
	for k, fc := range flows.ByBackend {
		if k.VIPNum != num || listed[k.BackendID] {
			continue
		}
		addr, ok := addrs[k.BackendID]
		if !ok {
			// A slot the control loop no longer knows (a rollback
			// that failed to give it back): the datapath has the
			// address.
			if bes == nil {
				var err error
				if bes, err = b.dp.Backends(); err != nil {
					return nil, err
				}
			}
			addr = bes[k.BackendID].Addr
		}
		c, err := b.dp.BackendCounters(k.BackendID)
		if err != nil {
			return nil, fmt.Errorf("removed backend %s: %w", addr, err)
		}
		out = append(out, api.Backend{
			Name: addr.String(), Address: addr.String(), ID: k.BackendID, Removed: true,
			Flows: fc.Flows, ActiveFlows: fc.Active, Packets: c.Packets, Bytes: c.Bytes,
		})
	}
	slices.SortFunc(out, func(x, y api.Backend) int { return cmp.Compare(x.ID, y.ID) })
	return out, nil
}

// Flows lists connection-table entries, optionally of one VIP (by name).
// The control loop only gives the names and addresses that label them:
// the walk of the table (1Mi entries by default, most of them skipped
// when one VIP is asked for) runs on the caller's goroutine, where it
// held up health transitions, drains and reloads. The datapath's reads
// are safe beside the loop's writes, which the kernel makes meanwhile
// anyway. A walk that a reload overlapped (it may give a VIP number or
// backend id to another, whose flows the walk would then name as the
// first's) is taken again, as Status's count is; after flowsTries such
// tries, on the loop.
func (b *Balancer) Flows(ctx context.Context, vip string, limit int) (api.FlowsResponse, error) {
	if limit <= 0 {
		limit = 1000
	}
	// Held over the walk: Run returns (and the daemon closes the
	// datapath) only once no walk reads it.
	b.walks.RLock()
	defer b.walks.RUnlock()
	for try := 1; ; try++ {
		var resp api.FlowsResponse
		var labels flowLabels
		var rerr error
		onLoop := try == flowsTries
		err := b.do(ctx, func() {
			if labels, rerr = b.flowLabels(vip); rerr != nil || !onLoop {
				return
			}
			resp, rerr = b.listFlows(ctx, labels, vip, limit)
		})
		if err != nil {
			// Not resp: a walk on the loop may still be filling it.
			return api.FlowsResponse{}, err
		}
		if rerr != nil || onLoop {
			return resp, rerr
		}
		if resp, err = b.listFlows(ctx, labels, vip, limit); err != nil {
			return resp, err
		}
		if b.ids.Load() == labels.ids {
			return resp, nil
		}
	}
}

// flowsTries is how many times Flows takes the labels and walks the
// connection table outside the loop while reloads change VIP numbers or
// backend ids under the walk, before it walks on the loop.
const flowsTries = statusTries

// vipBackend is a flow's backend slot as its VIP names it: VIPs may name
// one address differently, and a flow's backend is named as its own VIP
// names it.
type vipBackend struct{ vip, id uint32 }

// flowLabels is what Flows names the connection table's entries with, as
// the control loop had it: the names of VIP numbers and of each VIP's
// backend slots, the datapath's backends (for slots their VIP does not
// name), the number of the VIP asked for, and the loop's ids.
type flowLabels struct {
	vips     map[uint32]string
	backends map[vipBackend]string
	bes      map[uint32]datapath.Backend
	want     uint32
	ids      uint64
}

// flowLabels reads the labels of the flows of vip ("" for all), on the
// loop.
func (b *Balancer) flowLabels(vip string) (flowLabels, error) {
	l := flowLabels{vips: map[uint32]string{}, backends: map[vipBackend]string{}, ids: b.ids.Load()}
	found := vip == ""
	for i := range b.cfg.VIPs {
		v := &b.cfg.VIPs[i]
		num := b.vipNums[vipKey(v)]
		l.vips[num] = v.Name
		if v.Name == vip {
			l.want, found = num, true
		}
		for _, be := range v.Backends {
			l.backends[vipBackend{num, b.backendIDs[be.Addr()]}] = be.Name
		}
	}
	if !found {
		return l, fmt.Errorf("no VIP named %q; `switchyard status` lists them (%w)", vip, api.ErrNotFound)
	}
	var err error
	if l.bes, err = b.dp.Backends(); err != nil {
		return l, fmt.Errorf("read the backends to name the flows' addresses: %w", err)
	}
	return l, nil
}

// listFlows walks the connection table for up to limit flows of vip ("" for
// all), named by labels. It reads only labels and the datapath, not the
// loop's state, so runs on any goroutine.
func (b *Balancer) listFlows(ctx context.Context, labels flowLabels, vip string, limit int) (api.FlowsResponse, error) {
	var resp api.FlowsResponse
	var rerr error
	now := monotonic()
	seen := 0
	err := b.dp.Flows(func(f datapath.FlowKey, c datapath.Conn) bool {
		// A client gone, or a daemon stopping, ends the walk.
		if seen++; seen%flowsCheckEvery == 0 {
			select {
			case <-ctx.Done():
				rerr = ctx.Err()
				return false
			case <-b.stopped:
				rerr = ErrStopped
				return false
			default:
			}
		}
		if vip != "" && c.VIPNum != labels.want {
			return true
		}
		if len(resp.Flows) >= limit {
			resp.Truncated = true
			return false
		}
		fl := api.Flow{
			Protocol: protoName(f.Proto), Client: netip.AddrPortFrom(f.Src, f.SrcPort).String(),
			VIP: netip.AddrPortFrom(f.Dst, f.DstPort).String(), BackendID: c.BackendID,
			Backend: labels.backends[vipBackend{c.VIPNum, c.BackendID}], IdleSecond: max(0, (now - c.LastSeen).Seconds()),
			VIPName: labels.vips[c.VIPNum],
		}
		if fl.Backend == "" {
			fl.Backend = labels.bes[c.BackendID].Addr.String()
		}
		resp.Flows = append(resp.Flows, fl)
		return true
	})
	if err != nil {
		return resp, err
	}
	return resp, rerr
}

// flowsCheckEvery is how many entries Flows walks between looks at
// whether it should stop.
const flowsCheckEvery = 4096

func protoName(p uint8) string {
	switch p {
	case datapath.ProtoTCP:
		return "tcp"
	case datapath.ProtoUDP:
		return "udp"
	}
	return strconv.Itoa(int(p))
}
