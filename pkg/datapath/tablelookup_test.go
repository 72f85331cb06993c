package datapath

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTableReportsLookupErrors: Table says ErrNoSuchVIP only when the VIP
// is not there; a lookup that fails for another reason is that error, so
// a caller does not take a VIP it cannot read for one that is gone.
func TestTableReportsLookupErrors(t *testing.T) {
	w := newWorld(t, Options{})
	if _, err := w.b.Table(VIPKey{nonVIP, 80, ProtoTCP}, 0); !errors.Is(err, ErrNoSuchVIP) {
		t.Errorf("Table of a VIP that does not exist: %v, want ErrNoSuchVIP", err)
	}
	saved := w.b.objs.Vips
	w.b.objs.Vips = writeOnly(t, saved)
	_, err := w.b.Table(vipTCP4.key, 0)
	w.b.objs.Vips = saved
	if errors.Is(err, ErrNoSuchVIP) || !errors.Is(err, unix.EPERM) {
		t.Errorf("Table with vips unreadable: %v, want EPERM and not ErrNoSuchVIP", err)
	}
}
