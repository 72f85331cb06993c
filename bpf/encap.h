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

static __always_inline __u32 encap_overhead(const struct backend *be, const struct lb_config *cfg)
{
	__u32 n = (be->flags & BACKEND_F_V6) ? IPV6_HDR_LEN : IPV4_HDR_LEN;

	if (cfg->flags & CFG_F_GUE)
		n += UDP_HDR_LEN;
	return n;
}

/* Moves the L2 header to the new start of the frame after the head grew by
 * 'delta' bytes, and sets its addresses and EtherType. The old header is at
 * data + delta; delta >= 18 so the two never overlap. */
static __always_inline int l2_rewrite(void *data, void *data_end, __u32 l2_len, __u32 delta,
				      const __u8 *dst, const __u8 *src, __be16 proto)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	if (l2_len == sizeof(*eth)) {
		eth->h_proto = proto;
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

static __always_inline __be32 outer_src_v4(const struct lb_config *cfg, const struct pkt *p)
{
	if (!(cfg->flags & CFG_F_SRC_PREFIX_V4))
		return cfg->src_v4;
	return cfg->src_prefix_v4 |
	       (bpf_htonl(hash_addr(&p->flow.src, FLOW_HASH_SEED)) & cfg->src_hostmask_v4);
}

static __always_inline void outer_src_v6(const struct lb_config *cfg, const struct pkt *p,
					 struct addr *out)
{
	__u32 h;

	if (!(cfg->flags & CFG_F_SRC_PREFIX_V6)) {
		*out = cfg->src_v6;
		return;
	}
	h = hash_addr(&p->flow.src, FLOW_HASH_SEED);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		out->a[i] = cfg->src_prefix_v6.a[i] | (bpf_htonl(h) & cfg->src_hostmask_v6.a[i]);
		h = murmur_final(h, i + 1);
	}
}

/* Prepends the outer headers (overhead = encap_overhead(be, cfg) bytes)
 * and rewrites L2 to the next hop. The packet is
 * ready for XDP_TX when it returns 0; -1 means the adjust failed (drop). */
static __always_inline int encap(struct xdp_md *ctx, const struct pkt *p, const struct backend *be,
				 const struct lb_config *cfg, __u32 hash, __u32 overhead)
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

	if (l2_rewrite(data, data_end, l2_len, overhead, cfg->nh_mac, cfg->src_mac,
		       be_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP)))
		return -1;

	if (!be_v6) {
		struct iphdr *oh = data + (l2_len & 0x1f);

		if ((void *)(oh + 1) > data_end)
			return -1;
		oh->version = 4;
		oh->ihl = 5;
		oh->tos = p->tos;
		oh->tot_len = bpf_htons(inner_len + overhead);
		oh->id = 0;
		oh->frag_off = bpf_htons(IP_DF);
		oh->ttl = DEFAULT_TTL;
		oh->protocol = gue ? IPPROTO_UDP : inner_proto;
		oh->check = 0;
		oh->saddr = outer_src_v4(cfg, p);
		oh->daddr = be->addr.a[3];
		oh->check = ipv4_hdr_csum(oh);
		l4 = oh + 1;
		count(STAT_ENCAP_IPIP);
	} else {
		struct ipv6hdr *oh = data + (l2_len & 0x1f);

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
		outer_src_v6(cfg, p, &oh->saddr);
		oh->daddr = be->addr;
		l4 = oh + 1;
		count(STAT_ENCAP_IP6);
	}

	if (gue) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return -1;
		/* Source port from the flow hash: the backend NIC's RSS spreads
		 * flows over its queues. Checksum zero: allowed for IPv4, and
		 * for tunnels over IPv6 (RFC 6935); our decap does not check. */
		uh->source = bpf_htons(0x8000 | (hash & 0x7fff));
		uh->dest = cfg->gue_port;
		uh->len = bpf_htons(inner_len + UDP_HDR_LEN);
		uh->check = 0;
		count(STAT_ENCAP_GUE);
	}
	return 0;
}

#endif
