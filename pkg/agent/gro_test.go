package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/switchyard-lb/switchyard/pkg/api"
	"github.com/switchyard-lb/switchyard/pkg/config"
	"github.com/switchyard-lb/switchyard/pkg/datapath"
	"github.com/switchyard-lb/switchyard/pkg/topology"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func groOf(t *testing.T, topo *topology.Topology, node string) bool {
	t.Helper()
	on, err := topo.GRO(node, topology.EthName)
	if err != nil {
		t.Fatal(err)
	}
	return on
}

// startInMode starts an agent for backend 1 in mode, GRO on at first as a
// NIC's driver has it.
func startInMode(t *testing.T, topo *topology.Topology, mode datapath.AttachMode) *Agent {
	t.Helper()
	be := topo.Backend(1)
	a := newAgent(t, testConfig(topo))
	a.mode = mode
	if err := topo.Do(be, a.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return a
}

// TestGenericModeGRO: in generic (skb) mode the decap program runs after
// GRO, and stripped the outer header of merged super-packets whose
// segmentation metadata then no longer fit. The agent turns GRO off for
// generic mode, records it, shows it in the status, and turns it on again
// when it stops; native mode leaves it alone.
func TestGenericModeGRO(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode    datapath.AttachMode
		running bool // GRO while the agent runs
	}{
		{datapath.AttachGeneric, false},
		{datapath.AttachNative, true},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			t.Parallel()
			topo := newTopology(t)
			be := topo.Backend(1)
			if err := topo.SetGRO(be, topology.EthName, true); err != nil {
				t.Fatal(err)
			}
			a := startInMode(t, topo, tc.mode)
			if on := groOf(t, topo, be); on != tc.running {
				t.Errorf("GRO of eth0 is %t while the agent runs in %s mode, want %t", on, tc.mode, tc.running)
			}
			data, err := os.ReadFile(a.StatePath())
			if err != nil {
				t.Fatal(err)
			}
			if recorded := strings.Contains(string(data), `"gro"`); recorded == tc.running {
				t.Errorf("state file records GRO: %t, want %t:\n%s", recorded, !tc.running, data)
			}
			st, err := a.AgentStatus(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var want *api.AgentGRO
			if !tc.running {
				want = &api.AgentGRO{Interface: topology.EthName, WasOn: true, NowOn: false}
			}
			if !reflect.DeepEqual(st.GRO, want) {
				t.Errorf("status GRO %+v, want %+v", st.GRO, want)
			}
			if !tc.running {
				// Turned on behind the agent's back: the status reads it.
				if err := topo.SetGRO(be, topology.EthName, true); err != nil {
					t.Fatal(err)
				}
				if st, err = a.AgentStatus(context.Background()); err != nil {
					t.Fatal(err)
				}
				if want.NowOn = true; !reflect.DeepEqual(st.GRO, want) {
					t.Errorf("status GRO %+v after GRO was turned on again, want %+v", st.GRO, want)
				}
			}
			if err := a.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if !groOf(t, topo, be) {
				t.Errorf("GRO of eth0 is off after the agent (%s mode) stopped, want on as it was", tc.mode)
			}
			requireNoState(t, a)
		})
	}
}

