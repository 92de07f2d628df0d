// SPDX-License-Identifier: GPL-2.0-only
/*
 * Kestrel's kernel side. Tracepoints only: this must run on kernels where
 * kprobes, fentry and BPF-LSM are unavailable. Each program sits on the
 * tracepoint of one syscall or one scheduler event, never on every syscall.
 *
 * Syscall arguments are read at the syscall's *exit* tracepoint from the
 * task's saved registers (bpf_task_pt_regs), so one program per syscall
 * sees both the arguments and the result, with no entry program and no
 * per-task map between the two.
 */

/* Every other bpf/<family>.bpf.c, in name order: written by build.rs, so a new
 * family's source needs no line here. */
#include "kestrel_sources.h"

char LICENSE[] SEC("license") = "GPL";
