/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map keys and values. Go gets them through bpf2go -type; field order and
 * sizes are ABI for pinned maps: append, never reorder. */
#ifndef __SY_STRUCTS_H
#define __SY_STRUCTS_H

#include <linux/types.h>
#include "consts.h"

/* Whole words of headers and keys. Where the program reads bytes it has
 * just written, it writes them as wide as it reads them: a CPU cannot
 * forward two narrow stores into one wider load, which then waits until
 * the stores retire (a store-forwarding stall). may_alias: the same
 * bytes are also read through the header structs. */
typedef __u16 __attribute__((may_alias)) sy_u16;
typedef __u32 __attribute__((may_alias)) sy_u32;
typedef __u64 __attribute__((may_alias)) sy_u64;

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the header and key words built in registers (parsing.h, encap.h, vip_lookup) assume a little-endian target (bpfel)"
#endif

/* An address in 16 bytes: IPv4 is written as ::ffff:a.b.c.d so that one code
 * path and one key layout serve both families. Network byte order. */
struct addr {
	__be32 a[4];
};

struct vip_key {
	struct addr addr;
	__be16 port; /* 0: all ports */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct vip_meta {
	__u32 vip_num;  /* index into maglev_tables and vip_stats */
	__u32 flags;    /* enum vip_flags */
	__u32 table_size[MAGLEV_GENERATIONS]; /* slots of each generation's table */
	__u32 gen;      /* active generation: 0 or 1 */
	__u32 epoch;    /* in the VIP index: vip_epochs[vip_num] as the index was built */
};

/* A slot of the VIP index: a VIP's key, as 64-bit words, and a copy of its
 * vip_meta. port_proto is vip_key's last word (port | protocol << 16);
 * zero marks a free slot (no VIP has protocol 0). */
struct vip_slot {
	struct addr addr;
	__u32 port_proto;
	__u32 pad;
	struct vip_meta meta;
} __attribute__((aligned(8)));

/* The 5-tuple of a client flow, as seen on the way in. 8-byte aligned:
 * hash_flow reads it in 64-bit lanes. */
struct flow_key {
	struct addr src;
	struct addr dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
} __attribute__((aligned(8)));

/* One connection-table entry. backend_id, vip_num and vip_epoch are read
 * and written as one 64-bit value word. */
struct conn_slot {
	struct flow_key key;
	__u32 backend_id;
	__u16 vip_num;
	__u16 vip_epoch;    /* vip_epochs[vip_num] when recorded (low 16 bits; the
			     * control plane empties a number's entries when they wrap) */
	__u64 check;        /* flow sum XOR the word above (see conntrack.h) */
};

/* A set of the connection table: CONN_WAYS entries, tag[w] telling what
 * slot[w] holds (CONN_TAG_EMPTY, or conn_tag() of its flow sum). Tags and
 * stamps share the first cache line: a lookup reads a slot only on a
 * likely match, an insert only the slot it writes. 256 bytes: four cache
 * lines. */
struct conn_set {
	__u32 tag[CONN_WAYS];
	__u32 stamp[CONN_WAYS]; /* jiffies (low 32 bits) at the latest refresh: idle time, and a victim chosen without reading slots */
	struct conn_slot slot[CONN_WAYS];
};

struct backend {
	struct addr addr;
	__u32 flags; /* enum backend_flags */
};

struct lb_config {
	__u8 nh_mac[ETH_ALEN];  /* next hop (router); encap copies both MACs as */
	__u8 src_mac[ETH_ALEN]; /* our interface;     one 12-byte block */
	__u16 mtu;              /* largest encapsulated L3 packet */
	__be16 gue_port;
	__u32 flags;            /* enum cfg_flags */
	__be32 src_v4;
	struct addr src_v6;
	__be32 src_prefix_v4;   /* network part, host bits zero */
	__be32 src_hostmask_v4; /* host bits set */
	struct addr src_prefix_v6;
	struct addr src_hostmask_v6;
	__u64 udp_timeout_ns;
};

struct vip_counters {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;   /* flows recorded in the connection table (new, or again) */
	__u64 conn_hits;   /* packets a connection-table entry sent */
	__u64 conn_misses; /* packets that found no usable entry (then Maglev chose) */
};

struct backend_counters {
	__u64 packets;
	__u64 bytes;
};

struct decap_config {
	__be16 gue_port; /* 0: no GUE */
	__u16 pad;
	__u32 flags;
};

#endif
