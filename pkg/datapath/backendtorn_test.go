package datapath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// TestBackendAddressChangeIsNeverTorn sends a flow's packets on one CPU
// while another moves its backend between an IPv4 and an IPv6 address:
// every packet must go out to one address whole, in its own family. Before,
// the whole backend_table was rewritten by one copy under the packets,
// which could read the entry's flags of one address and bytes of the other
// (an IPv4 header to four bytes of the IPv6 address).
func TestBackendAddressChangeIsNeverTorn(t *testing.T) {
	w := newWorld(t, Options{})
	s := syn4(44000)
	id := uint32(0)
	for i, a := range backendAddrs {
		if a == w.expectBackend(vipTCP4, flowOf(s)) {
			id = i
		}
	}
	v4, v6 := backendAddrs[id], netip.MustParseAddr("fd00:2:9::2")
	in, _ := build(t, s)

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
		out := make([]byte, len(in)+512)
		for !stop.Load() {
			opts := &ebpf.RunOptions{Data: in, DataOut: out}
			act, err := w.b.objs.XdpBalancer.Run(opts)
			if err != nil {
				runFailed.Store(err)
				return
			}
			if act != xdpTX {
				continue // between addresses: no valid backend
			}
			sent.Add(1)
			o := opts.DataOut
			switch binary.BigEndian.Uint16(o[12:]) {
			case 0x0800:
				if dst, _ := netip.AddrFromSlice(o[30:34]); dst != v4 {
					torn.Store(fmt.Sprintf("IPv4 outer header to %s, want %s", dst, v4))
				}
			case 0x86dd:
				if want := v6.As16(); !bytes.Equal(o[38:54], want[:]) {
					torn.Store(fmt.Sprintf("IPv6 outer header to %x, want %s", o[38:54], v6))
				}
			}
		}
	}()
	deadline := time.Now().Add(3 * time.Second)
	flips := 0
	for time.Now().Before(deadline) && torn.Load() == nil && runFailed.Load() == nil {
		for _, a := range []netip.Addr{v6, v4} {
			if err := w.b.SetBackend(id, a); err != nil {
				stop.Store(true)
				wg.Wait()
				t.Fatal(err)
			}
		}
		flips++
	}
	stop.Store(true)
	wg.Wait()
	if err := runFailed.Load(); err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	if msg := torn.Load(); msg != nil {
		t.Fatalf("a packet saw a torn backend entry after %d address changes: %s", 2*flips, msg)
	}
	if sent.Load() == 0 {
		t.Fatal("no packet was forwarded while the address changed")
	}
	t.Logf("%d address changes, %d packets forwarded", 2*flips, sent.Load())
}
