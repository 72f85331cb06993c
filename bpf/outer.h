/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The outer headers' pieces that both encapsulating programs write: the
 * balancer's XDP encap (encap.h) and the tunnel health checks' tc program
 * (hc_encap.bpf.c). Kept apart from encap.h, which needs the balancer's
 * parser and maps. */
#ifndef __SY_OUTER_H
#define __SY_OUTER_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include "consts.h"
#include "structs.h"
#include "pkt.h"
#include "csum.h"
#include "hash.h"

/* Writes a 20-byte IPv4 header (DF set, no options) at oh. It is built in
 * registers and its checksum summed from them, not read back from the
 * packet (see sy_u64). */
static __always_inline void ipv4_outer_write(void *oh, __u8 tos, __u16 tot_len, __u8 proto,
					     __be32 saddr, __be32 daddr)
{
	/* version, IHL, TOS, total length, ID 0, flags and fragment offset */
	__u64 w0 = 0x45 | ((__u64)tos << 8) | ((__u64)bpf_htons(tot_len) << 16) |
		   ((__u64)bpf_htons(IP_DF) << 48);
	/* TTL, protocol, checksum (0 while summing), source */
	__u64 w1 = DEFAULT_TTL | ((__u64)proto << 8) | ((__u64)saddr << 32);
	__u64 sum = (w0 & 0xffffffff) + (w0 >> 32) + (w1 & 0xffffffff) + (w1 >> 32) + daddr;

	w1 |= (__u64)csum_fold(sum) << 16;
	*(sy_u64 *)oh = w0;
	*(sy_u64 *)(oh + 8) = w1;
	*(sy_u32 *)(oh + 16) = daddr;
}

/* The outer source address for an inner source src: the balancer's
 * own, or one hashed from src inside the configured prefix. */
static __always_inline __be32 outer_src_v4(const struct lb_config *cfg, const struct addr *src)
{
	if (!(cfg->flags & CFG_F_SRC_PREFIX_V4))
		return cfg->src_v4;
	return cfg->src_prefix_v4 |
	       (bpf_htonl(hash_addr(src, FLOW_HASH_SEED)) & cfg->src_hostmask_v4);
}

static __always_inline void outer_src_v6(const struct lb_config *cfg, const struct addr *src,
					 struct addr *out)
{
	__u32 h;

	if (!(cfg->flags & CFG_F_SRC_PREFIX_V6)) {
		*out = cfg->src_v6;
		return;
	}
	h = hash_addr(src, FLOW_HASH_SEED);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		out->a[i] = cfg->src_prefix_v6.a[i] | (bpf_htonl(h) & cfg->src_hostmask_v6.a[i]);
		h = murmur_final(h, i + 1);
	}
}

#endif /* __SY_OUTER_H */
