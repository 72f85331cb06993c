/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps of the balancer program. All of them are pinned by pkg/datapath, so a
 * restart or an upgrade keeps VIPs, tables and established flows. */
#ifndef __SY_MAPS_H
#define __SY_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "structs.h"

/* (address, port, protocol) -> VIP: the control plane's record. Packets
 * find VIPs through vip_index, which pkg/datapath derives from it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
} vips SEC(".maps");

/* The VIP index: an open-addressed table (linear probing) of the VIPs in
 * vips, placed by vip_index_hash. A hash-map lookup (jhash and memcmp of
 * the 20-byte key, through a function call) cost about twice the floor
 * program per new flow; here it is an inlined array read and a compare.
 * The control plane builds each version of the index as a new inner map
 * and swaps it into slot 0 in one update, so a packet sees one version
 * whole. The inner maps all have the template's size, which lets the
 * verifier inline their lookups. */
struct vip_index_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VIP_INDEX_SLOTS);
	__type(key, __u32);
	__type(value, struct vip_slot);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct vip_index_table);
} vip_index SEC(".maps");

/* Addresses that carry at least one VIP -> number of VIPs on it. The exact
 * answer behind vip_filter, for packets that have no port to look a VIP up
 * by (fragments, ICMP) or that would be dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct addr);
	__type(value, __u32);
} vip_addrs SEC(".maps");

/* A bit per hash of VIP address: set for every address in vip_addrs (the
 * control plane keeps the two in step). One inlined array read sends most
 * host traffic on its way; a set bit only means "maybe a VIP". */
struct vip_filter {
	__u64 w[VIP_FILTER_BITS / 64];
};

/* vip_filter and config are globals, each in its own data section: an
 * array map of one entry that the program reads by direct address, with
 * no lookup and no NULL check. pkg/datapath names and pins them as
 * "vip_filter" and "config" (the layout of the single-entry array maps of
 * earlier versions, so their pins carry over) and writes them whole. */
struct vip_filter vip_filter SEC(".data.vip_filter");

/* One Maglev table: slot -> backend id. Tables of different (prime) sizes
 * share the outer map thanks to BPF_F_INNER_MAP. */
struct maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

/* vip_num * 2 + generation -> Maglev table of more than MAGLEV_STD_SLOTS
 * slots. The control plane fills the inactive generation, then flips
 * vip_meta.gen; the other generation stays readable for flows that predate
 * the change. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_VIPS * MAGLEV_GENERATIONS);
	__type(key, __u32);
	__array(values, struct maglev_table);
} maglev_tables SEC(".maps");

/* The same for tables of up to MAGLEV_STD_SLOTS slots (the default size
 * and the smaller ones), each in an inner map of exactly that many slots
 * (a smaller table uses the first ones): inner maps of one size let the
 * verifier inline their lookups, where maglev_tables' cost a call. The
 * control plane writes them through a memory mapping: 10 us a table, where
 * a batch update took 10 ms. pkg/datapath pins this outer map as
 * "maglev_std_mm": the previous release's "maglev_std" takes only inner
 * maps without BPF_F_MMAPABLE, and its tables are copied over. */
struct maglev_std_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAGLEV_STD_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_VIPS * MAGLEV_GENERATIONS);
	__type(key, __u32);
	__array(values, struct maglev_std_table);
} maglev_std SEC(".maps");

/* The connection table, flow -> backend: a set-associative LRU hash table
 * (see conntrack.h), set index -> set. Its size (sets) is set at load time,
 * together with conn_sets. Mappable only for its layout: such an array's
 * values start on a page, so every 256-byte set is four whole cache lines,
 * its tags and stamps in the first. Other arrays' values start after the
 * kernel's header (312 bytes on 6.18), where each set straddles five lines
 * and its tags two: a new flow recorded in a table of the default size,
 * which misses the caches, took 15% longer. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, DEFAULT_CONN_TABLE_SIZE / CONN_WAYS);
	__type(key, __u32);
	__type(value, struct conn_set);
} conns SEC(".maps");

/* vip_num -> epoch: odd while the VIP exists. The control plane moves it
 * on when a VIP number is created, changes flags or is deleted, so that
 * connection entries recorded for an earlier VIP of that number are not
 * used (a pinned packet skips the VIP lookup). Pinned packets read the
 * copy in vip_epoch_table; the VIP index carries one too (vip_meta.epoch),
 * which new flows record. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u32);
	__type(value, __u32);
} vip_epochs SEC(".maps");

/* Backend id -> address and flags: the control plane's record; packets
 * read the copy in backend_table. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

struct lb_config config SEC(".data.config");

/* The datapath's copies of backends and vip_epochs, which stay the control
 * plane's records: global data, each array in its own section, which the
 * program reads by direct address (an index under a mask), with no lookup,
 * no key on the stack and no NULL check. pkg/datapath pins them by these
 * names, writes a record and then its copy, and rebuilds both copies from
 * the records at every load (an earlier version's pins have no copies). */
struct backend backend_table[MAX_BACKENDS] SEC(".data.backend_table");
__u32 vip_epoch_table[MAX_VIPS] SEC(".data.vip_epoch_table");

/* Backend id's entry in backend_table, or NULL for an id past its end. */
static __always_inline struct backend *backend_of(__u32 id)
{
	if (id >= MAX_BACKENDS)
		return NULL;
	return &backend_table[id & (MAX_BACKENDS - 1)];
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_counters);
} vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend_counters);
} backend_stats SEC(".maps");

/* Counter baselines, the control plane's alone (the program never reads
 * them): a VIP number's and a backend id's counters, summed over CPUs, as
 * they stood when the number was given to a new VIP or the id to a new
 * address. pkg/datapath reports a VIP's and a backend's counters from
 * there, so a new VIP does not inherit the counts of a deleted one that
 * had its number; the global sums (connection hits, misses, evictions)
 * still take in every count and never fall. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_counters);
} vip_stats_base SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend_counters);
} backend_stats_base SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &idx);

	if (c)
		*c += 1;
}

#endif
