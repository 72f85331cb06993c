package balancer

import (
	"fmt"
	"slices"
)

// checkOwnBackends warns about backends whose address is one of the
// interface's own: the datapath sends their packets to the next hop, which
// routes them back to this host, whose kernel drops them unless a tunnel
// device of its own decapsulates them (config cannot know the host's
// addresses, nor whether it decapsulates). A health check of such a
// backend reaches this host's own service, so it can be up while every
// flow sent to it is lost. Each is logged when it appears; status shows
// them while they last.
func (b *Balancer) checkOwnBackends(ifi ifaceInfo) {
	var found []string
	for i := range b.cfg.VIPs {
		v := &b.cfg.VIPs[i]
		for _, be := range v.Backends {
			a := be.Addr()
			if !slices.Contains(ifi.Addrs, a) {
				continue
			}
			w := fmt.Sprintf("backend %s of VIP %s: %s is an address of this balancer's interface %s, so packets encapsulated to it come back here and are dropped unless this host decapsulates them itself; write the backend's own address",
				be.Name, v.Name, a, ifi.Name)
			found = append(found, w)
			if !slices.Contains(b.ownBackends, w) {
				b.log.Warn("a backend's address is one of this balancer's own: packets encapsulated to it come back here and are dropped unless this host decapsulates them itself (a tunnel device); write the backend's own address",
					"vip", v.Name, "backend", be.Name, "address", a, "interface", ifi.Name)
			}
		}
	}
	b.ownBackends = found
}
