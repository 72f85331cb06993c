/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The connection table: a set-associative hash table with least-recently-
 * seen replacement, keyed by the full 5-tuple, in an array map.
 *
 * The flow hash picks a set of CONN_WAYS entries; a flow lives in one of
 * them. A new flow takes a free entry of its set, or the entry seen least
 * recently, by the stamps kept beside the tags (counted as an eviction
 * when that one was still recorded). It
 * replaces the kernel's LRU hash, whose insert (free-list pop, bucket lock,
 * LRU list locks, jhash of the 40-byte key) cost more than the rest of the
 * new-flow path together; here a lookup is an inlined array access plus a
 * compare of four tags, and an insert a 64-byte write.
 *
 * Concurrency: the array is shared by all CPUs, and nothing locks an
 * entry: two CPUs may write the same entry at once, and a CPU may read it
 * while another writes. Each entry therefore vouches for itself: its check
 * word is the flow's sum (hash_flow_sum) XOR its value word (backend, VIP
 * number and epoch), all three written by the same CPU. A reader that
 * matched its own flow's key uses the value only if check == its flow's
 * sum XOR value. Whatever mix of two writes a reader sees, that holds only
 * for a value some CPU wrote for this very flow: with the value a writer
 * wrote alongside the check, equality means the writer's key had this
 * flow's sum, and two keys that differ in one 64-bit lane never share a sum
 * (the lane multipliers are odd); anything else needs a 64-bit coincidence.
 * An entry that fails is a miss, and the flow's next recorded choice
 * overwrites it. The tags only filter which keys to compare. This replaced
 * a compare-and-swap claim per insert (a locked instruction: about a tenth
 * of a new flow's time), and relies on no CPU's memory ordering: every
 * word is read and written whole. */
#ifndef __SY_CONNTRACK_H
#define __SY_CONNTRACK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "structs.h"
#include "maps.h"

/* Sets in the connection table (max_entries of conns); set by the loader. */
const volatile __u32 conn_sets = DEFAULT_CONN_TABLE_SIZE / CONN_WAYS;

/* Nanoseconds per jiffy (10^9 / HZ); set by the loader, which measures
 * it. Entries are timed in jiffies, an inlined read, where the clock
 * helper would be a call on every new flow. */
const volatile __u64 jiffy_ns = 4000000;

#define READ_ONCE_U32(x) (*(volatile __u32 *)&(x))

/* A flow's tag: the high word of its flow sum, whose top bits chose the
 * set (conn_set_of); entries of one set differ in the rest. The finished
 * flow hash would cost its finaliser on every packet. */
static __always_inline __u32 conn_tag(__u64 flow_sum)
{
	return (__u32)(flow_sum >> 32) | 2;
}

/* The set of a flow: the high word of its flow sum (hash_flow_sum) scaled
 * to [0, conn_sets). The sum is ready several multiplies before the flow
 * hash, so the set's first line is on its way sooner. */
static __always_inline struct conn_set *conn_set_of(__u64 flow_sum)
{
	__u32 idx = ((flow_sum >> 32) * conn_sets) >> 32;

	return bpf_map_lookup_elem(&conns, &idx);
}

static __always_inline int flow_eq(const struct flow_key *a, const struct flow_key *b)
{
	const sy_u64 *x = (const sy_u64 *)a, *y = (const sy_u64 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

/* The way of set s that holds flow f, or -1. */
static __always_inline int conn_find(struct conn_set *s, const struct flow_key *f, __u32 tag)
{
#pragma unroll
	for (int w = 0; w < CONN_WAYS; w++) {
		if (READ_ONCE_U32(s->tag[w]) == tag && flow_eq(&s->slot[w].key, f))
			return w;
	}
	return -1;
}

/* An entry's value word: backend id, VIP number and VIP epoch. */
static __always_inline __u64 conn_value(__u32 backend_id, __u32 vip_num, __u32 vip_epoch)
{
	return backend_id | (__u64)(vip_num & 0xffff) << 32 | (__u64)(vip_epoch & 0xffff) << 48;
}

static __always_inline sy_u64 *conn_value_word(struct conn_slot *c)
{
	return (sy_u64 *)&c->backend_id;
}

/* Reads way w of s, whose key is the flow with sum flow_sum (conn_find):
 * 0 and the entry's fields and stamp, or -1 when its check word does not
 * vouch for them (writes of two CPUs mixed in it). */
static __always_inline int conn_read(struct conn_set *s, int w, __u64 flow_sum, __u32 *backend_id,
				     __u32 *vip_num, __u16 *vip_epoch, __u32 *stamp)
{
	struct conn_slot *c = &s->slot[w & (CONN_WAYS - 1)];
	__u64 v = *conn_value_word(c);

	*backend_id = (__u32)v;
	*vip_num = (__u16)(v >> 32);
	*vip_epoch = (__u16)(v >> 48);
	*stamp = READ_ONCE_U32(s->stamp[w & (CONN_WAYS - 1)]);
	return c->check == (flow_sum ^ v) ? 0 : -1;
}

/* Records flow f (sum flow_sum, tag tag) in set s. 'way' is the entry
 * that already holds f (from conn_find), or -1. Returns 1 if it recorded
 * the flow (the caller counts it in vip_counters.new_flows), 0 if another
 * flow took the entry meanwhile. The common case, a new flow evicting the
 * entry seen least recently, counts nothing else (see enum sy_stat). */
static __always_inline int conn_insert(struct conn_set *s, int way, const struct flow_key *f,
					__u64 flow_sum, __u32 tag, __u32 backend_id, __u32 vip_num,
					__u32 vip_epoch, __u32 jiffy)
{
	__u64 v = conn_value(backend_id, vip_num, vip_epoch);
	struct conn_slot *c;
	__u32 old;
	int victim = 0;

	if (way < 0) {
		__u32 oldest = 0;

#pragma unroll
		for (int w = CONN_WAYS - 1; w >= 0; w--) {
			__u32 t = READ_ONCE_U32(s->tag[w]);
			/* Wrap-safe age; an empty entry counts as the oldest. */
			__u32 age = t == CONN_TAG_EMPTY ? ~0U : jiffy - s->stamp[w];

			if (age >= oldest) {
				victim = w;
				oldest = age;
			}
		}
	} else {
		victim = way;
	}
	victim &= CONN_WAYS - 1;
	old = READ_ONCE_U32(s->tag[victim]);
	if (way >= 0) {
		if (old != tag) {
			/* Another flow took the entry since conn_find. */
			count(STAT_CONN_INSERT_RACE);
			return 0;
		}
		count(STAT_CONN_REFRESHED);
	} else if (old == CONN_TAG_EMPTY) {
		count(STAT_CONN_FILLED);
	}
	c = &s->slot[victim];
	c->key = *f;
	*conn_value_word(c) = v;
	c->check = flow_sum ^ v;
	s->stamp[victim] = jiffy;
	s->tag[victim] = tag;
	return 1;
}

/* Refreshes the stamp of way w (an established flow's packet). */
static __always_inline void conn_touch(struct conn_set *s, int w, __u32 jiffy)
{
	s->stamp[w & (CONN_WAYS - 1)] = jiffy;
}

#endif
