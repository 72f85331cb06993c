package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// readOnly returns a handle of m that the kernel refuses every write
// through (EPERM), as a map opened read-only is: swapped in for one of the
// balancer's handles, it makes that step of a change fail for real.
func readOnly(tb testing.TB, m *ebpf.Map) *ebpf.Map {
	return reopen(tb, m, ebpf.LoadPinOptions{ReadOnly: true})
}

// writeOnly is readOnly's counterpart: lookups through it fail (EPERM).
func writeOnly(tb testing.TB, m *ebpf.Map) *ebpf.Map {
	return reopen(tb, m, ebpf.LoadPinOptions{WriteOnly: true})
}

// reopen opens m again through a pin, with opts' access; the handle is
// closed at the test's end.
func reopen(tb testing.TB, m *ebpf.Map, opts ebpf.LoadPinOptions) *ebpf.Map {
	tb.Helper()
	c, err := m.Clone()
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	path := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-reopen-test-%d", time.Now().UnixNano()))
	if err := c.Pin(path); err != nil {
		tb.Fatal(err)
	}
	defer os.Remove(path)
	h, err := ebpf.LoadPinnedMap(path, &opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

// TestDeleteVIPRetryEndsTheEpoch makes the epoch move of a DeleteVIP fail
// after the VIP index has dropped the VIP (the record's write, or the
// copy's that packets read) and retries: the retry must end the epoch, so
// that the VIP's established flows stop being forwarded by their entries.
// Before, the retry found no VIP and returned nil with the epoch live: the
// deleted VIP's flows went on to its backends, listed by Flows.
func TestDeleteVIPRetryEndsTheEpoch(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    func(b *Balancer) **ebpf.Map
	}{
		{"record", func(b *Balancer) **ebpf.Map { return &b.objs.VipEpochs }},
		{"copy", func(b *Balancer) **ebpf.Map { return &b.data.VipEpochTable }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, Options{})
			s := syn4(43000)
			w.open(t, vipTCP4, s)

			h := tc.m(w.b)
			saved := *h
			*h = readOnly(t, saved)
			err := w.b.DeleteVIP(vipTCP4.key)
			*h = saved
			if !errors.Is(err, unix.EPERM) {
				t.Fatalf("DeleteVIP with the epoch %s read-only: %v, want EPERM", tc.name, err)
			}

			if err := w.b.DeleteVIP(vipTCP4.key); err != nil {
				t.Fatalf("retried DeleteVIP: %v", err)
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
				t.Errorf("after the retry: epoch record %d, copy %d; want one even value", rec, et[vipTCP4.num])
			}
			var n uint32
			a := toAddr(vip4)
			if err := w.b.objs.VipAddrs.Lookup(&a, &n); err != nil || n != 1 {
				t.Errorf("VIPs on %s after the retry: %d (%v), want 1 (its UDP VIP)", vip4, n, err)
			}
			if inFlows, found, _ := w.listed(t, flowOf(s)); inFlows || found {
				t.Errorf("deleted VIP's flow: in Flows %v, found %v; want neither", inFlows, found)
			}
			in, _ := build(t, ackOf(s))
			if act, _ := w.run(t, in); act == xdpTX {
				t.Error("the deleted VIP's established flow is still forwarded by its entry")
			}
		})
	}
}

// TestLoadEndsAnOrphanEpoch: as TestDeleteVIPRetryEndsTheEpoch, but the
// process whose DeleteVIP failed after taking the VIP out (its epoch record
// not moved on) does not retry it: a new Balancer loaded over the pins (a
// restart) must end the epoch the failed call left live. Before, only a
// retry in the same process did: after a restart the deleted VIP's flows
// went on to its backends by their entries. (A failed write of the copy alone
// needs no test here: the load rebuilds the copies from the records.)
func TestLoadEndsAnOrphanEpoch(t *testing.T) {
	requireRoot(t)
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-orphan-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { os.RemoveAll(pin) })
	w := newWorld(t, Options{PinDir: pin})
	s := syn4(43100)
	w.open(t, vipTCP4, s)

	saved := w.b.objs.VipEpochs
	w.b.objs.VipEpochs = readOnly(t, saved)
	err := w.b.DeleteVIP(vipTCP4.key)
	w.b.objs.VipEpochs = saved
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("DeleteVIP with the epoch record read-only: %v, want EPERM", err)
	}
	w.b.Close()

	w2 := w.reload(t, pin)
	var rec uint32
	if err := w2.b.objs.VipEpochs.Lookup(vipTCP4.num, &rec); err != nil {
		t.Fatal(err)
	}
	et, err := w2.b.epochs()
	if err != nil {
		t.Fatal(err)
	}
	if rec%2 != 0 || et[vipTCP4.num] != rec {
		t.Errorf("after the restart: epoch record %d, copy %d; want one even value", rec, et[vipTCP4.num])
	}
	if inFlows, found, _ := w2.listed(t, flowOf(s)); inFlows || found {
		t.Errorf("deleted VIP's flow after the restart: in Flows %v, found %v; want neither", inFlows, found)
	}
	in, _ := build(t, ackOf(s))
	if act, _ := w2.run(t, in); act == xdpTX {
		t.Error("after the restart the deleted VIP's established flow is still forwarded by its entry")
	}
}
