/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Flow hash: MurmurHash3 (x86, 32-bit) over the flow key's 32-bit words.
 * pkg/datapath.FlowHash mirrors it bit for bit; the cluster needs to know
 * which Maglev slot a flow falls into, so the two must never diverge. */
#ifndef __SY_HASH_H
#define __SY_HASH_H

#include <linux/types.h>
#include "structs.h"

static __always_inline __u32 rotl32(__u32 x, __u32 r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 murmur_round(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 murmur_final(__u32 h, __u32 len)
{
	h ^= len;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 hash_addr(const struct addr *a, __u32 seed)
{
	__u32 h = seed;

	h = murmur_round(h, a->a[0]);
	h = murmur_round(h, a->a[1]);
	h = murmur_round(h, a->a[2]);
	h = murmur_round(h, a->a[3]);
	return murmur_final(h, 16);
}

/* Hashes the whole 40-byte key (pad bytes are zero). */
static __always_inline __u32 hash_flow(const struct flow_key *f)
{
	const __u32 *w = (const __u32 *)f;
	__u32 h = FLOW_HASH_SEED;

#pragma unroll
	for (int i = 0; i < sizeof(*f) / 4; i++)
		h = murmur_round(h, w[i]);
	return murmur_final(h, sizeof(*f));
}

#endif
