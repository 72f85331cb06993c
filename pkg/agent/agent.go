// Package agent runs Switchyard on a backend appliance (`switchyard agent`):
// it attaches the decap program that strips what the balancers
// encapsulated, puts the VIPs on lo so that local servers accept the inner
// packets, sets the sysctls direct server return needs, and undoes all of
// it on a clean shutdown, leaving the host as it found it.
//
// Start runs in the network namespace of the thread that calls it; every
// kernel object the agent touches afterwards (netlink sockets, sysctl
// files) is bound to that namespace when Start opens it, so Stop, Stats and
// the address watcher may run on any goroutine.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/ethtool"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Errors callers can branch on.
var (
	ErrRunning    = errors.New("agent is already running")
	ErrNotRunning = api.Unavailable("agent is not running")
	// ErrInUse: another agent runs with the same pin directory.
	ErrInUse = errors.New("another switchyard agent is running with this pin directory")
	// ErrInterfaceGone: the agent's interface was removed while it ran,
	// and the decap program with it (see Lost).
	ErrInterfaceGone = errors.New("the agent's interface is gone")
)

// errNotUndone: a failed start could not undo all it did (see Cancelled).
var errNotUndone = errors.New("undo the partial start")

// Cancelled reports whether err, from StartContext or RemoveContext,
// says that the start (or remove) was cancelled and left the host as it
// was: ctx was done while it waited, and what Start had done was undone.
func Cancelled(err error) bool {
	return (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) && !errors.Is(err, errNotUndone)
}

// heldByBalancer is ErrInUse when the daemon that holds the pin
// directory is a balancer: its message says so, as ErrInUse's would
// wrongly name an agent.
type heldByBalancer string

func (e heldByBalancer) Error() string        { return string(e) }
func (e heldByBalancer) Is(target error) bool { return target == ErrInUse }

// Config configures an Agent.
type Config struct {
	// Agent is the agent's configuration, as config.LoadAgent returns it.
	Agent config.AgentConfig
	// Logger receives what the agent did and what went wrong in its
	// background work (nil: discarded).
	Logger *slog.Logger
	// AttachMode is how the decap program is attached (zero: native).
	AttachMode datapath.AttachMode
	// ConfigPath is the file the configuration came from, shown in the
	// status ("": none).
	ConfigPath string
	// StateDir holds the file in which the agent records what it changes
	// on the host, before it changes it, so that a run after a crash can
	// undo it ("": DefaultStateDir). It should be a tmpfs, which a reboot
	// clears together with the changes.
	StateDir string
}

// Validate reports whether the configuration can be used.
func (c Config) Validate() error {
	if err := c.Agent.Validate(); err != nil {
		return err
	}
	switch c.AttachMode {
	case datapath.AttachNative, datapath.AttachGeneric, datapath.AttachAuto:
	default:
		return fmt.Errorf("attach mode %d: use datapath.AttachNative, AttachGeneric or AttachAuto", c.AttachMode)
	}
	return nil
}

