// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The clocks the balancer's connection table runs on, read together for
 * pkg/datapath: jiffies (what the datapath stamps entries with, an inlined
 * read) and CLOCK_MONOTONIC. Run with BPF_PROG_TEST_RUN. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct clock_sample {
	__u64 jiffies;
	__u64 mono_ns;
};

SEC("syscall")
int read_clocks(struct clock_sample *ctx)
{
	ctx->jiffies = bpf_jiffies64();
	ctx->mono_ns = bpf_ktime_get_ns();
	return 0;
}
