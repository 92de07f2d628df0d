/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The path arguments of path syscalls (rename, link, symlink, unlink,
 * rmdir: data_types 82, 86, 605, 606), read when the call returns, and the
 * records made of them. Here rather than in paths.bpf.c because linkat's
 * program is the file kind's (file.bpf.c), which makes 86 records too.
 *
 * Nothing is filtered in the kernel: an excluded directory (file_excludes)
 * hides creations only, so a file made there and renamed or linked out is
 * seen leaving.
 */
#ifndef KESTREL_LIB_NAMES_H
#define KESTREL_LIB_NAMES_H

#include "base.h"
#include "files.h"
#include "moves.h"
#include "paths.h"
#include "procs.h"
#include "ringbuf.h"
#include "task.h"

#ifndef AT_FDCWD
#define AT_FDCWD -100
#endif

/* One record at a time per CPU: kestrel_rename is the largest layout
 * (kestrel_link is the same; kestrel_unlink and kestrel_rmdir are a
 * prefix-sized subset, built in the same buffer). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kestrel_rename);
} names_scratch SEC(".maps");

_Static_assert(sizeof(struct kestrel_link) == sizeof(struct kestrel_rename),
	       "link records are built as rename records");
_Static_assert(sizeof(struct kestrel_unlink) <= sizeof(struct kestrel_rename),
	       "unlink records fit the scratch buffer");
_Static_assert(sizeof(struct kestrel_rmdir) == sizeof(struct kestrel_unlink),
	       "rmdir records are built as unlink records");

/* The name as the caller passed it. Read at the exit, from the caller's
 * memory: another thread may have changed the buffer after the kernel
 * copied it (docs/security.md). */
static __always_inline void read_name(struct kestrel_name *n, const char *upath)
{
	long r = bpf_probe_read_user_str(n->name, KESTREL_NAME_MAX, upath);

	n->flags = 0;
	n->dir.len = 0;
	n->dir.truncated = 0;
	if (r <= 0) {
		n->name[0] = 0;
		n->flags = KESTREL_NAME_UNREAD;
		return;
	}
	if (r == KESTREL_NAME_MAX) {
		char c = 0;

		/* The copy stopped at the buffer's end: cut unless the
		 * name ended exactly there. */
		bpf_probe_read_user(&c, 1, upath + KESTREL_NAME_MAX - 1);
		if (c)
			n->flags |= KESTREL_NAME_TRUNCATED;
	}
}

/* The directory a name passed with dfd is looked up from: the root for
 * an absolute name, the cwd for AT_FDCWD, else dfd's file (which is the
 * file itself for an empty name). False when dfd names no open file. */
static __always_inline bool name_dir(struct task_struct *task, int dfd, const char *name,
				     struct dentry **d, struct vfsmount **m)
{
	if (name[0] == '/') {
		*d = task->fs->root.dentry;
		*m = task->fs->root.mnt;
	} else if (dfd == AT_FDCWD) {
		*d = task->fs->pwd.dentry;
		*m = task->fs->pwd.mnt;
	} else {
		struct file *f = task_fd(task, dfd);

		if (!f)
			return false;
		*d = BPF_CORE_READ(f, f_path.dentry);
		*m = BPF_CORE_READ(f, f_path.mnt);
	}
	return true;
}

/* A name read, placed: for a relative one, the directory (d, m) it was
 * looked up from walked without exclusions. sb_id, when given, gets the
 * s_id of that directory's superblock (the root's for an absolute name). */
static __always_inline void place_name(struct kestrel_name *n, struct dentry *d,
				       struct vfsmount *m, char *sb_id)
{
	if (n->name[0] != '/')
		walk_path(&n->dir, d, m, false);
	if (sb_id) {
		struct super_block *sb = BPF_CORE_READ(d, d_sb);

		if (bpf_probe_read_kernel_str(sb_id, KESTREL_SB_ID_LEN, &sb->s_id) <= 0)
			sb_id[0] = 0;
	}
}