// Agent is the backend-side part of Switchyard on one interface.
type Agent struct {
	node    string
	cfgPath string
	iface   string
	pinDir  string
	guePort uint16
	mode    datapath.AttachMode
	vips    []netip.Addr
	// encapFixed is the configured encap address set; nil means "follow
	// the interface's addresses".
	encapFixed []netip.Addr
	log        *slog.Logger

	mu      sync.RWMutex // guards the running state below against Stop
	running bool
	nl      *netlink.Handle
	// ns is the network namespace Start (or Remove) ran in, in which a
	// sysctl file is opened again from any thread (see reopenSysctl).
	ns      netns.NsHandle
	ifindex int
	decap   *datapath.Decap
	// ownPins: the pin directory is ours to remove on teardown (Start
	// created it, or Start completed).
	ownPins bool
	// keepPinDir: a failed Start removes its pins but keeps the pin
	// directory, which it did not create (an admin's, prepared empty).
	keepPinDir bool
	// lock holds the pin directory's flock from before Start touches the
	// pins until teardown has removed them.
	lock *os.File
	// runLock holds the lock beside the state file (see lockRun) as
	// long as lock, and until teardown is done.
	runLock *os.File
	sysctls []*sysctl // changed by Start, in the order they were set
	// sysctlMu guards the files of sysctls, which a status reopens after
	// their interface was renamed, against concurrent status calls.
	sysctlMu sync.Mutex
	// eth issues ethtool ioctls in the agent's namespace; gro: GRO this
	// run (or an earlier one) turned off, to turn on again at stop.
	eth *ethtool.Handle
	gro *groRecord
	// added: VIP addresses Start added to lo. While the agent runs, the
	// watcher drops one that someone removes (see forgetVIPs), under
	// addedMu.
	addedMu sync.Mutex
	added   []netip.Prefix
	watch   *watcher
	// lost receives ErrInterfaceGone when the interface goes (one report
	// waits at a time).
	lost chan error
	// attached and started are shown in the status.
	attached datapath.AttachResult
	started  time.Time

	// statePath records sysctls and added while the agent runs (see
	// loadState); stateHeld says that this agent read it under the pin
	// directory's lock, so that it is this agent's to write and remove.
	statePath string
	stateHeld bool
	// removing: Remove runs; no change of an earlier run is wanted.
	removing bool
	bootID   string
	netns    uint64
	// hostLock holds the state directory's agents.lock while the agent
	// decides what it shares with the host's other agents, whose records
	// peers holds meanwhile (see lockHost).
	hostLock *os.File
	peers    []peer
	// hostLockWait bounds each wait for hostLock (see
	// defaultHostLockWait).
	hostLockWait time.Duration
	// runLockWait bounds the wait for the run lock of a stopping agent
	// (see lockRun and defaultRunLockWait).
	runLockWait time.Duration

	encapMu sync.Mutex
	encap   []netip.Addr // the set last written to the decap map

	// linkMu guards the check of the decap link's pin (see
	// checkLinkPin), which the watcher and status calls run, and its
	// outcome: linkPinErr, nil while pinned, and linkRestores, the times
	// the pin was made again.
	linkMu       sync.Mutex
	linkPinErr   error
	linkRestores uint64
	// What checkMapPins found, under linkMu too: mapPinErr is nil while
	// every map of the decap program is pinned, mapRestores counts the
	// pins made again.
	mapPinErr   error
	mapRestores uint64
	// What checkDetached found, under linkMu too: detachedErr is nil
	// while the decap program runs on the interface, detachments counts
	// the times it was found not to.
	detachedErr error
	detachments uint64
	// checkErr: the last attachment check could not read the link or
	// the program (datapath.ErrAttachCheckFailed): detachedErr is then
	// the last state found, not the present one.
	checkErr error
	// linkCheckEvery is how often the watcher checks the link's pin,
	// attachCheckEvery that the program runs on the interface.
	linkCheckEvery   time.Duration
	attachCheckEvery time.Duration
}

// linkCheckInterval is how often a running agent checks that its decap
// link is still pinned: a missing pin matters only once the agent dies,
// so a pin removed by hand need not be noticed at once.
const linkCheckInterval = 10 * time.Second

// attachCheckInterval is how often a running agent checks that its decap
// program still runs on the interface: unlike a missing pin, a detached
// program stops the backend's decapsulation at once, so it is looked for
// as often as the balancer looks for its own (its 2 s tick).
const attachCheckInterval = 2 * time.Second

// defaultRunLockWait bounds a start's wait for the run lock of an agent
// of its configuration: one that stops lets go of it within moments of
// removing its pins (it turns GRO on and removes its record), one that
// runs never.
const defaultRunLockWait = 5 * time.Second

// New returns an agent for cfg. It changes nothing on the host until Start.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	c := cfg.Agent
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		node:    c.Node.Name,
		cfgPath: cfg.ConfigPath,
		iface:   c.Interface,
		pinDir:  c.PinDir,
		guePort: uint16(c.GUEPort),
		mode:    cfg.AttachMode,
		vips:    unmapAll(c.VIPAddrs()),
		log:     log.With("component", "agent", "interface", c.Interface),
		ns:      netns.None(),

		linkCheckEvery:   linkCheckInterval,
		attachCheckEvery: attachCheckInterval,
		hostLockWait:     defaultHostLockWait,
		runLockWait:      defaultRunLockWait,
	}
	if a.pinDir == "" {
		a.pinDir = datapath.DefaultAgentPinDir(c.Interface)
	}
	stateDir := cfg.StateDir
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	a.statePath = stateFile(stateDir, a.pinDir, c.Interface)
	if len(c.EncapAddresses) > 0 {
		a.encapFixed = unmapAll(c.EncapAddrs())
	}
	return a, nil
}

// Start attaches the decap program to the interface, sets the sysctls for
// direct server return, adds the VIPs to lo and, unless the encap addresses
// are configured, keeps the decap program's address set in step with the
// interface's addresses. It works in the network namespace of the calling
// thread. On error it undoes what it did, unless it started over an
// earlier run's pins, whose program stays attached: then it leaves every
// change as it is, recorded (see leaveEarlierRun).
//
// Each change to sysctls and lo is recorded in the state file before it is
// made. Start takes over what the record of an earlier run that did not
// stop cleanly lists and finds still as that run left it, so that Stop (or
// a failed Start) undoes it too; see loadState.
//
// The order keeps the host consistent at every step: the ARP sysctls are in
// force before a VIP appears on lo (so the NIC never answers ARP for it),
// and the program is attached last, once the VIPs can accept what it
// decapsulates.
func (a *Agent) Start() error { return a.StartContext(context.Background()) }

