/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Credential changes to root, noticed by comparing a process's uid and
 * euid with those its process table entry last saw.
 */
#ifndef KESTREL_LIB_CREDS_H
#define KESTREL_LIB_CREDS_H

#include "ringbuf.h"
#include "task.h"
#include "procs.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_cred);
} cred_scratch SEC(".maps");

static __always_inline void emit_cred(struct task_struct *task, struct kestrel_proc *ps,
				      __u32 trigger, const char *filename)
{
	__u32 zero = 0;
	struct kestrel_cred *e = bpf_map_lookup_elem(&cred_scratch, &zero);

	if (!e) {
		count(KESTREL_KIND_CRED, KESTREL_CTR_ERROR);
		return;
	}
	e->hdr.kind = KESTREL_KIND_CRED;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, ps);
	e->old_uid = ps->uid;
	e->old_euid = ps->euid;
	e->trigger = trigger;
	e->filename[0] = 0;
	if (filename)
		bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename);
	submit(e, sizeof(*e), KESTREL_KIND_CRED);
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_privesc);
} privesc_scratch SEC(".maps");

static __always_inline void read_creds(struct kestrel_creds *out, const struct cred *c)
{
	out->uid = c->uid.val;
	out->euid = c->euid.val;
	out->suid = c->suid.val;
	out->fsuid = c->fsuid.val;
	out->gid = c->gid.val;
	out->egid = c->egid.val;
	out->sgid = c->sgid.val;
	out->fsgid = c->fsgid.val;
}

/* The current process became root (check_creds saw it) by other means than
 * the exec it makes: reported as data_type 611 when its real parent is not
 * root either (uid and euid both non-zero), its credentials now exceeding
 * the parent's. A global function: the verifier checks it once, not in each
 * of check_creds' many callers; rare, so its loads cost nothing on the
 * common path. The task is always the current one there. */
__noinline int report_privesc(__u32 trigger)
{
	/* The scratch record first: few values live across the helper calls
	 * keep this frame small, which Linux 6.1 adds to its callers' (the
	 * ptrace program's record is on its stack). */
	__u32 zero = 0;
	struct kestrel_privesc *e = bpf_map_lookup_elem(&privesc_scratch, &zero);
	struct task_struct *task, *parent, *t;
	const struct cred *pc;
	__u32 n = 0;

	if (!e) {
		count(KESTREL_KIND_PRIVESC, KESTREL_CTR_ERROR);
		return 0;
	}
	e->trigger = trigger;
	task = bpf_get_current_task_btf();
	parent = task->real_parent;
	pc = parent->cred;
	if (pc->uid.val == 0 || pc->euid.val == 0)
		return 0; /* the parent is root: nothing exceeds it */
	read_creds(&e->p_cred, pc);
	read_creds(&e->c_cred, task->cred);
	e->p_pid = parent->tgid;
	e->hdr.kind = KESTREL_KIND_PRIVESC;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	e->flags = 0;
	t = parent;
	for (int i = 0; i < KESTREL_PID_TREE_MAX; i++) {
		__u32 pid;

		if (!t)
			break;
		pid = t->tgid;
		if (pid == 0)
			break;
		e->ancestors[i].pid = pid;
		__builtin_memcpy(e->ancestors[i].comm, t->group_leader->comm, KESTREL_COMM_LEN);
		n = i + 1;
		if (pid == 1)
			break;
		t = t->real_parent;
		if (i == KESTREL_PID_TREE_MAX - 1 && t && t->tgid > 0)
			e->flags |= KESTREL_EXEC_PID_TREE_TRUNCATED;
	}
	e->ancestors_len = n;
	/* Last: fill_task calls helpers, and nothing else is live then. */
	task = bpf_get_current_task_btf();
	fill_task(&e->task, task, bpf_task_storage_get(&procs, task->group_leader, 0, 0));
	submit(e, sizeof(*e), KESTREL_KIND_PRIVESC);
	return 0;
}

/* Compares the task's credentials with those last seen for its process
 * (its entry `ps`, from proc_entry); reports a change from non-root to
 * root, then remembers. */
static __always_inline void check_creds(struct kestrel_proc *ps, struct task_struct *task,
					__u32 trigger, const char *filename)
{
	const struct cred *cred = task->cred;
	__u32 uid = cred->uid.val;
	__u32 euid = cred->euid.val;

	if (!ps || (ps->uid == uid && ps->euid == euid))
		return;
	if (ps->uid != 0 && ps->euid != 0 && (uid == 0 || euid == 0)) {
		emit_cred(task, ps, trigger, filename);
		/* A setuid or file-caps program is given root by its exec:
		 * that exec's own comparison is the one not reported. */
		if (trigger != KESTREL_CRED_AT_EXEC)
			report_privesc(trigger);
	}
	ps->uid = uid;
	ps->euid = euid;
}

#endif /* KESTREL_LIB_CREDS_H */
