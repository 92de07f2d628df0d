// SPDX-License-Identifier: GPL-2.0-only
/*
 * The process table's life: made at fork, checked at exit and when an
 * exec begins, its caches cleared on namespace and cgroup changes, its
 * stdio flag kept at dup.
 * No records of their own; credential changes are noticed here too.
 */
#include "lib/ringbuf.h"
#include "lib/procs.h"
#include "lib/creds.h"
#include "lib/files.h"
#include "lib/sockets.h"
#include "lib/syscall.h"

/* A new process starts with its parent's credentials and descriptors. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	struct kestrel_proc c = {}, *p, *cp;

	if (child->tgid == parent->tgid)
		return 0; /* a new thread of the same process */
	p = proc_entry(parent);
	check_creds(p, parent, KESTREL_CRED_AT_FORK, NULL);
	if (p) {
		/* The child shares its parent's namespaces and cgroup unless
		 * clone said otherwise: it starts from the parent's cache (new
		 * objects have new addresses), copied only from the leader,
		 * the one writer (see fill_task). */
		if (parent == parent->group_leader)
			c = *p;
		c.flags = p->flags & KESTREL_PROC_STDIO_SOCKET;
		/* Not a ?: between the two loads: clang would merge them into
		 * one load through two kinds of pointer, which the verifier
		 * refuses. */
		c.holder = p->holder;
		if (c.flags)
			c.holder = parent->tgid;
		/* The child runs its parent's program until it execs: its
		 * events name it even once it is gone from /proc. */
		c.exe_ino = p->exe_ino;
		c.exe_ctime_ns = p->exe_ctime_ns;
		c.exe_dev = p->exe_dev;
		c.exe_flags = p->exe_flags;
	}
	c.uid = child->cred->uid.val;
	c.euid = child->cred->euid.val;
	cp = bpf_task_storage_get(&procs, child, &c, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!cp)
		count(KESTREL_KIND_CRED, KESTREL_CTR_ERROR);
	return 0;
}

/* An exec about to begin, its caller's credentials still in place. A
 * change made before it (setresuid back to a saved root uid, an exploit)
 * is reported here as itself: the exec's own comparison then sees only
 * what the exec changed, and an allowlisted program exec'd by a process
 * that is already root cannot cover how it became root. */
static __always_inline int exec_starts(void)
{
	struct task_struct *task = bpf_get_current_task_btf();

	if (task->tgid == self_tgid)
		return 0;
	check_creds(proc_entry(task), task, KESTREL_CRED_AT_EXEC_START, NULL);
	return 0;
}

KESTREL_SYSCALL_ENTER(execve)
{
	return exec_starts();
}

KESTREL_SYSCALL_ENTER(execveat)
{
	return exec_starts();
}

/* Whether process exits (data_type 60) are sent: set by user space before
 * load (exit_events), so that off costs nothing but this test. */
const volatile bool exit_events = true;

/* The process ended: `p` is its last thread (signal->live, decremented
 * before this tracepoint, reached 0), which need not be the leader. */
static __always_inline void exit_record(struct task_struct *p)
{
	struct kestrel_exit e = {};

	if (p->tgid == self_tgid)
		return;
	e.hdr.kind = KESTREL_KIND_EXIT;
	e.hdr.size = sizeof(e);
	e.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e.task, p, proc_entry(p));
	e.exit_code = p->exit_code;
	submit(&e, sizeof(e), KESTREL_KIND_EXIT);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *p)
{
	if (exit_events && p->signal->live.counter == 0)
		exit_record(p);
	if (p->pid != p->tgid)
		return 0; /* a thread, not the process */
	/* The entry goes with the task. */
	check_creds(proc_entry(p), p, KESTREL_CRED_AT_EXIT, NULL);
	return 0;
}

/* Fires in the process that wrote cgroup.procs or tasks, about the task
 * (or whole thread group) moved. */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(handle_cgroup_attach, struct cgroup *dst, const char *path, struct task_struct *task,
	     bool threadgroup)
{
	forget_cached(task, false, true);
	return 0;
}

/* A descriptor was duplicated onto fd 0 or 1 (how shells redirect, and how
 * a reverse shell puts its socket on stdin/stdout): re-read whether stdin
 * or stdout is now a socket. Other duplications leave after one test. */
static __always_inline int stdio_changed(long ret)
{
	struct kestrel_sockaddrs tmp;
	struct task_struct *task;
	struct kestrel_proc *ps;
	struct file *f[2];

	if (ret < 0 || ret > 1)
		return 0;
	task = bpf_get_current_task_btf();
	ps = proc_entry(task);
	check_creds(ps, task, KESTREL_CRED_AT_DUP, NULL);
	if (!ps)
		return 0;
	task_stdio(task, f);
	if (read_sock_addrs(file_sock(f[0]), &tmp) || read_sock_addrs(file_sock(f[1]), &tmp))
		ps->flags |= KESTREL_PROC_STDIO_SOCKET;
	else
		ps->flags &= ~KESTREL_PROC_STDIO_SOCKET;
	return 0;
}

KESTREL_SYSCALL_EXIT(dup)
{
	return stdio_changed(ret);
}

KESTREL_SYSCALL_EXIT(dup2)
{
	return stdio_changed(ret);
}

KESTREL_SYSCALL_EXIT(dup3)
{
	return stdio_changed(ret);
}