// StartContext is Start, whose waits for the host's other agents (the host
// lock, which one holds for milliseconds as a rule, but up to 30 s when
// hung) and for a stopping agent of its configuration (its run lock, see
// lockRun) end when ctx is done: Start then fails with ctx's error and, as
// on any failure, undoes what it did. The rest of Start takes no time
// worth cancelling, and is not cut short.
func (a *Agent) StartContext(ctx context.Context) (err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.running {
		return ErrRunning
	}
	defer func() {
		if err != nil {
			// Over an earlier run's pins, its program stays attached
			// whatever step failed: what it decapsulates needs the VIPs
			// and sysctls as they are.
			if !a.ownPins {
				a.leaveEarlierRun()
			}
			if uerr := a.teardown(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("%w: %w", errNotUndone, uerr))
			}
		}
	}()

	// A handle created here keeps talking to this namespace from any thread.
	if a.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	if a.ns, err = netns.Get(); err != nil {
		return fmt.Errorf("open the network namespace: %w", err)
	}
	if a.eth, err = ethtool.Open(); err != nil {
		return err
	}
	l, err := a.nl.LinkByName(a.iface)
	if err != nil {
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return fmt.Errorf("interface %q: %w (check the name with `ip link` and the interface setting of the agent config; inside a namespace, run the agent there)",
				a.iface, datapath.ErrNoInterface)
		}
		return fmt.Errorf("interface %q: %w", a.iface, err)
	}
	a.ifindex = l.Attrs().Index

	if err := a.lockPinDir(ctx); err != nil {
		return err
	}
	// What the host's agents share (VIPs, the "all" sysctls) is decided
	// under one lock, so that an agent stopping meanwhile sees this one's
	// record whole, or none.
	// A failure releases it in teardown; no deferred release here: once
	// the watcher runs, the host lock is its to take.
	if err := a.lockHost(ctx); err != nil {
		return err
	}
	if err := a.loadState(); err != nil {
		return err
	}
	if err := a.loadDecap(); err != nil {
		return err
	}
	if err := a.setSysctls(); err != nil {
		return err
	}
	if err := a.addVIPs(); err != nil {
		return err
	}
	a.unlockHost()
	res, err := a.decap.Attach(a.iface, a.mode)
	if err != nil {
		return fmt.Errorf("decap program: %w", err)
	}
	if err := a.groForMode(ctx, res.Mode); err != nil {
		return err
	}
	a.lost = make(chan error, 1)
	// Before the watcher checks them.
	a.linkPinErr, a.linkRestores, a.detachedErr, a.detachments, a.checkErr = nil, 0, nil, 0, nil
	a.mapPinErr, a.mapRestores = nil, 0
	if a.watch, err = a.startWatch(); err != nil {
		return err
	}
	// A running agent's stop removes the directory with its pins.
	a.ownPins, a.keepPinDir = true, false
	a.running = true
	a.attached, a.started = res, time.Now()
	a.log.Info("agent started", "mode", res.Mode.String(), "replaced", res.Replaced,
		"vips", len(a.vips), "encap_addresses", fmt.Sprint(a.EncapAddrs()), "pin_dir", a.pinDir)
	return nil
}

// leaveEarlierRun gives up, undoing nothing, what loadState took over from
// an earlier run and what this start changed since, when a start over the
// earlier run's pins fails, at whatever step: at the pins (another
// release's, say), or later (a VIP the kernel refuses, a sysctl it cannot
// write). A failed start does not remove pins it did not create, so the
// program on their link (the earlier run's, or this one's swapped in)
// stays attached and decapsulates to the VIPs on lo: they, the sysctls,
// GRO and the record, which lists them all, stay for the next start or
// for `remove --agent`. Undone, they would leave that program handing the
// stack packets for addresses no longer local, which it drops, while a
// health check sent to the backend directly still passes.
func (a *Agent) leaveEarlierRun() {
	if len(a.added) > 0 || len(a.sysctls) > 0 || a.gro != nil {
		a.log.Warn("start failed: the earlier run's decap program, VIPs and sysctls are left as they are", "file", a.statePath)
	}
	for _, s := range a.sysctls {
		s.f.Close()
	}
	a.sysctls, a.added, a.gro = nil, nil, nil
	a.stateHeld = false
}

