// SPDX-License-Identifier: GPL-2.0-only
/*
 * mount records (data_type 165): mount(2), and move_mount(2), where the
 * new mount API (fsopen, fsconfig, fsmount; open_tree for a bind) makes a
 * mount visible.
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/files.h"
#include "lib/paths.h"
#include "lib/moves.h"
#include "lib/syscall.h"

#define AT_FDCWD -100
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_mount);
} mount_scratch SEC(".maps");

/* The process tree above `task` (as exec records walk it). */
static __always_inline void mount_ancestry(struct kestrel_mount *m, struct task_struct *task)
{
	bool truncated = false;

	m->ancestors_len = walk_ancestry(m->ancestors, task, &truncated);
	if (truncated)
		m->flags2 |= KESTREL_MOUNT_PID_TREE_TRUNCATED;
}

static __always_inline struct kestrel_mount *mount_start(struct task_struct *task, long ret,
							 __u32 via, __u64 flags)
{
	struct kestrel_mount *m;
	__u32 zero = 0;

	m = bpf_map_lookup_elem(&mount_scratch, &zero);
	if (!m) {
		count(KESTREL_KIND_MOUNT, KESTREL_CTR_ERROR);
		return NULL;
	}
	m->hdr.kind = KESTREL_KIND_MOUNT;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&m->task, task, proc_entry(task));
	m->res = ret;
	m->via = via;
	m->flags = flags;
	m->flags2 = 0;
	mount_ancestry(m, task);
	m->dir.len = 0;
	m->dir.truncated = 0;
	m->dev[0] = 0;
	m->fstype[0] = 0;
	m->target[0] = 0;
	return m;
}

/* A string from the caller's memory, as the call was given it. Read after
 * the call: a second thread of the caller can change it in between (see
 * docs/security.md). */
static __always_inline bool user_str(char *dst, __u32 size, const void *src)
{
	long n;

	dst[0] = 0;
	if (!src)
		return false;
	n = bpf_probe_read_user_str(dst, size, src);
	if (n <= 0) {
		dst[0] = 0;
		return false;
	}
	return n == size; /* filled: maybe cut */
}

/* A relative target: the directory it is under, the working directory or
 * the descriptor's. */
static __always_inline void target_dir(struct kestrel_mount *m, struct task_struct *task, int dfd)
{
	struct dentry *d = NULL;
	struct vfsmount *vm = NULL;

	if (m->target[0] == '/')
		return;
	if (dfd == AT_FDCWD) {
		d = task->fs->pwd.dentry;
		vm = task->fs->pwd.mnt;
	} else if (dfd >= 0) {
		struct file *f = task_fd(task, dfd);

		if (f) {
			d = BPF_CORE_READ(f, f_path.dentry);
			vm = BPF_CORE_READ(f, f_path.mnt);
		}
	}
	if (d && vm)
		walk_path(&m->dir, d, vm, false);
}

KESTREL_SYSCALL_EXIT(mount)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct kestrel_mount *m;

	watch_paths_changed(ret);
	if (task->tgid == self_tgid)
		return 0;
	/* mount(dev_name, dir_name, type, flags, data) */
	m = mount_start(task, ret, KESTREL_MOUNT_VIA_MOUNT, regs->r10);
	if (!m)
		return 0;
	if (user_str(m->dev, sizeof(m->dev), (void *)regs->di))
		m->flags2 |= KESTREL_MOUNT_DEV_TRUNCATED;
	if (user_str(m->target, sizeof(m->target), (void *)regs->si))
		m->flags2 |= KESTREL_MOUNT_TARGET_TRUNCATED;
	user_str(m->fstype, sizeof(m->fstype), (void *)regs->dx);
	target_dir(m, task, AT_FDCWD);
	submit(m, sizeof(*m), KESTREL_KIND_MOUNT);
	return 0;
}

KESTREL_SYSCALL_EXIT(move_mount)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct kestrel_mount *m;
	struct file *from = NULL;
	int from_dfd, to_dfd;
	__u64 flags;

	watch_paths_changed(ret);
	if (task->tgid == self_tgid)
		return 0;
	/* move_mount(from_dfd, from_path, to_dfd, to_path, flags) */
	from_dfd = regs->di;
	to_dfd = regs->dx;
	flags = regs->r8;
	m = mount_start(task, ret, KESTREL_MOUNT_VIA_MOVE_MOUNT, flags);
	if (!m)
		return 0;
	if ((flags & MOVE_MOUNT_F_EMPTY_PATH) && from_dfd >= 0)
		from = task_fd(task, from_dfd);
	if (from) {
		/* A mount descriptor (fsmount, open_tree): its source and type
		 * as the kernel keeps them. */
		struct vfsmount *vm = BPF_CORE_READ(from, f_path.mnt);
		struct mount *mnt = (void *)vm - bpf_core_field_offset(struct mount, mnt);

		if (bpf_probe_read_kernel_str(m->dev, sizeof(m->dev), BPF_CORE_READ(mnt, mnt_devname)) <= 0)
			m->dev[0] = 0;
		if (bpf_probe_read_kernel_str(m->fstype, sizeof(m->fstype),
					      BPF_CORE_READ(vm, mnt_sb, s_type, name)) <= 0)
			m->fstype[0] = 0;
		m->flags2 |= KESTREL_MOUNT_FROM_KERNEL;
		if (ret == 0) {
			/* Attached now: its mount point, walked from it. */
			walk_path(&m->dir, BPF_CORE_READ(vm, mnt_root), vm, false);
			m->flags2 |= KESTREL_MOUNT_DIR_IS_MOUNTPOINT;
			submit(m, sizeof(*m), KESTREL_KIND_MOUNT);
			return 0;
		}
	} else if (user_str(m->dev, sizeof(m->dev), (void *)regs->si)) {
		m->flags2 |= KESTREL_MOUNT_DEV_TRUNCATED;
	}
	if (user_str(m->target, sizeof(m->target), (void *)regs->r10))
		m->flags2 |= KESTREL_MOUNT_TARGET_TRUNCATED;
	target_dir(m, task, to_dfd);
	submit(m, sizeof(*m), KESTREL_KIND_MOUNT);
	return 0;
}

/* fsmount(fs_fd, flags, attr_flags): the new mount's descriptor is the
 * result; its source and type are read from the mount itself. A refused
 * call is reported without them. */
KESTREL_SYSCALL_EXIT(fsmount)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct kestrel_mount *m;
	struct file *f;

	if (task->tgid == self_tgid)
		return 0;
	m = mount_start(task, ret, KESTREL_MOUNT_VIA_FSMOUNT, regs->dx);
	if (!m)
		return 0;
	if (ret >= 0 && (f = task_fd(task, ret))) {
		struct vfsmount *vm = BPF_CORE_READ(f, f_path.mnt);
		struct mount *mnt = (void *)vm - bpf_core_field_offset(struct mount, mnt);

		if (bpf_probe_read_kernel_str(m->dev, sizeof(m->dev), BPF_CORE_READ(mnt, mnt_devname)) <= 0)
			m->dev[0] = 0;
		if (bpf_probe_read_kernel_str(m->fstype, sizeof(m->fstype),
					      BPF_CORE_READ(vm, mnt_sb, s_type, name)) <= 0)
			m->fstype[0] = 0;
		m->flags2 |= KESTREL_MOUNT_FROM_KERNEL;
	}
	submit(m, sizeof(*m), KESTREL_KIND_MOUNT);
	return 0;
}
