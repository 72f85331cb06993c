package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestBackendIDsFlowsDoNotFollowItAcrossARestart: the connection entries
// pinned to a backend id are its address's flows, and must not serve when
// the id gets another address, whatever restarts come in between. Before,
// a restart rebuilt backend_table from the records: the entry of a backend
// deleted before it was all zero, as if the id had never been used, and
// the id's next address emptied no entry (its flows went to the new
// machine); and a new address that the record had but the copy did not
// (a failed batch's held move, or a failed write, before the process
// ended) went in with the old address's entries in place.
func TestBackendIDsFlowsDoNotFollowItAcrossARestart(t *testing.T) {
	requireRoot(t)
	newAddr := netip.MustParseAddr("10.2.9.2")
	for _, tc := range []struct {
		name string
		// before the restart, with the flow pinned to id
		change func(t *testing.T, w *world, id uint32)
		// an earlier version pinned no backend_table (or rebuilt it)
		noCopy bool
		// SetBackend(id, newAddr) after the restart
		move bool
	}{
		{name: "deleted", move: true, change: func(t *testing.T, w *world, id uint32) {
			if err := w.b.DeleteBackend(id); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "deleted before an earlier version's restart", move: true, noCopy: true, change: func(t *testing.T, w *world, id uint32) {
			if err := w.b.DeleteBackend(id); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "moved by a failed batch", change: func(t *testing.T, w *world, id uint32) {
			failed := errors.New("injected failure")
			err := w.b.Batch(func() error {
				if err := w.b.SetBackend(id, newAddr); err != nil {
					return err
				}
				return failed
			})
			if !errors.Is(err, failed) {
				t.Fatalf("failing batch: %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-berestart-test-%d", time.Now().UnixNano()))
			t.Cleanup(func() { os.RemoveAll(pin) })
			w := newWorld(t, Options{PinDir: pin})
			s := pktSpec{src: client4, dst: vip4, sport: 46700, dport: 80, proto: ProtoTCP, syn: true}
			w.open(t, vipTCP4, s)
			c, ok, err := w.b.LookupFlow(flowOf(s))
			if err != nil || !ok {
				t.Fatalf("the SYN left no entry (found %v, err %v)", ok, err)
			}
			id := c.BackendID
			tc.change(t, w, id)
			w.b.Close()
			if tc.noCopy {
				if err := os.Remove(filepath.Join(pin, "backend_table")); err != nil {
					t.Fatal(err)
				}
			}
			w2 := w.reload(t, pin)
			if tc.move {
				if err := w2.b.SetBackend(id, newAddr); err != nil {
					t.Fatal(err)
				}
			}
			if c, ok, err := w2.b.LookupFlow(flowOf(s)); err != nil || ok {
				t.Errorf("the flow is still pinned to id %d (found %v, conn %+v, err %v), which is %s now", id, ok, c, err, newAddr)
			}
			var bt backendTable
			if err := w2.b.data.BackendTable.Lookup(uint32(0), &bt); err != nil {
				t.Fatal(err)
			}
			if got := fromAddr(bt[id].Addr); got != newAddr || bt[id].Flags&uint32(balancerBackendFlagsBACKEND_F_VALID) == 0 {
				t.Errorf("backend_table[%d] holds %s (flags %#x), want %s valid", id, got, bt[id].Flags, newAddr)
			}
		})
	}
}