// leaveHostChanges gives up, undoing nothing, the VIPs, sysctls and GRO
// the agent recorded, when the host lock it needs to undo them could not
// be taken (lockErr): a VIP or "all" sysctl may be another running
// agent's too, which only the other agents' records, read under the lock,
// tell. They stay with the record, which `remove --agent` undoes once the
// lock is free; the decap program and its pins are this agent's alone and
// still go.
func (a *Agent) leaveHostChanges(lockErr error) error {
	a.log.Error("cannot take the agents' host lock: the VIPs, sysctls and GRO this agent recorded are left as they are, for `switchyard remove --agent --config FILE` once the lock is free; only the decap program and its pins are removed",
		"file", a.statePath, "error", lockErr)
	for _, s := range a.sysctls {
		s.f.Close()
	}
	a.sysctls, a.added, a.gro = nil, nil, nil
	return fmt.Errorf("%w; the VIPs, sysctls and GRO recorded in %s are left as they are, as another agent of the host may share them: "+
		"once the lock is free, `switchyard remove --agent --config FILE` undoes them", lockErr, a.statePath)
}

// lockPinDir takes the pin directory for this agent, creating it if need
// be, and fails with ErrInUse while another agent holds it. Without the
// lock a second agent would adopt a running one's pins and replace its
// program, and the first of the two to stop would detach the decap
// program and delete the pins under the other. The lock goes with the
// process, so pins left by a crashed agent are adopted as before.
func (a *Agent) lockPinDir(ctx context.Context) error {
	f, created, err := datapath.LockPinDir(a.pinDir, "pin_dir")
	if errors.Is(err, datapath.ErrPinDirLocked) {
		if datapath.PinDirOwner(a.pinDir) == "switchyard run" {
			return heldByBalancer(fmt.Sprintf("pin directory %s (interface %s): in use by a running switchyard run, whose pins it holds, not an agent's: give the agent a pin_dir of its own",
				a.pinDir, a.iface))
		}
		if a.removing {
			return fmt.Errorf("pin directory %s (interface %s): %w: stop that agent (systemctl stop, or SIGTERM), whose clean stop undoes its changes, then remove what is left",
				a.pinDir, a.iface, ErrInUse)
		}
		return fmt.Errorf("pin directory %s (interface %s): %w: stop that agent before starting another; agents for different interfaces each need a pin_dir of their own",
			a.pinDir, a.iface, ErrInUse)
	}
	if err != nil {
		return err
	}
	if err := holdLiveness(f); err != nil {
		f.Close()
		return fmt.Errorf("lock pin directory %s: %w", a.pinDir, err)
	}
	// Refused, this agent leaves the directory as it found it: one that
	// LockPinDir created (the running agent's was removed) goes, if still
	// empty (rmdir removes only an empty one); one that was there (an
	// admin's, prepared empty) stays, and so do pins in either.
	if err := a.lockRun(ctx); err != nil {
		if created && datapath.PinDirEmpty(f) {
			os.Remove(a.pinDir)
		}
		f.Close()
		return err
	}
	// Pins left by an earlier run that did not shut down cleanly stay
	// theirs if this start fails; a successful start adopts them. Told
	// apart under the lock, by what the directory holds: one that was
	// missing before the lock may hold the pins of an agent that took it
	// first; an empty one (prepared, or an agent killed before it pinned)
	// none. Only a directory this start created goes with the pins of a
	// failed start: one that was there stays, empty, as it was found.
	a.lock, a.ownPins, a.keepPinDir = f, datapath.PinDirEmpty(f), !created
	return nil
}

