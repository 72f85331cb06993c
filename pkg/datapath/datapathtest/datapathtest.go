// Package datapathtest lets tests outside pkg/datapath look at and disturb
// the kernel state a balancer or a decap agent pinned, as another tool on
// the host would (bpftool, a second XDP program, a clean-up of bpffs):
// read the program behind a pinned link or a pinned map's ID, detach a
// pinned link or make it run another program, pin a map of its own where
// the daemon pins one, fill a pinned map. It is for tests only, like
// net/http/httptest; it keeps cilium/ebpf inside pkg/datapath (STYLE.md
// rule 2).
package datapathtest

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// linkPinName is the name of the link's pin in a pin directory, as
// pkg/datapath pins it.
const linkPinName = "link"

// PinnedLink is the XDP link pinned in a pin directory, opened through its
// pin as bpftool would: what it does acts on the link the daemon holds.
type PinnedLink struct {
	path string
	l    link.Link
}

// OpenPinnedLink opens the link pinned in pinDir. Close it when done.
func OpenPinnedLink(pinDir string) (*PinnedLink, error) {
	path := filepath.Join(pinDir, linkPinName)
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return nil, fmt.Errorf("open the link pinned at %s: %w", path, err)
	}
	return &PinnedLink{path: path, l: l}, nil
}

// ProgramID is the ID of the program the link runs now.
func (p *PinnedLink) ProgramID() (uint32, error) {
	info, err := p.l.Info()
	if err != nil {
		return 0, fmt.Errorf("read the link pinned at %s: %w", p.path, err)
	}
	return uint32(info.Program), nil
}

// Detach detaches the link from its interface, as `bpftool link detach`
// does: the interface runs no program of it, while the pin and the
// daemon's handle stay.
func (p *PinnedLink) Detach() error {
	if err := p.l.Detach(); err != nil {
		return fmt.Errorf("detach the link pinned at %s: %w", p.path, err)
	}
	return nil
}

// RunRival makes the link run a rival XDP program of its own (named
// "sybg_other", passing every packet) instead of the one it runs, as
// another tool's link.Update would. restore makes the link run the
// program it ran before again and releases both programs' handles.
func (p *PinnedLink) RunRival() (restore func() error, err error) {
	id, err := p.ProgramID()
	if err != nil {
		return nil, err
	}
	ours, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return nil, fmt.Errorf("open the program %d of the link pinned at %s: %w", id, p.path, err)
	}
	rival, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "sybg_other", Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}, // XDP_PASS
	})
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("load a rival XDP program: %w", err)
	}
	if err := p.l.Update(rival); err != nil {
		ours.Close()
		rival.Close()
		return nil, fmt.Errorf("make the link pinned at %s run a rival program: %w", p.path, err)
	}
	return func() error {
		err := p.l.Update(ours)
		if err != nil {
			err = fmt.Errorf("make the link pinned at %s run its program %d again: %w", p.path, id, err)
		}
		return errors.Join(err, ours.Close(), rival.Close())
	}, nil
}

// Close releases the handle on the link; the pin keeps the link.
func (p *PinnedLink) Close() error { return p.l.Close() }

// PinnedLinkProgramID is the ID of the program the link pinned in pinDir
// runs.
func PinnedLinkProgramID(pinDir string) (uint32, error) {
	p, err := OpenPinnedLink(pinDir)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	return p.ProgramID()
}

// DetachPinnedLink detaches the link pinned in pinDir from its interface,
// as `bpftool link detach` does.
func DetachPinnedLink(pinDir string) error {
	p, err := OpenPinnedLink(pinDir)
	if err != nil {
		return err
	}
	defer p.Close()
	return p.Detach()
}

// PinnedMapID is the ID of the map pinned at path. A missing pin is an
// error.
func PinnedMapID(path string) (uint32, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return 0, fmt.Errorf("open the map pinned at %s: %w", path, err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		return 0, fmt.Errorf("read the map pinned at %s: %w", path, err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, fmt.Errorf("read the map pinned at %s: the kernel gives no map IDs", path)
	}
	return uint32(id), nil
}

// PinRivalMap creates a map of its own (an array of one 4-byte value) and
// pins it at path, as another tool pinning into a pin directory would.
// The pin alone keeps the map: remove the pin to free it.
func PinRivalMap(path string) error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("create a rival map: %w", err)
	}
	defer m.Close()
	if err := m.Pin(path); err != nil {
		return fmt.Errorf("pin a rival map at %s: %w", path, err)
	}
	return nil
}

// FilledMap is a pinned map that FillPinnedMap filled: it holds the map
// (the one pinned at the time, whatever is pinned there later) and the
// keys put into it.
type FilledMap struct {
	path string
	m    *ebpf.Map
	keys [][]byte
}

// FillPinnedMap puts keys into the map pinned at path, each with value,
// until the kernel refuses one (a full hash map refuses with E2BIG): key
// writes the i-th key into a zeroed buffer of the map's key size. The
// map's values must be 4 bytes (such as vip_addrs' counts). Empty takes
// the keys out again; Close releases the map.
func FillPinnedMap(path string, key func(i int, k []byte), value uint32) (*FilledMap, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return nil, fmt.Errorf("open the map pinned at %s: %w", path, err)
	}
	if m.ValueSize() != 4 {
		m.Close()
		return nil, fmt.Errorf("the map pinned at %s has %d-byte values, not 4", path, m.ValueSize())
	}
	f := &FilledMap{path: path, m: m}
	for i := 0; ; i++ {
		k := make([]byte, m.KeySize())
		key(i, k)
		if err := m.Put(k, value); err != nil {
			break
		}
		f.keys = append(f.keys, k)
	}
	return f, nil
}

// Len is the number of keys FillPinnedMap put.
func (f *FilledMap) Len() int { return len(f.keys) }

// Empty deletes every key FillPinnedMap put, from the map it filled.
func (f *FilledMap) Empty() error {
	for _, k := range f.keys {
		if err := f.m.Delete(k); err != nil {
			return fmt.Errorf("delete key %x from the map pinned at %s: %w", k, f.path, err)
		}
	}
	f.keys = nil
	return nil
}

// Close releases the map's handle.
func (f *FilledMap) Close() error { return f.m.Close() }
