/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Encapsulation towards a backend: IPv4 outer (IPIP, or 6in4 for an IPv6
 * client), IPv6 outer (IPv4 or IPv6 inside), optionally in UDP (GUE variant 1:
 * the UDP payload is the inner IP packet itself). */
#ifndef __SY_ENCAP_H
#define __SY_ENCAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "hash.h"
#include "parsing.h"
#include "outer.h"

static __always_inline __u32 encap_overhead(const struct backend *be, const struct lb_config *cfg)
{
	__u32 n = (be->flags & BACKEND_F_V6) ? IPV6_HDR_LEN : IPV4_HDR_LEN;

	if (cfg->flags & CFG_F_GUE)
		n += UDP_HDR_LEN;
	return n;
}

/* Moves the L2 header to the new start of the frame after the head grew by
 * 'delta' bytes, and sets its addresses (macs: destination then source, 12
 * bytes) and EtherType. The old header is at data + delta; delta >= 18 so
 * the two never overlap. */
static __always_inline int l2_rewrite(void *data, void *data_end, __u32 l2_len, __u32 delta,
				      const __u8 *macs, __be16 proto)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	*(sy_u64 *)eth = *(const sy_u64 *)macs;
	*(sy_u32 *)((void *)eth + 8) = *(const sy_u32 *)(macs + 8);
	if (l2_len == sizeof(*eth)) {
		*(sy_u16 *)((void *)eth + 12) = proto;
		return 0;
	}
	{
		struct ethhdr *old = data + (delta & 0xff);
		struct vlan_hdr *vh = (void *)(eth + 1);
		struct vlan_hdr *ovh = (void *)(old + 1);

		if ((void *)(vh + 1) > data_end || (void *)(ovh + 1) > data_end)
			return -1;
		eth->h_proto = old->h_proto;
		vh->tci = ovh->tci;
		vh->encap_proto = proto;
	}
	return 0;
}

/* Prepends the outer headers (overhead = encap_overhead(be, cfg) bytes)
 * and rewrites L2 to the next hop. flow_sum: the packet's flow sum, whose
 * flow hash (taken only where an outer header carries it: the IPv6 flow
 * label, the GUE source port) lets the network spread flows. The packet is
 * ready for XDP_TX when it returns 0; -1 means the adjust failed (drop). */
static __always_inline int encap(struct xdp_md *ctx, const struct pkt *p, const struct backend *be,
				 const struct lb_config *cfg, __u64 flow_sum, __u32 overhead)
{
	__u32 gue = cfg->flags & CFG_F_GUE;
	__u32 be_v6 = be->flags & BACKEND_F_V6;
	__u32 l2_len = p->l2_len;
	__u8 inner_proto = p->v6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
	__u16 inner_len = p->l3_len;
	void *data, *data_end, *l4;

	if (bpf_xdp_adjust_head(ctx, -(int)overhead))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	if (l2_rewrite(data, data_end, l2_len, overhead, cfg->nh_mac,
		       be_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP)))
		return -1;

	if (!be_v6) {
		struct iphdr *oh = data + (l2_len & 0x1f);

		if ((void *)(oh + 1) > data_end)
			return -1;
		ipv4_outer_write(oh, p->tos, inner_len + overhead, gue ? IPPROTO_UDP : inner_proto,
				 outer_src_v4(cfg, &p->flow.src), be->addr.a[3]);
		l4 = oh + 1;
	} else {
		struct ipv6hdr *oh = data + (l2_len & 0x1f);
		__u32 hash = hash_flow(flow_sum);

		if ((void *)(oh + 1) > data_end)
			return -1;
		oh->version = 6;
		oh->priority = p->tos >> 4;
		/* The flow label carries the flow hash so that routers on the
		 * way to the backend can spread by it (RFC 6438). */
		oh->flow_lbl[0] = ((p->tos & 0xf) << 4) | ((hash >> 16) & 0xf);
		oh->flow_lbl[1] = hash >> 8;
		oh->flow_lbl[2] = hash;
		oh->payload_len = bpf_htons(inner_len + (gue ? UDP_HDR_LEN : 0));
		oh->nexthdr = gue ? IPPROTO_UDP : inner_proto;
		oh->hop_limit = DEFAULT_TTL;
		outer_src_v6(cfg, &p->flow.src, &oh->saddr);
		oh->daddr = be->addr;
		l4 = oh + 1;
	}

	if (gue) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return -1;
		/* Source port from the flow hash: the backend NIC's RSS spreads
		 * flows over its queues. Checksum zero: allowed for IPv4, and
		 * for tunnels over IPv6 (RFC 6935); our decap does not check. */
		uh->source = bpf_htons(0x8000 | (hash_flow(flow_sum) & 0x7fff));
		uh->dest = cfg->gue_port;
		uh->len = bpf_htons(inner_len + UDP_HDR_LEN);
		uh->check = 0;
	}
	return 0;
}

#endif
