/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The task an event is about: its identity (struct kestrel_task) and its
 * cgroup.
 */
#ifndef KESTREL_LIB_TASK_H
#define KESTREL_LIB_TASK_H

#include "base.h"

/* kernfs_node.parent became __parent in Linux 6.15. */
struct kernfs_node___pre615 {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(struct kernfs_node___pre615, parent))
		return ((struct kernfs_node___pre615 *)kn)->parent;
	return kn->__parent;
}

/* The cgroup that says which container a task is in. On cgroup v2 that is
 * the unified cgroup. On v1 the unified hierarchy is unused, and runtimes
 * create a cgroup per container in every controller: the memory
 * controller's is taken, as the one every runtime configures. */
static __always_inline struct cgroup *task_cgroup(struct task_struct *task)
{
	struct css_set *cs = task->cgroups;
	struct cgroup *dfl = cs->dfl_cgrp;

	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id)) {
		int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
		struct cgroup *mem;

		if (id < 0 || id >= 16)
			return dfl;
		mem = cs->subsys[id]->cgroup;
		/* Memory on v2: its css may belong to an ancestor where the
		 * controller is enabled; the unified cgroup is exact. */
		if (mem && mem->root != dfl->root)
			return mem;
	}
	return dfl;
}

/* The upid of a struct pid at its own (deepest) level. */
static __always_inline void pid_at_level(struct pid *pid, struct upid *out)
{
	unsigned int level = BPF_CORE_READ(pid, level);

	if (level > 32)
		level = 32;
	bpf_probe_read_kernel(out, sizeof(*out),
			      (void *)pid + bpf_core_field_offset(struct pid, numbers) +
				      level * bpf_core_type_size(struct upid));
}

/*
 * The task's identity, as of now. What lies behind chains of pointers that
 * rarely change (the leader's pid numbers, the namespaces, the cgroup) is
 * cached in the process's entry `ps` with the address it was read through,
 * and read again when the task points elsewhere: those loads mostly miss
 * the CPU's cache (caching them took 8-14 % off a connect). Only the
 * leader's own events use and fill the cache, so that no two CPUs write one
 * entry at once.
 * A pointer compared equal could in principle be a new object at a freed
 * one's address; the namespace and cgroup groups are therefore also
 * cleared when the process calls unshare or setns or is moved to another
 * cgroup (handle_unshare_exit, handle_setns_exit, handle_cgroup_attach). The leader's group is
 * tied to the entry's own task. pgid, sid, ppid, credentials, comm and
 * nodename are read live: each is one or two loads, and they change without
 * leaving a trace that a tracepoint sees.
 */
static __always_inline void fill_task(struct kestrel_task *t, struct task_struct *task,
				      struct kestrel_proc *ps)
{
	struct task_struct *leader = task->group_leader;
	struct signal_struct *sig = task->signal;
	struct nsproxy *nsp = task->nsproxy;
	struct css_set *cgs = task->cgroups;
	const struct cred *cred = task->cred;
	const char *node = nsp->uts_ns->name.nodename;

	/* Written at exec and fork only, so any thread may read it. */
	if (ps) {
		t->exe_ino = ps->exe_ino;
		t->exe_ctime_ns = ps->exe_ctime_ns;
		t->exe_dev = ps->exe_dev;
		t->exe_flags = ps->exe_flags;
	} else {
		t->exe_ino = 0;
		t->exe_ctime_ns = 0;
		t->exe_dev = 0;
		t->exe_flags = 0;
	}
	if (task != leader)
		ps = NULL;

