// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The Switchyard decap program for backend appliances: strips the IPIP,
 * 6in4, IPv6 or GUE outer header of packets addressed to one of this host's
 * encap addresses and passes the inner packet up the stack, on the same
 * device (so rp_filter and sockets bound to the VIP on lo just work).
 * Everything else is left untouched. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"
#include "pkt.h"
#include "csum.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const enum decap_stat *unused_decap_stat __attribute__((unused));

/* Outer destination addresses to decapsulate (this host's). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct addr);
	__type(value, __u32);
} decap_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct decap_config);
} decap_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DECAP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} decap_stats SEC(".maps");

static __always_inline void dcount(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&decap_stats, &idx);

	if (c)
		*c += 1;
}

static __always_inline int pass(void)
{
	dcount(DECAP_STAT_PASS);
	return XDP_PASS;
}

/* The ECN field's other values (consts.h has the mask and CE). */
#define ECN_NOT_ECT 0
#define ECN_ECT_1 1
#define ECN_ECT_0 2

/* The inner packet's ECN field once the outer header (ECN field outer) is
 * stripped, as RFC 6040 section 4.2 says, or -1: drop. The outer header
 * goes, and its marks with it unless they are copied: a "congestion
 * experienced" mark into an ECN-capable inner packet, or the backend's
 * transport never learns of the congestion; a Not-ECT packet cannot carry
 * it, and its transport understands only a loss, so it is dropped. An
 * outer ECT(1) turns an inner ECT(0) into ECT(1), as Linux's tunnels do
 * (INET_ECN_decapsulate). Every other combination keeps the inner field. */
static __always_inline int decap_ecn(__u8 outer, __u8 inner)
{
	if (outer == ECN_CE)
		return inner == ECN_NOT_ECT ? -1 : ECN_CE;
	if (outer == ECN_ECT_1 && inner == ECN_ECT_0)
		return ECN_ECT_1;
	return inner;
}

/* Applies decap_ecn to the inner packet (v4: IPv4, else IPv6); returns
 * nonzero if it must be dropped. An inner header too short to hold its ECN
 * field is left to the stack. */
static __always_inline int inner_set_ecn(__u8 *inner, void *data_end, int v4, __u8 outer)
{
	int ecn;

	if (v4) {
		struct iphdr *iph = (void *)inner;
		__u16 old;

		if ((void *)(iph + 1) > data_end)
			return 0;
		ecn = decap_ecn(outer, iph->tos & ECN_MASK);
		if (ecn < 0)
			return 1;
		if (ecn == (iph->tos & ECN_MASK))
			return 0;
		old = *(__u16 *)iph;
		iph->tos = (iph->tos & ~ECN_MASK) | ecn;
		iph->check = csum_replace16(iph->check, old, *(__u16 *)iph);
	} else {
		if ((void *)(inner + 2) > data_end)
			return 0;
		ecn = decap_ecn(outer, (inner[1] >> 4) & ECN_MASK);
		if (ecn < 0)
			return 1;
		inner[1] = (inner[1] & ~(ECN_MASK << 4)) | (ecn << 4);
	}
	return 0;
}

/* A source address the kernel's IPv4 routing refuses on input as a
 * martian (ip_route_input_slow) before any tunnel sees the packet: 0/8,
 * 127/8 (unless the interface's route_localnet is set, which a backend
 * has no reason to set), multicast 224/4 and the limited broadcast. No
 * balancer sends from one. */
static __always_inline int martian4(__be32 saddr)
{
	__u32 a = bpf_ntohl(saddr);

	return (a >> 24) == 0 || (a >> 24) == 127 || (a >> 28) == 0xe || a == 0xffffffff;
}

/* XDP runs before ip_rcv, so nothing but this program checks an outer
 * header it strips. outer4_check and outer6_check make ip_rcv's and
 * ipv6_rcv's checks of it (the IPv4 header's own length and checksum, the
 * packet's length within the frame); on success they set *end to the
 * packet's end as an offset from data (the frame's bytes beyond are a
 * trailer, Ethernet padding say, which the stack would trim) and return
 * 0; else the counter of the reason for which the stack will drop it. */
