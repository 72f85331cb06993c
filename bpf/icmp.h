/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP and ICMPv6: echo replies from a VIP, "too big" messages to clients
 * whose packets would exceed the MTU once encapsulated, and the reversed flow
 * of a "too big" that a router sent about a VIP flow. */
#ifndef __SY_ICMP_H
#define __SY_ICMP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "parsing.h"

#define IPV6_MIN_MTU 1280

static __always_inline void swap_macs(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

/* 1 if the packet's source names a single host that an ICMP message may
 * go to: not unspecified, loopback, multicast, broadcast, class E or, for
 * IPv6, IPv4-mapped (RFC 1122 section 3.2.2, RFC 4443 section 2.4 (e.6)).
 * An IPv6 TCP or UDP packet to a VIP from any other source is dropped
 * (parse_rest). */
static __always_inline int src_one_host(const struct pkt *p)
{
	const struct addr *a = &p->flow.src;

	if (!p->v6) {
		__u32 first = bpf_ntohl(a->a[3]) >> 24;

		return first != 0 && first != 127 && first < 224;
	}
	if ((a->a[0] & bpf_htonl(0xff000000)) == bpf_htonl(0xff000000))
		return 0;
	/* ::ffff:a.b.c.d names an IPv4 host, which no IPv6 packet reaches. */
	if (addr_v4_mapped(a))
		return 0;
	return (a->a[0] | a->a[1] | a->a[2] | (a->a[3] & ~bpf_htonl(1))) != 0;
}

/* Removes the 'extra' bytes of options after the IPv4 header of p: the
 * L2 header and the 20 fixed bytes move up over them, with IHL, total
 * length and checksum fixed. 0, or -1 if the kernel refused. */
static __always_inline int strip_ipv4_options(struct xdp_md *ctx, __u32 l2_len, __u32 extra)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct vlan_hdr vh = {};
	struct ethhdr eth;
	struct iphdr iph, *h;

	if (data + sizeof(eth) + sizeof(vh) > data_end || data + l2_len + sizeof(iph) > data_end)
		return -1;
	eth = *(struct ethhdr *)data;
	if (l2_len != sizeof(eth))
		vh = *(struct vlan_hdr *)(data + sizeof(eth));
	iph = *(struct iphdr *)(data + l2_len);
	iph.ihl = 5;
	iph.tot_len = bpf_htons(bpf_ntohs(iph.tot_len) - extra);
	iph.check = 0;
	if (bpf_xdp_adjust_head(ctx, (int)extra))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	h = data + l2_len;
	if (data + sizeof(eth) + sizeof(vh) > data_end || (void *)(h + 1) > data_end)
		return -1;
	*(struct ethhdr *)data = eth;
	if (l2_len != sizeof(eth))
		*(struct vlan_hdr *)(data + sizeof(eth)) = vh;
	*h = iph;
	h->check = ipv4_hdr_csum(h);
	return 0;
}

/* Turns an echo request to a VIP into the reply, in place. The address swap
 * leaves every checksum unchanged; type and TTL are updated incrementally.
 * The request's IPv4 options are not echoed (a source route would come
 * back unreversed): the reply goes without them. A request from a source that is no single host's is dropped
 * (counted as drop_icmp_invalid), never answered. */
