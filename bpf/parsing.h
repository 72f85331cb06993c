/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing: Ethernet (+ one 802.1Q/802.1ad tag), IPv4 (with options),
 * IPv6, TCP, UDP, ICMP, ICMPv6. Every read is bounds-checked: a short packet
 * ends in a verdict, never in an out-of-bounds access. */
#ifndef __SY_PARSING_H
#define __SY_PARSING_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include "pkt.h"
#include "maps.h"
#include "hash.h"

/* What the parser learned about a packet. Offsets are from ctx->data. */
struct pkt {
	struct flow_key flow;
	__u32 l2_len; /* 14, or 18 with a VLAN tag */
	__u32 l4_off; /* start of the L4 header */
	__u32 l3_len; /* IP header + payload, as the IP header declares */
	__u32 frame_len;
	__u8 v6;
	__u8 tos;       /* IPv4 TOS or IPv6 traffic class */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
};

/* Parser verdicts. PARSE_DROP + n means "drop, counted under sy_stat n". */
#define PARSE_OK 0
#define PARSE_PASS 1      /* not for a VIP: leave it to the stack */
#define PARSE_MALFORMED 2 /* unparsable L2/L3: leave it to the stack, count */
#define PARSE_DROP 0x100

/* The flow key is written in the 64-bit words that hash_flow, flow_eq
 * and vip_filter_bit read it by (see sy_u64 in structs.h). */
static __always_inline void addr_set_v4(struct addr *a, __be32 v4)
{
	sy_u64 *w = (sy_u64 *)a;

	w[0] = 0;
	w[1] = (__u64)bpf_htonl(0xffff) | ((__u64)v4 << 32);
}

static __always_inline void addr_copy(struct addr *dst, const struct addr *src)
{
	sy_u64 *d = (sy_u64 *)dst;
	const sy_u64 *s = (const sy_u64 *)src;

	d[0] = s[0];
	d[1] = s[1];
}

static __always_inline int addr_v4_mapped(const struct addr *a)
{
	const sy_u64 *w = (const sy_u64 *)a;

	return w[0] == 0 && (__u32)w[1] == bpf_htonl(0xffff);
}

/* Ports, protocol and padding: the key's last word. */
static __always_inline void flow_set_l4(struct flow_key *f, __be16 sport, __be16 dport, __u8 proto)
{
	*(sy_u64 *)&f->sport = (__u64)sport | ((__u64)dport << 16) | ((__u64)proto << 32);
}

/* The bit of vip_filter that stands for address a (8-byte aligned).
 * pkg/datapath mirrors it. */
static __always_inline __u32 vip_filter_bit(const struct addr *a)
{
	const sy_u64 *w = (const sy_u64 *)a;

	return ((w[0] ^ w[1]) * HASH_MUL) >> (64 - 16);
}

/* 0: certainly not a VIP address. 1: maybe. */
static __always_inline int vip_addr_maybe(const struct addr *a)
{
	__u32 bit = vip_filter_bit(a) & (VIP_FILTER_BITS - 1);

	return (vip_filter.w[bit / 64] >> (bit % 64)) & 1;
}

static __always_inline int parse_l4(void *data, void *data_end, struct pkt *p)
{
	__u32 off = p->l4_off & 0xff; /* <= 18 + 60: keeps the verifier's bounds tight */
	__u32 l3_end = p->l2_len + p->l3_len;

	switch (p->flow.proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = data + off;

		if ((void *)(th + 1) > data_end || off + sizeof(*th) > l3_end)
			return PARSE_DROP + STAT_DROP_TRUNCATED;
		flow_set_l4(&p->flow, th->source, th->dest, IPPROTO_TCP);
		p->tcp_flags = th->flags;
		return PARSE_OK;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = data + off;

		if ((void *)(uh + 1) > data_end || off + sizeof(*uh) > l3_end)
			return PARSE_DROP + STAT_DROP_TRUNCATED;
		flow_set_l4(&p->flow, uh->source, uh->dest, IPPROTO_UDP);
		return PARSE_OK;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		struct icmphdr *ih = data + off;

		if ((void *)(ih + 1) > data_end || off + sizeof(*ih) > l3_end)
			return PARSE_DROP + STAT_DROP_TRUNCATED;
		flow_set_l4(&p->flow, 0, 0, p->flow.proto);
		p->icmp_type = ih->type;
		p->icmp_code = ih->code;
		return PARSE_OK;
	}
	}
	return PARSE_PASS;
}

/* 1 if the IPv4 options at off (len bytes) hold a loose or strict source
 * route with addresses left (its pointer not past its length, RFC 791
 * section 3.1): the destination address is then a waypoint, not where the
 * packet ends. The options are read up to the first malformed one, which
 * makes the packet one that every stack discards. A bounded loop, not
 * unrolled: every round moves i on by at least one byte, and i is its
 * only induction variable, so the verifier prunes rounds it has seen. */