static __always_inline int outer4_check(struct iphdr *iph, void *data, void *data_end,
					 __u32 l2_len, __u32 *end)
{
	const sy_u32 *w = (void *)iph;
	__u32 tot_len = bpf_ntohs(iph->tot_len), ihl = iph->ihl;
	__u64 sum = 0;

#pragma unroll
	for (int i = 0; i < 15; i++) {
		if (i < ihl) {
			if ((void *)(w + i + 1) > data_end)
				return DECAP_STAT_BAD_OUTER_IP_LEN;
			sum += w[i];
		}
	}
	if (csum_fold(sum))
		return DECAP_STAT_BAD_OUTER_CSUM;
	if (tot_len < ihl * 4 || l2_len + tot_len > (__u32)(data_end - data))
		return DECAP_STAT_BAD_OUTER_IP_LEN;
	if (martian4(iph->saddr))
		return DECAP_STAT_BAD_OUTER_SRC;
	*end = l2_len + tot_len;
	return 0;
}

static __always_inline int outer6_check(struct ipv6hdr *ip6, void *data, void *data_end,
					 __u32 l2_len, __u32 *end)
{
	/* A payload length of 0 means a jumbogram only with a hop-by-hop
	 * header, which is not one of ours: here it is 0 bytes. */
	__u32 len = l2_len + IPV6_HDR_LEN + bpf_ntohs(ip6->payload_len);

	/* (The header is within the frame: this is for the verifier, which
	 * can lose track of which family's header ip6 is.) */
	if ((void *)(ip6 + 1) > data_end)
		return DECAP_STAT_BAD_OUTER_IP_LEN;
	/* ipv6_rcv refuses a multicast or loopback source (RFC 4291 2.7,
	 * 2.5.3) before it looks at the length, counting Ip6InAddrErrors. */
	if ((ip6->saddr.a[0] & bpf_htonl(0xff000000)) == bpf_htonl(0xff000000) ||
	    (!ip6->saddr.a[0] && !ip6->saddr.a[1] && !ip6->saddr.a[2] && ip6->saddr.a[3] == bpf_htonl(1)))
		return DECAP_STAT_BAD_OUTER_SRC;
	if (len > (__u32)(data_end - data))
		return DECAP_STAT_BAD_OUTER_IP_LEN;
	*end = len;
	return 0;
}

/* The checks of udp_rcv (and udpv6_rcv) on a GUE packet's UDP length,
 * uh at offset off: the header and its length within the IP packet,
 * which ends at *end, and at least the header. A length of 0 over IPv6
 * is the rest of the IPv6 payload, as udpv6_rcv reads it. On success,
 * *end moves to the datagram's end (udp_rcv trims what the IP packet
 * holds beyond) and 0 is returned, else the counter to count. */
static __always_inline int gue_check(struct udphdr *uh, void *data_end, __u32 off, int v6, __u32 *end)
{
	__u32 len;

	/* The second test follows from the first (*end is within the
	 * frame): it is for the verifier. */
	if (off + UDP_HDR_LEN > *end || (void *)(uh + 1) > data_end)
		return DECAP_STAT_BAD_OUTER_UDP_LEN;
	len = bpf_ntohs(uh->len);
	if (v6 && !len)
		len = *end - off;
	if (len < UDP_HDR_LEN || off + len > *end)
		return DECAP_STAT_BAD_OUTER_UDP_LEN;
	*end = off + len;
	return 0;
}

/* What gue_csum_step sums at a time: bpf_csum_diff sums at most 512
 * bytes a call, and the stack holds not much more. */
#define CSUM_CHUNK 256

/* The walk of gue_csum_check over a datagram, in CSUM_CHUNK steps. */
struct csum_walk {
	struct xdp_md *ctx;
	__u32 off;   /* the datagram's offset in the frame */
	__u32 words; /* its whole 4-byte words */
	__s64 part;  /* bpf_csum_diff's sum of the steps so far, or < 0 */
	__u8 buf[CSUM_CHUNK];
};

/* bpf_loop's callback: sums step i of the walk. Its offsets derive from
 * i, not from a running count, so that the verifier sees every step
 * alike (a bounded loop of up to 256 steps is beyond its limit). */
static long gue_csum_step(__u64 i, void *arg)
{
	struct csum_walk *w = arg;
	__u32 first = (__u32)i * (CSUM_CHUNK / 4), n;

	if (first >= w->words)
		return 1;
	n = w->words - first;
	/* Not 0, but the verifier must see it: hide n from the compiler,
	 * which would drop the test. */
	asm volatile("" : "+r"(n));
	if (!n)
		return 1;
	if (n > CSUM_CHUNK / 4)
		n = CSUM_CHUNK / 4;
	if (bpf_xdp_load_bytes(w->ctx, w->off + first * 4, w->buf, n * 4)) {
		w->part = -1;
		return 1;
	}
	w->part = bpf_csum_diff(NULL, 0, (__be32 *)w->buf, n * 4, (__u32)w->part);
	return w->part < 0;
}