// lockRun takes the run lock of the agent's state file (runLockPath),
// which it holds for as long as it runs, and fails with ErrInUse while
// another process holds it. The pin directory's lock says the same, but
// lives in bpffs: removed by hand with the directory (rm -r, a clean-up
// of bpffs), it no longer shows that the agent runs, and another agent
// of the host would take it for dead (see readPeers), and this
// configuration's next start or `remove --agent` would undo its changes
// from its record under its attached program. The run lock lives in the
// state directory, beside the record it guards, and goes with the
// process, however it ends.
//
// A stopping agent holds it a little longer than the pin directory's
// lock, which goes with the pins it removes: to the end of its teardown.
// A start (or `remove --agent`) that overlaps such a stop (a service
// manager's restart, a start by hand during a slow stop) finds the pin
// directory free and the run lock held, so lockRun waits for it, at most
// runLockWait, or until ctx is done; an agent that runs holds it for
// good, and is then refused.
//
// It is an open file description lock, which other agents test without
// taking it (see runLockHeld). Only its holder removes the file (see
// unlockRun): a lock taken on a file removed meanwhile is taken again on
// the file now at the path.
func (a *Agent) lockRun(ctx context.Context) error {
	path := runLockPath(a.statePath)
	dir := filepath.Dir(path)
	why := "the agent holds it while it runs, so that the host's other agents and `switchyard remove --agent` see that it runs; make the directory writable (it follows the agent's api.socket)"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create state directory %s: %w (%s)", dir, err, why)
	}
	deadline := time.Now().Add(a.runLockWait)
	waiting := false
	for removed := 0; ; {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("open the agent's run lock %s: %w (%s)", path, err, why)
		}
		lk := unix.Flock_t{Type: unix.F_WRLCK}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			f.Close()
			if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
				return fmt.Errorf("lock the agent's run lock %s: %w", path, err)
			}
			if !waiting {
				a.log.Warn("waiting for the agent's run lock: an agent of this configuration holds it, stopping, or running with its pin directory removed by hand",
					"lock", path, "seconds", a.runLockWait.Seconds())
				waiting = true
			}
			if !time.Now().Before(deadline) {
				return a.runLockRefused(path)
			}
			// The file is opened again: its holder removes it as it
			// stops.
			select {
			case <-ctx.Done():
				return fmt.Errorf("wait for the agent's run lock %s: %w", path, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		var held, now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return fmt.Errorf("lock the agent's run lock %s: %w", path, err)
		}
		if err := unix.Stat(path, &now); err == nil && now.Dev == held.Dev && now.Ino == held.Ino {
			if waiting {
				a.log.Info("took the agent's run lock: the agent that held it has stopped", "lock", path)
			}
			a.runLock = f
			return nil
		}
		f.Close() // its holder removed it as it stopped
		if removed++; removed == 10 {
			return fmt.Errorf("lock the agent's run lock %s: it was removed and created again 10 times meanwhile: something removes it as it is created; stop that, then start again", path)
		}
	}
}

// runLockRefused is lockRun's refusal, once the run lock at path stayed
// held for all of runLockWait.
func (a *Agent) runLockRefused(path string) error {
	stop := "stop that agent before starting another"
	if a.removing {
		stop = "stop that agent (systemctl stop, or SIGTERM), whose clean stop undoes its changes, then remove what is left"
	}
	return fmt.Errorf("an agent of this configuration holds its run lock %s (state file %s): %w, though the pin directory %s was free, and it did not let go within %s: "+
		"either that agent runs and its pin directory was removed by hand (rm -r, a clean-up of bpffs), taking its lock on it, or it is stopping and hangs after removing its pins; "+
		"%s, or, if it hangs stopping, kill it (`fuser -v %s` names it)",
		path, a.statePath, ErrInUse, a.pinDir, a.runLockWait, stop, path)
}

// unlockRun removes the run lock's file, while still holding it, and
// releases it, if held. The file of a killed run stays, held by nobody,
// and the next run takes it.
func (a *Agent) unlockRun() {
	if a.runLock == nil {
		return
	}
	if err := os.Remove(a.runLock.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("cannot remove the agent's run lock file: it is held by nobody now, and the next run takes it", "file", a.runLock.Name(), "error", err)
	}
	a.runLock.Close() // releases the lock
	a.runLock = nil
}

func (a *Agent) loadDecap() error {
	var err error
	if a.decap, err = datapath.LoadDecap(a.pinDir, a.log); err != nil {
		// The datapath says how to fix a refused BPF load, but not a
		// refused look at the pin directory, which is what a user who is
		// not root meets first.
		if errors.Is(err, fs.ErrPermission) && !strings.Contains(err.Error(), "run as root") {
			return fmt.Errorf("load decap program (pins in %s): %w (run the agent as root)", a.pinDir, err)
		}
		return fmt.Errorf("load decap program (pins in %s): %w", a.pinDir, err)
	}
	if err := a.decap.SetGUEPort(a.guePort); err != nil {
		return err
	}
	addrs := a.encapFixed
	if addrs == nil {
		if addrs, err = a.interfaceAddrs(); err != nil {
			return err
		}
	}
	return a.setEncap(addrs)
}

// Stop shuts the agent down cleanly: it detaches the decap program and
// removes its pins, deletes the VIP addresses Start added (VIPs that were
// on lo before Start stay), and restores every sysctl Start changed to the
// value it found (one the admin changed again meanwhile stays as it is);
// once the program is detached, it turns on again GRO it turned off.
// What it took over from an earlier run that did not stop cleanly is
// undone in the same way, to the values found before that run. A VIP or
// "all" sysctl that another running agent of the host shares stays for
// it (see addVIPs). Once all of it is undone, the state file goes.
// It may be called from any goroutine. Stopping an agent that is not
// running does nothing. It waits for the host lock once, at most 30 s
// (hostLockWait), a wait of the watcher for it ending with the stop;
// without the lock it leaves the host changes recorded (see
// leaveHostChanges).
func (a *Agent) Stop() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.running {
		return nil
	}
	err := a.teardown()
	if err == nil {
		a.log.Info("agent stopped")
	}
	return err
}

