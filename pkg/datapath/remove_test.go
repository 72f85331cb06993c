package datapath

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// newBPFFS mounts a bpffs instance of the test's own (each mount is a new
// one): what a refused removal would have wiped is nobody else's pins.
func newBPFFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to mount bpffs and pin maps (CI runs as root)")
	}
	mnt := filepath.Join(t.TempDir(), "bpffs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs at %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// pinMap pins a small map at path.
func pinMap(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(path); err != nil {
		t.Fatalf("pin %s: %v", path, err)
	}
}

// RemoveBalancer (and RemoveDecap, the same) deletes only a Switchyard pin
// directory: before, it ran os.RemoveAll on whatever it was given, so
// `switchyard remove --pin-dir /sys/fs/bpf` wiped every program's pins.
func TestRemoveRefusesWhatIsNotAPinDir(t *testing.T) {
	mnt := newBPFFS(t)
	foreign := filepath.Join(mnt, "other_prog_map")
	pinMap(t, foreign)

	mixed := filepath.Join(mnt, "aLmixed")
	pinMap(t, filepath.Join(mixed, "vips"))
	pinMap(t, filepath.Join(mixed, "flows_of_another"))
	pinMap(t, filepath.Join(mixed, "link_restore_x"))

	nested := filepath.Join(mnt, "aLnested")
	pinMap(t, filepath.Join(nested, "conns"))
	pinMap(t, filepath.Join(nested, "eth0", "conns"))

	for _, tc := range []struct {
		dir, msg string
		kept     []string
	}{
		{mnt, "the root of a bpffs mount", []string{foreign}},
		{mixed, `"flows_of_another", "link_restore_x"`, []string{filepath.Join(mixed, "vips"), filepath.Join(mixed, "flows_of_another")}},
		{nested, `"eth0"`, []string{filepath.Join(nested, "eth0", "conns")}},
	} {
		err := RemoveBalancer(tc.dir)
		if !errors.Is(err, ErrNotPinDir) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), tc.dir) {
			t.Errorf("RemoveBalancer(%s): %v, want ErrNotPinDir naming %s and %s", tc.dir, err, tc.dir, tc.msg)
		}
		for _, p := range tc.kept {
			if _, err := os.Stat(p); err != nil {
				t.Errorf("RemoveBalancer(%s) removed %s: %v", tc.dir, p, err)
			}
		}
	}

	// A directory of nothing but Switchyard's pins goes.
	ours := filepath.Join(mnt, "aLours")
	// link_restore and link_restore_PID: what a crash of restoreLinkPin
	// leaves (before, and now).
	for _, name := range []string{"vips", "conns", "maglev_std_mm", "decap_cfg", "conns_new", "decap_stats_new", "link_restore", "link_restore_4242"} {
		pinMap(t, filepath.Join(ours, name))
	}
	if err := RemoveBalancer(ours); err != nil {
		t.Errorf("RemoveBalancer of a directory of Switchyard's pins: %v", err)
	}
	if _, err := os.Stat(ours); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after RemoveBalancer: %v, want it gone", ours, err)
	}
}
