// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The memory-latency reference of the benchmarks (pkg/datapath
 * BenchmarkRatios): the floor program plus one read and one write of an
 * entry of a table as large as the default connection table, at a place
 * the previous packet's read decides (a dependent chain, as lmbench's
 * lat_mem_rd measures latency). Its time is what one touch of such a table
 * costs when it misses the CPU caches, as a new flow's first touch of its
 * set does: the least a new flow recorded in a table of the default size
 * can cost on the machine measured. Not part of the product. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pkt.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* One cache line, as a connection-table set's first line. */
struct mem_line {
	__u64 w[8];
};

/* Sized by the loader (max_entries and mem_lines together). Laid out as
 * conns is: every entry a whole cache line (see maps.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mem_line);
} mem_table SEC(".maps");

const volatile __u32 mem_lines = 1;

/* Where the next packet reads: decided by what this one read. */
__u64 mem_next = 1;

SEC("xdp")
int xdp_mem_touch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct mem_line *l;
	__u8 tmp[ETH_ALEN];
	__u64 at = mem_next, v;
	__u32 idx;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);

	idx = ((at >> 32) * mem_lines) >> 32;
	l = bpf_map_lookup_elem(&mem_table, &idx);
	if (!l)
		return XDP_DROP;
	v = l->w[0];
	l->w[0] = v + at;
	/* fmix64 of what was read: the next place depends on this read. */
	v ^= at;
	v ^= v >> 33;
	v *= 0xff51afd7ed558ccdULL;
	v ^= v >> 33;
	mem_next = v;
	return XDP_TX;
}
