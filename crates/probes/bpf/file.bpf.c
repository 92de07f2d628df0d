// SPDX-License-Identifier: GPL-2.0-only
/*
 * File creations (data_type 602): opens that created a file, and nodes
 * made by mknod. linkat's program makes link records (86) too.
 */
#include "lib/ringbuf.h"
#include "lib/task.h"
#include "lib/procs.h"
#include "lib/files.h"
#include "lib/paths.h"
#include "lib/names.h"
#include "lib/watch.h"
#include "lib/syscall.h"

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
 * O_CREAT or O_TMPFILE get past the first test. FMODE_CREATED tells a new
 * file from an existing one. Every successful open is also matched against
 * the watched paths (608/609, lib/watch.h): a watched file created here is
 * reported twice, its creation (602) and its write-open (608). */
static __always_inline int file_opened(struct task_struct *task, long ret, __u64 flags, __u32 op)
{
	struct kestrel_file *e;
	struct file *f;
	bool tmpfile = (flags & __O_TMPFILE) == __O_TMPFILE;
	bool created = false;
	__u32 fmode;

	if (ret < 0 || task->tgid == self_tgid)
		return 0;
	f = watch_task_fd(task, ret);
	if (!f)
		return 0;
	if (!(flags & (O_CREAT | __O_TMPFILE))) {
		watch_open(task, f, ret, flags, op, false);
		return 0;
	}
	fmode = BPF_CORE_READ(f, f_mode);
	created = fmode & FMODE_CREATED;
	if (!tmpfile && !created)
		goto watch;
	e = file_record(task);
	if (!e)
		goto watch;
	if (!walk_path(&e->path, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), true))
		goto watch; /* under an excluded directory */
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	e->res = ret;
	e->mode = BPF_CORE_READ(f, f_inode, i_mode);
	if (tmpfile)
		e->flags |= KESTREL_FILE_TMPFILE;
	submit(e, sizeof(*e), KESTREL_KIND_FILE);
watch:
	if (!tmpfile)
		watch_open(task, f, ret, flags, op, created);
	return 0;
}

KESTREL_SYSCALL_EXIT(openat)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);

	return file_opened(task, ret, regs->dx, KESTREL_WATCH_OP_OPENAT);
}

KESTREL_SYSCALL_EXIT(open)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);

	return file_opened(task, ret, regs->si, KESTREL_WATCH_OP_OPEN);
}

KESTREL_SYSCALL_EXIT(creat)
{
	return file_opened(bpf_get_current_task_btf(), ret, O_CREAT | O_WRONLY | O_TRUNC,
			   KESTREL_WATCH_OP_CREAT);
}

KESTREL_SYSCALL_EXIT(openat2)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	__u64 flags = 0;

	if (ret < 0)
		return 0;
	/* struct open_how starts with its u64 flags. */
	bpf_probe_read_user(&flags, sizeof(flags), (void *)regs->dx);
	return file_opened(task, ret, flags, KESTREL_WATCH_OP_OPENAT2);
}

/* A name made by a path syscall that returns no descriptor: the name is
 * kept as passed in `rel`, and the directory it was made in (the cwd, or
 * the dirfd's directory) is to be walked; user space joins them. Returns
 * 0 when the name cannot be read, 1 for an absolute name (nothing to
 * walk), 2 with *d and *m set. The caller walks, so that each program
 * holds one copy of walk_path for the verifier to check. */
static __always_inline int dir_of(struct kestrel_file *e, struct task_struct *task, int dfd,
				  const char *upath, struct dentry **d, struct vfsmount **m)
{
	if (bpf_probe_read_user_str(e->rel, sizeof(e->rel), upath) <= 0)
		return 0;
	if (e->rel[0] == '/') {
		e->path.len = 0;
		e->path.truncated = 0;
		return 1;
	}
	if (dfd == AT_FDCWD) {
		*d = task->fs->pwd.dentry;
		*m = task->fs->pwd.mnt;
		return 2;
	}
	struct file *dir = task_fd(task, dfd);

	if (!dir)
		return 0;
	*d = BPF_CORE_READ(dir, f_path.dentry);
	*m = BPF_CORE_READ(dir, f_path.mnt);
	return 2;
}

/* mknod/mknodat made a node. */
static __always_inline int node_made(long ret, int dfd, const char *upath, __u32 mode)
{
	struct task_struct *task;
	struct kestrel_file *e;

	if (ret != 0 || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	task = bpf_get_current_task_btf();
	e = file_record(task);
	if (!e)
		return 0;
	struct dentry *d = NULL;
	struct vfsmount *m = NULL;
	int how = dir_of(e, task, dfd, upath, &d, &m);

	if (!how || (how == 2 && !walk_path(&e->path, d, m, true)))
		return 0;
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	e->res = 0;
	e->mode = mode;
	e->flags |= KESTREL_FILE_MKNOD;
	submit(e, sizeof(*e), KESTREL_KIND_FILE);
	return 0;
}

KESTREL_SYSCALL_EXIT(mknodat)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	return node_made(ret, (int)regs->di, (const char *)regs->si,
			 (__u32)regs->dx);
}

