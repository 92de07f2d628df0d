// SPDX-License-Identifier: GPL-2.0-only
/*
 * setsid records (data_type 112).
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/syscall.h"

/* At the exit, so the record carries the session it made (task.sid) and
 * the result. setsid is rare (daemons, shells, terminal multiplexers), so
 * every call is reported, failures too. */
KESTREL_SYSCALL0_EXIT(setsid)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_setsid e = {};

	if (task->tgid == self_tgid)
		return 0;
	e.hdr.kind = KESTREL_KIND_SETSID;
	e.hdr.size = sizeof(e);
	e.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e.task, task, proc_entry(task));
	e.res = ret;
	submit(&e, sizeof(e), KESTREL_KIND_SETSID);
	return 0;
}
