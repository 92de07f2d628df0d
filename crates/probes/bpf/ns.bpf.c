// SPDX-License-Identifier: GPL-2.0-only
/*
 * setns and unshare records (data_types 308 and 272).
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/files.h"
#include "lib/moves.h"
#include "lib/syscall.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#define CLONE_NEWNS 0x00020000
#define CLONE_NEWCGROUP 0x02000000
#define CLONE_NEWUTS 0x04000000
#define CLONE_NEWIPC 0x08000000
#define CLONE_NEWUSER 0x10000000
#define CLONE_NEWPID 0x20000000
#define CLONE_NEWNET 0x40000000
#endif
#define CLONE_NEW_ALL                                                                      \
	(CLONE_NEWTIME | CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |      \
	 CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)

#define NSFS_MAGIC 0x6e736673
#define PID_FS_MAGIC 0x50494446 /* pidfs, Linux 6.9+ */

/* Calls between their entry and their exit, by thread. A thread is in one
 * call at a time, so this holds at most one entry per thread inside
 * setns or unshare; LRU so that an entry whose exit never came (none
 * should) cannot fill it. */
#define NS_INFLIGHT_MAX 4096
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NS_INFLIGHT_MAX);
	__type(key, __u64);
	__type(value, struct kestrel_ns);
} ns_inflight SEC(".maps");

/* Before Linux 6.18 a namespace's type (a CLONE_NEW* bit) was in its
 * operations. */
struct proc_ns_operations___pre618 {
	int type;
} __attribute__((preserve_access_index));

static __always_inline __u32 ns_type_of(struct ns_common *ns)
{
	if (bpf_core_field_exists(struct ns_common, ns_type))
		return BPF_CORE_READ(ns, ns_type);
	struct proc_ns_operations___pre618 *ops = (void *)BPF_CORE_READ(ns, ops);

	return BPF_CORE_READ(ops, type);
}

static __always_inline int ns_index(__u32 type)
{
	switch (type) {
	case CLONE_NEWNS: return KESTREL_NS_MNT;
	case CLONE_NEWPID: return KESTREL_NS_PID;
	case CLONE_NEWNET: return KESTREL_NS_NET;
	case CLONE_NEWUTS: return KESTREL_NS_UTS;
	case CLONE_NEWIPC: return KESTREL_NS_IPC;
	case CLONE_NEWUSER: return KESTREL_NS_USER;
	case CLONE_NEWCGROUP: return KESTREL_NS_CGROUP;
	case CLONE_NEWTIME: return KESTREL_NS_TIME;
	}
	return -1;
}

/* The namespaces of `task` named by `types`, as inode numbers. `children`:
 * the pid and time namespaces its children will have (what unshare
 * changes), rather than its own. */
static __always_inline void task_namespaces(__u32 *target, struct task_struct *task, __u32 types,
					    bool children)
{
	struct nsproxy *nsp = BPF_CORE_READ(task, nsproxy);

	if (!nsp)
		return; /* the task has exited */
	if (types & CLONE_NEWNS)
		target[KESTREL_NS_MNT] = BPF_CORE_READ(nsp, mnt_ns, ns.inum);
	if (types & CLONE_NEWNET)
		target[KESTREL_NS_NET] = BPF_CORE_READ(nsp, net_ns, ns.inum);
	if (types & CLONE_NEWUTS)
		target[KESTREL_NS_UTS] = BPF_CORE_READ(nsp, uts_ns, ns.inum);
	if (types & CLONE_NEWIPC)
		target[KESTREL_NS_IPC] = BPF_CORE_READ(nsp, ipc_ns, ns.inum);
	if (types & CLONE_NEWCGROUP)
		target[KESTREL_NS_CGROUP] = BPF_CORE_READ(nsp, cgroup_ns, ns.inum);
	if (types & CLONE_NEWUSER)
		target[KESTREL_NS_USER] = BPF_CORE_READ(task, cred, user_ns, ns.inum);
	if (children) {
		if (types & CLONE_NEWPID)
			target[KESTREL_NS_PID] = BPF_CORE_READ(nsp, pid_ns_for_children, ns.inum);
		if (types & CLONE_NEWTIME)
			target[KESTREL_NS_TIME] = BPF_CORE_READ(nsp, time_ns_for_children, ns.inum);
	} else {
		if (types & CLONE_NEWPID) {
			struct upid up = {};

			pid_at_level(BPF_CORE_READ(task, thread_pid), &up);
			target[KESTREL_NS_PID] = BPF_CORE_READ(up.ns, ns.inum);
		}
		if (types & CLONE_NEWTIME)
			target[KESTREL_NS_TIME] = BPF_CORE_READ(nsp, time_ns, ns.inum);
	}
}

