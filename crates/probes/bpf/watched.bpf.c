// SPDX-License-Identifier: GPL-2.0-only
/*
 * Watched paths (lib/watch.h): truncate and ftruncate of a watched file
 * (608). Opens are matched by the open programs of file.bpf.c. umount and
 * pivot_root make no record: they change paths, so the verdicts the
 * watched-path check remembers per directory are dropped (renames, rmdir,
 * mount, move_mount and unshare drop them from their own programs).
 */
#include "lib/watch.h"
#include "lib/files.h"
#include "lib/syscall.h"

#define WATCH_AT_FDCWD -100

/* ftruncate(fd, length): the file behind fd. */
KESTREL_SYSCALL_EXIT(ftruncate)
{
	struct task_struct *task;
	struct kestrel_watched *e;
	struct pt_regs *regs;
	struct file *f;

	if (ret != 0 || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	task = bpf_get_current_task_btf();
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	f = task_fd(task, (int)regs->di);
	if (!f)
		return 0;
	struct dentry *d = BPF_CORE_READ(f, f_path.dentry);
	struct vfsmount *m = BPF_CORE_READ(f, f_path.mnt);

	if (!watched_dentry(d, m))
		return 0;
	e = watched_record();
	if (!e || !walk_path(&e->path, d, m, false))
		return 0;
	e->res = 0;
	e->op = KESTREL_WATCH_OP_FTRUNCATE;
	e->open_flags = BPF_CORE_READ(f, f_flags);
	e->flags = KESTREL_WATCHED_WRITE;
	watched_send(e, task, BPF_CORE_READ(f, f_inode, i_sb));
	return 0;
}

/* truncate(path, length): the name as passed, relative to the working
 * directory unless absolute; the directory is walked, the name kept in
 * `rel` (user space joins them). The name is matched as written: ".." is
 * followed, a symbolic link is not. */
KESTREL_SYSCALL_EXIT(truncate)
{
	struct task_struct *task;
	struct kestrel_watched *e;
	struct pt_regs *regs;

	if (ret != 0 || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	task = bpf_get_current_task_btf();
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	e = watched_record();
	if (!e)
		return 0;
	if (bpf_probe_read_user_str(e->rel, sizeof(e->rel), (const char *)regs->di) <= 0)
		return 0;
	struct dentry *d = task->fs->pwd.dentry;
	struct vfsmount *m = task->fs->pwd.mnt;

	if (!watched_name(d, m, e->rel))
		return 0;
	if (e->rel[0] != '/' && !walk_path(&e->path, d, m, false))
		return 0;
	e->res = 0;
	e->op = KESTREL_WATCH_OP_TRUNCATE;
	e->open_flags = 01 | WATCH_O_TRUNC; /* O_WRONLY | O_TRUNC */
	e->flags = KESTREL_WATCHED_WRITE;
	watched_send(e, task, e->rel[0] == '/' ? NULL : d->d_sb);
	return 0;
}

KESTREL_SYSCALL_EXIT(umount)
{
	watch_paths_changed(ret);
	return 0;
}

KESTREL_SYSCALL_EXIT(pivot_root)
{
	watch_paths_changed(ret);
	return 0;
}
