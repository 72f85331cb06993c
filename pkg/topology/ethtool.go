package topology

import (
	"fmt"

	"github.com/switchyard-lb/switchyard/pkg/ethtool"
)

// SetTxChecksum turns TX checksum offload of a device in node on or off,
// like `ethtool -K IF tx on|off` (which also switches the segmentation
// offloads that depend on it).
func (t *Topology) SetTxChecksum(node, ifname string, on bool) error {
	if err := t.Do(node, func() error { return ethtool.SetTxChecksum(ifname, on) }); err != nil {
		return fmt.Errorf("%s: %w", node, err)
	}
	return nil
}

// TxChecksum reports whether TX checksum offload is on for a device in node.
func (t *Topology) TxChecksum(node, ifname string) (bool, error) {
	var on bool
	err := t.Do(node, func() (err error) { on, err = ethtool.TxChecksum(ifname); return err })
	if err != nil {
		return false, fmt.Errorf("%s: %w", node, err)
	}
	return on, nil
}

// SetGRO turns generic receive offload of a device in node on or off,
// like `ethtool -K IF gro on|off`.
func (t *Topology) SetGRO(node, ifname string, on bool) error {
	if err := t.Do(node, func() error { return ethtool.SetGRO(ifname, on) }); err != nil {
		return fmt.Errorf("%s: %w", node, err)
	}
	return nil
}

// GRO reports whether generic receive offload is on for a device in node.
func (t *Topology) GRO(node, ifname string) (bool, error) {
	var on bool
	err := t.Do(node, func() (err error) { on, err = ethtool.GRO(ifname); return err })
	if err != nil {
		return false, fmt.Errorf("%s: %w", node, err)
	}
	return on, nil
}
