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

#include "exec.bpf.c"
#include "connect.bpf.c"
#include "ptrace.bpf.c"
#include "dns.bpf.c"
#include "process.bpf.c"
#include "module.bpf.c"
#include "file.bpf.c"

char LICENSE[] SEC("license") = "GPL";
