/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * One syscall hook, three ways to attach it. A program on a syscall's entry
 * or exit is written once, as the body after KESTREL_SYSCALL_ENTER(sys) or
 * KESTREL_SYSCALL_EXIT(sys), and compiled three times:
 *
 *   handle_<sys>_<edge>  on the syscall tracepoint (sys_enter_/sys_exit_<sys>)
 *   fe_<sys>_<edge>      fentry/fexit on the syscall's function (__x64_sys_<sys>)
 *   kp_<sys>_<edge>      kprobe/kretprobe on the same function
 *
 * User space loads exactly one of the three per hook (crates/probes/src/load.rs
 * chooses; the table of kinds names all three). Only the first costs every
 * syscall of the host: attaching any syscall tracepoint sets
 * SYSCALL_WORK_SYSCALL_TRACEPOINT on every task. A BPF trampoline or a kprobe
 * on __x64_sys_<sys> runs when that syscall runs and at no other time.
 *
 * The bodies see the same things whichever way they were reached: the
 * syscall's arguments from the task's saved user registers (bpf_task_pt_regs,
 * what the tracepoint's args[] are read from too) and, at exit, its return
 * value `ret`, which the three read from their own context: the tracepoint's
 * ret field, fexit's slot after the function's one argument, the kretprobe's
 * return register.
 *
 * x86-64 only: the functions are the x86-64 syscall wrappers (Linux 4.17+,
 * one `const struct pt_regs *` argument). 32-bit (ia32) syscalls go through
 * __ia32_sys_<sys> and, as with the tracepoints, are not seen.
 */
#ifndef KESTREL_LIB_SYSCALL_H
#define KESTREL_LIB_SYSCALL_H

#include "base.h"

#define KESTREL_SYSCALL_FN "__x64_sys_"

/* The calling task's user registers, as the syscall entered. */
static __always_inline struct pt_regs *syscall_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* The body that follows takes nothing: it reads the arguments it needs
 * from syscall_regs() (di, si, dx, r10, r8, r9), so that an entry that
 * needs none (execve's) pays for no helper call. */
#define KESTREL_SYSCALL_ENTER(sys)                                             \
	static __always_inline int sys##_enter_body(void);        \
	SEC("tracepoint/syscalls/sys_enter_" #sys)                             \
	int handle_##sys##_enter(struct trace_event_raw_sys_enter *ctx)        \
	{                                                                      \
		return sys##_enter_body();                       \
	}                                                                      \
	SEC("fentry/" KESTREL_SYSCALL_FN #sys)                                 \
	int fe_##sys##_enter(__u64 *ctx)                                       \
	{                                                                      \
		return sys##_enter_body();                       \
	}                                                                      \
	SEC("kprobe/" KESTREL_SYSCALL_FN #sys)                                 \
	int kp_##sys##_enter(struct pt_regs *ctx)                              \
	{                                                                      \
		return sys##_enter_body();                       \
	}                                                                      \
	static __always_inline int sys##_enter_body(void)

/* The body that follows gets `long ret`, the syscall's return value. Each
 * wrapper reads it once into a register: the verifier refuses a load
 * through a context pointer that clang kept offset for a later use.
 * fexit goes on `fn`, which takes the syscall's one pt_regs argument and
 * returns what the syscall returns. */
#define __KESTREL_SYSCALL_EXIT(sys, fn)                                        \
	static __always_inline int sys##_exit_body(long ret);                  \
	SEC("tracepoint/syscalls/sys_exit_" #sys)                              \
	int handle_##sys##_exit(struct trace_event_raw_sys_exit *ctx)          \
	{                                                                      \
		long ret = ctx->ret;                                           \
                                                                               \
		barrier_var(ret);                                              \
		return sys##_exit_body(ret);                                   \
	}                                                                      \
	SEC("fexit/" fn)                                                       \
	int fe_##sys##_exit(__u64 *ctx)                                        \
	{                                                                      \
		long ret = (long)ctx[1];                                       \
                                                                               \
		barrier_var(ret);                                              \
		return sys##_exit_body(ret);                                   \
	}                                                                      \
	SEC("kretprobe/" KESTREL_SYSCALL_FN #sys)                              \
	int kp_##sys##_exit(struct pt_regs *ctx)                               \
	{                                                                      \
		long ret = PT_REGS_RC(ctx);                                    \
                                                                               \
		barrier_var(ret);                                              \
		return sys##_exit_body(ret);                                   \
	}                                                                      \
	static __always_inline int sys##_exit_body(long ret)

#define KESTREL_SYSCALL_EXIT(sys) __KESTREL_SYSCALL_EXIT(sys, KESTREL_SYSCALL_FN #sys)

/* A syscall without arguments (SYSCALL_DEFINE0): its __x64_sys_ symbol is
 * an alias of __do_sys_<sys>, and the kernel's BTF (which fentry attaches
 * through) names only the latter, with the same prototype. crates/abi's
 * build.rs knows these by the same list (NO_ARGUMENTS). */
#define KESTREL_SYSCALL0_EXIT(sys) __KESTREL_SYSCALL_EXIT(sys, "__do_sys_" #sys)

#endif /* KESTREL_LIB_SYSCALL_H */
