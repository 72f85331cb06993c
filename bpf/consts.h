/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Limits, flags and counter indices shared by the balancer program and the Go side. */
#ifndef __SY_CONSTS_H
#define __SY_CONSTS_H

/* Limits; tests may shrink them with -D. Changing MAX_VIPS or MAX_BACKENDS
 * changes pinned map sizes: an upgrade across such a change needs `switchyard
 * remove` first. */
#ifndef MAX_VIPS
#define MAX_VIPS 512
#endif
#ifndef MAX_BACKENDS
#define MAX_BACKENDS 4096
#endif
#ifndef DEFAULT_CONN_TABLE_SIZE
#define DEFAULT_CONN_TABLE_SIZE (1 << 20)
#endif

/* Connection table: entries per set, and the tags of a free slot and of
 * one being written (CONN_TAG_BUSY: written by earlier versions only). A
 * flow's tag always has bit 1 set, so it is neither. */
#define CONN_WAYS 4
#define CONN_TAG_EMPTY 0
#define CONN_TAG_BUSY 1

/* The VIP index (maps.h): slots (a power of two, 8x MAX_VIPS so that a
 * probe rarely goes past the first slot) and the longest probe. */
#define VIP_INDEX_SLOTS 4096
#define VIP_INDEX_PROBES 16

/* Size of the VIP address filter (bits, a power of two). */
#define VIP_FILTER_BITS 65536

/* Maglev table generations per VIP: the active one and the previous one. */
#define MAGLEV_GENERATIONS 2
/* Tables of up to this many slots (the default size and every smaller
 * allowed size) live in maglev_std, whose inner maps all have exactly
 * this many, so that their lookups are inlined (maps.h). */
#define MAGLEV_STD_SLOTS 65537
/* A table slot with no backend (a VIP whose backends are all down). */
#define MAGLEV_EMPTY 0xffffffff

/* Seed of the flow hash. Every balancer must use the same value, and the Go
 * mirror (pkg/datapath.FlowHash) must match: changing it moves every flow that
 * is not pinned in a connection table. */
#define FLOW_HASH_SEED 0x5eed5eed

#define DEFAULT_TTL 64

#define ETH_ALEN 6
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

#define IPPROTO_ICMP 1
#define IPPROTO_IPIP 4
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_IPV6 41
#define IPPROTO_HOPOPTS 0
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_DSTOPTS 60
#define IPPROTO_ICMPV6 58

/* The ECN field (the low two bits of the TOS / traffic class) and its
 * "congestion experienced" value. */
#define ECN_MASK 3
#define ECN_CE 3

#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_FRAG_NEEDED 4
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

/* Bytes of the offending packet's L4 header quoted in a generated "too
 * big" message, after its IP header (RFC 792) and, for IPv6, the extension
 * headers followed to it: a receiver finds the flow to correct by the
 * ports behind them (Linux's icmpv6_notify drops a quote that stops short). */
#define ICMP_QUOTE_L4 8

#define IPV4_HDR_LEN 20
/* IPv4 option types (RFC 791) and the most option bytes a header holds. */
#define IPOPT_END 0
#define IPOPT_NOOP 1
#define IPOPT_LSRR 131
#define IPOPT_SSRR 137
#define IPV4_OPTS_MAX 40
#define IPV6_HDR_LEN 40
/* IPv6 extension headers followed to a VIP packet's L4 header (RFC 8200's
 * order has at most hop-by-hop, destination options, routing, destination
 * options), and the furthest that L4 header may start in the frame. */
#define IPV6_EXT_MAX 4
#define IPV6_L4_OFF_MAX 255
#define UDP_HDR_LEN 8

/* enum vip_flags: per-VIP options, set by the control plane in vip_meta.flags. */
enum vip_flags {
	VIP_F_HASH_SRC = 1 << 0,     /* hash on the client address only (affinity) */
	VIP_F_NO_CONNTRACK = 1 << 1, /* pure hashing, no connection table (UDP) */
};

/* enum backend_flags: backend.flags. */
enum backend_flags {
	BACKEND_F_VALID = 1 << 0, /* slot holds a live backend */
	BACKEND_F_V6 = 1 << 1,    /* backend address is IPv6: IPv6 outer header */
};

/* enum cfg_flags: lb_config.flags. */
enum cfg_flags {
	CFG_F_NEXTHOP = 1 << 0,     /* nh_mac is known: forwarding may start */
	CFG_F_GUE = 1 << 1,         /* encapsulate in UDP (GUE variant 1) */
	CFG_F_ICMP_TOO_BIG = 1 << 2, /* answer oversized packets with a "too big" */
	CFG_F_SRC_PREFIX_V4 = 1 << 3, /* outer IPv4 source hashed inside a prefix */
	CFG_F_SRC_PREFIX_V6 = 1 << 4, /* outer IPv6 source hashed inside a prefix */
};

