package datapath

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cilium/ebpf"
)

// The connection table stamps entries with jiffies (bpf/conntrack.h says
// why). kernelClock turns stamps into CLOCK_MONOTONIC times: it reads both
// clocks together through a BPF program (bpf/clock.bpf.c), and measures
// the length of a jiffy once per process.
type kernelClock struct {
	prog    *ebpf.Program
	jiffyNs uint64
}

var (
	clockOnce sync.Once
	theClock  *kernelClock
	clockErr  error
)

// getClock returns the process's kernelClock, opening it on first use.
func getClock() (*kernelClock, error) {
	clockOnce.Do(func() { theClock, clockErr = openClock() })
	return theClock, clockErr
}

// kernelHZ are the values CONFIG_HZ can take.
var kernelHZ = []uint64{100, 250, 300, 1000}

// openClock loads the clock program and measures a jiffy: the time
// between two jiffy edges five or more jiffies apart, each caught within
// a fifth of a millisecond, then the nearest 10^9 / HZ. About 5 jiffies:
// 20 ms at HZ 250.
func openClock() (*kernelClock, error) {
	var objs clockObjects
	if err := loadClockObjects(&objs, nil); err != nil {
		return nil, fmt.Errorf("load the clock program: %w", err)
	}
	c := &kernelClock{prog: objs.ReadClocks}
	deadline := time.Now().Add(2 * time.Second)
	edge := func(after uint64) (clockClockSample, error) {
		for {
			s, err := c.sample()
			if err != nil || s.Jiffies > after {
				return s, err
			}
			if time.Now().After(deadline) {
				return s, errors.New("measure the kernel's jiffy: jiffies do not advance")
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	start, err := c.sample()
	if err != nil {
		return nil, err
	}
	first, err := edge(start.Jiffies)
	if err != nil {
		return nil, err
	}
	last, err := edge(first.Jiffies + 4)
	if err != nil {
		return nil, err
	}
	per := float64(last.MonoNs-first.MonoNs) / float64(last.Jiffies-first.Jiffies)
	for _, hz := range kernelHZ {
		ns := uint64(1e9) / hz
		if c.jiffyNs == 0 || absDiff(per, ns) < absDiff(per, c.jiffyNs) {
			c.jiffyNs = ns
		}
	}
	return c, nil
}

func absDiff(a float64, b uint64) float64 {
	if d := a - float64(b); d > 0 {
		return d
	}
	return float64(b) - a
}

// sample reads jiffies and CLOCK_MONOTONIC together.
func (c *kernelClock) sample() (clockClockSample, error) {
	var s clockClockSample
	if _, err := c.prog.Run(&ebpf.RunOptions{Context: &s, ContextOut: &s}); err != nil {
		return s, fmt.Errorf("read the kernel clocks: %w", err)
	}
	return s, nil
}

// lastSeen converts an entry's stamp (low 32 bits of jiffies) into the
// CLOCK_MONOTONIC time of that jiffy, to within a jiffy, given a sample
// taken after it.
func (c *kernelClock) lastSeen(now clockClockSample, stamp uint32) time.Duration {
	ago := uint64(uint32(now.Jiffies)-stamp) * c.jiffyNs
	return time.Duration(now.MonoNs - min(ago, now.MonoNs))
}
