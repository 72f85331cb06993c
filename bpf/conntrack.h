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
 * compare of four tags, and an insert one compare-and-swap and a 56-byte
 * write.
 *
 * Concurrency: the array is shared by all CPUs. A writer claims an entry
 * by swapping its tag to CONN_TAG_BUSY (a CPU that loses the race does not
 * record its flow; the next packet of that flow retries), writes it, then
 * publishes the flow's tag. A reader reads the tag, the entry, then the tag
 * again, and treats a changed tag as a miss; with x86's ordering of stores
 * and of loads this never returns a half-written entry. */
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

static __always_inline __u32 conn_tag(__u32 flow_hash)
{
	return flow_hash | 2;
}

/* The set of a flow: the flow hash scaled to [0, conn_sets). */
static __always_inline struct conn_set *conn_set_of(__u32 flow_hash)
{
	__u32 idx = ((__u64)flow_hash * conn_sets) >> 32;

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

/* Reads way w of s if it still holds the flow tagged tag: 0 and the
 * entry's fields and stamp, or -1 when a writer took the entry meanwhile. */
static __always_inline int conn_read(struct conn_set *s, int w, __u32 tag, __u32 *backend_id,
				     __u32 *vip_num, __u16 *vip_epoch, __u32 *stamp)
{
	struct conn_slot *c = &s->slot[w & (CONN_WAYS - 1)];

	*backend_id = c->backend_id;
	*vip_num = c->vip_num;
	*vip_epoch = c->vip_epoch;
	*stamp = READ_ONCE_U32(s->stamp[w & (CONN_WAYS - 1)]);
	barrier();
	return READ_ONCE_U32(s->tag[w & (CONN_WAYS - 1)]) == tag ? 0 : -1;
}

/* Records flow f in set s. 'way' is the entry that already holds f (from
 * conn_find), or -1. */
static __always_inline void conn_insert(struct conn_set *s, int way, const struct flow_key *f,
					__u32 tag, __u32 backend_id, __u32 vip_num, __u32 vip_epoch,
					__u32 jiffy)
{
	struct conn_slot *c;
	__u32 old;
	int v = way;

	if (v < 0) {
		__u32 oldest = 0;

#pragma unroll
		for (int w = CONN_WAYS - 1; w >= 0; w--) {
			__u32 t = READ_ONCE_U32(s->tag[w]);
			/* Wrap-safe age; an empty entry counts as the oldest. */
			__u32 age = t == CONN_TAG_EMPTY ? ~0U : jiffy - s->stamp[w];

			if (t != CONN_TAG_BUSY && age >= oldest) {
				v = w;
				oldest = age;
			}
		}
		if (v < 0) {
			count(STAT_CONN_INSERT_RACE);
			return;
		}
	}
	v &= CONN_WAYS - 1;
	old = READ_ONCE_U32(s->tag[v]);
	if (old == CONN_TAG_BUSY || (way >= 0 && old != tag) ||
	    __sync_val_compare_and_swap(&s->tag[v], old, CONN_TAG_BUSY) != old) {
		count(STAT_CONN_INSERT_RACE);
		return;
	}
	if (old != CONN_TAG_EMPTY && way < 0)
		count(STAT_CONN_EVICTED);
	c = &s->slot[v];
	c->key = *f;
	c->backend_id = backend_id;
	c->vip_num = vip_num;
	c->vip_epoch = vip_epoch;
	s->stamp[v] = jiffy;
	barrier();
	s->tag[v] = tag;
}

/* Refreshes the stamp of way w (an established flow's packet). */
static __always_inline void conn_touch(struct conn_set *s, int w, __u32 jiffy)
{
	s->stamp[w & (CONN_WAYS - 1)] = jiffy;
}

#endif
