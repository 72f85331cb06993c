// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Health checks through the tunnel (as Katran's healthchecking_ipip): a tc
 * egress program on the balancer's interface that encapsulates the packets
 * of health-check sockets to the backend they check, with the VIP as the
 * inner destination, exactly as the balancer program encapsulates client
 * packets: a check then proves the whole path (the encapsulation, the
 * backend's decap, the VIP on its lo, the service, the direct return).
 *
 * A health-check socket carries SO_MARK = HC_MARK_MAGIC | backend id
 * (pkg/datapath HCMark). Packets without that mark leave untouched. The
 * backend's address and the encapsulation settings (source address, GUE,
 * next hop, MTU) are read from the balancer program's own maps
 * (backend_table, config): the same maps, not copies. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"
#include "pkt.h"
#include "csum.h"
#include "hash.h"
#include "outer.h"

/* encap.h comes with the balancer's parser and every one of its maps
 * (parsing.h, maps.h); this program shares two of those maps and needs
 * neither the parser nor the rest: it writes its outer headers with
 * outer.h's pieces, which encap.h uses too. */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The balancer program's maps (maps.h), which pkg/datapath hands to this
 * program at load: the same maps, so a backend's address and the
 * encapsulation settings are the ones client packets get. */
struct lb_config config SEC(".data.config");
struct backend backend_table[MAX_BACKENDS] SEC(".data.backend_table");

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

/* The mark of a health-check packet: the magic in the high 16 bits, the
 * backend id in the low 16 (MAX_BACKENDS <= 65536). Mirrored by
 * pkg/datapath hcMarkMagic; changing it breaks a running daemon's checks
 * only (nothing is pinned). */
#define HC_MARK_MAGIC 0x53590000
#define HC_MARK_MASK 0xffff0000
#define HC_MARK_ID 0x0000ffff

_Static_assert(MAX_BACKENDS <= HC_MARK_ID + 1, "backend ids must fit the mark's low 16 bits");

/* enum hc_stat: indices of the program's per-CPU counters; names become
 * metric labels (pkg/datapath), keep them stable. */
enum hc_stat {
	HC_STAT_ENCAP = 0,     /* marked packet encapsulated to its backend */
	HC_STAT_NO_BACKEND,    /* marked for a backend id with no backend: dropped */
	HC_STAT_TOO_BIG,       /* over the MTU once encapsulated: dropped */
	HC_STAT_ERROR,         /* marked, but not IPv4/IPv6 in plain Ethernet, truncated, or the helper failed: dropped */
	HC_STAT_MAX,
};

const enum hc_stat *unused_hc_stat __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HC_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} hc_stats SEC(".maps");

static __always_inline int hc_count(__u32 idx, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&hc_stats, &idx);

	if (c)
		*c += 1;
	return verdict;
}