static __always_inline int ipv4_source_routed(void *data, void *data_end, __u32 off, __u32 len)
{
	__u32 i = 0;

#pragma clang loop unroll(disable)
	while (i < len && i < IPV4_OPTS_MAX) {
		__u8 *o = data + ((off + i) & 0x7f);
		__u8 olen;

		if ((void *)(o + 1) > data_end || o[0] == IPOPT_END)
			return 0;
		if (o[0] == IPOPT_NOOP) {
			i++;
			continue;
		}
		if ((void *)(o + 3) > data_end)
			return 0;
		olen = o[1];
		if (olen < 2 || i + olen > len)
			return 0;
		if ((o[0] == IPOPT_LSRR || o[0] == IPOPT_SSRR) && olen >= 3 && o[2] <= olen)
			return 1;
		i += olen;
	}
	return 0;
}

static __always_inline int parse_ipv4(void *data, void *data_end, struct pkt *p)
{
	struct iphdr *iph = data + p->l2_len;
	__u32 ihl_len;

	if ((void *)(iph + 1) > data_end)
		return PARSE_MALFORMED;
	if (iph->version != 4 || iph->ihl < 5)
		return PARSE_MALFORMED;
	addr_set_v4(&p->flow.dst, iph->daddr);
	if (!vip_addr_maybe(&p->flow.dst))
		return PARSE_PASS;

	ihl_len = iph->ihl * 4;
	p->l4_off = p->l2_len + ihl_len;
	if (p->l4_off > p->frame_len)
		return PARSE_DROP + STAT_DROP_TRUNCATED;

	addr_set_v4(&p->flow.src, iph->saddr);
	p->l3_len = bpf_ntohs(iph->tot_len);
	if (p->l3_len < ihl_len || p->l2_len + p->l3_len > p->frame_len)
		return PARSE_DROP + STAT_DROP_TRUNCATED;
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_DROP + STAT_DROP_FRAGMENT;
	/* On its way through the VIP address to another destination: no
	 * VIP's packet (the IPv6 routing header's rule, parse_ipv6_ext). */
	if (ihl_len > IPV4_HDR_LEN &&
	    ipv4_source_routed(data, data_end, p->l2_len + IPV4_HDR_LEN, ihl_len - IPV4_HDR_LEN))
		return PARSE_PASS;
	p->tos = iph->tos;
	p->flow.proto = iph->protocol;
	if (p->flow.proto == IPPROTO_ICMPV6)
		return PARSE_PASS;
	return parse_l4(data, data_end, p);
}

static __always_inline int ipv6_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS;
}

/* Follows the extension headers of an IPv6 packet from its next-header
 * value nh (p->l4_off at the first of them) and leaves p->l4_off and
 * p->flow.proto at the L4 header. A fragment header anywhere in the chain
 * drops the packet as a fragment, unless it is an atomic fragment (offset
 * 0, M flag clear: the whole packet, which RFC 6946 has processed as any
 * other), followed like the other headers; a chain too long to follow (more than
 * IPV6_EXT_MAX headers, or an L4 header beyond IPV6_L4_OFF_MAX) is passed
 * as malformed: the stack decides. A routing header with segments left
 * makes the destination a waypoint, not the packet's final one (RFC 8200
 * section 4.4): the packet is no VIP's, and passes untouched for the
 * stack to route or reject. */
static __always_inline int parse_ipv6_ext(void *data, void *data_end, struct pkt *p, __u8 nh)
{
	__u32 off = p->l4_off & 0xff, l3_end = p->l2_len + p->l3_len;

#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		__u8 *eh = data + off;

		if (!ipv6_ext(nh) && nh != IPPROTO_FRAGMENT)
			break;
		/* eh + 8: every header is at least 8 bytes long, and the
		 * IPv6 length (l3_end) lies within the frame: the same test
		 * as off + 8 > l3_end, which the verifier cannot see. */
		if ((void *)(eh + 8) > data_end || off + 8 > l3_end)
			return PARSE_DROP + STAT_DROP_TRUNCATED;
		/* Of a fragment header, only an atomic one goes on: offset and
		 * M flag 0 (the two reserved bits between them ignored, RFC
		 * 8200), and its reserved second byte 0, so that the length
		 * below reads 8, a fragment header's. */
		if (nh == IPPROTO_FRAGMENT && (*(sy_u32 *)eh & bpf_htonl(0x00fffff9)))
			return PARSE_DROP + STAT_DROP_FRAGMENT;
		if (nh == IPPROTO_ROUTING && eh[3] != 0)
			return PARSE_PASS;
		nh = eh[0];
		off += ((__u32)eh[1] + 1) * 8;
		if (off > IPV6_L4_OFF_MAX)
			return PARSE_MALFORMED;
	}
	if (nh == IPPROTO_FRAGMENT)
		return PARSE_DROP + STAT_DROP_FRAGMENT;
	if (ipv6_ext(nh))
		return PARSE_MALFORMED;
	p->l4_off = off;
	p->flow.proto = nh;
	return PARSE_OK;
}

