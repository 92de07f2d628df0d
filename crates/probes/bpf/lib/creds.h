/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Credential changes to root, noticed by comparing a process's uid and
 * euid with those its process table entry last saw.
 */
#ifndef KESTREL_LIB_CREDS_H
#define KESTREL_LIB_CREDS_H

#include "ringbuf.h"
#include "task.h"

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
	if (ps->uid != 0 && ps->euid != 0 && (uid == 0 || euid == 0))
		emit_cred(task, ps, trigger, filename);
	ps->uid = uid;
	ps->euid = euid;
}

#endif /* KESTREL_LIB_CREDS_H */