// TestCrashedGenericRunGRO: a generic-mode agent that died leaves GRO off
// and recorded; `remove --agent` turns it on again, and so does the next
// run's stop, which keeps it off meanwhile. GRO the admin turned on again
// since stays as it is.
func TestCrashedGenericRunGRO(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	c := testConfig(topo)
	if err := topo.SetGRO(be, topology.EthName, true); err != nil {
		t.Fatal(err)
	}

	crash(t, startInMode(t, topo, datapath.AttachGeneric))
	if groOf(t, topo, be) {
		t.Fatal("GRO is on after the generic-mode agent crashed: it was never turned off")
	}
	r := newAgent(t, c)
	if err := topo.Do(be, r.Remove); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if !groOf(t, topo, be) {
		t.Error("GRO is off after `remove --agent` of a crashed generic-mode agent, want on as before it")
	}

	crash(t, startInMode(t, topo, datapath.AttachGeneric))
	a := startInMode(t, topo, datapath.AttachGeneric)
	if groOf(t, topo, be) {
		t.Error("GRO is on while a generic-mode agent runs after a crashed one")
	}
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !groOf(t, topo, be) {
		t.Error("GRO is off after the run that took over a crashed one stopped, want on as before both")
	}

	// A native run after a crashed generic one turns GRO on at once.
	crash(t, startInMode(t, topo, datapath.AttachGeneric))
	n := startInMode(t, topo, datapath.AttachNative)
	if !groOf(t, topo, be) {
		t.Error("GRO is off while a native-mode agent runs after a crashed generic one, want on")
	}
	if err := n.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// TestGROOnOnlyOnceDetached: at stop GRO comes back on only once the
// generic-mode decap program is detached; turned on before, it let merged
// super-packets reach the program meanwhile. The kernel announces every
// feature change of a device with an RTM_NEWLINK (IFLA_EVENT_FEATURES)
// that carries the device's XDP attachment at that moment: the one of
// GRO's return must show no program.
func TestGROOnOnlyOnceDetached(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	if err := topo.SetGRO(be, topology.EthName, true); err != nil {
		t.Fatal(err)
	}
	eth, err := topo.Link(be, topology.EthName)
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	if err := topo.Do(be, func() (err error) { fd, err = linkEvents(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })

	a := startInMode(t, topo, datapath.AttachGeneric)
	// GRO goes off once the program is attached: the events can tell.
	if started := featureChanges(t, fd, eth.Attrs().Index); !slices.Contains(started, true) {
		t.Fatalf("feature changes of eth0 at start %v (true: with a program attached), want GRO's going off with the program attached", started)
	}
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	stopped := featureChanges(t, fd, eth.Attrs().Index)
	if len(stopped) == 0 {
		t.Fatal("no feature change of eth0 at stop: GRO was not turned on again")
	}
	if slices.Contains(stopped, true) {
		t.Errorf("feature changes of eth0 at stop %v (true: with a program attached): GRO came back on while the generic-mode decap program was attached", stopped)
	}
}

// linkEvents returns a non-blocking netlink socket, of the calling
// thread's namespace, that receives the link events.
func linkEvents() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// featureChanges reads the link events queued on fd and returns, for each
// feature change of the device ifindex, whether an XDP program was
// attached to it. The kernel queues an event before the change returns to
// whoever made it, so those of a finished call are all there.
func featureChanges(t *testing.T, fd, ifindex int) []bool {
	t.Helper()
	var attached []bool
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) {
			return attached
		}
		if err != nil {
			t.Fatalf("read link events: %v", err) // ENOBUFS: some were lost
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.RTM_NEWLINK || len(m.Data) < unix.SizeofIfInfomsg {
				continue
			}
			info := (*unix.IfInfomsg)(unsafe.Pointer(&m.Data[0]))
			if int(info.Index) != ifindex {
				continue
			}
			attrs, err := syscall.ParseNetlinkRouteAttr(&m)
			if err != nil {
				t.Fatal(err)
			}
			features, xdp := false, false
			for _, a := range attrs {
				switch a.Attr.Type & nlaTypeMask {
				case unix.IFLA_EVENT:
					features = len(a.Value) >= 4 && binary.NativeEndian.Uint32(a.Value) == unix.IFLA_EVENT_FEATURES
				case unix.IFLA_XDP:
					xdp = xdpAttached(a.Value)
				}
			}
			if features {
				attached = append(attached, xdp)
			}
		}
	}
}

// nlaTypeMask is NLA_TYPE_MASK of <linux/netlink.h>.
const nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)

// xdpAttached reports whether the nested IFLA_XDP attributes b say that a
// program is attached.
func xdpAttached(b []byte) bool {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask
		if l < unix.SizeofRtAttr || l > len(b) {
			return false
		}
		if typ == unix.IFLA_XDP_ATTACHED && l > unix.SizeofRtAttr {
			return b[unix.SizeofRtAttr] != 0 // XDP_ATTACHED_NONE
		}
		b = b[min((l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1), len(b)):]
	}
	return false
}

