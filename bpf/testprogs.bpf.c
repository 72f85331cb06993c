// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Helper programs: the benchmark floor (the least an XDP forwarder can do),
 * the floor plus the work of the balancer's benchmark undo (a reference for
 * what the benchmark build adds), and the XDP_PASS a veth peer needs so
 * that XDP_TX frames reach it. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "pkt.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int xdp_floor(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 tmp[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
	return XDP_TX;
}

/* The floor plus what SY_BENCH_UNDO adds to a new flow in the balancer's
 * benchmark build (balancer.bpf.c, send): one bpf_xdp_adjust_head call
 * (here by 0 bytes, which does the same checks and stores), the EtherType
 * rewritten and the TCP source port of an IPv4 packet without options
 * incremented (and, when it wraps, the source address). The product runs
 * none of it. */
SEC("xdp")
int xdp_floor_undo(struct xdp_md *ctx)
{
	void *data, *data_end;
	struct ethhdr *eth;
	__u8 tmp[ETH_ALEN];
	__u16 *sport;

	if (bpf_xdp_adjust_head(ctx, 0))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	sport = data + sizeof(struct ethhdr) + sizeof(struct iphdr);
	if ((void *)(sport + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	if (++*sport == 0)
		((struct iphdr *)(eth + 1))->saddr++;
	return XDP_TX;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