// teardown undoes, in reverse order, whatever Start recorded, resets the
// agent to its state after New and returns every error met on the way.
func (a *Agent) teardown() error {
	var errs []error
	a.running = false
	if a.watch != nil {
		a.watch.stop()
		a.watch = nil
	}
	if a.decap != nil {
		// Our link fd keeps the program attached: close it before the
		// pinned link is removed.
		if err := a.decap.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close decap program: %w", err))
		}
		a.decap = nil
	}
	// The host changes and their record go while the pin directory's
	// lock is still held: removing the pins removes the directory, and a
	// lock on a removed directory excludes no new agent, which would read
	// the record, or write its own, while this one undoes and removes it.
	// A VIP or "all" sysctl another running agent shares stays for it:
	// the host lock keeps that agent from stopping meanwhile, so the last
	// one to stop undoes it.
	var undoErrs []error
	defer a.unlockHost() // Start and Remove may hold it already
	if len(a.added) > 0 || len(a.sysctls) > 0 || a.gro != nil {
		// Not cancellable: what was changed must be undone. Without the
		// lock, the other agents' records say nothing of what they share
		// (an agent may be writing its own): every host change stays as
		// it is, recorded, for `remove --agent` to undo under the lock.
		if err := a.lockHost(context.Background()); err != nil {
			undoErrs = append(undoErrs, a.leaveHostChanges(err))
		}
	}
	if err := a.removeVIPs(); err != nil {
		undoErrs = append(undoErrs, err)
	}
	if err := a.restoreSysctls(); err != nil {
		undoErrs = append(undoErrs, err)
	}
	// GRO's interface renamed is told by the pinned link, removed below.
	a.followGRO()
	var detachErr error
	if a.ownPins {
		remove := datapath.RemoveDecap
		if a.keepPinDir {
			remove = datapath.RemoveDecapPins
		}
		if _, err := os.Stat(a.pinDir); err == nil {
			if err := remove(a.pinDir); err != nil {
				detachErr = fmt.Errorf("detach decap program from %s: %w", a.iface, err)
			}
		}
		a.ownPins = false
	}
	a.keepPinDir = false
	// GRO comes back only once the generic-mode program is detached, or
	// it would see merged packets meanwhile; if it stays attached, so
	// does GRO's record, for the next run or remove --agent. Removing the
	// pins removed the directory its lock is on, but a new agent reads
	// and writes the record only under the host lock, which is held from
	// before the undo to the end (taken above for a.gro).
	if detachErr != nil && a.gro != nil {
		undoErrs = append(undoErrs, fmt.Errorf("generic receive offload of %s stays off while the decap program is attached; %s records it: `switchyard remove --agent` turns it on again once it can detach the program",
			a.gro.Dev, a.statePath))
	} else if err := a.restoreGRO(); err != nil {
		undoErrs = append(undoErrs, err)
	}
	a.gro = nil
	if a.stateHeld {
		// What could not be undone stays recorded, for the next run.
		if len(undoErrs) == 0 {
			if err := a.dropState(); err != nil {
				undoErrs = append(undoErrs, err)
			}
		}
		a.stateHeld = false
	}
	errs = append(errs, undoErrs...)
	if detachErr != nil {
		errs = append(errs, detachErr)
	}
	if a.lock != nil {
		a.lock.Close() // releases the flock
		a.lock = nil
	}
	a.unlockRun()
	if a.nl != nil {
		a.nl.Close()
		a.nl = nil
	}
	if a.ns.IsOpen() {
		a.ns.Close()
		a.ns = netns.None()
	}
	if a.eth != nil {
		a.eth.Close()
		a.eth = nil
	}
	a.encapMu.Lock()
	a.encap = nil
	a.encapMu.Unlock()
	return errors.Join(errs...)
}

// Remove undoes what an agent with this configuration left behind when it
// did not stop cleanly (switchyard remove --agent): the sysctls and VIPs
// its state file records and finds still as that run left them, the
// record itself, and the decap program with its pins. It works in the
// network namespace of the calling thread and refuses, with ErrInUse,
// while an agent holds the pin directory or its run lock (see lockRun),
// which shows an agent of this release running even with its pin
// directory removed by hand. An agent of the previous release holds only
// the pin directory's lock: switchyard remove --agent asks its
// api.socket too.
func (a *Agent) Remove() error { return a.RemoveContext(context.Background()) }