// TestGROStaysOffWhileAttached: a decap program Stop cannot detach (its
// pin directory holds what is not Switchyard's, which it refuses to
// remove) keeps GRO off and recorded, and `remove --agent` turns it on
// again once it has detached the program.
func TestGROStaysOffWhileAttached(t *testing.T) {
	t.Parallel()
	topo := newTopology(t)
	be := topo.Backend(1)
	if err := topo.SetGRO(be, topology.EthName, true); err != nil {
		t.Fatal(err)
	}
	c := testConfig(topo)
	a := startInMode(t, topo, datapath.AttachGeneric)
	stray := filepath.Join(c.PinDir, "not-switchyards")
	if err := os.Mkdir(stray, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(stray) })
	if err := a.Stop(); !errors.Is(err, datapath.ErrNotPinDir) {
		t.Fatalf("Stop with a stray directory among the pins: %v, want ErrNotPinDir", err)
	}
	if eth, err := topo.Link(be, topology.EthName); err != nil {
		t.Fatal(err)
	} else if x := eth.Attrs().Xdp; x == nil || !x.Attached {
		t.Fatalf("decap program detached despite the failed removal of its pins: %+v", x)
	}
	if groOf(t, topo, be) {
		t.Error("GRO is on while the generic-mode decap program Stop could not detach is attached")
	}
	data, err := os.ReadFile(a.StatePath())
	if err != nil || !strings.Contains(string(data), `"gro"`) {
		t.Errorf("state file after the failed detach: %v:\n%s, want it to record gro", err, data)
	}

	if err := os.Remove(stray); err != nil {
		t.Fatal(err)
	}
	r := newAgent(t, c)
	if err := topo.Do(be, r.Remove); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if eth, err := topo.Link(be, topology.EthName); err != nil {
		t.Fatal(err)
	} else if x := eth.Attrs().Xdp; x != nil && x.Attached {
		t.Errorf("decap program still attached after `remove --agent`: %+v", x)
	}
	if !groOf(t, topo, be) {
		t.Error("GRO is off after `remove --agent` detached the program, want on as before the agent")
	}
	requireNoState(t, r)
}

