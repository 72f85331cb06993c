/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Flow hash over the flow key's 64-bit lanes (see hash_flow).
 * pkg/datapath.FlowHash mirrors it bit for bit; the cluster needs to know
 * which Maglev slot a flow falls into, so the two must never diverge. */
#ifndef __SY_HASH_H
#define __SY_HASH_H

#include <linux/types.h>
#include "structs.h"

/* MurmurHash3's 32-bit finaliser: outer_src_v6 derives one word per
 * 32 bits of the host part from the client's address hash with it. */
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

/* The flow hash. The key is read as 64-bit lanes; each lane is multiplied
 * by its own odd constant and the products are summed (a multilinear
 * hash: the multiplies run in parallel instead of in one chain as
 * MurmurHash3's rounds do, and two keys that differ in one lane never
 * collide before the finaliser, a bijection). fmix64 (MurmurHash3's
 * 64-bit finaliser) then spreads every input bit over the result. A lane
 * the caller knows to be zero (the upper half of an IPv4 address) folds
 * away at compile time. Callers pass 8-byte aligned keys (struct flow_key
 * is), since the verifier refuses unaligned stack reads. */
#define HASH_MUL 0x9e3779b97f4a7c15ULL /* vip_filter_bit's multiplier */
#define HASH_M0 0xa0761d6478bd642fULL
#define HASH_M1 0xe7037ed1a0b428dbULL
#define HASH_M2 0x8ebc6af09c88c6e3ULL
#define HASH_M3 0x589965cc75374cc3ULL
#define HASH_M4 0x1d8e4e27c47d124fULL

static __always_inline __u32 hash_final(__u64 h, __u64 len)
{
	h ^= len;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return (__u32)h;
}

/* Hashes a 16-byte address (the client's, for source affinity and for
 * the outer source inside a prefix). */
static __always_inline __u32 hash_addr(const struct addr *a, __u32 seed)
{
	const sy_u64 *w = (const sy_u64 *)a;

	return hash_final(seed + w[0] * HASH_M0 + w[1] * HASH_M1, 16);
}

/* The flow sum: the whole 40-byte key (pad bytes are zero) before the
 * finaliser. The connection table picks a set by its high word and checks
 * entries against it (conntrack.h). */
static __always_inline __u64 hash_flow_sum(const struct flow_key *f)
{
	const sy_u64 *w = (const sy_u64 *)f;

	return FLOW_HASH_SEED + w[0] * HASH_M0 + w[1] * HASH_M1 + w[2] * HASH_M2 + w[3] * HASH_M3 +
	       w[4] * HASH_M4;
}

/* The flow hash, from the flow sum. */
static __always_inline __u32 hash_flow(__u64 flow_sum)
{
	return hash_final(flow_sum, sizeof(struct flow_key));
}

/* The home slot of a VIP key in the VIP index: address words and the
 * port/protocol word (see struct vip_slot), multiplied and summed, top
 * bits. pkg/datapath.vipIndexHash mirrors it. */
static __always_inline __u32 vip_index_hash(__u64 a0, __u64 a1, __u32 port_proto)
{
	return (a0 * HASH_M0 + a1 * HASH_M1 + port_proto * HASH_M4) >> (64 - 12);
}

#endif
