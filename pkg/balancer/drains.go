package balancer

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
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
//	{"vip/backend": true|false, "vip/backend config_drained": true|false,
//	 "vip/backend address=ADDR": true}
//
// The first is the operator's word (true: drained); the second, the
// backend's `drained` in the configuration file when the operator spoke;
// the third, the backend's address. A drain follows the backend's address
// within its VIP, as its health does (drainKey): a file that renames the
// backend keeps its drain, one that gives the name another address (a new
// machine) ends it. The name in the keys is the backend's latest, as
// operators and the previous release know it. A record without an address
// (an earlier release's) is matched by name. A restart whose file says
// otherwise than the second key drops the word, as a reload would have
// (the newest word wins): the file changed it while no daemon ran.
//
// The second and third keys are beside the first, not in an object of
// their own, so that the previous release, which reads the file as
// {"vip/backend": bool}, still reads the operator's words after a
// downgrade: it takes them for drains of backends named "backend
// config_drained" or "backend address=ADDR", which no configuration has (a
// backend name has no space). Files of the release before lack the second
// key: such an override wins over the file at the first start, as it did
// then, and the file's value is recorded from then on.
const (
	fileDrainedSuffix = " config_drained"
	fileAddressInfix  = " address="
)

// override is an operator's drain or undrain of one backend. b.drain
// keeps it by drainKey: VIP name and backend address.
type override struct {
	drained bool   // the operator's word
	file    bool   // the backend's `drained` in the configuration file when the operator spoke
	name    string // the backend's name, as of the last drain, start or reload
}

// backendByAddr returns v's backend of address a, or nil. Addresses are
// unique within a VIP.
func backendByAddr(v *config.VIP, a netip.Addr) *config.Backend {
	if v == nil || !a.IsValid() {
		return nil
	}
	for i := range v.Backends {
		if v.Backends[i].Addr() == a {
			return &v.Backends[i]
		}
	}
	return nil
}

// drainName is how operators name the backend of an override keyed
// key (drainKey): VIP/NAME.
func drainName(key string, o override) string {
	vip, _, _ := strings.Cut(key, "/")
	return healthKey(vip, o.name)
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
	addrs := map[string]netip.Addr{} // by "vip/backend"
	for key := range m {
		if base, a, ok := strings.Cut(key, fileAddressInfix); ok {
			if _, ok := m[base]; !ok {
				rewrite = true // an address of no override: forgotten
				continue
			}
			ap, perr := netip.ParseAddr(a)
			if perr != nil {
				rewrite = true // written by hand: matched by name
				continue
			}
			addrs[base] = ap
		}
	}
	var gone, outvoted, renamed []string
	byAddr := map[string]bool{} // the drains matched by address, which win over one matched by name
	for _, key := range slices.Sorted(maps.Keys(m)) {
		drained := m[key]
		if base, ok := strings.CutSuffix(key, fileDrainedSuffix); ok {
			if _, ok := m[base]; !ok {
				rewrite = true // a file value of no override: forgotten
			}
			continue
		}
		if strings.Contains(key, fileAddressInfix) {
			continue
		}
		vip, name, _ := strings.Cut(key, "/")
		v := cfg.VIPByName(vip)
		var be *config.Backend
		a, known := addrs[key]
		if known {
			be = backendByAddr(v, a)
		} else if v != nil {
			be = v.BackendByName(name)
			rewrite = true // the address is recorded from now on
		}
		if be == nil {
			// The file lost the backend while no daemon ran: a backend of
			// that address added again later follows the file.
			gone = append(gone, key)
			continue
		}
		dk := drainKey(vip, *be)
		if _, ok := b.drain[dk]; ok && (byAddr[dk] || !known) {
			rewrite = true // two records of one backend (written by hand): one is kept
			continue
		}
		fileDrained, knownFile := m[key+fileDrainedSuffix]
		switch {
		case !knownFile:
			fileDrained = be.Drained
		case fileDrained != be.Drained:
			outvoted = append(outvoted, key)
			continue
		}
		if be.Name != name {
			renamed = append(renamed, key+" is now "+healthKey(vip, be.Name))
			rewrite = true
		}
		b.drain[dk] = override{drained: drained, file: fileDrained, name: be.Name}
		byAddr[dk] = known
		rewrite = rewrite || !knownFile
	}
	if len(b.drain) > 0 {
		b.log.Info("operator drains restored", "file", file, "entries", len(b.drain))
	}
	if len(outvoted) > 0 {
		slices.Sort(outvoted)
		b.log.Info("operator drains ended: the file changed these backends' drained since", "backends", outvoted)
	}
	if len(renamed) > 0 {
		b.log.Info("operator drains kept over a rename: they follow the backend's address", "backends", renamed)
	}
	return rewrite || len(gone) > 0 || len(outvoted) > 0, nil
}

func (b *Balancer) saveDrains() error {
	if b.drainFile == "" {
		return nil
	}
	m := make(map[string]bool, 3*len(b.drain))
	for key, o := range b.drain {
		_, a, _ := strings.Cut(key, "/")
		name := drainName(key, o)
		m[name] = o.drained
		m[name+fileDrainedSuffix] = o.file
		m[name+fileAddressInfix+a] = true
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