// RemoveContext is Remove, whose waits for a stopping agent of its
// configuration (its run lock, up to runLockWait) and for the host's
// other agents (the host lock) end when ctx is done: Remove then fails
// with ctx's error, having undone and removed nothing (Cancelled says
// so), as it takes both locks before it touches anything.
func (a *Agent) RemoveContext(ctx context.Context) (err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.running {
		return ErrRunning
	}
	defer func() {
		if terr := a.teardown(); terr != nil {
			err = errors.Join(err, terr)
		}
		a.removing = false
	}()
	if a.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	if a.ns, err = netns.Get(); err != nil {
		return fmt.Errorf("open the network namespace: %w", err)
	}
	if a.eth, err = ethtool.Open(); err != nil {
		return err
	}
	// The interface may be gone: then so are its settings.
	if l, err := a.nl.LinkByName(a.iface); err == nil {
		a.ifindex = l.Attrs().Index
	}
	// Nothing is wanted: loadState undoes every change it takes over.
	a.removing = true
	if err := a.lockPinDir(ctx); err != nil {
		return err
	}
	if err := a.lockHost(ctx); err != nil {
		return err
	}
	// What the record names comes first: pins go only once it is undone,
	// so that a failure leaves everything for another try.
	if err := a.loadState(); err != nil {
		a.ownPins = false
		return err
	}
	// Remove takes the directory with the pins, whoever created it.
	a.ownPins, a.keepPinDir = true, false
	return nil
}

// Stats returns the decap program's counters by name, summed over CPUs.
func (a *Agent) Stats() (map[string]uint64, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if !a.running {
		return nil, ErrNotRunning
	}
	return a.decap.Stats()
}

// EncapAddrs returns the outer destination addresses the decap program
// currently strips (nil when the agent is not running).
func (a *Agent) EncapAddrs() []netip.Addr {
	a.encapMu.Lock()
	defer a.encapMu.Unlock()
	return slices.Clone(a.encap)
}

// Lost returns a channel that receives an error wrapping ErrInterfaceGone
// when the agent's interface is removed (or moved to another network
// namespace) while the agent runs: the decap program goes with it, and an
// interface created again under the name is another one, which the agent
// does not take up. Nothing is decapsulated until the agent is stopped
// and started again. The channel is the current run's (nil before Start).
func (a *Agent) Lost() <-chan error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.lost
}

// interfaceGone reports that the interface went away, unless a report
// waits already.
func (a *Agent) interfaceGone() {
	err := a.goneError()
	select {
	case a.lost <- err:
		a.log.Error("interface gone: nothing is decapsulated", "error", err)
	default: // reported already
	}
}

// goneError says that the agent's interface went away.
func (a *Agent) goneError() error {
	return fmt.Errorf("%w: %s (index %d) was removed or moved to another network namespace, where the agent cannot follow it; "+
		"start the agent again once the interface is back", ErrInterfaceGone, a.iface, a.ifindex)
}

// checkDetached checks, on the watcher's rounds and at each status, that
// the decap program still runs on the interface (see
// datapath.Decap.CheckAttached): no notification says that its link was
// detached (`bpftool link detach`) or made to run another program.
//
// Such a program is not attached again, as the balancer's is not (see
// balancer.checkDetached): the agent cannot tell a mistake from an
// operator who took it off on purpose, and another tool's XDP program
// now on the interface would have to be taken off first, for the two to
// fight over the hook. It is logged as an error once, counted, and shown
// in status and metrics until the program runs again; a restart of the
// agent attaches it again.
//
// A program that went with its interface is the watcher's to report
// (Lost): the error then wraps ErrInterfaceGone, and nothing is logged or
// counted here.
//
// A check that could not read the link or the program
// (datapath.ErrAttachCheckFailed) says nothing of the attachment: it is
// logged once and returned as checkErr, nothing is counted, and detached
// is the state last found.
func (a *Agent) checkDetached() (detached, checkErr error) {
	a.linkMu.Lock()
	defer a.linkMu.Unlock()
	err := a.decap.CheckAttached()
	if errors.Is(err, datapath.ErrAttachCheckFailed) {
		if a.checkErr == nil || a.checkErr.Error() != err.Error() {
			a.log.Error("could not check that the decap program still runs on its interface: its last known state stands",
				"error", err)
		}
		a.checkErr = err
		return a.detachedErr, err
	}
	if a.checkErr != nil {
		a.log.Info("the decap program's attachment can be checked again")
		a.checkErr = nil
	}
	if err != nil {
		// Gone, even with its index given to another device since.
		if l, lerr := a.currentInterface(); lerr == nil && l == nil {
			return a.goneError(), nil
		}
	}
	switch {
	case err != nil && a.detachedErr == nil:
		a.detachments++
		a.log.Error("the decap program no longer runs on its interface, though the agent runs: encapsulated packets are not decapsulated; "+
			"it is not attached again behind the operator's back: restart the agent to attach it again",
			"error", err)
	case err == nil && a.detachedErr != nil:
		a.log.Info("the decap program runs on its interface again")
	}
	a.detachedErr = err
	return err, nil
}

