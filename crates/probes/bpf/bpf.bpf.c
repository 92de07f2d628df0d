// SPDX-License-Identifier: GPL-2.0-only
/*
 * bpf(2) program loads and attachments (data_type 321).
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/files.h"
#include "lib/syscall.h"

#define ANON_INODE_FS_MAGIC 0x09041934

/* Bytes of bpf_attr read: up to expected_attach_type, the last field
 * looked at (PROG_LOAD's, at offset 68). */
#define BPF_ATTR_READ 72

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_bpf);
} bpf_scratch SEC(".maps");

/* The program behind a descriptor, if it is one: the kernel's own type,
 * expected attach type, id and name. A program's file is the anonymous
 * inode named "bpf-prog", which only the kernel's program loader makes. */
static __always_inline bool prog_of_fd(struct kestrel_bpf *b, struct task_struct *task, int fd)
{
	struct file *f;
	struct bpf_prog *prog;
	char n[9] = {};

	if (fd < 0)
		return false;
	f = task_fd(task, fd);
	if (!f || BPF_CORE_READ(f, f_inode, i_sb, s_magic) != ANON_INODE_FS_MAGIC)
		return false;
	bpf_probe_read_kernel_str(n, sizeof(n), BPF_CORE_READ(f, f_path.dentry, d_name.name));
	if (n[0] != 'b' || n[1] != 'p' || n[2] != 'f' || n[3] != '-' || n[4] != 'p' || n[5] != 'r' ||
	    n[6] != 'o' || n[7] != 'g' || n[8] != 0)
		return false;
	prog = BPF_CORE_READ(f, private_data);
	if (!prog)
		return false;
	b->prog_type = BPF_CORE_READ(prog, type);
	b->prog_id = BPF_CORE_READ(prog, aux, id);
	bpf_probe_read_kernel(b->prog_name, sizeof(b->prog_name), BPF_CORE_READ(prog, aux, name));
	b->flags |= KESTREL_BPF_PROG_FROM_KERNEL;
	if (b->cmd == KESTREL_BPF_PROG_LOAD) {
		b->attach_type = BPF_CORE_READ(prog, expected_attach_type);
		if (b->attach_type)
			b->flags |= KESTREL_BPF_HAS_ATTACH_TYPE;
		else
			b->flags &= ~KESTREL_BPF_HAS_ATTACH_TYPE;
	}
	return true;
}

/* At the exit, with the arguments from the saved registers. Only the
 * commands that put a program in the kernel or hook one to something are
 * reported: the others (map reads and writes, id and info queries) are
 * the bulk of bpf(2) calls, and leave after one comparison. */
KESTREL_SYSCALL_EXIT(bpf)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs;
	union bpf_attr a = {};
	struct kestrel_bpf *b;
	__u32 cmd, zero = 0;
	__u64 size;

	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	cmd = regs->di;
	if (cmd != KESTREL_BPF_PROG_LOAD && cmd != KESTREL_BPF_PROG_ATTACH &&
	    cmd != KESTREL_BPF_RAW_TRACEPOINT_OPEN && cmd != KESTREL_BPF_LINK_CREATE)
		return 0;
	if (task->tgid == self_tgid)
		return 0;
	b = bpf_map_lookup_elem(&bpf_scratch, &zero);
	if (!b) {
		count(KESTREL_KIND_BPF, KESTREL_CTR_ERROR);
		return 0;
	}
	/* bpf(cmd, attr, size): fields past `size` are zero to the kernel. */
	size = regs->dx;
	if (size > BPF_ATTR_READ)
		size = BPF_ATTR_READ;
	if (size && bpf_probe_read_user(&a, size, (void *)regs->si))
		__builtin_memset(&a, 0, sizeof(a));

	b->hdr.kind = KESTREL_KIND_BPF;
	b->hdr.size = sizeof(*b);
	b->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&b->task, task, proc_entry(task));
	b->res = ret;
	b->cmd = cmd;
	b->prog_type = 0;
	b->attach_type = 0;
	b->prog_fd = -1;
	b->target_fd = -1;
	b->prog_id = 0;
	b->flags = 0;
	__builtin_memset(b->prog_name, 0, sizeof(b->prog_name));
	b->tp_name[0] = 0;
	switch (cmd) {
	case KESTREL_BPF_PROG_LOAD:
		/* As asked; replaced by the kernel's program when it loaded. */
		b->prog_type = a.prog_type;
		b->attach_type = a.expected_attach_type;
		if (b->attach_type)
			b->flags |= KESTREL_BPF_HAS_ATTACH_TYPE;
		__builtin_memcpy(b->prog_name, a.prog_name, sizeof(b->prog_name));
		b->prog_fd = ret >= 0 ? ret : -1;
		break;
	case KESTREL_BPF_PROG_ATTACH:
		b->prog_fd = a.attach_bpf_fd;
		b->target_fd = a.target_fd;
		b->attach_type = a.attach_type;
		b->flags |= KESTREL_BPF_HAS_ATTACH_TYPE;
		break;
	case KESTREL_BPF_LINK_CREATE:
		b->prog_fd = a.link_create.prog_fd;
		b->target_fd = a.link_create.target_fd;
		b->attach_type = a.link_create.attach_type;
		b->flags |= KESTREL_BPF_HAS_ATTACH_TYPE;
		break;
	case KESTREL_BPF_RAW_TRACEPOINT_OPEN:
		b->prog_fd = a.raw_tracepoint.prog_fd;
		if (a.raw_tracepoint.name &&
		    bpf_probe_read_user_str(b->tp_name, sizeof(b->tp_name),
					    (void *)a.raw_tracepoint.name) <= 0)
			b->tp_name[0] = 0;
		break;
	}
	b->prog_name[KESTREL_BPF_NAME_MAX - 1] = 0;
	prog_of_fd(b, task, b->prog_fd);
	submit(b, sizeof(*b), KESTREL_KIND_BPF);
	return 0;
}
