package balancer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/switchyard-lb/switchyard/pkg/config"
)

// Operator drains outlive the daemon (a restart or an upgrade must not
// quietly put a drained backend back into service), so they are written to
// a small JSON file of booleans:
//
//	{"vip/backend": true|false, "vip/backend config_drained": true|false}
//
// The first is the operator's word (true: drained); the second, the
// backend's `drained` in the configuration file when the operator spoke. A
// restart whose file says otherwise drops the word, as a reload would have
// (the newest word wins): the file changed it while no daemon ran.
//
// The second key is beside the first, not in an object of its own, so that
// the previous release, which reads the file as {"vip/backend": bool},
// still reads the operator's words after a downgrade: it takes the second
// key for a drain of a backend named "backend config_drained", which no
// configuration has (a backend name has no space). Files of that release
// lack the second key: such an override wins over the file at the first
// start, as it did then, and the file's value is recorded from then on.
const fileDrainedSuffix = " config_drained"

// override is an operator's drain or undrain of one backend.
type override struct {
	drained bool // the operator's word
	file    bool // the backend's `drained` in the configuration file when the operator spoke
}

// loadDrains reads the drains file and keeps the overrides that the
// configuration cfg, which the daemon starts with, has not outvoted: those
// of backends cfg still has, with the `drained` it had when the operator
// spoke. It reports whether the file needs writing again: it dropped an
// override, recorded a file value an earlier release did not, or read the
// file an earlier release named.
func (b *Balancer) loadDrains(cfg *config.Config) (rewrite bool, err error) {
	if b.drainFile == "" {
		return false, nil
	}
	file := b.drainFile
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) && b.legacyDrain != "" {
		// An upgrade: the drains are in the file an earlier release named.
		// From now on they are in this release's file; the earlier one is
		// left alone, as another daemon may share it.
		file = b.legacyDrain
		data, err = os.ReadFile(file)
		rewrite = true
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var m map[string]bool // null (written by hand, say) leaves it nil: no drains
	if err := json.Unmarshal(data, &m); err != nil {
		if file != b.drainFile {
			return false, fmt.Errorf("parse %s: %w", file, err)
		}
		// The next drain rewrites the file: keep what it held, for the
		// operator to read the drains back from.
		kept := file + ".corrupt"
		if rerr := os.Rename(file, kept); rerr != nil {
			return false, fmt.Errorf("parse %s: %w (and keep it as %s: %v)", file, err, kept, rerr)
		}
		return false, fmt.Errorf("parse %s: %w; kept as %s", file, err, kept)
	}
	var gone, outvoted []string
	for key, drained := range m {
		if base, ok := strings.CutSuffix(key, fileDrainedSuffix); ok {
			if _, ok := m[base]; !ok {
				rewrite = true // a file value of no override: forgotten
			}
			continue
		}
		vip, name, _ := strings.Cut(key, "/")
		var be *config.Backend
		if v := cfg.VIPByName(vip); v != nil {
			be = v.BackendByName(name)
		}
		if be == nil {
			// The file lost the backend while no daemon ran: a backend of
			// that name added again later follows the file.
			gone = append(gone, key)
			continue
		}
		fileDrained, known := m[key+fileDrainedSuffix]
		switch {
		case !known:
			fileDrained = be.Drained
		case fileDrained != be.Drained:
			outvoted = append(outvoted, key)
			continue
		}
		b.drain[key] = override{drained: drained, file: fileDrained}
		rewrite = rewrite || !known
	}
	if len(b.drain) > 0 {
		b.log.Info("operator drains restored", "file", file, "entries", len(b.drain))
	}
	if len(outvoted) > 0 {
		slices.Sort(outvoted)
		b.log.Info("operator drains ended: the file changed these backends' drained since", "backends", outvoted)
	}
	return rewrite || len(gone) > 0 || len(outvoted) > 0, nil
}

func (b *Balancer) saveDrains() error {
	if b.drainFile == "" {
		return nil
	}
	m := make(map[string]bool, 2*len(b.drain))
	for key, o := range b.drain {
		m[key] = o.drained
		m[key+fileDrainedSuffix] = o.file
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(b.drainFile), 0o755); err != nil {
		return err
	}
	// Written whole and synced before it replaces the file, so that on a
	// persistent filesystem a crash leaves the old file or the new one.
	tmp := b.drainFile + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, b.drainFile)
}
