// SPDX-License-Identifier: GPL-2.0-only
/*
 * Exec records (data_type 59): successful execs from the scheduler's
 * tracepoint, failed ones from the execve/execveat exits.
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/creds.h"
#include "lib/exec.h"
#include "lib/syscall.h"

/* A successful exec: the new image is in place, its argument and
 * environment areas are in the new mm and are read in one copy each. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct kestrel_exec *e;
	struct mm_struct *mm;
	struct kestrel_proc *ps;
	unsigned long start, end;
	__u64 off, len;
	__u32 holder, size;
	bool inet, memfd;
	long n;

	if (p->tgid == self_tgid)
		return 0;
	e = exec_record();
	if (!e)
		return 0;
	e->res = 0;
	e->argc = bprm->argc;
	e->flags = KESTREL_EXEC_ARGV_FROM_MM;

	n = bpf_probe_read_kernel_str(e->data, KESTREL_FILENAME_MAX, bprm->filename);
	/* As a number: a global function takes no kernel pointer. */
	off = exec_paths(e, p, n, (__u64)BPF_CORE_READ(bprm, file), &memfd);

	mm = p->mm;
	start = mm->arg_start;
	end = mm->arg_end;
	len = end > start ? end - start : 0;
	if (len > KESTREL_ARGV_MAX) {
		len = KESTREL_ARGV_MAX;
		e->flags |= KESTREL_EXEC_ARGV_TRUNCATED;
	}
	/* barrier_var stops clang from reusing an unclamped copy of a value;
	 * the repeated tests then give the verifier its bounds. */
	barrier_var(len);
	barrier_var(off);
	if (len > KESTREL_ARGV_MAX || off > OFF_ARGV)
		return 0;
	if (len && bpf_probe_read_user(&e->data[off], len, (void *)start) == 0) {
		e->argv_len = len;
		off += len;
	}

	start = mm->env_start;
	end = mm->env_end;
	len = end > start ? end - start : 0;
	barrier_var(off);
	if (off > OFF_ENV)
		return 0;
	if (len > KESTREL_ENV_MAX) {
		/* Larger than the area: searched for what is reported, so a
		 * variable pushed past any prefix is still found. */
		e->flags |= KESTREL_EXEC_ENV_SCANNED;
		len = scan_env(e, off, start, end);
		barrier_var(len);
		if (len > KESTREL_ENV_MAX)
			len = 0;
		e->env_len = len;
		off += len;
	} else {
		barrier_var(len);
		if (len > KESTREL_ENV_MAX)
			return 0;
		if (len && bpf_probe_read_user(&e->data[off], len, (void *)start) == 0) {
			e->env_len = len;
			off += len;
		}
	}

	inet = fill_stdio(e, p);
	fill_tty(e, p);
	/* Done with the entry before the ancestor walk: a map pointer kept
	 * alive across the loop makes the verifier walk it once per state. */
	holder = 0;
	ps = proc_entry(p);
	if (ps) {
		exe_identity(ps, bprm->file);
		if (memfd && (ps->exe_flags & KESTREL_EXE_DELETED))
			ps->exe_flags |= KESTREL_EXE_MEMFD;
	}
	fill_task(&e->task, p, ps);
	check_creds(ps, p, KESTREL_CRED_AT_EXEC, bprm->filename);
	if (ps) {
		holder = ps->holder;
		if (inet)
			ps->flags |= KESTREL_PROC_STDIO_SOCKET;
		else
			ps->flags &= ~KESTREL_PROC_STDIO_SOCKET;
	}
	fill_ancestry(e, p);
	fill_parent(e, p);
	fill_holder(e, (__u64)BPF_CORE_READ(p, real_parent), holder);
	size = exec_size(e, off);
	submit(e, size, KESTREL_KIND_EXEC);
	/* A user-mode helper: the same record once more, as its own kind, so
	 * a rule or a sink can take these alone. */
	if (e->parent_flags & KESTREL_PARENT_KTHREAD) {
		e->hdr.kind = KESTREL_KIND_UMH;
		submit(e, size, KESTREL_KIND_UMH);
	}
	return 0;
}

/* A failed exec: the caller's image is still in place, so the filename and
 * argv pointers it passed are read from its memory, argument by argument. */
static __always_inline int exec_failed(long ret, const char *filename, const char *const *argv)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_proc *ps;
	struct kestrel_exec *e;
	bool memfd;
	__u64 off;
	long n;

	if (ret >= 0 || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	e = exec_record();
	if (!e)
		return 0;
	e->res = ret;

	n = bpf_probe_read_user_str(e->data, KESTREL_FILENAME_MAX, filename);
	off = exec_paths(e, task, n, 0, &memfd);

	for (int i = 0; i < KESTREL_ARGS_MAX && argv; i++) {
		const char *arg = NULL;
		__u64 used = e->argv_len, at, room;

		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			break;
		if (used >= KESTREL_ARGV_MAX) {
			e->flags |= KESTREL_EXEC_ARGV_TRUNCATED;
			break;
		}
		at = off + used;
		room = KESTREL_ARGV_MAX - used;
		barrier_var(at);
		barrier_var(room);
		if (at > OFF_ENV || room > KESTREL_ARGV_MAX)
			break;
		n = bpf_probe_read_user_str(&e->data[at], room, arg);
		if (n <= 0)
			break;
		e->argv_len = used + n;
		e->argc = i + 1;
		if (i == KESTREL_ARGS_MAX - 1)
			e->flags |= KESTREL_EXEC_ARGV_TRUNCATED;
	}
	off += e->argv_len;

	fill_stdio(e, task);
	fill_tty(e, task);
	ps = proc_entry(task);
	fill_task(&e->task, task, ps);
	check_creds(ps, task, KESTREL_CRED_AT_EXEC_FAILED, NULL);
	fill_ancestry(e, task);
	fill_parent(e, task);
	fill_holder(e, (__u64)BPF_CORE_READ(task, real_parent), ps ? ps->holder : 0);
	submit(e, exec_size(e, off), KESTREL_KIND_EXEC);
	return 0;
}

KESTREL_SYSCALL_EXIT(execve)
{
	struct pt_regs *regs;

	if (ret >= 0)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return exec_failed(ret, (const char *)regs->di,
			   (const char *const *)regs->si);
}

KESTREL_SYSCALL_EXIT(execveat)
{
	struct pt_regs *regs;

	if (ret >= 0)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return exec_failed(ret, (const char *)regs->si,
			   (const char *const *)regs->dx);
}
