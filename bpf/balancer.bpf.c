// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The Switchyard balancer: VIP packets are pinned to a backend through the
 * connection table or chosen by Maglev, encapsulated and sent back out
 * (XDP_TX) to the next hop. Everything that is not for a VIP is XDP_PASS. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "hash.h"
#include "csum.h"
#include "parsing.h"
#include "conntrack.h"
#include "encap.h"
#include "icmp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Anchors for bpf2go -type: these enums appear in no map signature. */
const enum sy_stat *unused_sy_stat __attribute__((unused));
const enum vip_flags *unused_vip_flags __attribute__((unused));
const enum backend_flags *unused_backend_flags __attribute__((unused));
const enum cfg_flags *unused_cfg_flags __attribute__((unused));
/* And vip_slot, which BTF otherwise records only as a forward
 * declaration (the value of an inner-map template). */
const struct vip_slot *unused_vip_slot __attribute__((unused));

static __always_inline __u32 maglev_pick(const struct vip_meta *vm, __u32 gen, __u32 hash)
{
	__u32 size, key, slot, *id;
	void *table;

	gen &= 1;
	size = vm->table_size[gen];
	if (!size)
		return MAGLEV_EMPTY;
	key = vm->vip_num * MAGLEV_GENERATIONS + gen;
	/* The hash scaled to [0, size): a multiply, where '%' is a divide
	 * (pkg/datapath.MaglevSlot mirrors it). */
	slot = ((__u64)hash * size) >> 32;
	if (size <= MAGLEV_STD_SLOTS) {
		table = bpf_map_lookup_elem(&maglev_std, &key);
		if (!table)
			return MAGLEV_EMPTY;
		id = bpf_map_lookup_elem(table, &slot);
		return id ? *id : MAGLEV_EMPTY;
	}
	table = bpf_map_lookup_elem(&maglev_tables, &key);
	if (!table)
		return MAGLEV_EMPTY;
	/* A lookup of its own: the verifier inlines the one above only as
	 * long as it sees inner maps of maglev_std alone. */
	barrier();
	id = bpf_map_lookup_elem(table, &slot);
	return id ? *id : MAGLEV_EMPTY;
}

/* The VIP with this address and port/protocol word in index table idx,
 * or NULL: probes from the key's home slot until the key or a free slot. */
static __always_inline struct vip_meta *vip_index_find(void *idx, __u64 a0, __u64 a1, __u32 port_proto)
{
	__u32 home = vip_index_hash(a0, a1, port_proto);

	for (__u32 i = 0; i < VIP_INDEX_PROBES; i++) {
		__u32 slot = (home + i) & (VIP_INDEX_SLOTS - 1);
		struct vip_slot *s = bpf_map_lookup_elem(idx, &slot);
		const sy_u64 *w;

		if (!s || !s->port_proto)
			return NULL;
		w = (const sy_u64 *)&s->addr;
		if (((w[0] ^ a0) | (w[1] ^ a1) | (s->port_proto ^ port_proto)) == 0)
			return &s->meta;
	}
	return NULL;
}

/* The VIP of a packet: its destination port's, else the address's
 * all-ports VIP. */
static __always_inline struct vip_meta *vip_lookup(const struct pkt *p)
{
	const sy_u64 *dst = (const sy_u64 *)&p->flow.dst;
	__u32 zero = 0, proto = (__u32)p->flow.proto << 16;
	struct vip_meta *vm;
	void *idx;

	idx = bpf_map_lookup_elem(&vip_index, &zero);
	if (!idx)
		return NULL;
	vm = vip_index_find(idx, dst[0], dst[1], p->flow.dport | proto);
	if (vm)
		return vm;
	return vip_index_find(idx, dst[0], dst[1], proto);
}

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return XDP_DROP;
}

/* A packet over the MTU once encapsulated with 'overhead' bytes: answered
 * with a "too big" carrying the usable MTU, or dropped (counted). -1 if it
 * fits. The "too big" goes out whether or not DF is set: XDP cannot
 * fragment, and a client that did not set DF still learns the path MTU
 * from it (Linux records it either way). Never to a source that is no
 * single host's. */
static __always_inline int over_mtu(struct xdp_md *ctx, const struct pkt *p,
				    const struct lb_config *cfg, __u32 overhead, int icmp)
{
	if (p->l3_len + overhead <= cfg->mtu)
		return -1;
	if (!icmp && (cfg->flags & CFG_F_ICMP_TOO_BIG) && src_one_host(p))
		return send_too_big(ctx, p, cfg->mtu - overhead);
	return drop(STAT_DROP_TOO_BIG);
}

