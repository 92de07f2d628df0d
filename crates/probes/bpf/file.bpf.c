// SPDX-License-Identifier: GPL-2.0-only
/*
 * File creations (data_type 602): opens that created a file, and nodes
 * made by mknod.
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/files.h"
#include "lib/paths.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_file);
} file_scratch SEC(".maps");

#define O_CREAT 0100
#define O_WRONLY 01
#define O_TRUNC 01000
#define __O_TMPFILE 020000000
#define FMODE_CREATED 0x100000
#define AT_FDCWD -100

static __always_inline struct kestrel_file *file_record(struct task_struct *task)
{
	__u32 zero = 0;
	struct kestrel_file *e = bpf_map_lookup_elem(&file_scratch, &zero);

	if (!e) {
		count(KESTREL_KIND_FILE, KESTREL_CTR_ERROR);
		return NULL;
	}
	e->hdr.kind = KESTREL_KIND_FILE;
	e->hdr.size = sizeof(*e);
	e->flags = 0;
	e->rel[0] = 0;
	return e;
}

/* After an open-family call: was a file created? Only opens asking for
 * O_CREAT or O_TMPFILE get past the first test, so other opens cost a
 * register read. FMODE_CREATED tells a new file from an existing one. */
static __always_inline int file_opened(long ret, __u64 flags)
{
	struct task_struct *task;
	struct kestrel_file *e;
	struct file *f;
	bool tmpfile = (flags & __O_TMPFILE) == __O_TMPFILE;
	__u32 fmode;

	if (ret < 0 || !(flags & (O_CREAT | __O_TMPFILE)))
		return 0;
	if ((bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	task = bpf_get_current_task_btf();
	f = task_fd(task, ret);
	if (!f)
		return 0;
	fmode = BPF_CORE_READ(f, f_mode);
	if (!tmpfile && !(fmode & FMODE_CREATED))
		return 0;
	e = file_record(task);
	if (!e)
		return 0;
	if (!walk_path(&e->path, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), true))
		return 0; /* under an excluded directory */
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	e->res = ret;
	e->mode = BPF_CORE_READ(f, f_inode, i_mode);
	if (tmpfile)
		e->flags |= KESTREL_FILE_TMPFILE;
	submit(e, sizeof(*e), KESTREL_KIND_FILE);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int handle_openat_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return file_opened(ret, regs->dx);
}

SEC("tracepoint/syscalls/sys_exit_open")
int handle_open_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return file_opened(ret, regs->si);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int handle_creat_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;

	barrier_var(ret);
	return file_opened(ret, O_CREAT | O_WRONLY | O_TRUNC);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int handle_openat2_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	__u64 flags = 0;

	barrier_var(ret);
	if (ret < 0)
		return 0;
	/* struct open_how starts with its u64 flags. */
	bpf_probe_read_user(&flags, sizeof(flags), (void *)regs->dx);
	return file_opened(ret, flags);
}

/* mknod/mknodat made a node: the directory it was made in is walked (the
 * cwd, or the dirfd's directory), the name is kept as passed; user space
 * joins them. */
static __always_inline int node_made(long ret, int dfd, const char *upath, __u32 mode)
{
	struct task_struct *task;
	struct kestrel_file *e;
	bool ok;

	if (ret != 0 || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	task = bpf_get_current_task_btf();
	e = file_record(task);
	if (!e)
		return 0;
	if (bpf_probe_read_user_str(e->rel, sizeof(e->rel), upath) <= 0)
		return 0;
	if (e->rel[0] == '/') {
		e->path.len = 0;
		e->path.truncated = 0;
		ok = true;
	} else if (dfd == AT_FDCWD) {
		ok = walk_path(&e->path, task->fs->pwd.dentry, task->fs->pwd.mnt, true);
	} else {
		struct file *dir = task_fd(task, dfd);

		if (!dir)
			return 0;
		ok = walk_path(&e->path, BPF_CORE_READ(dir, f_path.dentry),
			       BPF_CORE_READ(dir, f_path.mnt), true);
	}
	if (!ok)
		return 0;
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	e->res = 0;
	e->mode = mode;
	e->flags |= KESTREL_FILE_MKNOD;
	submit(e, sizeof(*e), KESTREL_KIND_FILE);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mknodat")
int handle_mknodat_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return node_made(ret, (int)regs->di, (const char *)regs->si,
			 (__u32)regs->dx);
}

SEC("tracepoint/syscalls/sys_exit_mknod")
int handle_mknod_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	barrier_var(ret);
	return node_made(ret, AT_FDCWD, (const char *)regs->di,
			 (__u32)regs->si);
}