/* The name of a dentry is "[pidfd]": an anonymous inode pidfd (before
 * pidfs, Linux 6.9). */
static __always_inline bool named_pidfd(struct dentry *d)
{
	char n[8] = {};

	bpf_probe_read_kernel_str(n, sizeof(n), BPF_CORE_READ(d, d_name.name));
	return n[0] == '[' && n[1] == 'p' && n[2] == 'i' && n[3] == 'd' && n[4] == 'f' &&
	       n[5] == 'd' && n[6] == ']' && n[7] == 0;
}

/* What setns's descriptor names, read as the call begins. */
static __always_inline void setns_target(struct kestrel_ns *e, struct task_struct *task, int fd,
					 __u32 nstype)
{
	struct file *f;
	struct inode *inode;
	struct pid *pid = NULL;
	unsigned long magic;

	if (fd < 0)
		return;
	f = task_fd(task, fd);
	if (!f)
		return;
	inode = BPF_CORE_READ(f, f_inode);
	magic = BPF_CORE_READ(inode, i_sb, s_magic);
	if (magic == NSFS_MAGIC) {
		struct ns_common *ns = BPF_CORE_READ(inode, i_private);
		__u32 type = ns_type_of(ns);
		int i = ns_index(type);

		e->fd_kind = KESTREL_NS_FD_NSFS;
		e->ns_types = type;
		if (i >= 0 && i < KESTREL_NS_TYPES)
			e->target[i] = BPF_CORE_READ(ns, inum);
		return;
	}
	if (magic == PID_FS_MAGIC)
		pid = BPF_CORE_READ(inode, i_private);
	else if (named_pidfd(BPF_CORE_READ(f, f_path.dentry)))
		pid = BPF_CORE_READ(f, private_data);
	if (!pid)
		return;
	e->fd_kind = KESTREL_NS_FD_PIDFD;
	e->target_pid = BPF_CORE_READ(pid, numbers[0].nr);
	/* pid_task(pid, PIDTYPE_PID): the first task of the pid's list. */
	struct hlist_node *first = BPF_CORE_READ(pid, tasks[PIDTYPE_PID].first);

	if (first)
		task_namespaces(e->target,
				(void *)first - bpf_core_field_offset(struct task_struct, pid_links),
				nstype, false);
}

static __always_inline int ns_enter(__u32 syscall, __u64 flags, int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 id = bpf_get_current_pid_tgid();
	struct kestrel_ns e = {};

	if (task->tgid == self_tgid)
		return 0;
	e.hdr.kind = KESTREL_KIND_NS;
	e.hdr.size = sizeof(e);
	e.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e.task, task, proc_entry(task));
	e.syscall = syscall;
	e.flags = flags;
	e.fd = fd;
	if (syscall == KESTREL_NS_SETNS) {
		e.ns_types = flags & CLONE_NEW_ALL;
		setns_target(&e, task, fd, flags & CLONE_NEW_ALL);
	} else {
		e.fd = -1;
		e.ns_types = flags & CLONE_NEW_ALL;
	}
	if (bpf_map_update_elem(&ns_inflight, &id, &e, BPF_ANY))
		count(KESTREL_KIND_NS, KESTREL_CTR_ERROR);
	return 0;
}

static __always_inline int ns_exit(long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 id = bpf_get_current_pid_tgid();
	struct kestrel_ns *e;

	/* The process table's cached namespaces (see fill_task). */
	if (ret == 0)
		forget_cached(task, true, false);
	e = bpf_map_lookup_elem(&ns_inflight, &id);
	if (!e) {
		/* Its entry was not made (the agent's own call, one begun
		 * before the agent attached) or was pushed out of the LRU by
		 * NS_INFLIGHT_MAX calls in flight at once: a record lost. */
		if (task->tgid != self_tgid)
			count(KESTREL_KIND_NS, KESTREL_CTR_ERROR);
		return 0;
	}
	e->res = ret;
	if (e->syscall == KESTREL_NS_UNSHARE && ret == 0)
		task_namespaces(e->target, task, e->ns_types, true);
	submit(e, sizeof(*e), KESTREL_KIND_NS);
	bpf_map_delete_elem(&ns_inflight, &id);
	return 0;
}

KESTREL_SYSCALL_ENTER(setns)
{
	return ns_enter(KESTREL_NS_SETNS, (__u32)syscall_regs()->si, (int)syscall_regs()->di);
}

KESTREL_SYSCALL_EXIT(setns)
{
	return ns_exit(ret);
}

KESTREL_SYSCALL_ENTER(unshare)
{
	return ns_enter(KESTREL_NS_UNSHARE, syscall_regs()->di, -1);
}

KESTREL_SYSCALL_EXIT(unshare)
{
	/* A new mount namespace's mounts are new objects. */
	watch_paths_changed(ret);
	return ns_exit(ret);
}