static __always_inline int echo_reply(struct xdp_md *ctx, const struct pkt *p)
{
	__u32 l2_len = p->l2_len & 0x1f;
	__u32 l4_off = l2_len + (p->v6 ? IPV6_HDR_LEN : IPV4_HDR_LEN);
	void *data, *data_end;
	struct ethhdr *eth;
	struct icmphdr *ih;
	__u16 old;

	if (!src_one_host(p)) {
		count(STAT_DROP_ICMP_INVALID);
		return XDP_DROP;
	}
	/* (IPv6 extension headers never get here: parse_ipv6 passes
	 * ICMPv6 behind them to the stack.) */
	if (!p->v6 && p->l4_off != l4_off) {
		if (strip_ipv4_options(ctx, l2_len, (p->l4_off - l4_off) & 0x3f)) {
			count(STAT_DROP_ADJUST);
			return XDP_DROP;
		}
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	ih = data + l4_off;
	if ((void *)(eth + 1) > data_end || (void *)(ih + 1) > data_end)
		return XDP_PASS;

	old = *(__u16 *)ih;
	ih->type = p->v6 ? ICMPV6_ECHO_REPLY : ICMP_ECHOREPLY;
	ih->checksum = csum_replace16(ih->checksum, old, *(__u16 *)ih);

	if (p->v6) {
		struct ipv6hdr *ip6 = data + l2_len;
		struct addr tmp;

		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		tmp = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = tmp;
		ip6->hop_limit = DEFAULT_TTL;
	} else {
		struct iphdr *iph = data + l2_len;
		__be32 tmp;

		if ((void *)(iph + 1) > data_end)
			return XDP_PASS;
		tmp = iph->saddr;
		iph->saddr = iph->daddr;
		iph->daddr = tmp;
		old = *(__u16 *)&iph->ttl;
		iph->ttl = DEFAULT_TTL;
		iph->check = csum_replace16(iph->check, old, *(__u16 *)&iph->ttl);
	}
	swap_macs(eth);
	count(STAT_ICMP_ECHO_REPLY);
	return XDP_TX;
}

/* Sum of the first 'words' 32-bit words at base (at most MAX_QUOTE_WORDS:
 * the 8-byte ICMP header and a quote of at most 240 bytes of IPv6 and
 * extension headers, their L4 header within IPV6_L4_OFF_MAX, plus
 * ICMP_QUOTE_L4), each read bounds-checked. A bounded loop, not unrolled:
 * the verifier walks it with i known in every round, and the program does
 * not carry 64 copies of it wherever send_too_big is inlined. */
#define MAX_QUOTE_WORDS ((8 + 240 + ICMP_QUOTE_L4) / 4)
static __always_inline __u64 sum_words(void *base, void *data_end, __u32 words, __u64 sum)
{
#pragma clang loop unroll(disable)
	for (int i = 0; i < MAX_QUOTE_WORDS; i++) {
		/* sy_u32: the words were just written through the header
		 * structs; a plain __u32 read would let the compiler drop
		 * or move those stores (strict aliasing). */
		const sy_u32 *w = (const sy_u32 *)base + i;

		if (i >= words || (void *)(w + 1) > data_end)
			break;
		sum += *w;
	}
	return sum;
}

/* Replaces the client's packet with an ICMP "fragmentation needed" (IPv4) or
 * ICMPv6 "packet too big" quoting its start, addressed back to the client
 * from the VIP, announcing 'mtu' as the usable size. Returns an XDP verdict. */
static __always_inline int send_too_big(struct xdp_md *ctx, const struct pkt *p, __u32 mtu)
{
	__u32 l2_len = p->l2_len & 0x1f;
	__u32 hdrs = p->v6 ? IPV6_HDR_LEN + 8 : IPV4_HDR_LEN + 8;
	__u32 quote = (p->l4_off - p->l2_len) + ICMP_QUOTE_L4;
	/* The reply goes back where the packet came from: the old source
	 * MAC becomes the destination. */
	__u8 macs[2 * ETH_ALEN] __attribute__((aligned(8)));
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	int new_len;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(macs, eth->h_source, ETH_ALEN);
	__builtin_memcpy(macs + ETH_ALEN, eth->h_dest, ETH_ALEN);

	if (bpf_xdp_adjust_head(ctx, -(int)hdrs))
		goto adjust_failed;
	/* The frame is now frame_len + hdrs long; keep l2 + hdrs + quote. */
	new_len = l2_len + quote;
	if (bpf_xdp_adjust_tail(ctx, new_len - (int)p->frame_len))
		goto adjust_failed;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (l2_rewrite(data, data_end, l2_len, hdrs, macs,
		       p->v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP)))
		goto adjust_failed;

	if (!p->v6) {
		struct iphdr *iph = data + l2_len;
		struct icmphdr *ih = (void *)(iph + 1);
		__u64 sum;

		if ((void *)(ih + 1) > data_end)
			goto adjust_failed;
		iph->version = 4;
		iph->ihl = 5;
		iph->tos = 0;
		iph->tot_len = bpf_htons(hdrs + quote);
		/* DF: with ID 0, the datagram must be atomic (RFC 6864). */
		iph->id = 0;
		iph->frag_off = bpf_htons(IP_DF);
		iph->ttl = DEFAULT_TTL;
		iph->protocol = IPPROTO_ICMP;
		iph->check = 0;
		iph->saddr = p->flow.dst.a[3];
		iph->daddr = p->flow.src.a[3];
		iph->check = ipv4_hdr_csum(iph);

		ih->type = ICMP_DEST_UNREACH;
		ih->code = ICMP_FRAG_NEEDED;
		ih->checksum = 0;
		ih->un.frag.unused = 0;
		ih->un.frag.mtu = bpf_htons(mtu);
		sum = sum_words(ih, data_end, (8 + quote) / 4, 0);
		ih->checksum = csum_fold(sum);
	} else {
		struct ipv6hdr *ip6 = data + l2_len;
		struct icmphdr *ih = (void *)(ip6 + 1);
		__u64 sum = 0;

		if ((void *)(ih + 1) > data_end)
			goto adjust_failed;
		if (mtu < IPV6_MIN_MTU)
			mtu = IPV6_MIN_MTU;
		ip6->version = 6;
		ip6->priority = 0;
		ip6->flow_lbl[0] = 0;
		ip6->flow_lbl[1] = 0;
		ip6->flow_lbl[2] = 0;
		ip6->payload_len = bpf_htons(8 + quote);
		ip6->nexthdr = IPPROTO_ICMPV6;
		ip6->hop_limit = DEFAULT_TTL;
		ip6->saddr = p->flow.dst;
		ip6->daddr = p->flow.src;

		ih->type = ICMPV6_PKT_TOOBIG;
		ih->code = 0;
		ih->checksum = 0;
		ih->un.mtu6 = bpf_htonl(mtu);
		/* Pseudo-header: addresses, upper-layer length, next header. */
#pragma unroll
		for (int i = 0; i < 4; i++)
			sum += p->flow.src.a[i] + (__u64)p->flow.dst.a[i];
		sum += bpf_htonl(8 + quote);
		sum += bpf_htonl(IPPROTO_ICMPV6);
		sum = sum_words(ih, data_end, (8 + quote) / 4, sum);
		ih->checksum = csum_fold(sum);
	}
	count(STAT_ICMP_TOO_BIG_SENT);
	return XDP_TX;

adjust_failed:
	count(STAT_DROP_ADJUST);
	return XDP_DROP;
}