// newEth creates a veth eth0 (peer peer) in node, both up, as an eth0
// created again after the one a killed agent ran on was deleted or
// renamed.
func newEth(t *testing.T, topo *topology.Topology, node, peer string) {
	t.Helper()
	err := topo.Netlink(node, func(h *netlink.Handle) error {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: topology.EthName}, PeerName: peer}); err != nil {
			return err
		}
		for _, name := range []string{topology.EthName, peer} {
			l, err := h.LinkByName(name)
			if err != nil {
				return err
			}
			if err := h.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCrashedGenericRunGROIndexReused: a killed generic-mode agent's GRO
// record names its interface and that interface's index, but `remove
// --agent` and the next run went by the index alone: with the interface
// deleted and its index given to another device (`ip link add ... index
// N`, or one moved into the namespace, which keeps its index), they
// turned GRO on on that device, whose GRO the agent never touched. The
// record is now dropped as that of an interface gone, with the line the
// balancer prints. A renamed interface, which the killed run's pinned
// link still drives, is followed as before.
func TestCrashedGenericRunGROIndexReused(t *testing.T) {
	t.Parallel()
	const other = "syci0"
	indexReusedTest{
		crashed: func(t *testing.T) (*topology.Topology, string, config.AgentConfig) {
			topo := newTopology(t)
			be := topo.Backend(1)
			if err := topo.SetGRO(be, topology.EthName, true); err != nil {
				t.Fatal(err)
			}
			crash(t, startInMode(t, topo, datapath.AttachGeneric))
			if groOf(t, topo, be) {
				t.Fatal("GRO is on after the generic-mode agent crashed: it was never turned off")
			}
			return topo, be, testConfig(topo)
		},
		mode: datapath.AttachGeneric,
		reuse: func(t *testing.T, topo *topology.Topology, be string) int {
			return topo.ReuseEthIndex(t, be, other, "syci1")
		},
		requireLeft: func(t *testing.T, topo *topology.Topology, be, when string) {
			t.Helper()
			if on, err := topo.GRO(be, other); err != nil || on {
				t.Errorf("GRO of %s is %t (%v) %s: it took the index of the deleted eth0 the record names, and its GRO was never the agent's", other, on, err, when)
			}
		},
		requireGone: func(t *testing.T, logs *logBuffer, index int) {
			t.Helper()
			want := fmt.Sprintf("interface eth0 (index %d), on which the agent turned generic receive offload (GRO) off, is gone: its GRO record in ", index)
			if s := logs.String(); !strings.Contains(s, want) || !strings.Contains(s, fmt.Sprintf("index %d is %s now, left as it is", index, other)) {
				t.Errorf("the agent did not say that the recorded interface is gone, and that %s is left as it is; it logged:\n%s", other, s)
			}
		},
		requireRestored: func(t *testing.T, topo *topology.Topology, be, renamed string) {
			t.Helper()
			if on, err := topo.GRO(be, renamed); err != nil || !on {
				t.Errorf("GRO of %s (eth0 renamed) is %t (%v) after `remove --agent`, want on as before the agent", renamed, on, err)
			}
		},
	}.run(t)
}

// indexReusedTest is a test of what a killed agent recorded of a setting
// of its interface (sysctls, GRO) by the interface's name and index, once
// eth0 is deleted and its index given to another device: neither `remove
// --agent` nor the next run may touch that device's setting, which was
// never the agent's, and both say that the recorded interface is gone.
// An eth0 renamed since the crash, which the killed run's pinned link
// still drives, is followed: `remove --agent` restores its setting.
type indexReusedTest struct {
	// crashed builds a topology in whose node be an agent of c changed
	// the setting of eth0, then crashed.
	crashed func(t *testing.T) (topo *topology.Topology, be string, c config.AgentConfig)
	// mode is the attach mode of the next run.
	mode datapath.AttachMode
	// reuse deletes eth0, gives its index to another device whose
	// setting is the admin's, and returns the index.
	reuse func(t *testing.T, topo *topology.Topology, be string) int
	// requireLeft fails t unless that device's setting is still the
	// admin's; when says at which point of the test.
	requireLeft func(t *testing.T, topo *topology.Topology, be, when string)
	// requireGone fails t unless logs say that the interface of index is
	// gone and the device now there is left as it is.
	requireGone func(t *testing.T, logs *logBuffer, index int)
	// requireRestored fails t unless renamed, eth0 renamed, has its
	// setting back as before the agent.
	requireRestored func(t *testing.T, topo *topology.Topology, be, renamed string)
}

func (tc indexReusedTest) run(t *testing.T) {
	t.Run("remove", func(t *testing.T) {
		t.Parallel()
		topo, be, c := tc.crashed(t)
		index := tc.reuse(t, topo, be)
		var logs logBuffer
		r := newAgentLogs(t, c, &logs)
		if err := topo.Do(be, r.Remove); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		tc.requireLeft(t, topo, be, "after `remove --agent`")
		tc.requireGone(t, &logs, index)
		requireNoState(t, r)
	})

	t.Run("restart", func(t *testing.T) {
		t.Parallel()
		topo, be, c := tc.crashed(t)
		index := tc.reuse(t, topo, be)
		// eth0 is back, under a new index, for the next run.
		newEth(t, topo, be, "syci2")
		var logs logBuffer
		a := newAgentLogs(t, c, &logs)
		a.mode = tc.mode
		if err := topo.Do(be, a.Start); err != nil {
			t.Fatalf("Start: %v", err)
		}
		tc.requireLeft(t, topo, be, "while the next run runs")
		if err := a.Stop(); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		tc.requireLeft(t, topo, be, "after the next run stopped")
		tc.requireGone(t, &logs, index)
		requireNoState(t, a)
	})

	t.Run("renamed", func(t *testing.T) {
		t.Parallel()
		const renamed = "aGren0"
		topo, be, c := tc.crashed(t)
		renameEth(t, topo, be, renamed)
		r := newAgent(t, c)
		if err := topo.Do(be, r.Remove); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		tc.requireRestored(t, topo, be, renamed)
		requireNoState(t, r)
	})
}

// TestCrashedGenericRunGRORenamedOnceDetached: after a killed
// generic-mode agent's interface was renamed, `remove --agent` with the
// old configuration (whose interface no longer exists) and a start on an
// eth0 created again took the recorded interface for another one, and
// turned its GRO on at once, while the killed run's generic-mode program
// was still attached to it: merged packets reached it until the remove's
// teardown (or the start's attach) took it off. GRO now comes back only
// once the program is off the interface, as at a stop; the feature change
// events of the renamed interface tell (see TestGROOnOnlyOnceDetached).
func TestCrashedGenericRunGRORenamedOnceDetached(t *testing.T) {
	t.Parallel()
	const renamed = "aGren0"
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, topo *topology.Topology, be string, c config.AgentConfig)
	}{
		{"remove", func(t *testing.T, topo *topology.Topology, be string, c config.AgentConfig) {
			r := newAgent(t, c)
			if err := topo.Do(be, r.Remove); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			requireNoState(t, r)
		}},
		{"restart", func(t *testing.T, topo *topology.Topology, be string, c config.AgentConfig) {
			newEth(t, topo, be, "syci2")
			a := newAgent(t, c)
			a.mode = datapath.AttachGeneric
			if err := topo.Do(be, a.Start); err != nil {
				t.Fatalf("Start: %v", err)
			}
			if err := a.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			requireNoState(t, a)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topo := newTopology(t)
			be := topo.Backend(1)
			if err := topo.SetGRO(be, topology.EthName, true); err != nil {
				t.Fatal(err)
			}
			eth, err := topo.Link(be, topology.EthName)
			if err != nil {
				t.Fatal(err)
			}
			crash(t, startInMode(t, topo, datapath.AttachGeneric))
			renameEth(t, topo, be, renamed)
			var fd int
			if err := topo.Do(be, func() (err error) { fd, err = linkEvents(); return err }); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(fd) })

			tc.run(t, topo, be, testConfig(topo))
			changes := featureChanges(t, fd, eth.Attrs().Index)
			if on, err := topo.GRO(be, renamed); err != nil || !on {
				t.Errorf("GRO of %s (eth0 renamed) is %t (%v), want on as before the agent", renamed, on, err)
			}
			if len(changes) == 0 {
				t.Fatalf("no feature change of %s: GRO was not turned on again", renamed)
			}
			if slices.Contains(changes, true) {
				t.Errorf("feature changes of %s %v (true: with a program attached): GRO came back on while the killed run's generic-mode decap program was attached", renamed, changes)
			}
		})
	}
}