// checkLinkPin pins the decap program's link again if someone removed its
// pin while the agent runs (see datapath.Decap.RestoreLinkPin), logging
// each restore, and a pin it cannot restore once (until that changes). A
// SIGTERM stop does not need the pin; a kill, an in-place upgrade and
// crash recovery do. It returns the check's failure (the last one found
// when the link could not be read).
func (a *Agent) checkLinkPin() error {
	a.linkMu.Lock()
	defer a.linkMu.Unlock()
	restored, err := a.decap.RestoreLinkPin()
	if errors.Is(err, datapath.ErrAttachCheckFailed) {
		// A link that could not be read says nothing of the pin: the
		// last state found stands. checkDetached meets the same
		// failure and logs and shows it.
		return a.linkPinErr
	}
	if restored {
		a.linkRestores++
		a.log.Warn("the decap program's link pin was removed while the agent ran (rm, or a clean-up of bpffs): pinned again; "+
			"without it a kill or an in-place upgrade of the agent would have detached the decap program", "pin_dir", a.pinDir)
	}
	switch {
	case err != nil && (a.linkPinErr == nil || a.linkPinErr.Error() != err.Error()):
		a.log.Error("the decap program's link is not pinned: a kill or an in-place upgrade of the agent detaches the decap program, and the backend stops decapsulating (a SIGTERM stop is not affected)",
			"error", err)
	case err == nil && a.linkPinErr != nil:
		a.log.Info("the decap program's link is pinned again", "pin_dir", a.pinDir)
	}
	a.linkPinErr = err
	return err
}

// checkMapPins pins again the decap program's maps whose pins someone
// removed while the agent runs (see datapath.Decap.RestoreMapPins), on the
// watcher's rounds and at each status, as checkLinkPin does the link. The
// running program does not need the pins; the next run does: it finds the
// maps by them, and one it does not find it creates afresh (the counters
// it takes back through the link pin, if that is there, logging a
// half-done upgrade; without it they start at 0). It logs each restore, and a pin it cannot restore once
// (until that changes), and returns the check's failure (the last one
// found when the maps could not be read).
func (a *Agent) checkMapPins() error {
	a.linkMu.Lock()
	defer a.linkMu.Unlock()
	restored, err := a.decap.RestoreMapPins()
	if len(restored) > 0 {
		a.mapRestores += uint64(len(restored))
		a.log.Warn("pins of the decap program's maps were removed while the agent ran (rm, or a clean-up of bpffs): pinned again; "+
			"without them the next run of the agent would have created them afresh, finding the counters only through the link pin", "pin_dir", a.pinDir, "maps", fmt.Sprint(restored))
	}
	if errors.Is(err, datapath.ErrMapPinCheckFailed) {
		// Maps whose info could not be read say nothing of their pins:
		// the last state found stands. checkDetached meets the same
		// refusal and logs and shows it.
		return a.mapPinErr
	}
	switch {
	case err != nil && (a.mapPinErr == nil || a.mapPinErr.Error() != err.Error()):
		a.log.Error("the decap program's maps are not all pinned: the next run of the agent creates the missing ones afresh (the counters it finds only through the link pin)", "error", err)
	case err == nil && a.mapPinErr != nil:
		a.log.Info("the decap program's maps are pinned again", "pin_dir", a.pinDir)
	}
	a.mapPinErr = err
	return err
}

// PinDir returns the directory of the decap program's pins.
func (a *Agent) PinDir() string { return a.pinDir }

// StatePath returns the file in which the agent records its host changes.
func (a *Agent) StatePath() string { return a.statePath }

// VIPs returns the configured VIPs, which the agent keeps on lo while it
// runs.
func (a *Agent) VIPs() []netip.Addr { return slices.Clone(a.vips) }

// setEncap makes addrs the decap program's address set.
func (a *Agent) setEncap(addrs []netip.Addr) error {
	if err := a.decap.SetAddrs(addrs); err != nil {
		if errors.Is(err, datapath.ErrTooManyDecapAddrs) && a.encapFixed == nil {
			// The set in force stays: SetAddrs refused it whole.
			return fmt.Errorf("set encap addresses of %s to its addresses: %w; list those the balancers send to in encap_addresses",
				a.iface, err)
		}
		return fmt.Errorf("set encap addresses of %s: %w", a.iface, err)
	}
	a.encapMu.Lock()
	a.encap = slices.Clone(addrs)
	a.encapMu.Unlock()
	return nil
}

func unmapAll(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = a.Unmap()
	}
	return out
}