/* Encapsulates p towards backend be (id) with 'overhead' bytes of outer
 * headers (encap_overhead; over_mtu passed it) and sends it. new_flow:
 * Maglev chose and the flow was recorded (the caller counted it); hit: a
 * connection-table entry chose.
 * vs: the VIP's counters if the caller has looked them up, else NULL. */
static __always_inline int send(struct xdp_md *ctx, struct pkt *p, const struct lb_config *cfg,
				const struct backend *be, __u32 id, __u32 vip_num, __u64 flow_sum,
				__u32 new_flow, __u32 hit, int icmp, struct vip_counters *vs,
				__u32 overhead)
{
	__u32 bytes = p->frame_len;

	/* be points into backend_table: it stays valid across the
	 * packet adjustments inside encap. */
	if (encap(ctx, p, be, cfg, flow_sum, overhead))
		return drop(STAT_DROP_ADJUST);
	/* Everything a forwarded packet counts goes to the two per-CPU
	 * entries it needs anyway: a global counter would cost one more
	 * lookup per packet (connection hits and misses are summed over VIPs
	 * by pkg/datapath; the encapsulation follows from the backend). */
	{
		struct backend_counters *bs;

		if (!vs)
			vs = bpf_map_lookup_elem(&vip_stats, &vip_num);
		if (vs) {
			vs->packets++;
			vs->bytes += bytes;
			vs->conn_hits += hit;
		}
		bs = bpf_map_lookup_elem(&backend_stats, &id);
		if (bs) {
			bs->packets++;
			bs->bytes += bytes;
		}
		if (icmp)
			count(STAT_ICMP_TOO_BIG_FWD);
	}
#ifdef SY_BENCH_UNDO
	/* Benchmark build: strip the outer headers again and restore the
	 * EtherType (the outer header overwrote the original L2 header), so
	 * BPF_PROG_TEST_RUN's next repetition parses the client's packet
	 * again, not our output. The MAC addresses are left as the outer
	 * header left them: nothing reads them, and encap rewrites them. The
	 * inner packet is untouched. */
	{
		void *d, *de;

		if (bpf_xdp_adjust_head(ctx, (int)overhead))
			return XDP_DROP;
		d = (void *)(long)ctx->data;
		de = (void *)(long)ctx->data_end;
		if (d + sizeof(struct ethhdr) > de)
			return XDP_DROP;
		*(sy_u16 *)(d + 12) = p->v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
		/* A new TCP flow: the next repetition is another new flow
		 * (another client port: the port's bytes as they lie, plus
		 * one, which visits every port; after the last, another
		 * IPv4 client address), so every one takes a fresh entry
		 * and, once the table is full, evicts, as real new flows do:
		 * none finds an entry of its own, even in the 1Mi table. */
		if (new_flow && p->flow.proto == IPPROTO_TCP) {
			struct tcphdr *th = d + (p->l4_off & 0xff);
			struct iphdr *iph = d + (p->l2_len & 0x1f);

			if ((void *)(th + 1) > de || (void *)(iph + 1) > de)
				return XDP_DROP;
			if (++th->source == 0 && !p->v6)
				iph->saddr++;
		}
	}
#endif
	return XDP_TX;
}

/* The backend of the flow recorded in way 'way' of set cs (sum: the
 * flow sum), if the entry is still usable: vouched for by its check word,
 * its VIP still the one that
 * recorded it (vip_epoch_table), a UDP entry not idle too long (else *expired
 * is set), the backend still valid. With 'touch', refreshes the entry's
 * stamp, at most once per jiffy: a busy flow's packets mostly find it
 * current and write nothing. Idle time is counted in whole jiffies (so to
 * within one jiffy), modulo 2^32 of them: 49 days at HZ 1000. */
static __always_inline struct backend *conn_backend(struct conn_set *cs, int way, __u64 sum,
						    const struct pkt *p, const struct lb_config *cfg,
						    __u32 *id, __u32 *vip_num, int touch, int *expired)
{
	__u32 vnum, epoch, stamp;
	__u32 jiffy = bpf_jiffies64();
	struct backend *be;
	__u16 vip_epoch;

	if (conn_read(cs, way, sum, id, &vnum, &vip_epoch, &stamp))
		return NULL;
	/* vnum < MAX_VIPS in every entry the check vouched for. */
	epoch = vip_epoch_table[vnum & (MAX_VIPS - 1)];
	if (!(epoch & 1) || (__u16)epoch != vip_epoch)
		return NULL;
	if (p->flow.proto == IPPROTO_UDP && (__u64)(jiffy - stamp) * jiffy_ns >= cfg->udp_timeout_ns) {
		*expired = 1;
		return NULL;
	}
	be = backend_of(*id);
	if (!be || !(be->flags & BACKEND_F_VALID))
		return NULL;
	if (touch && stamp != jiffy)
		conn_touch(cs, way, jiffy);
	*vip_num = vnum;
	return be;
}

