// SPDX-License-Identifier: GPL-2.0-only
/*
 * Kernel module loads (data_type 603).
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/files.h"
#include "lib/paths.h"
#include "lib/syscall.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_module);
} module_scratch SEC(".maps");

static __always_inline int module_event(long ret, int fd, __u64 image_len, __u32 flags)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kestrel_module *m;
	__u32 zero = 0;

	m = bpf_map_lookup_elem(&module_scratch, &zero);
	if (!m) {
		count(KESTREL_KIND_MODULE, KESTREL_CTR_ERROR);
		return 0;
	}
	m->hdr.kind = KESTREL_KIND_MODULE;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&m->task, task, proc_entry(task));
	m->res = ret;
	m->fd = fd;
	m->image_len = image_len;
	m->flags = flags;
	m->path.len = 0;
	m->path.truncated = 0;
	if (fd >= 0) {
		struct file *f = task_fd(task, fd);

		if (f)
			walk_path(&m->path, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt),
				  false);
	}
	submit(m, sizeof(*m), KESTREL_KIND_MODULE);
	return 0;
}

/* Kernels without module support have neither tracepoint: user space
 * leaves these two programs out (their PROG_NEEDS in the table of kinds,
 * KESTREL_KINDS in kestrel_abi.h). */
KESTREL_SYSCALL_EXIT(finit_module)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	return module_event(ret, (int)regs->di, 0, (__u32)regs->dx);
}

KESTREL_SYSCALL_EXIT(init_module)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	return module_event(ret, -1, regs->si, 0);
}
