/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The ring buffer that carries records to user space, and the per-kind
 * counters of what was submitted and what was lost.
 */
#ifndef KESTREL_LIB_RINGBUF_H
#define KESTREL_LIB_RINGBUF_H

#include "base.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024); /* resized by user space */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KESTREL_KIND_MAX * KESTREL_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Bytes this CPU submitted since it last looked at the ring's fill. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unchecked SEC(".maps");

static __always_inline void count(__u32 kind, __u32 ctr)
{
	__u32 key = kind * KESTREL_CTR_MAX + ctr;
	__u64 *v = bpf_map_lookup_elem(&counters, &key);

	if (v)
		*v += 1;
}

/* Hand a record to user space without waking it: user space collects on
 * its poll timeout, or when the buffered bytes reach wakeup_bytes. Asking
 * the ring buffer how full it is reads the consumer's cache line (7 % of
 * handle_exec), so each CPU asks only after every WAKEUP_CHECK_BYTES it
 * submitted: a wakeup comes at most that much per CPU past the threshold. */
#define WAKEUP_CHECK_BYTES (16 * 1024)

static __always_inline __u64 wakeup_flags(__u64 size)
{
	__u32 zero = 0;
	__u64 *since = bpf_map_lookup_elem(&unchecked, &zero);

	if (since) {
		*since += size;
		if (*since >= WAKEUP_CHECK_BYTES) {
			*since = 0;
			if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + size >= wakeup_bytes)
				return BPF_RB_FORCE_WAKEUP;
		}
	}
	return BPF_RB_NO_WAKEUP;
}

/* A record assembled elsewhere (a scratch map: variable-sized records). */
static __always_inline void submit(void *rec, __u64 size, __u32 kind)
{
	if (bpf_ringbuf_output(&events, rec, size, wakeup_flags(size)) == 0)
		count(kind, KESTREL_CTR_SUBMITTED);
	else
		count(kind, KESTREL_CTR_RINGBUF_FULL);
}

#endif /* KESTREL_LIB_RINGBUF_H */