	t->pid = task->pid;
	t->tgid = task->tgid;
	t->ppid = task->real_parent->tgid;
	t->pgid = sig->pids[PIDTYPE_PGID]->numbers[0].nr;
	t->sid = sig->pids[PIDTYPE_SID]->numbers[0].nr;
	if (bpf_core_field_exists(task->sessionid))
		t->sessionid = task->sessionid;
	else
		t->sessionid = 0xffffffff;
	t->uid = cred->uid.val;
	t->gid = cred->gid.val;
	t->euid = cred->euid.val;
	t->egid = cred->egid.val;
	/* comm and nodename are NUL-padded to their size (strscpy_pad,
	 * sethostname's memset): word loads copy them, no string helper. */
	*(__u64 *)&t->comm[0] = *(__u64 *)&task->comm[0];
	*(__u64 *)&t->comm[8] = *(__u64 *)&task->comm[8];
	for (int i = 0; i < (KESTREL_NODENAME_LEN - 1) / 8; i++)
		*(__u64 *)&t->nodename[i * 8] = *(__u64 *)&node[i * 8];
	t->nodename[KESTREL_NODENAME_LEN - 1] = 0;
	t->reserved[0] = 0;
	t->reserved[1] = 0;
	t->reserved[2] = 0;

	if (ps && ps->c_leader == (__u64)leader) {
		t->start_boottime = ps->start_boottime;
		t->ns_pid = ps->ns_pid;
		t->pid_ns = ps->pid_ns;
	} else {
		struct pid *tp = leader->thread_pid;

		t->start_boottime = leader->start_boottime;
		/* The pid as the process's own namespace numbers it: at level
		 * 0 (the host) a plain load; deeper, the array index is not a
		 * constant the verifier accepts, so a helper reads that one
		 * entry. */
		if (tp->level == 0) {
			t->ns_pid = tp->numbers[0].nr;
			t->pid_ns = tp->numbers[0].ns->ns.inum;
		} else {
			struct upid up = {};

			pid_at_level(tp, &up);
			t->ns_pid = up.nr;
			t->pid_ns = BPF_CORE_READ(up.ns, ns.inum);
		}
		if (ps) {
			ps->start_boottime = t->start_boottime;
			ps->ns_pid = t->ns_pid;
			ps->pid_ns = t->pid_ns;
			ps->c_leader = (__u64)leader;
		}
	}
	if (ps && ps->c_nsproxy == (__u64)nsp) {
		t->mnt_ns = ps->mnt_ns;
		t->net_ns = ps->net_ns;
	} else {
		t->mnt_ns = nsp->mnt_ns->ns.inum;
		t->net_ns = nsp->net_ns->ns.inum;
		if (ps) {
			ps->mnt_ns = t->mnt_ns;
			ps->net_ns = t->net_ns;
			ps->c_nsproxy = (__u64)nsp;
		}
	}
	if (ps && ps->c_cgroups == (__u64)cgs) {
		t->cgroup_id = ps->cgroup_id;
	} else {
		t->cgroup_id = task_cgroup(task)->kn->id;
		if (ps) {
			ps->cgroup_id = t->cgroup_id;
			ps->c_cgroups = (__u64)cgs;
		}
	}
}

/* The process tree above `task` with plain loads: [0] is the parent, up to
 * KESTREL_PID_TREE_MAX entries, stopping at pid 1. Returns how many were
 * written; *truncated is set when ancestors were left above the last. */
static __always_inline __u32 walk_ancestry(struct kestrel_ancestor *out, struct task_struct *task,
					   bool *truncated)
{
	struct task_struct *t = task->real_parent;
	__u32 n = 0;

	for (int i = 0; i < KESTREL_PID_TREE_MAX; i++) {
		struct task_struct *leader;
		__u32 pid;

		if (!t)
			break;
		pid = t->tgid;
		if (pid == 0)
			break;
		leader = t->group_leader;
		out[i].pid = pid;
		*(__u64 *)&out[i].comm[0] = *(__u64 *)&leader->comm[0];
		*(__u64 *)&out[i].comm[8] = *(__u64 *)&leader->comm[8];
		n = i + 1;
		if (pid == 1)
			break;
		t = t->real_parent;
		if (i == KESTREL_PID_TREE_MAX - 1 && t && t->tgid > 0)
			*truncated = true;
	}
	return n;
}

#endif /* KESTREL_LIB_TASK_H */
