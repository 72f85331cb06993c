package datapath

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
)

// The connection table stamps entries with jiffies (bpf/conntrack.h says
// why). kernelClock turns stamps into CLOCK_MONOTONIC times: it reads both
// clocks together through a BPF program (bpf/clock.bpf.c), and measures
// the length of a jiffy once per process.
//
// The kernel advances jiffies by one every jiffyNs of CLOCK_MONOTONIC, from
// a fixed origin: jiffy J starts at J*jiffyNs + offset. It does so in the
// tick, which may come late (on a VM, whole milliseconds when the host runs
// something else), so a sample's jiffies may lag its clock, and the lag of
// the sample a conversion used would shift its result. The clock therefore
// keeps the least Mono - Jiffies*jiffyNs seen in any sample, which only a
// late tick raises, as the offset, and converts with it alone.
type kernelClock struct {
	prog    *ebpf.Program
	jiffyNs uint64

	mu     sync.Mutex
	offset uint64 // modulo 2^64: jiffies start 5 minutes before wrapping
	seen   bool
}

var (
	clockMu  sync.Mutex
	theClock *kernelClock
)

// getClock returns the process's kernelClock, opening it on first use. A
// failure is not kept: the next call tries again (a VM paused during the
// jiffy measurement, say, need not fail every later load).
func getClock() (*kernelClock, error) {
	clockMu.Lock()
	defer clockMu.Unlock()
	if theClock == nil {
		c, err := openClock()
		if err != nil {
			return nil, err
		}
		theClock = c
	}
	return theClock, nil
}

// kernelHZ are the values CONFIG_HZ can take.
var kernelHZ = []uint64{100, 250, 300, 1000}

// clockEdges is how many jiffy edges openClock catches: 48 ms at HZ 250.
const clockEdges = 12

// openClock loads the clock program and measures a jiffy (jiffyLength):
// it catches clockEdges edges of jiffies, each within a fifth of a
// millisecond of the tick that made it.
func openClock() (*kernelClock, error) {
	var objs clockObjects
	if err := loadClockObjects(&objs, nil); err != nil {
		return nil, fmt.Errorf("load the clock program: %w", err)
	}
	c := &kernelClock{prog: objs.ReadClocks}
	ok := false
	defer func() {
		if !ok {
			objs.Close()
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	prev, err := c.read()
	if err != nil {
		return nil, err
	}
	var edges []clockClockSample
	for len(edges) < clockEdges {
		s, err := c.read()
		if err != nil {
			return nil, err
		}
		if s.Jiffies != prev.Jiffies {
			edges = append(edges, s)
		}
		prev = s
		if time.Now().After(deadline) {
			return nil, errors.New("measure the kernel's jiffy: jiffies do not advance")
		}
		time.Sleep(200 * time.Microsecond)
	}
	c.jiffyNs = jiffyLength(edges)
	for _, s := range edges {
		c.observe(s)
	}
	ok = true
	return c, nil
}

// jiffyLength picks the 10^9 / HZ, of the HZ the kernel can be built with,
// that the edges fit: each edge's Mono - Jiffies * length is then the same
// offset plus how late its tick came (and the poll that caught it). A
// length that is not the kernel's makes that difference drift with every
// jiffy, and scatters it; the right one leaves it flat but for late ticks,
// which a VM has now and then. So: the length that leaves the smallest
// median deviation. (A slope between two edges takes a late first tick
// for a shorter jiffy: 3 ms late over 5 jiffies reads HZ 250 as 300, and
// every idle time 17% short.)
func jiffyLength(edges []clockClockSample) uint64 {
	var best uint64
	bestDev := math.Inf(1)
	for _, hz := range kernelHZ {
		ns := uint64(1e9) / hz
		offs := make([]float64, len(edges))
		for i, e := range edges {
			offs[i] = float64(int64(e.MonoNs - e.Jiffies*ns - (edges[0].MonoNs - edges[0].Jiffies*ns)))
		}
		slices.Sort(offs)
		mid := offs[len(offs)/2]
		devs := make([]float64, len(offs))
		for i, o := range offs {
			devs[i] = math.Abs(o - mid)
		}
		slices.Sort(devs)
		if dev := devs[len(devs)/2]; dev < bestDev {
			best, bestDev = ns, dev
		}
	}
	return best
}

// read reads jiffies and CLOCK_MONOTONIC together.
func (c *kernelClock) read() (clockClockSample, error) {
	var s clockClockSample
	if _, err := c.prog.Run(&ebpf.RunOptions{Context: &s, ContextOut: &s}); err != nil {
		return s, fmt.Errorf("read the kernel clocks: %w", err)
	}
	return s, nil
}

// sample reads both clocks and lowers the offset if this sample's tick
// was more punctual than any before.
func (c *kernelClock) sample() (clockClockSample, error) {
	s, err := c.read()
	if err == nil {
		c.observe(s)
	}
	return s, err
}

func (c *kernelClock) observe(s clockClockSample) {
	off := s.MonoNs - s.Jiffies*c.jiffyNs
	c.mu.Lock()
	if !c.seen || int64(off-c.offset) < 0 {
		c.offset, c.seen = off, true
	}
	c.mu.Unlock()
}

// stampAhead is how far a stamp may be ahead of a sample's jiffies and
// still be taken as later than the sample (an entry refreshed while Flows
// scanned the table, after its sample): 2^16 jiffies, over a minute.
const stampAhead = 1 << 16

// lastSeen converts an entry's stamp (low 32 bits of jiffies) into the
// CLOCK_MONOTONIC time at which that jiffy began, given a sample taken
// about when the entry was read (which extends the stamp to 64 bits).
func (c *kernelClock) lastSeen(now clockClockSample, stamp uint32) time.Duration {
	j := now.Jiffies - uint64(uint32(now.Jiffies)-stamp)
	if ahead := stamp - uint32(now.Jiffies); ahead < stampAhead {
		j = now.Jiffies + uint64(ahead)
	}
	c.mu.Lock()
	off := c.offset
	c.mu.Unlock()
	t := j*c.jiffyNs + off
	if int64(t) < 0 {
		return 0
	}
	return time.Duration(t)
}
