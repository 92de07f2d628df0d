/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The process table: what the kernel side keeps per process between
 * events.
 */
#ifndef KESTREL_LIB_PROCS_H
#define KESTREL_LIB_PROCS_H

#include "ringbuf.h"

/* The process table: a struct kestrel_proc (kestrel_abi.h) in the task
 * storage of each thread group leader. Made at fork (the child starts from
 * its parent's) or when the process is first seen, freed with the task.
 * Task storage, not a hash by tgid: the lookup is a few loads from the
 * task itself, where a hash lookup missed the cache twice and was a fifth
 * of handle_exec's time. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kestrel_proc);
} procs SEC(".maps");

/* The process's entry in the process table, made from the task's
 * credentials if it has none yet. NULL only if the map refused one. */
static __always_inline struct kestrel_proc *proc_entry(struct task_struct *task)
{
	struct kestrel_proc *ps = bpf_task_storage_get(&procs, task->group_leader, 0, 0);

	if (!ps) {
		const struct cred *cred = task->cred;
		struct kestrel_proc now = { .uid = cred->uid.val, .euid = cred->euid.val };

		ps = bpf_task_storage_get(&procs, task->group_leader, &now,
					  BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!ps)
			count(KESTREL_KIND_CRED, KESTREL_CTR_ERROR);
	}
	return ps;
}

/* The process's namespaces or cgroup may have changed: forget what
 * fill_task cached about them (it compares addresses; this makes a new
 * object at an old one's address harmless). Rare calls, one lookup. */
static __always_inline void forget_cached(struct task_struct *task, bool ns, bool cgroup)
{
	struct kestrel_proc *ps = bpf_task_storage_get(&procs, task->group_leader, 0, 0);

	if (!ps)
		return;
	if (ns)
		ps->c_nsproxy = 0;
	if (cgroup)
		ps->c_cgroups = 0;
}

#endif /* KESTREL_LIB_PROCS_H */