/* A SYN that may open a connection: not an ACK, and neither FIN nor RST
 * with it, which no stack opens a connection with (Linux discards both in
 * LISTEN) but which a stray or forged packet may carry: such a packet
 * follows the flow's entry, to the backend whose connection it is about,
 * and must not move the flow to the current table's choice. */
static __always_inline int is_syn(const struct pkt *p)
{
	return p->flow.proto == IPPROTO_TCP &&
	       (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_FIN | TCP_FLAG_RST)) ==
		       TCP_FLAG_SYN;
}

/* Where a flow is recorded in the connection table, or would be: found
 * once per packet, used by both paths. */
struct conn_ref {
	struct conn_set *cs; /* NULL only if the array lookup failed */
	__u64 sum;           /* the flow sum */
	__u32 tag;
	int way; /* -1: not recorded */
};

/* The fast path of a packet that is not a SYN: a flow recorded in the
 * connection table goes to its backend without a VIP lookup. Returns -1 to
 * take the full path (no usable entry). */
static __always_inline int forward_pinned(struct xdp_md *ctx, struct pkt *p,
					  const struct conn_ref *cr)
{
	const struct lb_config *cfg = &config;
	__u32 id, vip_num;
	struct backend *be;
	int expired = 0, ret;
	__u32 overhead;

	if (cr->way < 0 || !cr->cs)
		return -1;
	if (!(cfg->flags & CFG_F_NEXTHOP))
		return -1;
	be = conn_backend(cr->cs, cr->way, cr->sum, p, cfg, &id, &vip_num, 1, &expired);
	if (!be)
		return -1;
	overhead = encap_overhead(be, cfg);
	ret = over_mtu(ctx, p, cfg, overhead, 0);
	if (ret >= 0)
		return ret;
	return send(ctx, p, cfg, be, id, vip_num, cr->sum, 0, 1, 0, NULL, overhead);
}

/* The full path: the VIP is known. Uses the connection entry if there is a
 * usable one (never for a SYN), else lets Maglev choose and records the
 * choice. 'icmp' marks a "too big" about an existing flow: it may not
 * create a connection entry. */
static __always_inline int forward(struct xdp_md *ctx, struct pkt *p, const struct vip_meta *vm,
				   const struct conn_ref *cr, int icmp)
{
	__u32 id = MAGLEV_EMPTY, hash, vip_num, vnum = vm->vip_num;
	int conntrack = !(vm->flags & VIP_F_NO_CONNTRACK) && !icmp;
	const struct lb_config *cfg = &config;
	struct vip_counters *vs = NULL;
	struct backend *be;
	int expired = 0, new_flow = 0, ret;
	__u32 overhead;

	if (!(cfg->flags & CFG_F_NEXTHOP))
		return drop(STAT_DROP_NO_NEXTHOP);

	if (!(vm->flags & VIP_F_NO_CONNTRACK)) {
		/* A SYN always follows the current table; it only learns
		 * which entry to overwrite. */
		if (cr->way >= 0 && cr->cs && (!is_syn(p) || icmp)) {
			/* The entry's VIP may not be vm (an all-ports VIP the
			 * flow was recorded under, before its port's own VIP
			 * was added): the flow's packets follow the entry all
			 * the same (forward_pinned), and so does a "too big". */
			be = conn_backend(cr->cs, cr->way, cr->sum, p, cfg, &id, &vip_num, conntrack,
					  &expired);
			if (be) {
				overhead = encap_overhead(be, cfg);
				ret = over_mtu(ctx, p, cfg, overhead, icmp);
				if (ret >= 0)
					return ret;
				return send(ctx, p, cfg, be, id, vip_num, cr->sum, 0, 1, icmp, NULL,
					    overhead);
			}
		}
		/* The miss goes to the VIP's counters, which send() then
		 * reuses. */
		vs = bpf_map_lookup_elem(&vip_stats, &vnum);
		if (vs)
			vs->conn_misses++;
	}

	/* A source-affinity VIP hashes the client address into Maglev; the
	 * connection table always goes by the whole 5-tuple. */
	if (vm->flags & VIP_F_HASH_SRC)
		hash = hash_addr(&p->flow.src, FLOW_HASH_SEED);
	else
		hash = hash_flow(cr->sum);
	id = maglev_pick(vm, vm->gen, hash);
	if (id == MAGLEV_EMPTY)
		return drop(STAT_DROP_NO_BACKEND);
	be = backend_of(id);
	if (!be || !(be->flags & BACKEND_F_VALID))
		return drop(STAT_DROP_NO_BACKEND);
	/* A packet too big to forward records nothing: the client's smaller
	 * retry is the new flow. */
	overhead = encap_overhead(be, cfg);
	ret = over_mtu(ctx, p, cfg, overhead, icmp);
	if (ret >= 0)
		return ret;
	if (conntrack && cr->cs) {
		/* The VIP's epoch from the index (rebuilt whenever an epoch
		 * moves): no epoch read on a new flow. */
		if (conn_insert(cr->cs, cr->way, &p->flow, cr->sum, cr->tag, id, vnum, vm->epoch,
				bpf_jiffies64()) &&
		    vs)
			vs->new_flows++;
		/* An expired entry is counted once, by the packet that
		 * records its flow again: one dropped on the way (no
		 * backend, too big) or a "too big" leaves it in place, for
		 * the flow's next packet to find expired too. */
		if (expired)
			count(STAT_UDP_EXPIRED);
		new_flow = 1;
	}
	return send(ctx, p, cfg, be, id, vm->vip_num, cr->sum, new_flow, 0, icmp, vs, overhead);
}