static __always_inline int parse_ipv6(void *data, void *data_end, struct pkt *p)
{
	struct ipv6hdr *ip6 = data + p->l2_len;
	int ret;

	if ((void *)(ip6 + 1) > data_end)
		return PARSE_MALFORMED;
	if (ip6->version != 6)
		return PARSE_MALFORMED;
	addr_copy(&p->flow.dst, &ip6->daddr);
	if (!vip_addr_maybe(&p->flow.dst))
		return PARSE_PASS;
	/* ::ffff:a.b.c.d is how the flow key writes an IPv4 address
	 * (addr_set_v4): an IPv6 packet to one is no VIP's, or it would pass
	 * for IPv4 and share IPv4 flows' entries. */
	if (addr_v4_mapped(&p->flow.dst))
		return PARSE_PASS;

	p->v6 = 1;
	addr_copy(&p->flow.src, &ip6->saddr);
	p->l4_off = p->l2_len + IPV6_HDR_LEN;
	p->l3_len = IPV6_HDR_LEN + bpf_ntohs(ip6->payload_len);
	if (p->l2_len + p->l3_len > p->frame_len)
		return PARSE_DROP + STAT_DROP_TRUNCATED;
	p->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	ret = parse_ipv6_ext(data, data_end, p, ip6->nexthdr);
	if (ret != PARSE_OK)
		return ret;
	/* ICMPv6 behind extension headers is the stack's: echo_reply and
	 * the "too big" parser expect it right after the IPv6 header. */
	if (p->flow.proto == IPPROTO_ICMP ||
	    (p->flow.proto == IPPROTO_ICMPV6 && p->l4_off != p->l2_len + IPV6_HDR_LEN))
		return PARSE_PASS;
	return parse_l4(data, data_end, p);
}

static __always_inline int parse_headers(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__be16 proto;

	p->frame_len = data_end - data;
	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	proto = eth->h_proto;
	p->l2_len = sizeof(*eth);
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return PARSE_MALFORMED;
		proto = vh->encap_proto;
		p->l2_len += sizeof(*vh);
	}
	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(data, data_end, p);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(data, data_end, p);
	return PARSE_PASS;
}

/* The common case in one pass: TCP or UDP over IPv4 without options in an
 * untagged frame, not a fragment, headers whole. Fills p as parse() would;
 * PARSE_MORE: anything else, which parse() then handles from the start. */
#define PARSE_MORE 3

static __always_inline int parse_common(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + sizeof(struct ethhdr);
	struct tcphdr *th = (void *)(iph + 1);
	__u32 frame_len = data_end - data, l3_len;
	struct addr dst;
	__u16 frag_off;
	__u8 proto;

	if ((void *)(th + 1) > data_end)
		return PARSE_MORE;
	if (((struct ethhdr *)data)->h_proto != bpf_htons(ETH_P_IP) || *(__u8 *)iph != 0x45)
		return PARSE_MORE;
	/* Tested in registers, stored after the lookup: the flow hash then
	 * sees the stored words as constants and folds the zero ones. */
	addr_set_v4(&dst, iph->daddr);
	if (!vip_addr_maybe(&dst))
		return PARSE_PASS;
	proto = iph->protocol;
	l3_len = bpf_ntohs(iph->tot_len);
	frag_off = iph->frag_off;
	if ((proto != IPPROTO_TCP && proto != IPPROTO_UDP) || (frag_off & bpf_htons(IP_MF | IP_OFFSET)) ||
	    l3_len < sizeof(*iph) + sizeof(*th) || sizeof(struct ethhdr) + l3_len > frame_len)
		return PARSE_MORE;
	addr_copy(&p->flow.dst, &dst);
	addr_set_v4(&p->flow.src, iph->saddr);
	*(sy_u64 *)&p->flow.sport = *(sy_u32 *)th | ((__u64)proto << 32);
	p->l2_len = sizeof(struct ethhdr);
	p->l4_off = sizeof(struct ethhdr) + sizeof(*iph);
	p->l3_len = l3_len;
	p->frame_len = frame_len;
	p->v6 = 0;
	p->tos = iph->tos;
	p->tcp_flags = proto == IPPROTO_TCP ? th->flags : 0;
	p->icmp_type = 0;
	p->icmp_code = 0;
	return PARSE_OK;
}

/* Parses the headers. vip_filter lets through some host addresses; TCP and
 * UDP are settled exactly by the VIP lookup that follows, everything else
 * the program would drop or answer is checked against vip_addrs first. */
static __always_inline int parse(struct xdp_md *ctx, struct pkt *p)
{
	int ret = parse_headers(ctx, p);

	if (ret == PARSE_PASS || ret == PARSE_MALFORMED ||
	    (ret == PARSE_OK && (p->flow.proto == IPPROTO_TCP || p->flow.proto == IPPROTO_UDP)))
		return ret;
	if (!bpf_map_lookup_elem(&vip_addrs, &p->flow.dst))
		return PARSE_PASS;
	return ret;
}

#endif