/* enum sy_stat: indices of the per-CPU global counter array. Names are read
 * by pkg/datapath (bpf2go -type sy_stat) and become metric labels, so keep
 * them stable. STAT_DROP_* are drop reasons; everything else counts events.
 *
 * Evictions are not counted one by one: that would cost the common insert
 * (a new flow into a full set) a per-CPU lookup. Every recorded flow
 * (vip_counters.new_flows) filled a free entry, was recorded again in its
 * own, or evicted one; the first two are rare and counted, and
 * pkg/datapath derives evictions as new flows - fills - refreshes -
 * STAT_CONN_EVICT_BASE. Indices 4 to 6 counted encapsulations in versions
 * whose pins this one cannot adopt (their vip_stats was smaller), so they
 * start at zero. */
enum sy_stat {
	STAT_PASS_MALFORMED = 0, /* L2/L3 header unparsable: handed to the stack */
	STAT_CONN_HIT,           /* unused: hits and misses are counted per VIP */
	STAT_CONN_MISS,          /* (vip_counters.conn_hits, conn_misses) */
	STAT_UDP_EXPIRED,        /* UDP entry older than the idle timeout */
	STAT_CONN_FILLED,        /* a new flow took a free entry */
	STAT_CONN_REFRESHED,     /* a flow recorded again in its own entry (SYN repeated, entry unusable) */
	STAT_CONN_EVICT_BASE,    /* not an event: flows recorded before fills were counted that */
	                         /* evicted nothing (set once by pkg/datapath) */
	STAT_ICMP_ECHO_REPLY,    /* echo request to a VIP answered */
	STAT_ICMP_TOO_BIG_FWD,   /* "too big" about a VIP flow sent to its backend */
	STAT_ICMP_TOO_BIG_SENT,  /* "too big" sent to a client (packet over MTU) */
	STAT_DROP_FRAGMENT,      /* IP fragment to a VIP address */
	STAT_DROP_TRUNCATED,     /* L4 header or payload shorter than declared */
	STAT_DROP_NO_BACKEND,    /* VIP has no healthy backend */
	STAT_DROP_NO_NEXTHOP,    /* next-hop MAC not yet resolved */
	STAT_DROP_TOO_BIG,       /* over MTU after encap and no "too big" was sent */
	STAT_DROP_ADJUST,        /* bpf_xdp_adjust_head/tail failed */
	STAT_DROP_ICMP_INVALID,  /* "too big" to a VIP quoting an unknown flow; echo request from no single host */
	STAT_CONN_EVICTED,       /* evictions as earlier versions counted them (now derived) */
	STAT_CONN_INSERT_RACE,   /* another flow took the entry being refreshed: not recorded */
	/* TCP/UDP to an IPv6 VIP from a source that is no single host's
	 * (src_one_host). New reasons go last: an earlier release's pinned
	 * counters keep their indices when LoadBalancer moves them to a
	 * larger map. */
	STAT_DROP_INVALID_SOURCE,
	STAT_MAX,
};

/* enum decap_stat: indices of the decap program's per-CPU counters. */
enum decap_stat {
	DECAP_STAT_IPIP = 0,   /* IPv4 outer removed */
	DECAP_STAT_IP6,        /* IPv6 outer removed */
	DECAP_STAT_GUE,        /* of which GUE */
	DECAP_STAT_PASS,       /* not encapsulated to us: untouched */
	DECAP_STAT_DROP_INNER, /* for us, but the inner packet is not IP (or not the IP the outer header names) */
	DECAP_STAT_DROP_ADJUST, /* bpf_xdp_adjust_head failed */
	/* outer CE over a Not-ECT inner packet (RFC 6040 section 4.2). New
	 * reasons go last: an earlier release's pinned counters keep their
	 * indices when LoadDecap moves them to a larger map. */
	DECAP_STAT_DROP_CE_NOT_ECT,
	/* For us, but with an outer header the kernel's receive path
	 * refuses: passed untouched, for the stack to drop and count (XDP
	 * runs before ip_rcv, so nothing else checks it). */
	DECAP_STAT_BAD_OUTER_CSUM,    /* IPv4 header checksum wrong */
	DECAP_STAT_BAD_OUTER_IP_LEN,  /* IP header or length beyond the frame, or length short of the IPv4 header */
	DECAP_STAT_BAD_OUTER_UDP_LEN, /* GUE: UDP header or length beyond the IP packet, or length below 8 */
	DECAP_STAT_BAD_OUTER_UDP_CSUM, /* GUE: UDP checksum not 0 (none) and wrong */
	DECAP_STAT_BAD_OUTER_SRC,      /* a source ip_rcv/ipv6_rcv refuse: IPv4 0/8, 127/8, 224/4, 255.255.255.255; IPv6 ff00::/8, ::1 */
	DECAP_STAT_MAX,
};

#endif