/* Parses what parse_common left to it, from the start: -1 to go on with p
 * (*icmp set for a "too big" about a VIP flow), else the verdict. */
static __always_inline int parse_rest(struct xdp_md *ctx, struct pkt *p, int *icmp)
{
	void *data, *data_end;
	int ret;

	__builtin_memset(p, 0, sizeof(*p));
	ret = parse(ctx, p);
	if (ret == PARSE_PASS)
		return XDP_PASS;
	if (ret == PARSE_MALFORMED) {
		/* Once the address is known (an IPv6 chain too long to
		 * follow: p->v6 is set), only a VIP address's packet counts:
		 * vip_filter lets some host addresses through. */
		if (!p->v6 || bpf_map_lookup_elem(&vip_addrs, &p->flow.dst))
			count(STAT_PASS_MALFORMED);
		return XDP_PASS;
	}
	if (ret >= PARSE_DROP)
		return drop(ret - PARSE_DROP);
	if (p->flow.proto != IPPROTO_ICMP && p->flow.proto != IPPROTO_ICMPV6) {
		/* No TCP or UDP peer is multicast, unspecified, loopback or
		 * IPv4-mapped (RFC 4291 section 2.5.5.2, RFC 6890; Linux drops
		 * such a SYN): a VIP's such packet is dropped before it can
		 * reach a backend or the connection table. Checked here, off
		 * the common path: IPv4 sources go unchecked. */
		if (p->v6 && !src_one_host(p))
			return vip_lookup(p) ? drop(STAT_DROP_INVALID_SOURCE) : XDP_PASS;
		return -1;
	}
	if (p->icmp_type == (p->v6 ? ICMPV6_ECHO_REQUEST : ICMP_ECHO))
		return echo_reply(ctx, p);
	if (p->v6 ? p->icmp_type != ICMPV6_PKT_TOOBIG
		  : p->icmp_type != ICMP_DEST_UNREACH || p->icmp_code != ICMP_FRAG_NEEDED)
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	ret = parse_too_big_quote(data, data_end, p);
	if (ret == PARSE_PASS)
		return XDP_PASS;
	if (ret >= PARSE_DROP)
		return drop(ret - PARSE_DROP);
	*icmp = 1;
	return -1;
}

SEC("xdp")
int xdp_balancer(struct xdp_md *ctx)
{
	struct vip_meta *vm;
	struct conn_ref cr;
	struct pkt p;
	int ret, icmp = 0;
	__u64 flow_sum;

	/* The flow sum is taken in each branch: on the common one the
	 * compiler folds the words parse_common wrote as constants. */
	ret = parse_common(ctx, &p);
	if (ret == PARSE_OK) {
		flow_sum = hash_flow_sum(&p.flow);
	} else if (ret == PARSE_PASS) {
		return XDP_PASS;
	} else {
		ret = parse_rest(ctx, &p, &icmp);
		if (ret >= 0)
			return ret;
		flow_sum = hash_flow_sum(&p.flow);
	}

	cr.sum = flow_sum;
	cr.tag = conn_tag(flow_sum);
	cr.cs = conn_set_of(flow_sum);
	cr.way = cr.cs ? conn_find(cr.cs, &p.flow, cr.tag) : -1;
	if (!icmp && !is_syn(&p)) {
		ret = forward_pinned(ctx, &p, &cr);
		if (ret >= 0)
			return ret;
	}
	vm = vip_lookup(&p);
	if (!vm) {
		if (icmp)
			return drop(STAT_DROP_ICMP_INVALID);
		return XDP_PASS;
	}
	return forward(ctx, &p, vm, &cr, icmp);
}