/* The check of udp_rcv (udp6_csum_init for IPv6) on a GUE datagram's
 * checksum, which the caller has found not 0: the pseudo-header of ip
 * (v6: IPv6, else IPv4) and the len bytes of the datagram at off in the
 * frame must sum to all ones. Read with bpf_xdp_load_bytes, as XDP's
 * packet pointers cannot reach every offset of a 64 KiB datagram. 0, or
 * the counter to count. */
static __always_inline int gue_csum_check(struct xdp_md *ctx, void *ip, void *data_end, int v6,
					   __u32 off, __u32 len)
{
	/* bpf_xdp_load_bytes of a size the verifier does not know must
	 * fill memory that is initialised already. */
	struct csum_walk w = {.ctx = ctx, .off = off, .words = len / 4};
	__u32 tail = 0;
	__u64 sum;

	if (v6) {
		struct ipv6hdr *ip6 = ip;

		/* Within the frame, as outer6_check found: for the verifier. */
		if ((void *)(ip6 + 1) > data_end)
			return DECAP_STAT_BAD_OUTER_IP_LEN;
		sum = (__u64)ip6->saddr.a[0] + ip6->saddr.a[1] + ip6->saddr.a[2] + ip6->saddr.a[3] +
		      ip6->daddr.a[0] + ip6->daddr.a[1] + ip6->daddr.a[2] + ip6->daddr.a[3];
	} else {
		struct iphdr *iph = ip;

		if ((void *)(iph + 1) > data_end)
			return DECAP_STAT_BAD_OUTER_IP_LEN;
		sum = (__u64)iph->saddr + iph->daddr;
	}
	/* The protocol and the length: 16-bit words in network order in
	 * either pseudo-header (IPv6's length has 32 bits, its high word 0). */
	sum += bpf_htons(IPPROTO_UDP) + bpf_htons((__u16)len);

	bpf_loop((w.words + CSUM_CHUNK / 4 - 1) / (CSUM_CHUNK / 4), gue_csum_step, &w, 0);
	if (w.part < 0)
		return DECAP_STAT_BAD_OUTER_UDP_LEN;
	/* The last 1 to 3 bytes, padded with zeroes to a word. */
	if (len & 3) {
		if (bpf_xdp_load_bytes(ctx, off + (len & ~3), &tail, len & 3))
			return DECAP_STAT_BAD_OUTER_UDP_LEN;
	}
	if (csum_fold(sum + (__u32)w.part + tail))
		return DECAP_STAT_BAD_OUTER_UDP_CSUM;
	return 0;
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct decap_config *cfg;
	__u32 zero = 0, l2_len = sizeof(*eth), outer_len, end = 0, frame_len;
	__u8 l2[sizeof(struct ethhdr) + sizeof(struct vlan_hdr)];
	struct addr dst = {};
	__u8 nexthdr, outer_ecn, *inner;
	struct udphdr *uh = NULL;
	void *ip;
	__be16 proto;
	int v6, gue = 0, bad;

	if ((void *)(eth + 1) > data_end)
		return pass();
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return pass();
		proto = vh->encap_proto;
		l2_len += sizeof(*vh);
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + l2_len;

		if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5)
			return pass();
		/* Before any other check: a first fragment must not be
		 * taken for a whole packet. */
		if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return pass(); /* the stack reassembles; see README */
		ip = iph;
		dst.a[2] = bpf_htonl(0xffff);
		dst.a[3] = iph->daddr;
		nexthdr = iph->protocol;
		outer_ecn = iph->tos & ECN_MASK;
		outer_len = iph->ihl * 4;
		v6 = 0;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + l2_len;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return pass();
		dst = ip6->daddr;
		/* ::ffff:a.b.c.d is how decap_addrs holds an IPv4 address:
		 * an IPv6 outer header to one is not ours. */
		if (!dst.a[0] && !dst.a[1] && dst.a[2] == bpf_htonl(0xffff))
			return pass();
		ip = ip6;
		nexthdr = ip6->nexthdr;
		outer_ecn = (ip6->flow_lbl[0] >> 4) & ECN_MASK;
		outer_len = IPV6_HDR_LEN;
		v6 = 1;
	} else {
		return pass();
	}

	if (nexthdr == IPPROTO_UDP) {
		uh = data + ((l2_len + outer_len) & 0x7f);
		cfg = bpf_map_lookup_elem(&decap_cfg, &zero);
		if (!cfg || !cfg->gue_port)
			return pass();
		/* A UDP header the frame cuts short, whose port cannot be
		 * read or is the GUE port, is for the outer checks below
		 * (ip_len, or udp_len): the stack drops it as malformed. */
		if ((void *)&uh->len <= data_end && uh->dest != cfg->gue_port)
			return pass();
		outer_len += UDP_HDR_LEN;
		gue = 1;
	} else if (nexthdr != IPPROTO_IPIP && nexthdr != IPPROTO_IPV6) {
		return pass();
	}
	if (!bpf_map_lookup_elem(&decap_addrs, &dst))
		return pass();

	if (v6)
		bad = outer6_check(ip, data, data_end, l2_len, &end);
	else
		bad = outer4_check(ip, data, data_end, l2_len, &end);
	if (!bad && gue) {
		__u32 off = l2_len + outer_len - UDP_HDR_LEN;

		bad = gue_check(uh, data_end, off, v6, &end);
		/* A checksum of 0 is none (RFC 768). Over IPv6 too: RFC
		 * 6935 allows it for tunnels on the ports that say so (RFC
		 * 6936), as the GUE port does here and the kernel's own
		 * fou/GUE sockets do; the balancer sends it. */
		if (!bad && uh->check)
			bad = gue_csum_check(ctx, ip, data_end, v6, off, end - off);
	}
	if (bad) {
		dcount(bad);
		return XDP_PASS;
	}
	/* What lies beyond the outer packet (or GUE datagram) is no part of
	 * the inner packet: with it, an inner packet the outer one cuts
	 * short would reach the stack made whole by a trailer. */
	frame_len = data_end - data;
	if (end < frame_len) {
		if (bpf_xdp_adjust_tail(ctx, (int)end - (int)frame_len)) {
			dcount(DECAP_STAT_DROP_ADJUST);
			return XDP_DROP;
		}
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
	}

	inner = data + ((l2_len + outer_len) & 0x7f);
	if ((void *)(inner + 1) > data_end) {
		dcount(DECAP_STAT_DROP_INNER);
		return XDP_DROP;
	}
	switch (*inner >> 4) {
	case 4:
		proto = bpf_htons(ETH_P_IP);
		break;
	case 6:
		proto = bpf_htons(ETH_P_IPV6);
		break;
	default:
		dcount(DECAP_STAT_DROP_INNER);
		return XDP_DROP;
	}
	/* Without GUE the outer header names the inner family: IPIP (4) for
	 * IPv4, 41 for IPv6. A packet that says otherwise is not one the
	 * balancer made. */
	if (!gue && (nexthdr == IPPROTO_IPIP) != (proto == bpf_htons(ETH_P_IP))) {
		dcount(DECAP_STAT_DROP_INNER);
		return XDP_DROP;
	}
	if ((outer_ecn == ECN_CE || outer_ecn == ECN_ECT_1) &&
	    inner_set_ecn(inner, data_end, proto == bpf_htons(ETH_P_IP), outer_ecn)) {
		dcount(DECAP_STAT_DROP_CE_NOT_ECT);
		return XDP_DROP;
	}

	/* Keep the L2 header (with its VLAN tag), drop the outer headers.
	 * (The check cannot fail, the inner packet is behind them: it is
	 * for the verifier, which knows no bounds of a trimmed frame.) */
	if (data + sizeof(l2) > data_end)
		return pass();
	if (l2_len == sizeof(struct ethhdr))
		__builtin_memcpy(l2, data, sizeof(struct ethhdr));
	else
		__builtin_memcpy(l2, data, sizeof(l2));
	if (bpf_xdp_adjust_head(ctx, outer_len)) {
		dcount(DECAP_STAT_DROP_ADJUST);
		return XDP_DROP;
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (l2_len == sizeof(struct ethhdr)) {
		__builtin_memcpy(eth, l2, sizeof(struct ethhdr));
		eth->h_proto = proto;
	} else {
		struct vlan_hdr *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return XDP_DROP;
		__builtin_memcpy(eth, l2, sizeof(l2));
		vh->encap_proto = proto;
	}
	dcount(v6 ? DECAP_STAT_IP6 : DECAP_STAT_IPIP);
	if (gue)
		dcount(DECAP_STAT_GUE);
	return XDP_PASS;
}