KESTREL_SYSCALL_EXIT(mknod)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	return node_made(ret, AT_FDCWD, (const char *)regs->di,
			 (__u32)regs->si);
}

#define AT_SYMLINK_FOLLOW 0x400
#define AT_EMPTY_PATH 0x1000

/* The number after `prefix` in `s` when s is prefix + decimal digits and
 * nothing else, or -1. */
static __always_inline int fd_after(const char *s, const char *prefix, int plen)
{
	int fd = 0;

#pragma unroll
	for (int i = 0; i < 24; i++) {
		if (i < plen && s[i] != prefix[i])
			return -1;
	}
#pragma unroll
	for (int i = 0; i < 8; i++) {
		char c = s[(plen + i) & 255];

		if (c == 0)
			return i ? fd : -1;
		if (c < '0' || c > '9')
			return -1;
		fd = fd * 10 + (c - '0');
	}
	return -1;
}

/* The file a linkat source names through the caller's own descriptor
 * links (/proc/self/fd/N, /proc/thread-self/fd/N, /dev/fd/N), or NULL. */
static __always_inline struct file *magic_fd(struct task_struct *task, const char *s)
{
	static const char self[] = "/proc/self/fd/";
	static const char thread[] = "/proc/thread-self/fd/";
	static const char devfd[] = "/dev/fd/";
	int fd;

	fd = fd_after(s, self, sizeof(self) - 1);
	if (fd < 0)
		fd = fd_after(s, thread, sizeof(thread) - 1);
	if (fd < 0)
		fd = fd_after(s, devfd, sizeof(devfd) - 1);
	return fd < 0 ? NULL : task_fd(task, fd);
}

/* linkat gave a file a name. Only the two forms that can name a file
 * with no name (an O_TMPFILE file) are watched: AT_EMPTY_PATH (the file
 * by descriptor) and AT_SYMLINK_FOLLOW (through /proc/PID/fd/N); a plain
 * link of one name to another is no creation. When the linked file is
 * known (by descriptor, or by the caller's own /proc/self/fd/N), its new
 * name is its newest dentry, walked like an opened file's, exclusions
 * included; otherwise the target directory is walked and the name as
 * passed appended, as for mknod. */
static __always_inline int file_linked(struct task_struct *task, int olddfd, const char *oldname,
				       int newdfd, const char *newname, __u32 flags)
{
	struct kestrel_file *e;
	struct file *src = NULL;
	struct dentry *d = NULL;
	struct vfsmount *m = NULL;
	int how = 0;
	long n;

	e = file_record(task);
	if (!e)
		return 0;
	n = bpf_probe_read_user_str(e->rel, sizeof(e->rel), oldname);
	if ((flags & AT_EMPTY_PATH) && n <= 1)
		src = task_fd(task, olddfd);
	else if ((flags & AT_SYMLINK_FOLLOW) && n > 1)
		src = magic_fd(task, e->rel);
	e->rel[0] = 0;
	e->flags = KESTREL_FILE_LINKAT;
	e->mode = 0;
	if (src) {
		struct inode *inode = BPF_CORE_READ(src, f_inode);
		struct hlist_node *first = BPF_CORE_READ(inode, i_dentry.first);
		struct dentry *alias = first ? (void *)first - bpf_core_field_offset(struct dentry,
										     d_u.d_alias)
					     : NULL;

		if (BPF_CORE_READ(src, f_flags) & __O_TMPFILE)
			e->flags |= KESTREL_FILE_TMPFILE;
		e->mode = BPF_CORE_READ(inode, i_mode);
		/* The kernel adds a new name at the head of the inode's list. */
		if (alias && alias != BPF_CORE_READ(src, f_path.dentry)) {
			d = alias;
			m = BPF_CORE_READ(src, f_path.mnt);
			how = 2;
		}
	}
	if (!how)
		how = dir_of(e, task, newdfd, newname, &d, &m);
	if (!how || (how == 2 && !walk_path(&e->path, d, m, true)))
		return 0;
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	e->res = 0;
	submit(e, sizeof(*e), KESTREL_KIND_FILE);
	return 0;
}

/* linkat(olddfd, oldname, newdfd, newname, flags) */
KESTREL_SYSCALL_EXIT(linkat)
{
	struct task_struct *task;
	struct pt_regs *regs;
	__u32 flags;

	task = bpf_get_current_task_btf();
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	flags = regs->r8;
	/* Every linkat is a link (86); some also create a file (602). */
	pair_done(ret, KESTREL_KIND_LINK, 265, (int)regs->di, (const char *)regs->si,
		  (int)regs->dx, (const char *)regs->r10, flags, false);
	if (ret != 0 || (bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	if (!(flags & (AT_EMPTY_PATH | AT_SYMLINK_FOLLOW)))
		return 0;
	return file_linked(task, (int)regs->di, (const char *)regs->si, (int)regs->dx,
			   (const char *)regs->r10, flags);
}
