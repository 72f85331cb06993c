package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"github.com/switchyard-lb/switchyard/pkg/ethtool"
)

// groRecord is the balancer's record of GRO it turned off for its
// generic-mode program, kept beside the API socket as the drains are (the
// pin directory is on bpffs, which holds no regular file). It outlives
// the daemon, as the attachment does: a native-mode start, `switchyard
// remove` and a failed start that takes its program off turn GRO on
// again and remove it.
type groRecord struct {
	ethtool.GROOff
	// WasOn: GRO was on before the balancer turned it off. Always true
	// in a record written; a reader of one without it restores nothing.
	WasOn bool `json:"was_on"`
}

// groFile names the balancer's GRO record of pinDir, beside socket, kept
// apart per pin directory as drainFiles keeps the drains.
func groFile(socket, pinDir string) string {
	file, _ := besideSocket(socket, pinDir, "gro")
	return file
}

// writeGRORecord records that GRO was on on the interface dev (index
// ifindex): written to a temporary file, synced, and renamed over path,
// so that a crash leaves no record or a whole one, never a part.
func writeGRORecord(path, dev string, ifindex int) error {
	data, err := json.Marshal(groRecord{GROOff: ethtool.GROOff{Dev: dev, Ifindex: ifindex}, WasOn: true})
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("record that GRO was on in %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("record that GRO was on in %s: %w", path, err)
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("record that GRO was on in %s: %w", path, err)
	}
	return nil
}

// readGRORecord returns the record at path, nil if there is none.
func readGRORecord(path string) (*groRecord, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the GRO record %s: %w", path, err)
	}
	var rec groRecord
	if err := json.Unmarshal(data, &rec); err != nil || (rec.WasOn && rec.Ifindex <= 0) {
		if err == nil {
			err = fmt.Errorf("ifindex %d", rec.Ifindex)
		}
		return nil, fmt.Errorf("read the GRO record %s: %w: it says which interface had GRO on before the balancer turned it off for generic mode; turn GRO on by hand if need be (`ethtool -K IFACE gro on`) and remove the file", path, err)
	}
	return &rec, nil
}

// restoreGRO turns GRO on again on the interface the record at path
// names, unless it is on already, and removes the record; unless it names
// the interface of index keep, whose GRO the caller keeps off. An
// interface gone since, created again under a new index, or whose index
// another device (of another name) has now, has nothing to restore: its
// record is dropped. done says what it did ("" for
// nothing), for the caller to log or print.
func restoreGRO(path string, keep int) (done string, err error) {
	rec, err := readGRORecord(path)
	if err != nil || rec == nil || rec.Ifindex == keep {
		return "", err
	}
	if !rec.WasOn {
		return "", removeGRORecord(path)
	}
	l, other, err := rec.Find(netlink.LinkByIndex)
	if err != nil {
		return "", fmt.Errorf("turn generic receive offload of %s on again: find interface index %d: %w (turn it on with `ethtool -K %s gro on`, then remove %s)", rec.Dev, rec.Ifindex, err, rec.Dev, path)
	}
	// A device of another name at the index may be the recorded one
	// renamed, which the balancer cannot tell from another device: both
	// count as the recorded interface gone, and the line says how to turn
	// GRO on if it was renamed.
	if l == nil || other != "" {
		return rec.Gone("the balancer", path, other), removeGRORecord(path)
	}
	name := l.Attrs().Name
	// A program still attached in generic mode needs GRO off: that of a
	// daemon that runs on with its pin directory removed, which remove
	// cannot see (its lock went with the directory).
	if x := l.Attrs().Xdp; x != nil && x.AttachMode == nl.XDP_ATTACHED_SKB {
		return "", fmt.Errorf("a generic-mode XDP program runs on %s (ID %d), which needs generic receive offload (GRO) off: GRO stays off and its record %s stays; if it is a `switchyard run` whose pin directory was removed, stop it (SIGTERM), then run `switchyard remove` again", name, x.ProgId, path)
	}
	on, err := ethtool.GRO(name)
	if err == nil && !on {
		err = ethtool.SetGRO(name, true)
	}
	if err != nil {
		return "", fmt.Errorf("turn generic receive offload of %s on again: %w (turn it on with `ethtool -K %s gro on`, then remove %s)", name, err, name, path)
	}
	done = "generic receive offload (GRO) of " + name + " turned on again, as it was before the balancer's generic mode"
	if on {
		done = "generic receive offload (GRO) of " + name + " is on again already"
	}
	return done, removeGRORecord(path)
}

// removeGRORecord removes the record at path; a missing one is no error.
func removeGRORecord(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the GRO record %s: %w (remove it by hand: GRO is as it should be)", path, err)
	}
	return nil
}

// restoreGROLogged is restoreGRO for the daemon, which logs what it did
// and returns its error, logged already.
func restoreGROLogged(log *slog.Logger, path string, keep int) error {
	done, err := restoreGRO(path, keep)
	if done != "" {
		log.Info(done)
	}
	if err != nil {
		log.Error("could not restore generic receive offload (GRO) as it was before generic mode", "error", err)
	}
	return err
}
