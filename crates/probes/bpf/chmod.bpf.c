// SPDX-License-Identifier: GPL-2.0-only
/*
 * Mode and owner changes: chmod family (data_type 90) and chown family
 * (92), every call with its result. A mode asking for setuid or setgid is
 * reported wherever the file is (making a set-id binary is the behaviour,
 * and a failed attempt says as much); any other change only on a watched
 * path (lib/watch.h), matched on the name as passed, the way truncate's
 * is. The hooks are the syscall exits, as for the other path calls
 * (lib/names.h): there is no VFS tracepoint for setattr.
 */
#include "lib/names.h"
#include "lib/watch.h"
#include "lib/syscall.h"

#define MODE_SETID 06000

_Static_assert(sizeof(struct kestrel_chmod) <= sizeof(struct kestrel_rename),
	       "chmod records are built in the names scratch buffer");
/* A chown record is a chmod record with uid and gid where mode and
 * old_mode are: one builder makes both. */
_Static_assert(sizeof(struct kestrel_chown) == sizeof(struct kestrel_chmod) &&
		       __builtin_offsetof(struct kestrel_chown, uid) ==
			       __builtin_offsetof(struct kestrel_chmod, mode) &&
		       __builtin_offsetof(struct kestrel_chown, gid) ==
			       __builtin_offsetof(struct kestrel_chmod, old_mode) &&
		       __builtin_offsetof(struct kestrel_chown, file) ==
			       __builtin_offsetof(struct kestrel_chmod, file),
	       "chown records are built as chmod records");

/* fchmod's file's i_mode at the entry, by thread, for the exit's old_mode.
 * LRU: an entry whose exit never ran (the thread killed in the call) ages
 * out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u32);
} fchmod_old SEC(".maps");

/*
 * A call returned. The file is the name upath relative to dfd, or with no
 * name (upath NULL) the file behind fd. a and b are the mode and the old
 * mode (chmod), or the uid and the gid (chown); `what` says what is known
 * (KESTREL_CHMOD_*).
 */
static __always_inline int attr_done(long ret, __u16 kind, __u32 nr, int dfd, const char *upath,
				     __u32 a, __u32 b, __u32 what, __u32 flags)
{
	bool anywhere = kind == KESTREL_KIND_CHMOD && (a & MODE_SETID);
	struct task_struct *task;
	struct kestrel_chmod *e;
	struct dentry *d = NULL;
	struct vfsmount *m = NULL;

	if ((bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	task = bpf_get_current_task_btf();
	e = (struct kestrel_chmod *)names_record(kind);
	if (!e)
		return 0;
	if (upath) {
		read_name(&e->file, upath);
		if (!(e->file.flags & KESTREL_NAME_UNREAD) &&
		    !name_dir(task, dfd, e->file.name, &d, &m))
			e->file.flags |= KESTREL_NAME_NO_DIR;
	} else {
		struct file *f = task_fd(task, dfd);

		if (!f)
			return 0; /* a bad descriptor: nothing was changed */
		d = BPF_CORE_READ(f, f_path.dentry);
		m = BPF_CORE_READ(f, f_path.mnt);
		e->file.flags = 0;
		e->file.name[0] = 0;
		e->file.dir.len = 0;
		e->file.dir.truncated = 0;
	}
	if (d && watched_name(d, m, e->file.name))
		what |= KESTREL_CHMOD_WATCHED;
	else if (!anywhere)
		return 0;
	e->sb_id[0] = 0;
	if (d)
		place_name(&e->file, d, m, e->sb_id);
	e->hdr.kind = kind;
	e->res = ret;
	e->syscall = nr;
	e->flags = flags;
	e->mode = a;
	e->old_mode = b;
	e->what = what;
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	fill_task(&e->task, task, proc_entry(task));
	submit(e, used(e->hdr.size, __builtin_offsetof(struct kestrel_chmod, file.dir.bytes),
		       e->file.dir.len), kind);
	return 0;
}

static __always_inline struct pt_regs *attr_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* chmod(path, mode) */
KESTREL_SYSCALL_EXIT(chmod)
{
	struct pt_regs *r = attr_regs();

	return attr_done(ret, KESTREL_KIND_CHMOD, 90, AT_FDCWD, (const char *)r->di,
			 (__u32)r->si, 0, 0, 0);
}

/* fchmodat(dfd, path, mode) */
KESTREL_SYSCALL_EXIT(fchmodat)
{
	struct pt_regs *r = attr_regs();

	return attr_done(ret, KESTREL_KIND_CHMOD, 268, (int)r->di, (const char *)r->si,
			 (__u32)r->dx, 0, 0, 0);
}

/* fchmodat2(dfd, path, mode, flags): with AT_EMPTY_PATH and "" the file
 * behind dfd, which name_dir gives for an empty name. */
KESTREL_SYSCALL_EXIT(fchmodat2)
{
	struct pt_regs *r = attr_regs();

	return attr_done(ret, KESTREL_KIND_CHMOD, 452, (int)r->di, (const char *)r->si,
			 (__u32)r->dx, 0, 0, (__u32)r->r10);
}

/* fchmod(fd, mode): the only call whose file is known before it runs, so
 * its mode before the change is kept. */
KESTREL_SYSCALL_ENTER(fchmod)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct file *f;
	__u32 mode;

	if ((id >> 32) == self_tgid)
		return 0;
	f = task_fd(bpf_get_current_task_btf(), (unsigned int)syscall_regs()->di);
	if (!f)
		return 0;
	mode = BPF_CORE_READ(f, f_inode, i_mode);
	bpf_map_update_elem(&fchmod_old, &id, &mode, BPF_ANY);
	return 0;
}

KESTREL_SYSCALL_EXIT(fchmod)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pt_regs *r = attr_regs();
	__u32 *old = bpf_map_lookup_elem(&fchmod_old, &id);
	__u32 old_mode = 0, what = 0;

	if (old) {
		old_mode = *old;
		what = KESTREL_CHMOD_OLD_MODE;
		bpf_map_delete_elem(&fchmod_old, &id);
	}
	return attr_done(ret, KESTREL_KIND_CHMOD, 91, (int)r->di, NULL, (__u32)r->si,
			 old_mode, what, 0);
}

/* chown(path, uid, gid) */
KESTREL_SYSCALL_EXIT(chown)
{
	struct pt_regs *r = attr_regs();

	return attr_done(ret, KESTREL_KIND_CHOWN, 92, AT_FDCWD, (const char *)r->di,
			 (__u32)r->si, (__u32)r->dx, 0, 0);
}

/* lchown(path, uid, gid): the link itself; the name is matched as
 * written, as for every call here. */
KESTREL_SYSCALL_EXIT(lchown)
{
	struct pt_regs *r = attr_regs();

	return attr_done(ret, KESTREL_KIND_CHOWN, 94, AT_FDCWD, (const char *)r->di,
			 (__u32)r->si, (__u32)r->dx, 0, 0);
}

/* fchownat(dfd, path, uid, gid, flags) */
KESTREL_SYSCALL_EXIT(fchownat)
{
	struct pt_regs *r = attr_regs();

	return attr_done(ret, KESTREL_KIND_CHOWN, 260, (int)r->di, (const char *)r->si,
			 (__u32)r->dx, (__u32)r->r10, 0, (__u32)r->r8);
}

/* fchown(fd, uid, gid) */
KESTREL_SYSCALL_EXIT(fchown)
{
	struct pt_regs *r = attr_regs();

	return attr_done(ret, KESTREL_KIND_CHOWN, 93, (int)r->di, NULL, (__u32)r->si,
			 (__u32)r->dx, 0, 0);
}
