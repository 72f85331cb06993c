package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Decap is the backend-side program that strips Switchyard's encapsulation.
type Decap struct {
	objs   decapObjects
	pinDir string
	log    *slog.Logger
	link   link.Link
}

// LoadDecap loads the decap program, reusing maps pinned under pinDir ("" =
// unpinned).
func LoadDecap(pinDir string, log *slog.Logger) (*Decap, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	spec, err := loadDecap()
	if err != nil {
		return nil, fmt.Errorf("read decap object: %w", err)
	}
	d := &Decap{pinDir: pinDir, log: log}
	if err := loadCollection(spec, pinDir, &d.objs,
		"they come from another version of the agent: run `switchyard remove --agent` to start afresh (decapsulation stops until the agent is up again)"); err != nil {
		return nil, err
	}
	return d, nil
}

// Attach attaches (or hitlessly replaces) the decap program on iface.
func (d *Decap) Attach(iface string, mode AttachMode) (AttachResult, error) {
	l, res, err := attachProgram(d.objs.XdpDecap, iface, mode, d.pinDir, decapHints, d.log)
	if err != nil {
		return res, err
	}
	if d.link != nil && d.pinDir != "" {
		// A handle of the pinned link that l updated or replaced:
		// the pin keeps what must stay attached. (Unpinned, the
		// handle is the attachment.)
		d.link.Close()
	}
	d.link = l
	return res, nil
}

// SetGUEPort sets the UDP port of GUE packets to decapsulate (0: none).
func (d *Decap) SetGUEPort(port uint16) error {
	c := decapDecapConfig{GuePort: htons(port)}
	if err := d.objs.DecapCfg.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write decap config: %w", err)
	}
	return nil
}

// SetAddrs makes addrs the exact set of outer destinations to decapsulate.
func (d *Decap) SetAddrs(addrs []netip.Addr) error {
	want := map[balancerAddr]bool{}
	for _, a := range addrs {
		want[toAddr(a)] = true
	}
	var key balancerAddr
	var v uint32
	var stale []balancerAddr
	it := d.objs.DecapAddrs.Iterate()
	for it.Next(&key, &v) {
		if !want[key] {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate decap addresses: %w", err)
	}
	for _, k := range stale {
		if err := d.objs.DecapAddrs.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete decap address %s: %w", fromAddr(k), err)
		}
	}
	for k := range want {
		if err := d.objs.DecapAddrs.Put(&k, uint32(1)); err != nil {
			return fmt.Errorf("add decap address %s: %w", fromAddr(k), err)
		}
	}
	return nil
}

// Stats returns the decap counters by name, summed over CPUs.
func (d *Decap) Stats() (map[string]uint64, error) {
	return readStats(d.objs.DecapStats, decapStatNames[:])
}

// Close releases file descriptors; pins (and the attachment) stay.
func (d *Decap) Close() error {
	if d.link != nil {
		d.link.Close()
	}
	return d.objs.Close()
}

// RemoveDecap detaches the decap program pinned under pinDir and deletes its pins.
func RemoveDecap(pinDir string) error { return removePinned(pinDir) }

var decapStatNames = [decapDecapStatDECAP_STAT_MAX]string{
	decapDecapStatDECAP_STAT_IPIP:        "decap_ipv4_outer",
	decapDecapStatDECAP_STAT_IP6:         "decap_ipv6_outer",
	decapDecapStatDECAP_STAT_GUE:         "decap_gue",
	decapDecapStatDECAP_STAT_PASS:        "pass",
	decapDecapStatDECAP_STAT_DROP_INNER:  "drop_inner_not_ip",
	decapDecapStatDECAP_STAT_DROP_ADJUST: "drop_adjust_failed",
}