/* A "too big" addressed to a VIP quotes a packet the backend sent from the
 * VIP to a client. Rebuilds that client's flow key (the quoted tuple,
 * reversed) into p->flow so the message reaches the flow's backend.
 * Returns PARSE_OK, PARSE_PASS (quotes something that is not TCP/UDP) or a
 * PARSE_DROP verdict. */
static __always_inline int parse_too_big_quote(void *data, void *data_end, struct pkt *p)
{
	__u32 quote_off = (p->l4_off & 0xff) + sizeof(struct icmphdr);
	/* The quote ends where the ICMP packet's IP header says, not at the
	 * frame's end (which may carry a link-layer trailer). */
	__u32 quote_len = p->l2_len + p->l3_len - quote_off;
	void *quoted = data + quote_off;
	__be16 *ports;
	__u32 off;
	__u8 proto;

	if (p->l2_len + p->l3_len < quote_off)
		return PARSE_DROP + STAT_DROP_TRUNCATED;
	if (!p->v6) {
		struct iphdr *iph = quoted;

		if ((void *)(iph + 1) > data_end || quote_len < sizeof(*iph))
			return PARSE_DROP + STAT_DROP_TRUNCATED;
		if (iph->version != 4 || iph->ihl < 5)
			return PARSE_DROP + STAT_DROP_ICMP_INVALID;
		/* A later fragment of the reply carries no ports to find its
		 * flow by: left to the stack, like any quote of no TCP/UDP
		 * header. */
		if (iph->frag_off & bpf_htons(IP_OFFSET))
			return PARSE_PASS;
		proto = iph->protocol;
		ports = quoted + iph->ihl * 4;
		if ((void *)(ports + 2) > data_end || quote_len < iph->ihl * 4 + 4)
			return PARSE_DROP + STAT_DROP_TRUNCATED;
		addr_set_v4(&p->flow.src, iph->daddr);
		addr_set_v4(&p->flow.dst, iph->saddr);
	} else {
		struct ipv6hdr *ip6 = quoted;

		if ((void *)(ip6 + 1) > data_end)
			return PARSE_DROP + STAT_DROP_TRUNCATED;
		if (ip6->version != 6)
			return PARSE_DROP + STAT_DROP_ICMP_INVALID;
		proto = ip6->nexthdr;
		off = IPV6_HDR_LEN;
		/* The reply's extension headers, followed as parse_ipv6_ext
		 * follows a VIP packet's, and its fragment header: the first
		 * fragment of a large reply is the one a router finds too
		 * big, and its ports follow; a later fragment has none. A
		 * chain it would not follow is no flow of ours to route (the
		 * proto check below passes it). */
#pragma unroll
		for (int i = 0; i < IPV6_EXT_MAX; i++) {
			__u8 *eh = quoted + off;
			int frag = proto == IPPROTO_FRAGMENT;

			if (!frag && !ipv6_ext(proto))
				break;
			if ((void *)(eh + 4) > data_end || quote_len < off + 8)
				return PARSE_DROP + STAT_DROP_TRUNCATED;
			if (frag && (*(sy_u16 *)(eh + 2) & bpf_htons(0xfff8)))
				return PARSE_PASS;
			proto = eh[0];
			/* A fragment header's second byte is reserved: it is
			 * always 8 bytes long. */
			off += frag ? 8 : ((__u32)eh[1] + 1) * 8;
			if (off > IPV6_L4_OFF_MAX)
				return PARSE_PASS;
		}
		ports = quoted + off;
		if ((void *)(ports + 2) > data_end || quote_len < off + 4)
			return PARSE_DROP + STAT_DROP_TRUNCATED;
		addr_copy(&p->flow.src, &ip6->daddr);
		addr_copy(&p->flow.dst, &ip6->saddr);
		/* From ::ffff:a.b.c.d: reversed, the key of an IPv4 flow
		 * (addr_set_v4), which no IPv6 packet belongs to. */
		if (addr_v4_mapped(&p->flow.dst))
			return PARSE_DROP + STAT_DROP_ICMP_INVALID;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return PARSE_PASS;
	flow_set_l4(&p->flow, ports[1], ports[0], proto);
	return PARSE_OK;
}

#endif
