// SPDX-License-Identifier: GPL-2.0-only
/*
 * ptrace records (data_type 101).
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/creds.h"
#include "lib/syscall.h"

#define PTRACE_TRACEME 0

/* ptrace: every request that reaches into another process. Arguments come
 * from the saved registers (the fourth syscall argument is in r10). */
KESTREL_SYSCALL_EXIT(ptrace)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct kestrel_ptrace e = {};
	struct kestrel_proc *ps;

	e.request = (long)regs->di;
	if (e.request == PTRACE_TRACEME || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	e.hdr.kind = KESTREL_KIND_PTRACE;
	e.hdr.size = sizeof(e);
	e.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	ps = proc_entry(task);
	fill_task(&e.task, task, ps);
	e.target_pid = (int)regs->si;
	e.addr = regs->dx;
	e.data = regs->r10;
	e.res = ret;
	submit(&e, sizeof(e), KESTREL_KIND_PTRACE);
	check_creds(ps, task, KESTREL_CRED_AT_PTRACE, NULL);
	return 0;
}
