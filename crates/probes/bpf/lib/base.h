/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What every program starts from: the kernel's types, libbpf's helpers,
 * the record layouts, and the settings user space writes before load.
 */
#ifndef KESTREL_LIB_BASE_H
#define KESTREL_LIB_BASE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "kestrel_abi.h"

/* Set by user space before load. */
const volatile __u32 self_tgid = 0;
/* The inode number of the agent's mount namespace (see lib/paths.h). */
const volatile __u32 self_mnt_ns = 0;
/* Wake the consumer when this many bytes wait in the ring buffer. Below
 * it, records are submitted without a wakeup and user space collects them
 * on its poll timeout: a wakeup costs ~16 us, a silent submit ~0.5 us. */
const volatile __u64 wakeup_bytes = 256 * 1024;

/*
 * Task, file and socket fields are read with plain loads through BTF-typed
 * pointers (CO-RE relocated by vmlinux.h's preserve_access_index): the JIT
 * turns them into guarded loads, where a helper call costs some 20-40 ns
 * each on this kind of VM and was most of every program's time. Only what
 * the verifier cannot type (an element of a pointer array, a string, a
 * container_of) goes through bpf_probe_read_kernel, and then as few times
 * as possible: neighbouring fields are read in one call.
 */

/*
 * A pointer the verifier cannot type (read with a helper, or a void *) is
 * given its type with bpf_core_cast (the bpf_rdonly_cast kfunc, Linux 6.2+,
 * which the verifier turns into a register move): its fields are then
 * plain guarded loads instead of one helper call each, a call costing
 * some 30-60 ns on this kind of VM. `typed()` says whether this kernel has
 * it; libbpf resolves the test at load time and the verifier drops the
 * branch not taken, so older kernels run the helper reads below each fast
 * path.
 */
#define typed() bpf_ksym_exists(bpf_rdonly_cast)

#endif /* KESTREL_LIB_BASE_H */
