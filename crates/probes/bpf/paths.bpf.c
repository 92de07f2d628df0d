// SPDX-License-Identifier: GPL-2.0-only
/*
 * Path syscalls: rename (data_type 82), link and symlink (86), unlink
 * (605) and rmdir (606), every call with its result. The kernel has no
 * tracepoint inside the VFS for these, and kprobes, fentry and BPF-LSM,
 * which see the kernel's own copy of the names, are not available on
 * every target: the syscall exits are the hook, the arguments read from
 * the caller's saved registers (lib/names.h). linkat's program is the file
 * kind's (file.bpf.c).
 */
#include "lib/names.h"
#include "lib/syscall.h"

#define AT_REMOVEDIR 0x200

static __always_inline struct pt_regs *user_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* rename(old, new) */
KESTREL_SYSCALL_EXIT(rename)
{
	struct pt_regs *r = user_regs();

	return pair_done(ret, KESTREL_KIND_RENAME, 82, AT_FDCWD, (const char *)r->di,
			 AT_FDCWD, (const char *)r->si, 0, false);
}

/* renameat(olddfd, old, newdfd, new) */
KESTREL_SYSCALL_EXIT(renameat)
{
	struct pt_regs *r = user_regs();

	return pair_done(ret, KESTREL_KIND_RENAME, 264, (int)r->di, (const char *)r->si,
			 (int)r->dx, (const char *)r->r10, 0, false);
}

/* renameat2(olddfd, old, newdfd, new, flags) */
KESTREL_SYSCALL_EXIT(renameat2)
{
	struct pt_regs *r = user_regs();

	return pair_done(ret, KESTREL_KIND_RENAME, 316, (int)r->di, (const char *)r->si,
			 (int)r->dx, (const char *)r->r10, (__u32)r->r8, false);
}

/* link(old, new) */
KESTREL_SYSCALL_EXIT(link)
{
	struct pt_regs *r = user_regs();

	return pair_done(ret, KESTREL_KIND_LINK, 86, AT_FDCWD, (const char *)r->di, AT_FDCWD,
			 (const char *)r->si, 0, false);
}

/* symlink(target, linkpath) */
KESTREL_SYSCALL_EXIT(symlink)
{
	struct pt_regs *r = user_regs();

	return pair_done(ret, KESTREL_KIND_LINK, 88, AT_FDCWD, (const char *)r->di, AT_FDCWD,
			 (const char *)r->si, 0, true);
}

/* symlinkat(target, newdfd, linkpath) */
KESTREL_SYSCALL_EXIT(symlinkat)
{
	struct pt_regs *r = user_regs();

	return pair_done(ret, KESTREL_KIND_LINK, 266, AT_FDCWD, (const char *)r->di,
			 (int)r->si, (const char *)r->dx, 0, true);
}

/* unlink(path) */
KESTREL_SYSCALL_EXIT(unlink)
{
	struct pt_regs *r = user_regs();

	return removal_done(ret, KESTREL_KIND_UNLINK, 87, AT_FDCWD, (const char *)r->di, 0);
}

/* unlinkat(dfd, path, flags): a directory with AT_REMOVEDIR (606). */
KESTREL_SYSCALL_EXIT(unlinkat)
{
	struct pt_regs *r = user_regs();
	__u32 flags = r->dx;

	return removal_done(ret, flags & AT_REMOVEDIR ? KESTREL_KIND_RMDIR : KESTREL_KIND_UNLINK,
			    263, (int)r->di, (const char *)r->si, flags);
}

/* rmdir(path) */
KESTREL_SYSCALL_EXIT(rmdir)
{
	struct pt_regs *r = user_regs();

	return removal_done(ret, KESTREL_KIND_RMDIR, 84, AT_FDCWD, (const char *)r->di, 0);
}