SEC("tc")
int tc_hc_encap(struct __sk_buff *skb)
{
	struct lb_config *cfg = &config;
	struct addr src = {};
	__u8 tos;
	struct backend *be;
	__u32 mark = skb->mark;
	__u32 be_v6, gue, overhead, l3_len;
	__u64 flags;
	__be16 proto;
	__u8 inner_proto;
	void *data, *data_end;
	struct ethhdr *eth;

	if ((mark & HC_MARK_MASK) != HC_MARK_MAGIC)
		return TC_ACT_OK;
	if ((mark & HC_MARK_ID) >= MAX_BACKENDS)
		return hc_count(HC_STAT_NO_BACKEND, TC_ACT_SHOT);
	be = &backend_table[mark & (MAX_BACKENDS - 1)];
	if ( !(be->flags & BACKEND_F_VALID))
		return hc_count(HC_STAT_NO_BACKEND, TC_ACT_SHOT);
	be_v6 = be->flags & BACKEND_F_V6;
	gue = cfg->flags & CFG_F_GUE;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return hc_count(HC_STAT_ERROR, TC_ACT_SHOT);
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return hc_count(HC_STAT_ERROR, TC_ACT_SHOT);
		l3_len = bpf_ntohs(ip->tot_len);
		if (l3_len < sizeof(*ip))
			return hc_count(HC_STAT_ERROR, TC_ACT_SHOT);
		tos = ip->tos;
		src.a[2] = bpf_htonl(0xffff);
		src.a[3] = ip->saddr;
		inner_proto = IPPROTO_IPIP;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return hc_count(HC_STAT_ERROR, TC_ACT_SHOT);
		l3_len = bpf_ntohs(ip6->payload_len) + IPV6_HDR_LEN;
		tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		src = ip6->saddr;
		inner_proto = IPPROTO_IPV6;
	} else {
		return hc_count(HC_STAT_ERROR, TC_ACT_SHOT);
	}
	/* A packet shorter than its IP header says (truncated) would get
	 * an outer header that claims bytes it does not have. */
	if (l3_len > skb->len - sizeof(*eth))
		return hc_count(HC_STAT_ERROR, TC_ACT_SHOT);
	l3_len &= 0xffff;

	overhead = (be_v6 ? IPV6_HDR_LEN : IPV4_HDR_LEN) + (gue ? UDP_HDR_LEN : 0);
	/* GSO packets are cut to the MSS later, each segment with its own
	 * outer header; the others must fit as they are. */
	if (cfg->mtu && !skb->gso_size && l3_len + overhead > cfg->mtu)
		return hc_count(HC_STAT_TOO_BIG, TC_ACT_SHOT);

	flags = BPF_F_ADJ_ROOM_FIXED_GSO |
		(be_v6 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 : BPF_F_ADJ_ROOM_ENCAP_L3_IPV4);
	if (gue)
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
	/* Room between the Ethernet and the IP header: the inner packet
	 * stays where it was in the buffer, with its checksum offsets. */
	if (bpf_skb_adjust_room(skb, overhead, BPF_ADJ_ROOM_MAC, flags))
		return hc_count(HC_STAT_ERROR, TC_ACT_SHOT);

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return hc_count(HC_STAT_ERROR, TC_ACT_SHOT);
	/* The next hop the balancer program sends to, once known; until
	 * then the one the host's route to the VIP resolved. */
	if (cfg->flags & CFG_F_NEXTHOP) {
		__builtin_memcpy(eth->h_dest, cfg->nh_mac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, cfg->src_mac, ETH_ALEN);
	}
	eth->h_proto = be_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);

	if (!be_v6) {
		struct iphdr *oh = (void *)(eth + 1);

		if ((void *)(oh + 1) > data_end)
			return hc_count(HC_STAT_ERROR, TC_ACT_SHOT);
		ipv4_outer_write(oh, tos, l3_len + overhead, gue ? IPPROTO_UDP : inner_proto,
				 outer_src_v4(cfg, &src), be->addr.a[3]);
	} else {
		struct ipv6hdr *oh = (void *)(eth + 1);
		__u32 hash = hash_addr(&src, FLOW_HASH_SEED);

		if ((void *)(oh + 1) > data_end)
			return hc_count(HC_STAT_ERROR, TC_ACT_SHOT);
		oh->version = 6;
		oh->priority = tos >> 4;
		oh->flow_lbl[0] = ((tos & 0xf) << 4) | ((hash >> 16) & 0xf);
		oh->flow_lbl[1] = hash >> 8;
		oh->flow_lbl[2] = hash;
		oh->payload_len = bpf_htons(l3_len + (gue ? UDP_HDR_LEN : 0));
		oh->nexthdr = gue ? IPPROTO_UDP : inner_proto;
		oh->hop_limit = DEFAULT_TTL;
		outer_src_v6(cfg, &src, &oh->saddr);
		oh->daddr = be->addr;
	}
	if (gue) {
		struct udphdr *uh = (void *)(eth + 1) + (be_v6 ? IPV6_HDR_LEN : IPV4_HDR_LEN);

		if ((void *)(uh + 1) > data_end)
			return hc_count(HC_STAT_ERROR, TC_ACT_SHOT);
		uh->source = bpf_htons(0x8000 | (hash_addr(&src, FLOW_HASH_SEED) & 0x7fff));
		uh->dest = cfg->gue_port;
		uh->len = bpf_htons(l3_len + UDP_HDR_LEN);
		uh->check = 0;
	}
	return hc_count(HC_STAT_ENCAP, TC_ACT_OK);
}