/* A path argument, read and placed. Not inlined: each program that takes
 * two names holds one copy of walk_path. */
static __noinline void take_name(struct kestrel_name *n, struct task_struct *task, int dfd,
				 const char *upath, char *sb_id)
{
	struct dentry *d;
	struct vfsmount *m;

	if (!n)
		return;
	read_name(n, upath);
	if (n->flags & KESTREL_NAME_UNREAD)
		return;
	if (!name_dir(task, dfd, n->name, &d, &m)) {
		n->flags |= KESTREL_NAME_NO_DIR;
		return;
	}
	place_name(n, d, m, sb_id);
}

/* Bytes of a record that ends in a kestrel_name: up to its walked
 * directory's last byte (the record's other 2 KB of path buffer is not
 * sent). Sets the header's size to it. */
#define used(hsize, off, len)                                                  \
	({                                                                     \
		__u32 l = (len);                                               \
		if (l > KESTREL_CWD_MAX)                                       \
			l = KESTREL_CWD_MAX;                                   \
		barrier_var(l);                                                \
		(hsize) = (off) + l;                                           \
		(__u64)(off) + l;                                              \
	})

static __always_inline struct kestrel_rename *names_record(__u16 kind)
{
	__u32 zero = 0;
	struct kestrel_rename *e = bpf_map_lookup_elem(&names_scratch, &zero);

	if (!e) {
		count(kind, KESTREL_CTR_ERROR);
		return NULL;
	}
	return e;
}

/* A two-name call returned (rename family, link family): every call is
 * reported, failed ones too; a rename that succeeded also counts as a
 * change of paths (lib/moves.h). A symlink's target (src) is text stored in
 * the link, not a path the kernel resolves: it is kept as given. */
static __always_inline int pair_done(long ret, __u16 kind, __u32 nr, int sdfd, const char *sname,
				     int ddfd, const char *dname, __u32 flags, bool symlink)
{
	struct task_struct *task;
	struct kestrel_rename *e;

	if (kind == KESTREL_KIND_RENAME)
		watch_paths_changed(ret);
	if ((bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	task = bpf_get_current_task_btf();
	e = names_record(kind);
	if (!e)
		return 0;
	e->hdr.kind = kind;
	e->hdr.size = sizeof(*e);
	e->res = ret;
	e->syscall = nr;
	e->flags = flags;
	e->sb_id[0] = 0;
	if (symlink) {
		read_name(&e->src, sname);
		e->src.flags |= KESTREL_NAME_LITERAL;
		take_name(&e->dst, task, ddfd, dname, e->sb_id);
	} else {
		take_name(&e->src, task, sdfd, sname, e->sb_id);
		take_name(&e->dst, task, ddfd, dname, NULL);
	}
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	submit(e, used(e->hdr.size, __builtin_offsetof(struct kestrel_rename, dst.dir.bytes),
		       e->dst.dir.len), kind);
	return 0;
}

/* An unlink or rmdir returned; an rmdir that succeeded also counts as a
 * change of paths (lib/moves.h). */
static __always_inline int removal_done(long ret, __u16 kind, __u32 nr, int dfd, const char *name,
					__u32 flags)
{
	struct task_struct *task;
	struct kestrel_unlink *e;

	if (kind == KESTREL_KIND_RMDIR)
		watch_paths_changed(ret);
	if ((bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	task = bpf_get_current_task_btf();
	e = (struct kestrel_unlink *)names_record(kind);
	if (!e)
		return 0;
	e->hdr.kind = kind;
	e->hdr.size = sizeof(*e);
	e->res = ret;
	e->syscall = nr;
	e->flags = flags;
	take_name(&e->file, task, dfd, name, NULL);
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	submit(e, used(e->hdr.size, __builtin_offsetof(struct kestrel_unlink, file.dir.bytes),
		       e->file.dir.len), kind);
	return 0;
}

#endif /* KESTREL_LIB_NAMES_H */
