package datapath

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/switchyard-lb/switchyard/pkg/topology"
)

// mapPins returns the map pins under dir (every pin but the link's) by
// name, with the ID of the map each holds.
func mapPins(dir string) (map[string]ebpf.MapID, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]ebpf.MapID{}
	for _, e := range entries {
		if e.Name() == linkPinName {
			continue
		}
		if out[e.Name()], err = mapID(filepath.Join(dir, e.Name())); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
	}
	return out, nil
}

// checkMapPinsRestored removes every map pin under pin, lets restore pin
// them again and checks that each name holds the very map it held (the
// one the attached program uses): before, RestoreLinkPin restored the
// link alone, and the next load created the maps afresh, losing their
// contents. A pin someone put in the place of one is left alone, the
// restore reported as failed with notPinned, naming it.
func checkMapPinsRestored(pin string, restore func() ([]string, error), notPinned error) error {
	before, err := mapPins(pin)
	if err != nil {
		return err
	}
	if len(before) == 0 {
		return fmt.Errorf("no map pinned in %s: the test proves nothing", pin)
	}
	for name := range before {
		if err := os.Remove(filepath.Join(pin, name)); err != nil {
			return err
		}
	}
	restored, err := restore()
	if err != nil {
		return fmt.Errorf("RestoreMapPins with the map pins removed: %w", err)
	}
	if want := slices.Sorted(maps.Keys(before)); !slices.Equal(restored, want) {
		return fmt.Errorf("RestoreMapPins restored %v, want every map pin removed: %v", restored, want)
	}
	after, err := mapPins(pin)
	if err != nil {
		return err
	}
	if !maps.Equal(before, after) {
		return fmt.Errorf("map pins after the restore %v, want the maps pinned before %v", after, before)
	}
	if restored, err := restore(); len(restored) > 0 || err != nil {
		return fmt.Errorf("RestoreMapPins with every pin in place: %v, %v; want nothing to do", restored, err)
	}

	// Another map pinned in the place of one is not the daemon's to remove.
	name := slices.Sorted(maps.Keys(before))[0]
	path := filepath.Join(pin, name)
	if err := os.Remove(path); err != nil {
		return err
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Pin(path); err != nil {
		return err
	}
	restored, err = restore()
	if len(restored) > 0 || !errors.Is(err, notPinned) || !strings.Contains(err.Error(), path+" holds map") {
		return fmt.Errorf("RestoreMapPins with another map at %s: %v, %v; want %v naming it", path, restored, err, notPinned)
	}
	if err := m.Unpin(); err != nil {
		return err
	}
	if restored, err := restore(); !slices.Equal(restored, []string{name}) || err != nil {
		return fmt.Errorf("RestoreMapPins once %s is free: %v, %v; want %s restored", path, restored, err, name)
	}
	return nil
}

func TestRestoreMapPinsBalancer(t *testing.T) {
	onAttachedBalancer(t, "sybimb", func(b *Balancer, pin string) error {
		return checkMapPinsRestored(pin, b.RestoreMapPins, ErrBalancerMapsNotPinned)
	})
}

func TestRestoreMapPinsDecap(t *testing.T) {
	requireRoot(t)
	topo := topology.NewForTest(t, topology.Config{Prefix: topology.RandomPrefix("sybimd"), Balancers: 1, Backends: 1})
	pin := filepath.Join(BPFFSRoot, fmt.Sprintf("switchyard-mappins-decap-test-%d", time.Now().UnixNano()))
	t.Cleanup(func() { RemoveDecap(pin) })
	err := topo.Do(topo.Backend(1), func() error {
		d, err := LoadDecap(pin, nil)
		if err != nil {
			return err
		}
		defer d.Close()
		if _, err := d.Attach("eth0", AttachNative); err != nil {
			return err
		}
		return checkMapPinsRestored(pin, d.RestoreMapPins, ErrMapsNotPinned)
	})
	if err != nil {
		t.Fatal(err)
	}
}
