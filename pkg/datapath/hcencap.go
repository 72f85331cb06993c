package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// hcMarkMagic and hcMarkIDMask mirror HC_MARK_MAGIC and HC_MARK_ID in
// bpf/hc_encap.bpf.c.
const (
	hcMarkMagic  = 0x53590000
	hcMarkIDMask = 0x0000ffff
)

// HCMark is the SO_MARK of a health-check socket whose packets the
// tunnel health-check program encapsulates to backend id: 0x5359 ("SY")
// in the high 16 bits, the id in the low 16. Other programs' marks that
// happen to carry the same high bits would be encapsulated too: keep
// marks of the 0x5359xxxx range for Switchyard on a balancer.
func HCMark(id uint32) uint32 { return hcMarkMagic | id&hcMarkIDMask }

// HCEncap is the tc egress program that sends health checks through the
// tunnel (bpf/hc_encap.bpf.c). It reads the balancer program's
// backend_table and config maps (not copies) and keeps its link and
// counters with the process, unpinned: only the daemon's own checks
// mark packets, so the program has nothing to do once the daemon is
// gone, and a pin directory holding no new pins stays one the previous
// release takes over and removes.
type HCEncap struct {
	objs hcencapObjects
	link link.Link
}

// ErrHCAttach: the tunnel health-check program could not be attached.
var ErrHCAttach = errors.New("cannot attach the tunnel health-check program")

// LoadHCEncap loads the tunnel health-check program over b's maps. It
// does not attach it.
func (b *Balancer) LoadHCEncap() (*HCEncap, error) {
	spec, err := loadHcencap()
	if err != nil {
		return nil, fmt.Errorf("read the tunnel health-check object: %w", err)
	}
	h := &HCEncap{}
	opts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		".data.config": b.data.Config, ".data.backend_table": b.data.BackendTable,
	}}
	for sec, m := range opts.MapReplacements {
		// Named as LoadBalancer names them, which makes them as plain
		// arrays: a dotted name would ask for a mappable one.
		spec.Maps[sec].Name = dataMapNames[sec]
		spec.Maps[sec].Flags = m.Flags()
		spec.Maps[sec].Contents = nil
	}
	if err := spec.LoadAndAssign(&h.objs, opts); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("the kernel's verifier rejected the tunnel health-check program: %+v", verr)
		}
		return nil, fmt.Errorf("load the tunnel health-check program: %w", err)
	}
	return h, nil
}

// Attach attaches the program to iface's egress (TCX, kernel 6.6 or
// later). The link lives until Close.
func (h *HCEncap) Attach(iface string) error {
	ifc, err := LookupInterface(iface)
	if err != nil {
		return err
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: h.objs.TcHcEncap, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		advice := "run as root (CAP_NET_ADMIN and CAP_BPF)"
		if errors.Is(err, unix.EINVAL) || errors.Is(err, link.ErrNotSupported) || errors.Is(err, ebpf.ErrNotSupported) {
			advice = "tc BPF links (TCX) need Linux 6.6 or later: upgrade the kernel, or set health.via: direct on every VIP"
		}
		return fmt.Errorf("%w to %s egress: %w; %s", ErrHCAttach, iface, err, advice)
	}
	if h.link != nil {
		h.link.Close()
	}
	h.link = l
	return nil
}

// hcStatNames are the counters' names (metric labels), by index.
var hcStatNames = [hcencapHcStatHC_STAT_MAX]string{
	hcencapHcStatHC_STAT_ENCAP:      "encapsulated",
	hcencapHcStatHC_STAT_NO_BACKEND: "no_backend",
	hcencapHcStatHC_STAT_TOO_BIG:    "too_big",
	hcencapHcStatHC_STAT_ERROR:      "error",
}

// HCStatNames lists the counters Stats reports.
func HCStatNames() []string { return append([]string(nil), hcStatNames[:]...) }

// Stats reads the program's counters, summed over CPUs, by name.
func (h *HCEncap) Stats() (map[string]uint64, error) {
	return readStats(h.objs.HcStats, hcStatNames[:])
}

// Close detaches the program and releases its file descriptors.
func (h *HCEncap) Close() error {
	if h.link != nil {
		h.link.Close()
		h.link = nil
	}
	return h.objs.Close()
}
