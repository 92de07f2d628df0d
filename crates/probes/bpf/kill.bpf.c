// SPDX-License-Identifier: GPL-2.0-only
/*
 * Signals one process sends another (data_type 62 process-directed, 200
 * thread-directed).
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"

#define SI_TIMER -2
#define TS_COMPAT 0x0002
#define PF_KTHREAD 0x00200000
/* The calls that queue a caller-made siginfo, x86-64 and i386 numbers:
 * only through them is an SI_TIMER code the caller's. */
#define NR_RT_SIGQUEUEINFO 129
#define NR_RT_TGSIGQUEUEINFO 297
#define NR32_RT_SIGQUEUEINFO 178
#define NR32_RT_TGSIGQUEUEINFO 335

/*
 * Where the kernel generates a signal for a task, whichever call asked
 * (kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo,
 * pidfd_send_signal, and each member of a kill(-pgid)), after the
 * permission check: signal 0 never gets here. It also fires for the
 * kernel's own signals (SIGCHLD at every exit, faults, timers, the tty's
 * SIGINT), so the common run is the leave-early below: those come with
 * SEND_SIG_NOINFO/SEND_SIG_PRIV (0 or 1 for a pointer) or a positive
 * si_code (SI_KERNEL, CLD_*, SEGV_*), while what a process sends carries
 * SI_USER (0) or a negative code. tp_btf: the arguments as they are, not
 * a trace record with the comm copied first.
 */
SEC("tp_btf/signal_generate")
int BPF_PROG(handle_signal_generate, int sig, struct kernel_siginfo *info, struct task_struct *t,
	     int group, int result)
{
	struct task_struct *task;
	struct kestrel_kill *e;
	struct pt_regs *regs;
	__u32 flags = 0;
	long nr = -1;
	int code;

	if ((unsigned long)info <= 1)
		return 0;
	/* Kernels since 6.18.x mark this argument a scalar, since it may be
	 * one of the SEND_SIG_* constants rather than a pointer, and refuse a
	 * direct load through it: read it as kernel memory instead, which
	 * older kernels accept too. */
	if (bpf_probe_read_kernel(&code, sizeof(code), &info->si_code))
		return 0;
	if (code > 0)
		return 0;
	task = bpf_get_current_task_btf();
	/* To itself (raise, a thread of the same process), or the agent's
	 * own: not reported. A signal *to* the agent is. */
	if (t->tgid == task->tgid || task->tgid == self_tgid)
		return 0;
	if (!(task->flags & PF_KTHREAD)) {
		regs = (struct pt_regs *)bpf_task_pt_regs(task);
		nr = regs->orig_ax;
		if (task->thread_info.status & TS_COMPAT)
			flags |= KESTREL_KILL_COMPAT;
	}
	/* A POSIX timer's SI_TIMER may fire in interrupt context over any
	 * task; a process can also queue that code itself, and then it is
	 * reported like any other. */
	if (code == SI_TIMER &&
	    !((flags & KESTREL_KILL_COMPAT)
		      ? (nr == NR32_RT_SIGQUEUEINFO || nr == NR32_RT_TGSIGQUEUEINFO)
		      : (nr == NR_RT_SIGQUEUEINFO || nr == NR_RT_TGSIGQUEUEINFO)))
		return 0;
	if (group)
		flags |= KESTREL_KILL_GROUP;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(KESTREL_KIND_KILL, KESTREL_CTR_RINGBUF_FULL);
		return 0;
	}
	e->hdr.kind = KESTREL_KIND_KILL;
	e->hdr.reserved = 0;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	e->sig = sig;
	e->si_code = code;
	e->target_pid = t->pid;
	e->target_tgid = t->tgid;
	e->target_start_boottime = t->group_leader->start_boottime;
	e->syscall = nr;
	e->result = result;
	e->flags = flags;
	e->reserved = 0;
	__builtin_memcpy(e->target_comm, t->comm, sizeof(e->target_comm));
	bpf_ringbuf_submit(e, wakeup_flags(sizeof(*e)));
	count(KESTREL_KIND_KILL, KESTREL_CTR_SUBMITTED);
	return 0;
}
