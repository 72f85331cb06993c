/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Internet checksum helpers (RFC 1071, incremental updates per RFC 1624). */
#ifndef __SY_CSUM_H
#define __SY_CSUM_H

#include <linux/types.h>
#include "structs.h"

/* Folds a sum of at most 2^15 32-bit words (callers add up a header's or
 * an ICMP quote's words) into the 16-bit ones' complement checksum. Then
 * sum < 2^47, so after the first step sum < 2^32 + 2^15. Below 2^32 the
 * second step leaves at most 0x1fffe and the third at most 0xffff; at or
 * above it the second leaves 0x10000 plus under 2^15, the third under
 * 2^15 + 1. Three steps, not four: one fewer on every encapsulation. */
static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Checksum of a 20-byte IPv4 header whose check field is zero. Read
 * through sy_u32: the caller has just written the header field by field,
 * and a plain __u32 read of it could be moved before those writes (strict
 * aliasing), as sum_words' was (bpf/icmp.h). */
static __always_inline __u16 ipv4_hdr_csum(const void *iph)
{
	const sy_u32 *w = iph;
	__u64 sum = 0;

#pragma unroll
	for (int i = 0; i < IPV4_HDR_LEN / 4; i++)
		sum += w[i];
	return csum_fold(sum);
}

/* RFC 1624 eqn. 3: the checksum after one 16-bit word changed old -> new. */
static __always_inline __u16 csum_replace16(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

#endif
