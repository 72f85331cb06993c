package balancer

import (
	"fmt"
	"slices"
)

// checkHostAddrs warns about addresses of the configuration that this
// host's network makes useless, which config cannot know:
//
//   - a backend at an address of the interface: the datapath sends its
//     packets to the next hop, which routes them back to this host, whose
//     kernel drops them unless a tunnel device of its own decapsulates
//     them. A health check of it reaches this host's own service, so it
//     can be up while every flow sent to it is lost.
//   - a VIP at the next hop's address, taken from the default route (config
//     refuses nexthop.gateway): the router owns it and answers the clients
//     itself, so no packet of the VIP reaches a balancer.
//
// Each is logged when it appears; status shows them while they last.
func (b *Balancer) checkHostAddrs(ifi ifaceInfo) {
	var found []string
	note := func(w, msg string, args ...any) {
		found = append(found, w)
		if !slices.Contains(b.hostWarnings, w) {
			b.log.Warn(msg, args...)
		}
	}
	for i := range b.cfg.VIPs {
		v := &b.cfg.VIPs[i]
		if a := v.Addr(); a.IsValid() && a == b.gateway {
			note(fmt.Sprintf("VIP %s: %s is the next hop's address, the router's own, so clients' packets to it end at the router and never reach a balancer; use an address the routers send to the balancers", v.Name, a),
				"a VIP's address is the next hop's, the router's own: clients' packets to it end at the router and never reach a balancer; use an address the routers send to the balancers",
				"vip", v.Name, "address", a, "interface", ifi.Name)
		}
		for _, be := range v.Backends {
			a := be.Addr()
			if !slices.Contains(ifi.Addrs, a) {
				continue
			}
			note(fmt.Sprintf("backend %s of VIP %s: %s is an address of this balancer's interface %s, so packets encapsulated to it come back here and are dropped unless this host decapsulates them itself; write the backend's own address",
				be.Name, v.Name, a, ifi.Name),
				"a backend's address is one of this balancer's own: packets encapsulated to it come back here and are dropped unless this host decapsulates them itself (a tunnel device); write the backend's own address",
				"vip", v.Name, "backend", be.Name, "address", a, "interface", ifi.Name)
		}
	}
	b.hostWarnings = found
}
