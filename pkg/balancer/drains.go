package balancer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Operator drains outlive the daemon (a restart or an upgrade must not
// quietly put a drained backend back into service), so they are written to
// a small JSON file: {"vip/backend": true|false}.

func (b *Balancer) loadDrains() error {
	if b.drainFile == "" {
		return nil
	}
	file := b.drainFile
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) && b.legacyDrain != "" {
		// An upgrade: the drains are in the file an earlier release named.
		file = b.legacyDrain
		data, err = os.ReadFile(file)
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var m map[string]bool
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("parse %s: %w", file, err)
	}
	if m == nil {
		m = map[string]bool{} // the file held null: Drain writes to the map
	}
	b.drain = m
	if len(m) > 0 {
		b.log.Info("operator drains restored", "file", file, "entries", len(m))
	}
	if file != b.drainFile {
		// From now on in this release's file; the earlier one is left
		// alone, as another daemon may share it.
		if err := b.saveDrains(); err != nil {
			b.log.Warn("operator drains not moved to this release's file; the earlier one stays in use", "file", b.drainFile, "error", err)
		}
	}
	return nil
}

func (b *Balancer) saveDrains() error {
	if b.drainFile == "" {
		return nil
	}
	data, err := json.Marshal(b.drain)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(b.drainFile), 0o755); err != nil {
		return err
	}
	tmp := b.drainFile + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, b.drainFile)
}
