package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// swdBackends is how many backends the batch tests move at once.
const swdBackends = 64

// swdBackendWorld is a world whose TCP VIP on vip4 is served by
// swdBackends backends (ids from swdFirstID), each of which has an IPv4
// and an IPv6 address to move between; it starts on the IPv4 ones. flows
// are SYNs to the VIP, each with the id Maglev gives it.
type swdBackendWorld struct {
	*world
	v4, v6 map[uint32]netip.Addr
	flows  []swdFlow
}

type swdFlow struct {
	in []byte
	id uint32
}

const swdFirstID = 100

func newSWDBackendWorld(t *testing.T) *swdBackendWorld {
	t.Helper()
	w := &swdBackendWorld{world: newWorld(t, Options{}), v4: map[uint32]netip.Addr{}, v6: map[uint32]netip.Addr{}}
	table := make([]uint32, 1021)
	for i := range table {
		table[i] = swdFirstID + uint32(i%swdBackends)
	}
	for n := range uint32(swdBackends) {
		id := swdFirstID + n
		w.v4[id] = netip.AddrFrom4([4]byte{10, 4, byte(n), 2})
		w.v6[id] = netip.AddrFrom16([16]byte{0xfd, 0, 0, 4, 0, byte(n), 14: 0, 15: 2})
		if err := w.b.SetBackend(id, w.v4[id]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.b.PublishTable(vipTCP4.key, table); err != nil {
		t.Fatal(err)
	}
	for i := range 4 * swdBackends {
		s := syn4(uint16(46000 + i))
		in, _ := build(t, s)
		w.flows = append(w.flows, swdFlow{in, table[MaglevSlot(FlowHash(flowOf(s), false), len(table))]})
	}
	return w
}

// setAll moves every backend to its address in addrs, in one batch.
func (w *swdBackendWorld) setAll(addrs map[uint32]netip.Addr) error {
	return w.b.Batch(func() error {
		for id, a := range addrs {
			if err := w.b.SetBackend(id, a); err != nil {
				return err
			}
		}
		return nil
	})
}

// check says what is wrong with out, f's packet as the program sent it
// (act): "" if it went whole to one of f's backend's addresses, or to
// want if want is valid; a drop (no valid backend) only if dropOK.
func (w *swdBackendWorld) check(f swdFlow, act uint32, out []byte, want netip.Addr, dropOK bool) string {
	if act == xdpDrop && dropOK {
		return ""
	}
	if act != xdpTX {
		return fmt.Sprintf("backend %d: %s, want TX", f.id, actionNames[act])
	}
	var got netip.Addr
	switch binary.BigEndian.Uint16(out[12:]) {
	case 0x0800:
		got, _ = netip.AddrFromSlice(out[30:34])
		if got != w.v4[f.id] {
			return fmt.Sprintf("backend %d: IPv4 outer header to %s, want %s", f.id, got, w.v4[f.id])
		}
	case 0x86dd:
		got, _ = netip.AddrFromSlice(out[38:54])
		if want := w.v6[f.id].As16(); !bytes.Equal(out[38:54], want[:]) {
			return fmt.Sprintf("backend %d: IPv6 outer header to %s, want %s", f.id, got, w.v6[f.id])
		}
	default:
		return fmt.Sprintf("backend %d: EtherType %#x, not encapsulated", f.id, binary.BigEndian.Uint16(out[12:]))
	}
	if want.IsValid() && got != want {
		return fmt.Sprintf("backend %d: sent to %s, want %s", f.id, got, want)
	}
	return ""
}

// expectAll sends every flow's packet: each must go to its backend's
// address in addrs.
func (w *swdBackendWorld) expectAll(t *testing.T, addrs map[uint32]netip.Addr) {
	t.Helper()
	for _, f := range w.flows {
		act, out := w.run(t, f.in)
		if msg := w.check(f, act, out, addrs[f.id], false); msg != "" {
			t.Fatal(msg)
		}
	}
}

// TestBatchedBackendMovesAreNeverTorn sends packets on one CPU, to all of
// swdBackends backends, while another moves every backend between its
// IPv4 and its IPv6 address, all of them in each batch: every packet must
// go out whole to one address of its backend, in that address's family,
// and after the last batch every packet to the address it set. Each batch
// waits for packets in flight twice (once after clearing the validity of
// every backend that moves, once after writing their addresses), where
// one backend at a time waited twice per backend.
func TestBatchedBackendMovesAreNeverTorn(t *testing.T) {
	w := newSWDBackendWorld(t)
	var (
		stop      atomic.Bool
		wg        sync.WaitGroup
		torn      atomic.Value
		sent      atomic.Uint64
		runFailed atomic.Value
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		out := make([]byte, len(w.flows[0].in)+512)
		for i := 0; !stop.Load(); i++ {
			f := w.flows[i%len(w.flows)]
			opts := &ebpf.RunOptions{Data: f.in, DataOut: out}
			act, err := w.b.objs.XdpBalancer.Run(opts)
			if err != nil {
				runFailed.Store(err)
				return
			}
			// Dropped between addresses: no valid backend.
			if msg := w.check(f, act, opts.DataOut, netip.Addr{}, true); msg != "" {
				torn.Store(msg)
				return
			}
			if act == xdpTX {
				sent.Add(1)
			}
		}
	}()
	deadline := time.Now().Add(3 * time.Second)
	batches := 0
	var failed error
	for time.Now().Before(deadline) && torn.Load() == nil && runFailed.Load() == nil && failed == nil {
		for _, addrs := range []map[uint32]netip.Addr{w.v6, w.v4} {
			waits := w.b.graceWaits
			if err := w.setAll(addrs); err != nil {
				failed = err
				break
			}
			if n := w.b.graceWaits - waits; n != 2 {
				failed = fmt.Errorf("a batch moving %d backends waited for packets %d times, want 2", swdBackends, n)
				break
			}
			batches++
		}
	}
	stop.Store(true)
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	if err := runFailed.Load(); err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	if msg := torn.Load(); msg != nil {
		t.Fatalf("a packet saw a torn backend entry after %d batches: %s", batches, msg)
	}
	if sent.Load() == 0 {
		t.Fatal("no packet was forwarded while the addresses changed")
	}
	w.expectAll(t, w.v4)
	t.Logf("%d batches of %d address changes, %d packets forwarded", batches, swdBackends, sent.Load())
}

// TestBackendWritesWaitOncePerPhase counts the waits for packets in flight
// of each kind of backend change, in a batch of swdBackends backends and
// one at a time (unchanged: twice per backend whose address moves).
func TestBackendWritesWaitOncePerPhase(t *testing.T) {
	w := newSWDBackendWorld(t)
	next := map[uint32]netip.Addr{} // slots no backend had: fresh
	for id := range w.v4 {
		next[id+swdBackends] = w.v4[id]
	}
	for _, step := range []struct {
		name  string
		batch bool
		do    func() error
		waits uint64
	}{
		{"new backends in fresh slots, one batch", true, func() error { return w.setAll(next) }, 0},
		{"every backend moves to IPv6, one batch", true, func() error { return w.setAll(w.v6) }, 2},
		{"the same addresses again", true, func() error { return w.setAll(w.v6) }, 0},
		{"every backend deleted, one batch", true, func() error {
			return w.b.Batch(func() error {
				for id := range w.v6 {
					if err := w.b.DeleteBackend(id); err != nil {
						return err
					}
				}
				return nil
			})
		}, 0},
		// Invalid, but not fresh: only the wait after the addresses.
		{"deleted backends back on IPv4, one batch", true, func() error { return w.setAll(w.v4) }, 1},
		{"four backends move to IPv6, one at a time", false, func() error {
			for id := uint32(swdFirstID); id < swdFirstID+4; id++ {
				if err := w.b.SetBackend(id, w.v6[id]); err != nil {
					return err
				}
			}
			return nil
		}, 8},
		{"a backend moved away and back in one batch", true, func() error {
			return w.b.Batch(func() error {
				if err := w.b.SetBackend(swdFirstID+10, w.v6[swdFirstID+10]); err != nil {
					return err
				}
				return w.b.SetBackend(swdFirstID+10, w.v4[swdFirstID+10])
			})
		}, 0},
	} {
		waits := w.b.graceWaits
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if n := w.b.graceWaits - waits; n != step.waits {
			t.Errorf("%s: waited for packets %d times, want %d", step.name, n, step.waits)
		}
	}
	want := map[uint32]netip.Addr{}
	for id := range w.v4 {
		want[id] = w.v4[id]
	}
	for id := uint32(swdFirstID); id < swdFirstID+4; id++ {
		want[id] = w.v6[id]
	}
	w.expectAll(t, want)
	got, err := w.b.Backends()
	if err != nil {
		t.Fatal(err)
	}
	for id, a := range next {
		if got[id].Addr != a {
			t.Errorf("backend %d: %s, want %s", id, got[id].Addr, a)
		}
	}
}

// TestFailedBackendBatchIsRetried makes the end of a batch that moves every
// backend to IPv6 fail, at its first write of backend_table or at its
// first wait for packets (after the validity was cleared): the batch must
// report it, packets must meanwhile go whole to the old address or none,
// and the next batch, with no backend change of its own, must finish the
// writes. Before, a failed SetBackend left its record ahead of the copy
// until the same SetBackend ran again, which the control loop does not
// do for a backend whose record it wrote.
func TestFailedBackendBatchIsRetried(t *testing.T) {
	for _, tc := range []struct {
		name      string
		m         func(b *Balancer) **ebpf.Map
		dropOK    bool   // the failure left the entries invalid
		retryWait uint64 // waits of the retry
	}{
		// The retry waits first: the failed batch may have stopped
		// between its phases.
		{"write", func(b *Balancer) **ebpf.Map { return &b.data.BackendTable }, false, 3},
		{"wait", func(b *Balancer) **ebpf.Map { return &b.grace }, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newSWDBackendWorld(t)
			if err := w.b.waitForPackets(); err != nil { // makes b.grace
				t.Fatal(err)
			}
			h := tc.m(w.b)
			saved := *h
			*h = readOnly(t, saved)
			err := w.setAll(w.v6)
			*h = saved
			if !errors.Is(err, unix.EPERM) {
				t.Fatalf("a batch with %s read-only: %v, want EPERM", tc.name, err)
			}
			got, err := w.b.Backends()
			if err != nil {
				t.Fatal(err)
			}
			for id, a := range w.v6 {
				if got[id].Addr != a {
					t.Fatalf("backend %d's record after the failed batch: %s, want %s", id, got[id].Addr, a)
				}
			}
			for _, f := range w.flows {
				act, out := w.run(t, f.in)
				if msg := w.check(f, act, out, w.v4[f.id], tc.dropOK); msg != "" {
					t.Fatalf("after the failed batch: %s", msg)
				}
			}

			waits := w.b.graceWaits
			if err := w.b.Batch(func() error { return nil }); err != nil {
				t.Fatalf("the next batch: %v", err)
			}
			if n := w.b.graceWaits - waits; n != tc.retryWait {
				t.Errorf("the next batch waited for packets %d times, want %d", n, tc.retryWait)
			}
			w.expectAll(t, w.v6)
			bt := new(backendTable)
			if err := w.b.data.BackendTable.Lookup(uint32(0), bt); err != nil {
				t.Fatal(err)
			}
			for id, a := range w.v6 {
				if fromAddr(bt[id].Addr) != a || bt[id].Flags != uint32(balancerBackendFlagsBACKEND_F_VALID|balancerBackendFlagsBACKEND_F_V6) {
					t.Errorf("backend_table[%d] after the retry: %s flags %#x, want %s valid IPv6", id, fromAddr(bt[id].Addr), bt[id].Flags, a)
				}
			}
		})
	}
}

// TestFailedEpochBatchHoldsTheIndex deletes a VIP in a batch whose write of
// vip_epoch_table fails: the batch must report it and keep the VIP index
// that serves the VIP (one that dropped it while the copy kept the epoch
// live would leave its established flows forwarded by their entries with
// no VIP), and the next batch must finish the deletion, the epoch ended
// in the record and the copy. Before, the index dropped the VIP, the
// copy's epoch stayed live and nothing but another DeleteVIP ended it.
func TestFailedEpochBatchHoldsTheIndex(t *testing.T) {
	w := newWorld(t, Options{})
	s := syn4(43200)
	w.open(t, vipTCP4, s)
	ack, _ := build(t, ackOf(s))
	syn, _ := build(t, syn4(43201))

	saved := w.b.data.VipEpochTable
	w.b.data.VipEpochTable = readOnly(t, saved)
	err := w.b.Batch(func() error { return w.b.DeleteVIP(vipTCP4.key) })
	w.b.data.VipEpochTable = saved
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("a batch deleting a VIP with vip_epoch_table read-only: %v, want EPERM", err)
	}
	if act, _ := w.run(t, ack); act != xdpTX {
		t.Errorf("after the failed batch, the VIP's established flow: %s, want TX (still served)", actionNames[act])
	}
	if act, _ := w.run(t, syn); act != xdpTX {
		t.Errorf("after the failed batch, a new flow to the VIP: %s, want TX (still in the index)", actionNames[act])
	}

	if err := w.b.Batch(func() error { return nil }); err != nil {
		t.Fatalf("the next batch: %v", err)
	}
	var rec uint32
	if err := w.b.objs.VipEpochs.Lookup(vipTCP4.num, &rec); err != nil {
		t.Fatal(err)
	}
	et, err := w.b.epochs()
	if err != nil {
		t.Fatal(err)
	}
	if rec%2 != 0 || et[vipTCP4.num] != rec {
		t.Errorf("after the next batch: epoch record %d, copy %d; want one even value", rec, et[vipTCP4.num])
	}
	if act, _ := w.run(t, ack); act == xdpTX {
		t.Error("the deleted VIP's established flow is still forwarded by its entry")
	}
	if act, _ := w.run(t, syn); act == xdpTX {
		t.Error("a new flow to the deleted VIP is still forwarded")
	}
}