// TestGROIndexReusedWhileRunning: a generic-mode agent's stop, and its
// status, found the interface whose GRO it turned off by its index alone.
// With the interface deleted while the agent ran and its index given to
// another device (`ip link add ... index N`, or one moved into the
// namespace), the stop turned GRO on on that device, whose GRO was never
// the agent's, and the status showed that device's GRO as the agent's.
// Now the device is left as it is, with the line the balancer prints for
// a record of an interface gone, and the status shows eth0's GRO gone
// (see TestStatusInterfaceGone). An interface renamed while the agent runs, which its pinned link
// still drives, is followed as before, though GRO comes back only once
// the pins are gone.
func TestGROIndexReusedWhileRunning(t *testing.T) {
	t.Parallel()
	const other, renamed = "sygri0", "sygrn0"
	for _, tc := range []struct {
		name   string
		status bool // a status call before the stop
		rename bool // eth0 renamed, not deleted with its index reused
	}{
		{"stop", false, false},
		{"status, then stop", true, false},
		{"renamed", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topo := newTopology(t)
			be := topo.Backend(1)
			if err := topo.SetGRO(be, topology.EthName, true); err != nil {
				t.Fatal(err)
			}
			var logs logBuffer
			a := newAgentLogs(t, testConfig(topo), &logs)
			a.mode = datapath.AttachGeneric
			if err := topo.Do(be, a.Start); err != nil {
				t.Fatalf("Start: %v", err)
			}
			if groOf(t, topo, be) {
				t.Fatal("GRO of eth0 is on while the generic-mode agent runs")
			}
			dev, index := other, 0
			if tc.rename {
				dev = renamed
				renameEth(t, topo, be, renamed)
			} else {
				index = topo.ReuseEthIndex(t, be, other, "sygri1")
			}
			if tc.status {
				st, err := a.AgentStatus(context.Background())
				switch {
				case err != nil:
					t.Errorf("AgentStatus: %v", err)
				case tc.rename:
					if want := (&api.AgentGRO{Interface: renamed, WasOn: true}); !reflect.DeepEqual(st.GRO, want) {
						t.Errorf("status GRO %+v after the rename, want %+v", st.GRO, want)
					}
				default:
					if want := (&api.AgentGRO{Interface: topology.EthName, WasOn: true, Gone: true}); !reflect.DeepEqual(st.GRO, want) {
						t.Errorf("status GRO %+v after the reuse, want %+v: %s took the index of the deleted eth0, and its GRO was never the agent's", st.GRO, want, other)
					}
				}
			}
			if err := a.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			on, err := topo.GRO(be, dev)
			switch {
			case err != nil:
				t.Fatal(err)
			case tc.rename && !on:
				t.Errorf("GRO of %s (eth0 renamed while the agent ran) is off after Stop, want on as before the agent", renamed)
			case !tc.rename && on:
				t.Errorf("GRO of %s is on after Stop: it took the index of the deleted eth0, and its GRO was never the agent's", other)
			}
			if !tc.rename {
				want := fmt.Sprintf("interface eth0 (index %d), on which the agent turned generic receive offload (GRO) off, is gone: its GRO record in ", index)
				if s := logs.String(); !strings.Contains(s, want) || !strings.Contains(s, fmt.Sprintf("index %d is %s now, left as it is", index, other)) {
					t.Errorf("the agent did not say that eth0 is gone, and that %s is left as it is; it logged:\n%s", other, s)
				}
			}
			requireNoState(t, a)
		})
	}
}
