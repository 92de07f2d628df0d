// SPDX-License-Identifier: GPL-2.0-only
/*
 * Kestrel's kernel side. Each program sits on one syscall or one scheduler,
 * socket or signal event, never on every syscall. A syscall's program is
 * built three times (lib/syscall.h): on its tracepoint, as fentry/fexit and
 * as a kprobe on its function; user space loads the one this kernel allows
 * and costs least, so that a kernel without fentry or kprobes still runs
 * everything here on tracepoints.
 *
 * Syscall arguments are read at the syscall's *exit* from the task's saved
 * registers (bpf_task_pt_regs), so one program per syscall sees both the
 * arguments and the result, with no entry program and no per-task map
 * between the two.
 */

/* Every other bpf/<family>.bpf.c, in name order: written by build.rs, so a new
 * family's source needs no line here. */
#include "kestrel_sources.h"

char LICENSE[] SEC("license") = "GPL";
